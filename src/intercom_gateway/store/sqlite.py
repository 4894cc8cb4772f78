"""Durable state behind one small interface: SQLite through aiosqlite.

What must survive the gateway lives here, not only in process memory: the device
registry, every dwelling's consent (current state and append-only history), the
record of completed events (for de-duplication after a crash), the decision log,
the provision ledger and rejected input. Consent changes are committed before they
are acknowledged. Everything on the event path is buffered and written in one batch
per ``flush`` (each awaited aiosqlite call costs ~0.3 ms: pitfalls #9), and the
gateway acknowledges an event to the broker only after its batch is committed. The one
exception is the ledger's write-ahead record (``write_intents``): a provision is
committed before its copy is published, in commits of its own (``ledger.WriteAhead``).
The statistics tables are ``store_statistics``'s, and the held analytics copies
``store_analytics``'s, written in the same batches.

A later, clustered deployment replaces this class with one over a shared database;
nothing outside this module speaks SQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.records import DecisionRow as DecisionRow  # the store's rows
from intercom_gateway.core.records import LedgerRow as LedgerRow
from intercom_gateway.core.records import RejectionRow as RejectionRow
from intercom_gateway.core.records import RequestRow as RequestRow
from intercom_gateway.core.records import outcome_set_id as outcome_set_id
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.statistics import Window
from intercom_gateway.store import analytics as store_analytics
from intercom_gateway.store import statistics as store_statistics
from intercom_gateway.store.analytics import AnalyticsBatch
from intercom_gateway.store.statistics import StatisticsBatch

_DECISIONS_TABLE = """CREATE TABLE IF NOT EXISTS decisions (
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
_LEDGER_STATUS_COLUMN = "status TEXT NOT NULL DEFAULT 'delivered'"
# One row per message to a recipient: an event's facts ("event") and its image ("image")
# are separate messages under separate rules and purposes (spec item 2), so separate
# provisions. Rows from before the split are "event" rows; their items say whether the
# image came with them.
_LEDGER_TABLE = (
    """CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, recipient TEXT NOT NULL,
    recipient_kind TEXT NOT NULL, third_party INTEGER NOT NULL,
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, items TEXT NOT NULL, image INTEGER NOT NULL,
    purposes TEXT NOT NULL, rule_id TEXT NOT NULL, policy_version TEXT NOT NULL,
    decision_id TEXT NOT NULL, part TEXT NOT NULL DEFAULT 'event', """
    + _LEDGER_STATUS_COLUMN
    + """,
    UNIQUE (event_id, recipient, part));"""
)
# "One dwelling's records for a year" (§8 disclosure) is a range scan of ledger_dwelling;
# purge by age is a range scan of ledger_at.
_LEDGER_INDEXES = """
CREATE INDEX IF NOT EXISTS ledger_dwelling ON ledger (building_id, dwelling_id, at);
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at);
"""

SCHEMA = (
    """
PRAGMA journal_mode = WAL;
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
CREATE TABLE IF NOT EXISTS completed (
    event_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS completed_at ON completed (at);
-- Messages delivered again whose handling never finished: the gateway died with them.
-- A row lives from the start of such a handling to its end (README, "Nothing lost").
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at REAL NOT NULL) WITHOUT ROWID;
-- The decision log. What each destination got and why (the outcomes) repeats from event
-- to event, so each distinct set is stored once, keyed by a hash of its JSON text.
CREATE TABLE IF NOT EXISTS outcome_sets (
    id TEXT PRIMARY KEY, outcomes TEXT NOT NULL) WITHOUT ROWID;
"""
    + _DECISIONS_TABLE
    + _LEDGER_TABLE
    + _LEDGER_INDEXES
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


@dataclass
class _Batch:
    outcome_sets: list[tuple[str, str]] = field(default_factory=list)
    decisions: list[tuple[Any, ...]] = field(default_factory=list)
    ledger: list[tuple[Any, ...]] = field(default_factory=list)  # delivered provisions
    # Intents' keys: (event, recipient, part).
    delivered: list[tuple[str, str, str]] = field(default_factory=list)
    unconfirmed: list[tuple[str, str, str]] = field(default_factory=list)
    completed: list[tuple[str, float]] = field(default_factory=list)
    rejections: list[tuple[Any, ...]] = field(default_factory=list)
    statistics: StatisticsBatch = field(default_factory=StatisticsBatch)
    analytics: AnalyticsBatch = field(default_factory=AnalyticsBatch)

    def __bool__(self) -> bool:
        return bool(
            self.outcome_sets
            or self.decisions
            or self.ledger
            or self.delivered
            or self.unconfirmed
            or self.completed
            or self.rejections
            or self.statistics
            or self.analytics
        )


# Outcome sets this process has recorded, by text; past this many it starts over (a set
# recorded again is ignored by the store).
_OUTCOME_SETS_REMEMBERED = 4_096

# The decision log's columns as readers have always seen them: the outcomes text, not
# the key of its set.
_DECISION_COLUMNS = (
    "d.event_id, d.decision_id, d.building_id, d.dwelling_id, d.event_type, d.decided_at,"
    " d.policy_version, d.consent_revision, s.outcomes"
)

_LEDGER_COLUMNS = (
    "at, recipient, recipient_kind, third_party, building_id, dwelling_id, event_id, "
    "event_type, items, image, purposes, rule_id, policy_version, decision_id, part, status"
)
_LEDGER_VALUES = "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"


class Store:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._batch = _Batch()
        self._outcome_sets: dict[str, str] = {}  # text -> id, recorded by this process
        # One transaction at a time on the one connection: a commit of one writer in the
        # middle of another's statements would commit half a batch, or fail outright
        # ("SQL statements in progress") and stop the gateway.
        self._writing = asyncio.Lock()
        self._finished_attempts: list[str] = []

    @property
    def connection(self) -> aiosqlite.Connection:
        """The open connection, for a module that keeps its own tables in this file."""
        return self._db

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Store]:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(path) as connection:
            connection.row_factory = aiosqlite.Row
            # WAL with synchronous=NORMAL survives a crash of the process; only a
            # power loss could take back the last commits.
            await connection.executescript(
                SCHEMA
                + store_statistics.SCHEMA
                + store_analytics.SCHEMA
                + "PRAGMA synchronous = NORMAL;"
            )
            await _migrate_decisions(connection)
            await _migrate_ledger(connection)
            await _migrate_ledger_parts(connection)
            await connection.executescript(
                "CREATE INDEX IF NOT EXISTS decisions_dwelling"
                " ON decisions (building_id, dwelling_id, decided_at);"
                # Rows stay "intended" for a moment only: this index stays tiny, and at
                # start the ones a stopped process left are found without a scan.
                " CREATE INDEX IF NOT EXISTS ledger_intended ON ledger (event_id)"
                " WHERE status = 'intended';"
            )
            await connection.commit()
            store = cls(connection)
            try:
                yield store
            finally:
                await store.flush()

    # --- registry ---------------------------------------------------------------------

    async def sync_registry(self, registry: Registry) -> None:
        await self._db.executemany(
            "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?)",
            [(d.id, b.id, d.role.value, d.dwelling) for b, d in registry.devices()],
        )
        await self._db.executemany(
            "INSERT OR IGNORE INTO dwellings VALUES (?, ?)",
            [(b.id, d.id) for b, d in registry.dwellings()],
        )
        await self._db.commit()

    async def registered_devices(self) -> list[dict[str, Any]]:
        async with self._db.execute("SELECT * FROM devices ORDER BY device_id") as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    # --- consent ----------------------------------------------------------------------

    async def consents(self) -> dict[tuple[str, str], ConsentState]:
        async with self._db.execute("SELECT state FROM consent_current") as cursor:
            states = [ConsentState.model_validate_json(row[0]) for row in await cursor.fetchall()]
        return {(s.building_id, s.dwelling_id): s for s in states}

    async def consent_change_seen(self, change_id: str) -> bool:
        async with self._db.execute(
            "SELECT 1 FROM consent_history WHERE change_id = ?", (change_id,)
        ) as cursor:
            return await cursor.fetchone() is not None

    async def save_consent(
        self,
        state: ConsentState,
        *,
        change: str,
        change_id: str | None,
        source: str,
        applied: bool,
        detail: str,
        at: datetime,
    ) -> None:
        """Append to the history and replace the current state, in one commit."""
        async with self._writing:
            await self._db.execute(
                "INSERT INTO consent_history (building_id, dwelling_id, change_id, source, change,"
                " applied, detail, revision, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.building_id,
                    state.dwelling_id,
                    change_id,
                    source,
                    change,
                    int(applied),
                    detail,
                    state.revision,
                    at.isoformat(),
                ),
            )
            if applied:
                await self._db.execute(
                    "INSERT OR REPLACE INTO consent_current VALUES (?, ?, ?, ?, ?)",
                    (
                        state.building_id,
                        state.dwelling_id,
                        state.revision,
                        state.model_dump_json(),
                        at.isoformat(),
                    ),
                )
            await self._db.commit()

    async def seed_consents(
        self, entries: Sequence[tuple[ConsentState, str]], *, source: str, detail: str, at: datetime
    ) -> None:
        """Record many initial consents (state, the change that set it) in one transaction.

        One commit per dwelling made a 10,000-dwelling start-up take a minute.
        """
        when = at.isoformat()
        await self._db.executemany(
            "INSERT INTO consent_history (building_id, dwelling_id, change_id, source, change,"
            " applied, detail, revision, at) VALUES (?, ?, NULL, ?, ?, 1, ?, ?, ?)",
            [
                (s.building_id, s.dwelling_id, source, change, detail, s.revision, when)
                for s, change in entries
            ],
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO consent_current VALUES (?, ?, ?, ?, ?)",
            [
                (s.building_id, s.dwelling_id, s.revision, s.model_dump_json(), when)
                for s, _ in entries
            ],
        )
        await self._db.commit()

    async def consent_history(self, building_id: str, dwelling_id: str) -> list[dict[str, Any]]:
        async with self._db.execute(
            "SELECT * FROM consent_history WHERE building_id = ? AND dwelling_id = ? ORDER BY id",
            (building_id, dwelling_id),
        ) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    # --- the event path: buffered, written by flush() -----------------------------------

    def record_decision(self, row: DecisionRow) -> None:
        set_id = self._outcome_sets.get(row.outcomes)
        if set_id is None:
            if len(self._outcome_sets) >= _OUTCOME_SETS_REMEMBERED:
                self._outcome_sets.clear()
            set_id = self._outcome_sets[row.outcomes] = outcome_set_id(row.outcomes)
            self._batch.outcome_sets.append((set_id, row.outcomes))
        self._batch.decisions.append(
            (
                row.event_id,
                row.decision_id,
                row.building_id,
                row.dwelling_id,
                row.event_type,
                row.decided_at.isoformat(),
                row.policy_version,
                row.consent_revision,
                set_id,
            )
        )

    async def write_intents(self, rows: Sequence[LedgerRow]) -> None:
        """Commit provisions about to be published, as "intended", at once (not batched).

        The ledger's write-ahead record: a copy to a recipient is published only after
        this returns. A row that exists already (an event handled again) is kept as it is.
        """
        async with self._writing:
            await self._db.executemany(
                f"INSERT OR IGNORE INTO ledger ({_LEDGER_COLUMNS}) {_LEDGER_VALUES}, 'intended')",
                [row.as_params() for row in rows],
            )
            await self._db.commit()

    def record_provisions(self, rows: Iterable[LedgerRow]) -> None:
        """Provisions the recipients' broker acknowledged: "delivered", intended or not."""
        self._batch.ledger.extend(row.as_params() for row in rows)

    def record_delivered(self, rows: Iterable[LedgerRow]) -> None:
        """Like ``record_provisions``, for rows whose intent is committed: a key is enough."""
        self._batch.delivered.extend((row.event_id, row.recipient, row.part) for row in rows)

    def record_unconfirmed(self, rows: Iterable[LedgerRow]) -> None:
        """Intents whose publish this process lost track of; a delivered row stays so."""
        self._batch.unconfirmed.extend((row.event_id, row.recipient, row.part) for row in rows)

    async def mark_unconfirmed(self) -> int:
        """At start: what a stopped process intended but never completed (§8: kept, as
        "unconfirmed"). Assumes one gateway per store file. Returns how many rows."""
        async with self._writing:
            cursor = await self._db.execute(
                "UPDATE ledger SET status = 'unconfirmed' WHERE status = 'intended'"
            )
            await self._db.commit()
        return cursor.rowcount

    def record_statistic(self, window: Window, event_type: str) -> None:
        """One event counted in ``window``; written with the event's completion."""
        self._batch.statistics.count(window, event_type)

    def record_window_published(self, window: Window, *, closed_before: datetime) -> None:
        """The broker acknowledged the window's aggregate: its counts can go."""
        self._batch.statistics.mark_published(window, closed_before)

    async def statistics_windows(self) -> tuple[list[tuple[Window, str, int]], datetime | None]:
        """The open windows' counts and the start of the oldest window still open."""
        return await store_statistics.load(self._db)

    def record_analytics_held(self, copy: HeldCopy) -> None:
        """One analytics copy held for its window; written with its event's completion."""
        self._batch.analytics.hold(copy)

    def record_analytics_released(self, copy_id: str) -> None:
        """The broker acknowledged a held analytics copy: it can go."""
        self._batch.analytics.release(copy_id)

    async def analytics_held(self) -> list[HeldCopy]:
        """The analytics copies held and not yet acknowledged by the broker."""
        return await store_analytics.load(self._db)

    def record_completed(self, event_id: str, at: float) -> None:
        self._batch.completed.append((event_id, at))

    def record_rejection(self, row: RejectionRow) -> None:
        self._batch.rejections.append(
            (row.at.isoformat(), row.reason, row.detail, row.topic, row.payload)
        )

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    async def flush(self) -> None:
        """Write everything recorded since the last flush in one transaction."""
        async with self._writing:
            batch, self._batch = self._batch, _Batch()
            if not batch and not self._finished_attempts:
                return
            try:
                await self._forget_finished_attempts()
                await self._write(batch)
            except BaseException:
                # Sets recorded in the lost batch must be recorded again with later rows.
                self._outcome_sets.clear()
                raise

    async def _write(self, batch: _Batch) -> None:
        db = self._db
        if batch.outcome_sets:
            await db.executemany(
                "INSERT OR IGNORE INTO outcome_sets VALUES (?, ?)", batch.outcome_sets
            )
        if batch.decisions:
            await db.executemany(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch.decisions,
            )
        if batch.unconfirmed:
            # Before the deliveries: a redelivery in the same batch upgrades it again.
            await db.executemany(
                "UPDATE ledger SET status = 'unconfirmed'"
                " WHERE event_id = ? AND recipient = ? AND part = ? AND status = 'intended'",
                batch.unconfirmed,
            )
        if batch.ledger:
            # The UNIQUE (event_id, recipient, part) key makes a redelivered event's
            # second provision an update of the first row's status: the ledger never
            # counts one twice, and keeps what the first record said.
            await db.executemany(
                f"INSERT INTO ledger ({_LEDGER_COLUMNS}) {_LEDGER_VALUES}, 'delivered')"
                " ON CONFLICT (event_id, recipient, part) DO UPDATE SET status = 'delivered'",
                batch.ledger,
            )
        if batch.delivered:
            await db.executemany(
                "UPDATE ledger SET status = 'delivered'"
                " WHERE event_id = ? AND recipient = ? AND part = ?",
                batch.delivered,
            )
        if batch.completed:
            await db.executemany("INSERT OR IGNORE INTO completed VALUES (?, ?)", batch.completed)
        if batch.rejections:
            await db.executemany(
                "INSERT INTO rejections (at, reason, detail, topic, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                batch.rejections,
            )
        if batch.statistics:
            await store_statistics.write(db, batch.statistics)
        if batch.analytics:
            await store_analytics.write(db, batch.analytics)
        await db.commit()

    async def begin_attempt(self, key: str) -> int:
        """Count one more delivery of a message about to be handled; committed at once.

        Only redelivered messages are counted (one commit each before and after), so the
        cost falls on the few after a crash or a lost connection, not on the stream.
        """
        async with self._writing:
            # The handlings that finished before this one are forgotten in the same
            # commit: the message handled just before a poison is never blamed for it.
            await self._forget_finished_attempts()
            async with self._db.execute(
                "INSERT INTO attempts VALUES (?, 1, ?) ON CONFLICT (key) DO"
                " UPDATE SET count = count + 1, last_at = excluded.last_at RETURNING count",
                (key, time.time()),
            ) as cursor:
                row = await cursor.fetchone()
            await self._db.commit()
        return int(row[0]) if row else 1

    def end_attempt(self, key: str) -> None:
        """The handling finished (forwarded, rejected or set aside): forget the count.

        Buffered: written by the next ``begin_attempt`` or ``flush``, whichever is first.
        """
        self._finished_attempts.append(key)

    async def _forget_finished_attempts(self) -> None:
        done, self._finished_attempts = self._finished_attempts, []
        if done:
            await self._db.executemany("DELETE FROM attempts WHERE key = ?", [(k,) for k in done])

    async def recent_completed(self, limit: int) -> list[str]:
        async with self._db.execute(
            "SELECT event_id FROM completed ORDER BY at DESC LIMIT ?", (limit,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [row[0] for row in reversed(list(rows))]

    async def prune_completed(self, keep: int) -> int:
        cursor = await self._db.execute(
            "DELETE FROM completed WHERE at < (SELECT at FROM completed ORDER BY at DESC"
            " LIMIT 1 OFFSET ?)",
            (keep,),
        )
        await self._db.commit()
        return cursor.rowcount

    # --- queries ----------------------------------------------------------------------

    async def decision(self, event_id: str) -> dict[str, Any] | None:
        async with self._db.execute(
            f"SELECT {_DECISION_COLUMNS} FROM decisions AS d"
            " JOIN outcome_sets AS s ON s.id = d.outcome_set WHERE d.event_id = ?",
            (event_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        result = dict(row)
        result["outcomes"] = json.loads(result["outcomes"])
        return result

    async def provisions(
        self,
        *,
        building_id: str | None = None,
        dwelling_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        where, params = _filters(building_id, dwelling_id, start, end)
        sql = f"SELECT * FROM ledger {where} ORDER BY at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        async with self._db.execute(sql, params) as cursor:
            rows = [dict(row) for row in await cursor.fetchall()]
        for row in rows:
            row["items"] = json.loads(row["items"])
            row["purposes"] = json.loads(row["purposes"])
            row["third_party"] = bool(row["third_party"])
            row["image"] = bool(row["image"])
        return rows

    async def rejections(self, *, limit: int = 100) -> list[dict[str, Any]]:
        async with self._db.execute(
            "SELECT * FROM rejections ORDER BY id DESC LIMIT ?", (limit,)
        ) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def counts(self) -> dict[str, int]:
        result = {}
        for table in ("decisions", "ledger", "rejections", "completed", "consent_history"):
            async with self._db.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
                row = await cursor.fetchone()
            result[table] = int(row[0]) if row else 0
        return result

    # --- retention and resident requests (§8) -------------------------------------------

    async def purge_ledger(self, *, before: datetime, chunk: int = 10_000) -> int:
        """Delete ledger rows recorded before ``before``; returns how many went.

        In chunks of one commit each: a running gateway writes to the same file, and one
        long delete would hold the write lock past its busy timeout.
        """
        deleted = 0
        while True:
            cursor = await self._db.execute(
                "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at < ? LIMIT ?)",
                (_utc(before), chunk),
            )
            await self._db.commit()
            deleted += cursor.rowcount
            if cursor.rowcount < chunk:
                return deleted

    async def dwelling_known(self, building_id: str, dwelling_id: str) -> bool:
        for table in ("dwellings", "consent_current"):
            async with self._db.execute(
                f"SELECT 1 FROM {table} WHERE building_id = ? AND dwelling_id = ?",
                (building_id, dwelling_id),
            ) as cursor:
                if await cursor.fetchone() is not None:
                    return True
        return False

    async def dwelling_panel(self, building_id: str, dwelling_id: str) -> str | None:
        """The device id of the dwelling's own panel, which speaks for its settings."""
        async with self._db.execute(
            "SELECT device_id FROM devices WHERE building_id = ? AND dwelling_id = ?"
            " AND role = 'dwelling_panel' ORDER BY device_id LIMIT 1",
            (building_id, dwelling_id),
        ) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def consent(self, building_id: str, dwelling_id: str) -> ConsentState | None:
        async with self._db.execute(
            "SELECT state FROM consent_current WHERE building_id = ? AND dwelling_id = ?",
            (building_id, dwelling_id),
        ) as cursor:
            row = await cursor.fetchone()
        return ConsentState.model_validate_json(row[0]) if row else None

    async def ledger_summary(self, building_id: str, dwelling_id: str) -> dict[str, Any]:
        """How many provision records the dwelling has, per recipient and status, and
        their span."""
        key = (building_id, dwelling_id)
        by_status = ", ".join(f"SUM(status = '{s}') AS {s}" for s in LEDGER_STATUSES)
        async with self._db.execute(
            "SELECT recipient, third_party, COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last,"
            f" {by_status} FROM ledger WHERE building_id = ? AND dwelling_id = ?"
            " GROUP BY recipient, third_party ORDER BY recipient",
            key,
        ) as cursor:
            rows = [dict(row) for row in await cursor.fetchall()]
        return {
            "rows": sum(r["n"] for r in rows),
            "by_status": {s: sum(r[s] for r in rows) for s in LEDGER_STATUSES},
            "by_recipient": [{**r, "third_party": bool(r["third_party"])} for r in rows],
        }

    async def decision_summary(self, building_id: str, dwelling_id: str) -> dict[str, Any]:
        async with self._db.execute(
            "SELECT event_type, COUNT(*) AS n, MIN(decided_at) AS first, MAX(decided_at) AS last"
            " FROM decisions WHERE building_id = ? AND dwelling_id = ?"
            " GROUP BY event_type ORDER BY event_type",
            (building_id, dwelling_id),
        ) as cursor:
            rows = [dict(row) for row in await cursor.fetchall()]
        return {"events": sum(r["n"] for r in rows), "by_event_type": rows}

    async def dwelling_rejections(self, building_id: str, dwelling_id: str) -> list[dict[str, Any]]:
        """Rejected input that names the dwelling, or came from its own panel."""
        where, params = self._rejection_filter(building_id, dwelling_id)
        async with self._db.execute(
            f"SELECT id, at, reason, detail, topic FROM rejections WHERE {where} ORDER BY id",
            params,
        ) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    @staticmethod
    def _rejection_filter(building_id: str, dwelling_id: str) -> tuple[str, tuple[str, ...]]:
        # A rejected payload may not parse, so attribution is by the dwelling panel's
        # topic (devices table), or by the ids the payload itself names when it is JSON.
        where = (
            "EXISTS (SELECT 1 FROM devices AS d WHERE d.building_id = ? AND d.dwelling_id = ?"
            " AND d.role = 'dwelling_panel' AND substr(topic, 1, length(d.device_id) + 14"
            " + length(d.building_id)) = 'intercom/v1/' || d.building_id || '/' || d.device_id"
            " || '/')"
            " OR (json_valid(payload) AND json_extract(payload, '$.building_id') = ?"
            " AND json_extract(payload, '$.dwelling_id') = ?)"
        )
        return where, (building_id, dwelling_id, building_id, dwelling_id)

    async def erase_dwelling(self, building_id: str, dwelling_id: str) -> dict[str, int]:
        """Erase the decision log and rejected input of one dwelling, in one commit.

        The ledger and the consent history are not touched here: see resident.erase.
        """
        cursor = await self._db.execute(
            "DELETE FROM decisions WHERE building_id = ? AND dwelling_id = ?",
            (building_id, dwelling_id),
        )
        decisions = cursor.rowcount
        where, params = self._rejection_filter(building_id, dwelling_id)
        cursor = await self._db.execute(f"DELETE FROM rejections WHERE {where}", params)
        await self._db.commit()
        return {"decisions": decisions, "rejections": cursor.rowcount}

    async def record_request(self, row: RequestRow) -> None:
        """Committed at once: a request is on record before its answer is given."""
        await self._db.execute(
            "INSERT INTO requests (request_id, at, building_id, dwelling_id, kind, via, params,"
            " outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.request_id,
                _utc(row.at),
                row.building_id,
                row.dwelling_id,
                row.kind,
                row.via,
                json.dumps(row.params, default=str),
                row.outcome,
                json.dumps(row.detail, default=str),
            ),
        )
        await self._db.commit()

    async def requests(self, building_id: str, dwelling_id: str) -> list[dict[str, Any]]:
        async with self._db.execute(
            "SELECT request_id, at, kind, via, params, outcome FROM requests"
            " WHERE building_id = ? AND dwelling_id = ? ORDER BY id",
            (building_id, dwelling_id),
        ) as cursor:
            rows = [dict(row) for row in await cursor.fetchall()]
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows


async def _migrate_ledger(connection: aiosqlite.Connection) -> None:
    """Give a ledger of the first layout its status column: its rows were all written
    after the recipient's broker acknowledged the copy, so they are "delivered"."""
    async with connection.execute("PRAGMA table_info(ledger)") as cursor:
        columns = {row[1] for row in await cursor.fetchall()}
    if "status" not in columns:
        await connection.execute(f"ALTER TABLE ledger ADD COLUMN {_LEDGER_STATUS_COLUMN}")


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
    await connection.executescript(
        "BEGIN;"
        " DROP INDEX IF EXISTS ledger_dwelling; DROP INDEX IF EXISTS ledger_at;"
        " DROP INDEX IF EXISTS ledger_intended;"
        " ALTER TABLE ledger RENAME TO ledger_before_parts;"
        f" {_LEDGER_TABLE} {_LEDGER_INDEXES}"
        f" INSERT INTO ledger ({kept}) SELECT {kept} FROM ledger_before_parts ORDER BY id;"
        " DROP TABLE ledger_before_parts;"
        " COMMIT;"
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
    await connection.executescript(
        "BEGIN;"
        " DROP INDEX IF EXISTS decisions_dwelling;"
        " ALTER TABLE decisions RENAME TO decisions_first_layout;"
        f" {_DECISIONS_TABLE}"
        " INSERT INTO decisions SELECT d.event_id, d.decision_id, d.building_id,"
        " d.dwelling_id, d.event_type, d.decided_at, d.policy_version, d.consent_revision,"
        " s.id FROM decisions_first_layout AS d JOIN outcome_sets AS s"
        " ON s.outcomes = d.outcomes ORDER BY d.rowid;"
        " DROP TABLE decisions_first_layout;"
        " COMMIT;"
    )


def _utc(moment: datetime) -> str:
    """Timestamps are compared as text, so every bound is written as the rows are: UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give a time zone")
    return moment.astimezone(UTC).isoformat()


def _filters(
    building_id: str | None, dwelling_id: str | None, start: datetime | None, end: datetime | None
) -> tuple[str, Sequence[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("building_id", building_id), ("dwelling_id", dwelling_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if start is not None:
        clauses.append("at >= ?")
        params.append(_utc(start))
    if end is not None:
        clauses.append("at < ?")
        params.append(_utc(end))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
