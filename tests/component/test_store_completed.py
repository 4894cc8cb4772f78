"""The completed event ids: read back newest last, pruned oldest first, on both stores.

A gateway remembers the ids ``recent_completed`` gives it at start and drops a
redelivered event whose id it remembers, so the order matters: the newest are the ones
kept. The table has no key on the event id (migration 3 of each backend took it away,
the index cost a random page per event), so an event completed twice has two rows and is
still remembered. A store of the keyed layout keeps its ids, in their order, through the
migration.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import asyncpg

from intercom_gateway.store import Store
from intercom_gateway.store import schema as sqlite_schema
from intercom_gateway.store.postgres import PostgresStore
from intercom_gateway.store.postgres import schema as postgres_schema
from intercom_gateway.store.sqlite import SqliteStore
from tests.stores import Databases


async def _complete(store: Store, *ids: str, start: float = 1.0) -> None:
    for n, event_id in enumerate(ids):
        store.record_completed(event_id, start + n)
    await store.flush()


async def test_the_newest_ids_are_read_back_and_the_oldest_pruned(any_store: Store) -> None:
    store = any_store  # SQLite, then PostgreSQL
    await _complete(store, "e1", "e2", "e3")
    await _complete(store, "e4", "e5", start=10.0)  # a later batch

    assert await store.recent_completed(3) == ["e3", "e4", "e5"]
    assert await store.prune_completed(2) == 3
    assert await store.recent_completed(10) == ["e4", "e5"]
    assert await store.prune_completed(2) == 0


async def test_an_event_completed_again_is_still_remembered(any_store: Store) -> None:
    store = any_store  # SQLite, then PostgreSQL
    await _complete(store, "e1", "e2")
    # Redelivered after the gateway forgot it, and completed a second time.
    await _complete(store, "e1", start=5.0)

    assert (await store.recent_completed(1)) == ["e1"]
    assert set(await store.recent_completed(10)) == {"e1", "e2"}


KEYED_COMPLETED = """
DROP TABLE completed;
CREATE TABLE completed (event_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX completed_at ON completed (at);
"""


async def test_sqlite_completed_ids_of_the_keyed_layout_are_kept_in_order(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    async with SqliteStore.open(path):
        pass
    # Back to the layout before migration 3, its rows written out of time order.
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(KEYED_COMPLETED)
        db.executemany(
            "INSERT INTO completed VALUES (?, ?)", [("e3", 3.0), ("e1", 1.0), ("e2", 2.0)]
        )
        db.execute("DELETE FROM schema_migrations WHERE version = 3")

    async with SqliteStore.open(path) as store:
        migrated = await store.recent_completed(10)
        await _complete(store, "e4", start=4.0)
        after = await store.recent_completed(2)

    assert migrated == ["e1", "e2", "e3"]
    assert after == ["e3", "e4"]
    with closing(sqlite3.connect(path)) as db:
        indexes = db.execute("PRAGMA index_list(completed)").fetchall()
        key = [row[1] for row in db.execute("PRAGMA table_info(completed)") if row[5]]
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert indexes == [] and key == []
    assert versions == list(range(1, len(sqlite_schema.MIGRATIONS) + 1))
    assert "completed_keyed" not in tables


async def test_postgres_completed_ids_of_the_keyed_layout_are_kept(
    pg_databases: Databases,
) -> None:
    dsn = pg_databases.create_empty()
    try:
        connection = await asyncpg.connect(dsn)
        try:
            # A database of migrations 1 and 2 only, with completed ids.
            await connection.execute(postgres_schema.MIGRATIONS_TABLE)
            for version, script in enumerate(postgres_schema.MIGRATIONS[:2], start=1):
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO schema_migrations VALUES ($1, now())", version
                )
            await connection.executemany(
                "INSERT INTO completed VALUES ($1, $2)", [("e2", 2.0), ("e1", 1.0)]
            )
        finally:
            await connection.close()

        async with PostgresStore.open(dsn) as store:
            migrated = await store.recent_completed(10)
            await _complete(store, "e1", start=5.0)  # no key to refuse a second row
            again = await store.recent_completed(1)
            async with store.pool.acquire() as db:
                keys = await db.fetchval(
                    "SELECT count(*) FROM pg_constraint"
                    " WHERE conrelid = 'completed'::regclass AND contype = 'p'"
                )
                versions = await db.fetch("SELECT version FROM schema_migrations ORDER BY 1")
    finally:
        pg_databases.drop(dsn)

    assert migrated == ["e1", "e2"]
    assert again == ["e1"]
    assert keys == 0
    assert [row["version"] for row in versions] == list(
        range(1, len(postgres_schema.MIGRATIONS) + 1)
    )
