"""The SQLite store's tables, indexes and migrations, and how it writes a moment.

``migrate`` applies the versioned migrations (``MIGRATIONS``, recorded in
``schema_migrations``) a file has not had. Migration 1, ``create``, brings any store file
up to the layout of its day: a new file gets every table, a file of an earlier layout is
migrated in place (its rows kept), and a current one is left as it is. The statistics,
held analytics and resident token tables are their own modules'.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiosqlite

from intercom_gateway.core.records import outcome_set_id as outcome_set_id
from intercom_gateway.store import analytics as store_analytics
from intercom_gateway.store import configs as store_configs
from intercom_gateway.store import distributions as store_distributions
from intercom_gateway.store import statistics as store_statistics
from intercom_gateway.store import tokens as store_tokens

DECISIONS_TABLE = """CREATE TABLE IF NOT EXISTS decisions (
    event_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, building_id TEXT NOT NULL,
    dwelling_id TEXT NOT NULL, event_type TEXT NOT NULL, decided_at TEXT NOT NULL,
    policy_version TEXT NOT NULL, consent_revision INTEGER NOT NULL,
    outcome_set TEXT NOT NULL REFERENCES outcome_sets (id));"""

# What became of a provision (§8; APPI's record of provision). The row is written as
# "intended" before the copy is published, so no copy can reach a recipient without it;
# "delivered" once the recipient's broker acknowledged it and the event completed;
# "unconfirmed" when the gateway lost track of the publish (a crash, a lost connection,
# a refused publish): it may or may not have reached the recipient, and is kept. A later
# delivery of the same event upgrades it. Rows of the first layout, written only after
# the acknowledgement, are "delivered".
LEDGER_STATUSES = ("intended", "delivered", "unconfirmed")
LEDGER_STATUS_COLUMN = "status TEXT NOT NULL DEFAULT 'delivered'"
# One row per message to a recipient: an event's facts ("event") and its image ("image")
# are separate messages under separate rules and purposes (spec item 2), so separate
# provisions. Rows from before the split are "event" rows; their items say whether the
# image came with them.
LEDGER_TABLE = (
    """CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, recipient TEXT NOT NULL,
    recipient_kind TEXT NOT NULL, third_party INTEGER NOT NULL,
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, items TEXT NOT NULL, image INTEGER NOT NULL,
    purposes TEXT NOT NULL, rule_id TEXT NOT NULL, policy_version TEXT NOT NULL,
    decision_id TEXT NOT NULL, part TEXT NOT NULL DEFAULT 'event', """
    + LEDGER_STATUS_COLUMN
    + """,
    UNIQUE (event_id, recipient, part));"""
)
# "One dwelling's records for a year" (§8 disclosure) is a range scan of ledger_dwelling;
# purge by age is a range scan of ledger_at.
LEDGER_INDEXES = """
CREATE INDEX IF NOT EXISTS ledger_dwelling ON ledger (building_id, dwelling_id, at);
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at);
"""

# The ids of events completed, in the order they were (a rowid table, appended at its
# end). It is read only from its end, at start (``recent_completed``, the ids a new
# process remembers), and pruned from its start: no key on the panels' random ids, whose
# index took a random page per event (migration 3). An event completed twice (a
# redelivery the gateway no longer remembered) has two rows.
COMPLETED_TABLE = """CREATE TABLE IF NOT EXISTS completed (
    event_id TEXT NOT NULL, at REAL NOT NULL);"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, building_id TEXT NOT NULL, role TEXT NOT NULL,
    dwelling_id TEXT);
CREATE TABLE IF NOT EXISTS dwellings (
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL,
    PRIMARY KEY (building_id, dwelling_id));
CREATE TABLE IF NOT EXISTS consent_current (
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, revision INTEGER NOT NULL,
    state TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (building_id, dwelling_id));
CREATE TABLE IF NOT EXISTS consent_history (
    id INTEGER PRIMARY KEY, building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL,
    change_id TEXT UNIQUE, source TEXT NOT NULL, change TEXT NOT NULL,
    applied INTEGER NOT NULL, detail TEXT NOT NULL, revision INTEGER NOT NULL,
    at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS consent_history_dwelling
    ON consent_history (building_id, dwelling_id, id);
"""
    + COMPLETED_TABLE
    + """
-- Messages delivered again whose handling never finished: the gateway died with them.
-- A row lives from the start of such a handling to its end (README, "Nothing lost").
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at REAL NOT NULL) WITHOUT ROWID;
-- The decision log. What each destination got and why (the outcomes) repeats from event
-- to event, so each distinct set is stored once, keyed by a hash of its JSON text.
CREATE TABLE IF NOT EXISTS outcome_sets (
    id TEXT PRIMARY KEY, outcomes TEXT NOT NULL) WITHOUT ROWID;
"""
    + DECISIONS_TABLE
    + LEDGER_TABLE
    + LEDGER_INDEXES
    + """
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    topic TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rejections_reason ON rejections (reason, id);
-- §8: every resident request, and what came of it, is itself on record.
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, at TEXT NOT NULL,
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, kind TEXT NOT NULL,
    via TEXT NOT NULL, params TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS requests_dwelling ON requests (building_id, dwelling_id, id);
"""
)


def utc_text(moment: datetime) -> str:
    """Timestamps are compared as text, so every bound is written as the rows are: UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give a time zone")
    return moment.astimezone(UTC).isoformat()


# Every open: WAL with synchronous=NORMAL survives a crash of the process; only a power
# loss could take back the last commits. Neither may change inside a transaction.
#
# The decision log, the ledger and the completed ids are keyed by the panels' random
# event ids, so each event's rows land on random pages of three indexes. Once those
# outgrow SQLite's own cache (2 MB by default) every insert read its pages with a
# system call and a copy: with 10 million events present the store cost 2.9 x its CPU
# per event on an empty file (``bench.store_size``, docs/benchmarks.md, issue #18).
# Mapped, a page the OS already holds costs neither (1.2 x); the cache keeps the
# indexes' upper levels and the pages a flush dirties. 2 GiB is SQLite's default
# ceiling for the map (SQLITE_MAX_MMAP_SIZE): address space, not memory.
MMAP_BYTES = 2_147_418_112
CACHE_KIB = 65_536
PRAGMAS = (
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    f" PRAGMA mmap_size = {MMAP_BYTES}; PRAGMA cache_size = -{CACHE_KIB};"
)

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);"""


LOCKED_WAIT = 30.0  # seconds another process may hold the new file while it sets it up


async def _settle_journal(connection: aiosqlite.Connection) -> None:
    """WAL mode and the migrations table. Switching a new file to WAL does not wait for
    the busy timeout when another process is doing the same (SQLite answers "database
    is locked" at once), so that one step is tried again until the other is done."""
    deadline = time.monotonic() + LOCKED_WAIT
    delay = 0.01
    while True:
        try:
            await connection.executescript(PRAGMAS + MIGRATIONS_TABLE)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)  # another process holds the lock: no event to await
        delay = min(delay * 2, 0.5)


async def migrate(connection: aiosqlite.Connection) -> None:
    """Apply the migrations this file has not had, in order, each once; committed.

    Each runs in a transaction of its own with its ``schema_migrations`` row, under
    SQLite's write lock (``BEGIN IMMEDIATE``): a second process opening the same file
    at the same moment waits, then finds the version applied.
    """
    await _settle_journal(connection)
    for version, step in enumerate(MIGRATIONS, start=1):
        if version in await _applied(connection):
            continue
        await connection.execute("BEGIN IMMEDIATE")
        try:
            if version not in await _applied(connection):
                await step(connection)
                await connection.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)",
                    (version, utc_text(datetime.now(UTC))),
                )
            await connection.commit()
        except BaseException:
            await connection.rollback()
            raise


async def _applied(connection: aiosqlite.Connection) -> set[int]:
    async with connection.execute("SELECT version FROM schema_migrations") as cursor:
        return {int(row[0]) for row in await cursor.fetchall()}


async def create(connection: aiosqlite.Connection) -> None:
    """Migration 1: every table and index, made or migrated to the current layout.

    Written before migrations were versioned, it brings a file of any earlier layout up
    to date (a file made before ``schema_migrations`` existed has no version yet), and
    leaves a current one as it is. Runs in the caller's transaction.
    """
    await run_script(
        connection,
        SCHEMA + store_statistics.SCHEMA + store_analytics.SCHEMA + store_tokens.SCHEMA,
    )
    await _migrate_decisions(connection)
    await _migrate_ledger(connection)
    await _migrate_ledger_parts(connection)
    await run_script(
        connection,
        "CREATE INDEX IF NOT EXISTS decisions_dwelling"
        " ON decisions (building_id, dwelling_id, decided_at);"
        # Rows stay "intended" for a moment only: this index stays tiny, and at start
        # the ones a stopped process left are found without a scan.
        " CREATE INDEX IF NOT EXISTS ledger_intended ON ledger (event_id)"
        " WHERE status = 'intended';",
    )


# The migrations, in order: version n is MIGRATIONS[n - 1]. Append; never reorder.
async def analytics_buildings(connection: aiosqlite.Connection) -> None:
    """Migration 2: each held analytics copy keeps its building, so that the next holder
    of its partition takes it up (several gateways, ``gateway/partitioned.py``). A file
    whose versions were lost (made before they were kept) may have the column already."""
    async with connection.execute("PRAGMA table_info(analytics_held)") as cursor:
        columns = {row[1] for row in await cursor.fetchall()}
    if "building_id" not in columns:
        await connection.execute(store_analytics.ADD_BUILDING)


async def completed_by_time(connection: aiosqlite.Connection) -> None:
    """Migration 3: the completed ids without their key (``COMPLETED_TABLE`` says why).

    A file made before has ``completed`` keyed by event id, with an index on ``at``: its
    rows are copied into the new table oldest first, so that the rowids keep their order.
    A new file has the new table already (migration 1 made it).
    """
    async with connection.execute("PRAGMA table_info(completed)") as cursor:
        keyed = any(row[5] for row in await cursor.fetchall())  # a column of the key
    if not keyed:
        return
    await run_script(
        connection,
        "DROP INDEX IF EXISTS completed_at;"
        " ALTER TABLE completed RENAME TO completed_keyed;"
        f" {COMPLETED_TABLE}"
        " INSERT INTO completed (event_id, at)"
        " SELECT event_id, at FROM completed_keyed ORDER BY at, event_id;"
        " DROP TABLE completed_keyed;",
    )


async def config_revisions(connection: aiosqlite.Connection) -> None:
    """Migration 4: the configuration revisions (§10, ``store.configs``)."""
    await run_script(connection, store_configs.SCHEMA)


async def distribution_tables(connection: aiosqlite.Connection) -> None:
    """Migration 5: contractors' distributions and the panels each went to (§2(1))."""
    await run_script(connection, store_distributions.SCHEMA)


MIGRATIONS: tuple[Callable[[aiosqlite.Connection], Awaitable[None]], ...] = (
    create,
    analytics_buildings,
    completed_by_time,
    config_revisions,
    distribution_tables,
)


async def run_script(connection: aiosqlite.Connection, script: str) -> None:
    """The statements of ``script``, one by one, in the caller's transaction
    (``executescript`` would commit it first)."""
    for statement in statements(script):
        await connection.execute(statement)


def statements(script: str) -> list[str]:
    """``script`` cut into whole statements (comments alone are dropped)."""
    found: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            code = "\n".join(
                line for line in current.splitlines() if not line.strip().startswith("--")
            )
            if code.strip(" \n;"):
                found.append(current.strip())
            current = ""
    return found


async def _migrate_ledger(connection: aiosqlite.Connection) -> None:
    """Give a ledger of the first layout its status column: its rows were all written
    after the recipient's broker acknowledged the copy, so they are "delivered"."""
    async with connection.execute("PRAGMA table_info(ledger)") as cursor:
        columns = {row[1] for row in await cursor.fetchall()}
    if "status" not in columns:
        await connection.execute(f"ALTER TABLE ledger ADD COLUMN {LEDGER_STATUS_COLUMN}")


async def _migrate_ledger_parts(connection: aiosqlite.Connection) -> None:
    """Key the ledger by (event, recipient, part): an image is a provision of its own.

    SQLite cannot change a table's UNIQUE constraint, so a ledger keyed by (event,
    recipient) is copied into the new layout, ids and all, its rows "event" rows: each
    was one message, the image inside it if its items say so.
    """
    async with connection.execute("PRAGMA table_info(ledger)") as cursor:
        columns = [row[1] for row in await cursor.fetchall()]
    if "part" in columns:
        return
    kept = ", ".join(columns)
    # The old table's indexes go with it (their names would stop the new ones).
    await run_script(
        connection,
        "DROP INDEX IF EXISTS ledger_dwelling; DROP INDEX IF EXISTS ledger_at;"
        " DROP INDEX IF EXISTS ledger_intended;"
        " ALTER TABLE ledger RENAME TO ledger_before_parts;"
        f" {LEDGER_TABLE} {LEDGER_INDEXES}"
        f" INSERT INTO ledger ({kept}) SELECT {kept} FROM ledger_before_parts ORDER BY id;"
        " DROP TABLE ledger_before_parts;",
    )


async def _migrate_decisions(connection: aiosqlite.Connection) -> None:
    """Move a decision log of the first layout (outcomes text in every row) to sets."""
    async with connection.execute("PRAGMA table_info(decisions)") as cursor:
        columns = {row[1] for row in await cursor.fetchall()}
    if "outcomes" not in columns:
        return
    async with connection.execute("SELECT DISTINCT outcomes FROM decisions") as cursor:
        texts = [row[0] for row in await cursor.fetchall()]
    await connection.executemany(
        "INSERT OR IGNORE INTO outcome_sets VALUES (?, ?)",
        [(outcome_set_id(text), text) for text in texts],
    )
    # The old table's index is dropped with it; the caller makes it for the new table.
    await run_script(
        connection,
        "DROP INDEX IF EXISTS decisions_dwelling;"
        " ALTER TABLE decisions RENAME TO decisions_first_layout;"
        f" {DECISIONS_TABLE}"
        " INSERT INTO decisions SELECT d.event_id, d.decision_id, d.building_id,"
        " d.dwelling_id, d.event_type, d.decided_at, d.policy_version, d.consent_revision,"
        " s.id FROM decisions_first_layout AS d JOIN outcome_sets AS s"
        " ON s.outcomes = d.outcomes ORDER BY d.rowid;"
        " DROP TABLE decisions_first_layout;",
    )
