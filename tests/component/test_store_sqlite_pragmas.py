"""Every open of a SQLite store maps the file and keeps a larger page cache.

Without them the store's CPU per event on a store of three years (10 million events)
reached 2.9 x an empty one's once the page cache was contested (issue #18,
``bench.store_size``); the settings are per connection, so each open must make them.
"""

from __future__ import annotations

from pathlib import Path

from intercom_gateway.store import schema
from intercom_gateway.store.sqlite import SqliteStore


async def _pragma(store: SqliteStore, name: str) -> int:
    async with store.connection.execute(f"PRAGMA {name}") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_each_open_maps_the_file_and_keeps_a_larger_cache(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    for _ in range(2):  # made, then opened again
        async with SqliteStore.open(path) as store:
            # A build may cap the map below what is asked; a map there must be.
            assert 0 < await _pragma(store, "mmap_size") <= schema.MMAP_BYTES
            assert await _pragma(store, "cache_size") == -schema.CACHE_KIB
            assert await _pragma(store, "synchronous") == 1  # NORMAL, as before
