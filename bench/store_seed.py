"""Build a store of the size a complex reaches in three years, fast, for the benches.

Writes ``--rows`` decisions (with their outcome sets), two or three provisions each to
the ledger (the concierge, the parcel service, sometimes the building's group) and each
event's completed id, straight into the tables, not through MQTT: the real schema (the
store opens the file or database first, so every migration is applied), spread over
``--buildings`` x ``--dwellings`` and three years, random UUID event ids as panels make
them, from a seeded RNG (the same ``--seed`` builds the same rows).

For speed, ids are drawn in ascending order (uniform random UUIDs, one per slice of the
id space), so each unique index on an event id grows at its end; the other indexes are
dropped first and made again at the end, as the schema has them. SQLite: no journal and
no fsync during the load, then WAL again. PostgreSQL: ``COPY`` (asyncpg
``copy_records_to_table``) into tables without their indexes and keys, which are made
again after, then ``ANALYZE`` (what autovacuum would have done).

``.venv/bin/python -m bench.store_seed --rows 10000000 --store sqlite:////var/tmp/s.sqlite``
``.venv/bin/python -m bench.store_seed --rows 10000000 --store postgresql://...``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intercom_gateway.core.records import outcome_set_id
from intercom_gateway.store.opening import POSTGRES_SCHEMES, SQLITE_SCHEME

RECIPIENTS = (
    ("partner:concierge", "partner", True, "partner-events"),
    ("partner:parcel-unlock", "unlock_service", True, "parcel-unlock"),
    ("group", "group", False, "group-notify"),
)
EVENT_TYPES = ("visitor", "visitor", "visitor", "delivery", "door_open", "alarm")
OUTCOME_SETS = tuple(
    json.dumps(
        [
            {"destination": "cloud", "forwarded": forwarded, "purposes": ["partner_provision"]},
            {"destination": "group", "forwarded": group, "purposes": ["resident_notice"]},
        ]
    )
    for forwarded in (True, False)
    for group in (True, False)
)
END = datetime(2026, 11, 1, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)
CHUNK = 50_000  # events per executemany / COPY


@dataclass(frozen=True)
class Chunk:
    """One slice of events as rows: decisions, ledger rows and completed ids.

    Moments are datetimes; each backend turns them into what its columns hold."""

    decisions: list[tuple[Any, ...]]
    ledger: list[tuple[Any, ...]]
    completed: list[tuple[str, float]]


def chunks(rows: int, *, buildings: int, dwellings: int, seed: int) -> Iterator[Chunk]:
    """``rows`` events in slices of ``CHUNK``, event ids ascending."""
    rng = random.Random(seed)
    step = (1 << 128) // rows
    sets = [outcome_set_id(text) for text in OUTCOME_SETS]
    items = json.dumps(["event_type", "at", "dwelling_id"])
    start = END - SPAN
    span_us = int(SPAN.total_seconds() * 1e6)
    for first in range(0, rows, CHUNK):
        decisions: list[tuple[Any, ...]] = []
        ledger: list[tuple[Any, ...]] = []
        completed: list[tuple[str, float]] = []
        for n in range(first, min(first + CHUNK, rows)):
            event_id = str(uuid.UUID(int=n * step + rng.randrange(step), version=4))
            decision_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            building = f"b{rng.randrange(buildings):03d}"
            dwelling = f"d{rng.randrange(dwellings):04d}"
            at = start + timedelta(microseconds=rng.randrange(span_us))
            event_type = EVENT_TYPES[n % len(EVENT_TYPES)]
            policy = f"20{24 + n % 3}-04-01"
            decisions.append(
                (
                    event_id, decision_id, building, dwelling, event_type, at, policy,
                    1 + n % 5, sets[n % len(sets)],
                )
            )  # fmt: skip
            for recipient, kind, third_party, rule in RECIPIENTS[: 2 + n % 2]:
                ledger.append(
                    (
                        at, recipient, kind, third_party, building, dwelling, event_id,
                        event_type, items, False, '["partner_provision"]', rule, policy,
                        decision_id, "event", "delivered",
                    )
                )  # fmt: skip
            completed.append((event_id, at.timestamp()))
        yield Chunk(decisions, ledger, completed)


LEDGER_COLUMNS = (
    "at", "recipient", "recipient_kind", "third_party", "building_id", "dwelling_id",
    "event_id", "event_type", "items", "image", "purposes", "rule_id", "policy_version",
    "decision_id", "part", "status",
)  # fmt: skip
# The decisions' own columns: on PostgreSQL, seq and xid (migration 4) take their defaults.
DECISION_COLUMNS = (
    "event_id", "decision_id", "building_id", "dwelling_id", "event_type", "decided_at",
    "policy_version", "consent_revision", "outcome_set",
)  # fmt: skip
SEEDED = ("decisions", "ledger", "completed")


def _progress(done: int, rows: int, began: float) -> None:
    elapsed = time.monotonic() - began
    print(f"  {done:>11,} / {rows:,} events  {elapsed:6.0f} s", flush=True)


# --- SQLite ---------------------------------------------------------------------------


def seed_sqlite(path: Path, rows: int, *, buildings: int, dwellings: int, seed: int) -> None:
    from intercom_gateway.store.sqlite import SqliteStore

    async def made() -> None:
        async with SqliteStore.open(path):
            pass

    asyncio.run(made())
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "PRAGMA journal_mode = DELETE; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
        " PRAGMA cache_size = -1000000; PRAGMA temp_store = FILE;"
    )
    indexes = [
        (name, sql)
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN ({', '.join('?' * len(SEEDED))})",
            SEEDED,
        )
    ]
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    db.executemany(
        "INSERT OR IGNORE INTO outcome_sets VALUES (?, ?)",
        [(outcome_set_id(text), text) for text in OUTCOME_SETS],
    )
    began = time.monotonic()
    done = 0
    for chunk in chunks(rows, buildings=buildings, dwellings=dwellings, seed=seed):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*d[:5], d[5].isoformat(), *d[6:]) for d in chunk.decisions],
        )
        db.executemany(
            f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) VALUES"
            f" ({', '.join('?' * len(LEDGER_COLUMNS))})",
            [(r[0].isoformat(), *r[1:]) for r in chunk.ledger],
        )
        db.executemany("INSERT INTO completed VALUES (?, ?)", chunk.completed)
        db.execute("COMMIT")
        done += len(chunk.decisions)
        if done % 500_000 < CHUNK:
            _progress(done, rows, began)
    for name, sql in indexes:
        print(f"  index {name}  {time.monotonic() - began:6.0f} s", flush=True)
        db.execute(sql)
    db.execute("PRAGMA journal_mode = WAL")
    db.close()


# --- PostgreSQL ------------------------------------------------------------------------


async def seed_postgres(dsn: str, rows: int, *, buildings: int, dwellings: int, seed: int) -> None:
    import asyncpg

    from intercom_gateway.store.postgres import PostgresStore

    async with PostgresStore.open(dsn):
        pass
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("SET maintenance_work_mem = '1GB'; SET synchronous_commit = off")
        rebuild = await _drop_keys(db)
        await db.executemany(
            "INSERT INTO outcome_sets VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(outcome_set_id(text), text) for text in OUTCOME_SETS],
        )
        began = time.monotonic()
        done = 0
        for chunk in chunks(rows, buildings=buildings, dwellings=dwellings, seed=seed):
            await db.copy_records_to_table(
                "decisions", records=chunk.decisions, columns=DECISION_COLUMNS
            )
            await db.copy_records_to_table("ledger", records=chunk.ledger, columns=LEDGER_COLUMNS)
            await db.copy_records_to_table("completed", records=chunk.completed)
            done += len(chunk.decisions)
            if done % 500_000 < CHUNK:
                _progress(done, rows, began)
        for statement in rebuild:
            print(f"  {statement[:70]}  {time.monotonic() - began:6.0f} s", flush=True)
            await db.execute(statement)
        await db.execute("ANALYZE decisions; ANALYZE ledger; ANALYZE completed")
    finally:
        await db.close()


async def _drop_keys(db: Any) -> list[str]:
    """Drop the seeded tables' keys and indexes; the statements that make them again,
    keys first (an index may depend on nothing else, a foreign key on a key)."""
    constraints = await db.fetch(
        "SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def,"
        " contype FROM pg_constraint WHERE conrelid::regclass::text = ANY($1)"
        " AND contype IN ('p', 'u', 'f')",
        list(SEEDED),
    )
    indexes = await db.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1)"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
        list(SEEDED),
    )
    for row in indexes:
        await db.execute(f"DROP INDEX {row['indexname']}")
    for row in sorted(constraints, key=lambda r: r["contype"] != "f"):
        await db.execute(f"ALTER TABLE {row['tab']} DROP CONSTRAINT {row['conname']}")
    keys = sorted(constraints, key=lambda r: r["contype"] == "f")
    return [
        *(f"ALTER TABLE {r['tab']} ADD CONSTRAINT {r['conname']} {r['def']}" for r in keys),
        *(row["indexdef"] for row in indexes),
    ]


def size(store: str) -> str:
    """The file's size, or the database's, for the closing line."""
    if store.startswith(SQLITE_SCHEME):
        path = Path(store[len(SQLITE_SCHEME) :])
        return f"{path.stat().st_size / 1e9:.1f} GB file"

    async def measured() -> int:
        import asyncpg

        db = await asyncpg.connect(store)
        try:
            return int(await db.fetchval("SELECT pg_database_size(current_database())"))
        finally:
            await db.close()

    return f"{asyncio.run(measured()) / 1e9:.1f} GB database"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="events (decisions)")
    parser.add_argument("--store", help="sqlite:///path or postgresql://...")
    parser.add_argument(
        "--postgres-dir", type=Path, help="instead of --store: a PostgreSQL of our own there"
    )
    parser.add_argument("--buildings", type=int, default=10)
    parser.add_argument("--dwellings", type=int, default=200, help="per building")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    shape = {"buildings": args.buildings, "dwellings": args.dwellings, "seed": args.seed}
    began = time.monotonic()
    if args.postgres_dir is not None:
        from intercom_gateway.qa.postgres import PostgresServer

        with PostgresServer(args.postgres_dir) as server:
            asyncio.run(seed_postgres(server.dsn, args.rows, **shape))
            print(f"seeded {args.rows:,} events in {time.monotonic() - began:.0f} s:", end=" ")
            print(size(server.dsn))
        return
    if args.store is None:
        parser.error("--store or --postgres-dir")
    if args.store.startswith(POSTGRES_SCHEMES):
        asyncio.run(seed_postgres(args.store, args.rows, **shape))
    elif args.store.startswith(SQLITE_SCHEME):
        seed_sqlite(Path(args.store[len(SQLITE_SCHEME) :]), args.rows, **shape)
    else:
        parser.error("--store: sqlite:///path or postgresql://...")
    print(f"seeded {args.rows:,} events in {time.monotonic() - began:.0f} s: {size(args.store)}")


if __name__ == "__main__":
    main()
