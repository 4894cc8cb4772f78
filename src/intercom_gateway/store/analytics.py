"""The store's table of held analytics copies: durable with their events (§5(5), issue 14).

Part of the store (``store.Store`` calls these inside its own transactions; nothing
else speaks this SQL). A copy is written in the batch that marks its event completed,
so it is on record before the inbound event is acknowledged: a crash before that
commit leaves neither (the broker delivers the event again, and it is held then), a
crash after it leaves both. A copy is deleted once the broker has acknowledged it; a
crash in between publishes it again after the restart, the same bytes with the same
random ``decision_id``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiosqlite

from intercom_gateway.core.analytics import HeldCopy

SCHEMA = """
CREATE TABLE IF NOT EXISTS analytics_held (
    copy_id TEXT PRIMARY KEY, window_start TEXT NOT NULL, window_end TEXT NOT NULL,
    topic TEXT NOT NULL, payload BLOB NOT NULL, properties TEXT NOT NULL) WITHOUT ROWID;
"""


@dataclass
class AnalyticsBatch:
    """What one store batch changes in the held analytics copies."""

    held: list[tuple[str, str, str, str, bytes, str, str]] = field(default_factory=list)
    released: list[tuple[str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.held or self.released)

    def hold(self, copy: HeldCopy) -> None:
        self.held.append(
            (
                copy.copy_id,
                _text(copy.window_start),
                _text(copy.window_end),
                copy.topic,
                copy.payload,
                json.dumps(copy.properties),
                copy.building_id,
            )
        )

    def release(self, copy_id: str) -> None:
        self.released.append((copy_id,))


async def write(db: aiosqlite.Connection, batch: AnalyticsBatch) -> None:
    """Within the caller's transaction: held copies first, then what was released."""
    if batch.held:
        await db.executemany(
            f"INSERT OR IGNORE INTO analytics_held ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batch.held,
        )
    if batch.released:
        await db.executemany("DELETE FROM analytics_held WHERE copy_id = ?", batch.released)


# Migration 2: the building of each copy, so that a partition takes up its own copies.
ADD_BUILDING = "ALTER TABLE analytics_held ADD COLUMN building_id TEXT NOT NULL DEFAULT ''"

COLUMNS = "copy_id, window_start, window_end, topic, payload, properties, building_id"


async def load(
    db: aiosqlite.Connection, buildings: Collection[str] | None = None
) -> list[HeldCopy]:
    """The held copies, as the store has them: every one, or those of ``buildings``."""
    query = f"SELECT {COLUMNS} FROM analytics_held"
    params: tuple[str, ...] = ()
    if buildings is not None:
        params = tuple(buildings)
        query += f" WHERE building_id IN ({', '.join('?' * len(params))})"
    async with db.execute(query + " ORDER BY copy_id", params) as cursor:
        rows = list(await cursor.fetchall())
    return [
        HeldCopy(
            copy_id=str(copy_id),
            window_start=datetime.fromisoformat(start),
            window_end=datetime.fromisoformat(end),
            topic=str(topic),
            payload=bytes(payload),
            properties=tuple((str(k), str(v)) for k, v in json.loads(properties)),
            building_id=str(building),
        )
        for copy_id, start, end, topic, payload, properties, building in rows
    ]


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
