"""The store's distribution tables (§2(1)): each contractor's notices and surveys, and the
dwelling panels each one was delivered to.

Part of the store (``store.Store``; nothing else speaks this SQL). A distribution is
saved, with its deliveries, in one commit before any panel gets it: a usage event
(``notice_read``, ``survey_answer``) is checked against these rows
(``core.distributions.check_usage``), in this process and in the next.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import aiosqlite

from intercom_gateway.core.distributions import DistributionRow

# Migration 5 (``schema.MIGRATIONS``).
SCHEMA = """
CREATE TABLE IF NOT EXISTS distributions (
    contractor_id TEXT NOT NULL, distribution_id TEXT NOT NULL, building_id TEXT NOT NULL,
    kind TEXT NOT NULL, received_at TEXT NOT NULL, fingerprint TEXT NOT NULL,
    content TEXT NOT NULL, PRIMARY KEY (contractor_id, distribution_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS distribution_deliveries (
    contractor_id TEXT NOT NULL, distribution_id TEXT NOT NULL, dwelling_id TEXT NOT NULL,
    device_id TEXT NOT NULL, PRIMARY KEY (contractor_id, distribution_id, dwelling_id),
    FOREIGN KEY (contractor_id, distribution_id)
        REFERENCES distributions (contractor_id, distribution_id)) WITHOUT ROWID;
"""

_COLUMNS = "contractor_id, distribution_id, building_id, kind, received_at, fingerprint, content"


class DistributionTables:
    """The distributions and their deliveries, on the store's connection."""

    def __init__(self, db: aiosqlite.Connection, writing: asyncio.Lock) -> None:
        self._db = db
        self._writing = writing  # the store's one transaction at a time

    async def save_distribution(self, row: DistributionRow) -> None:
        async with self._writing:
            await self._db.execute(
                f"INSERT OR IGNORE INTO distributions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.contractor_id,
                    row.distribution_id,
                    row.building_id,
                    row.kind,
                    row.received_at.isoformat(),
                    row.fingerprint,
                    row.content,
                ),
            )
            await self._db.executemany(
                "INSERT OR IGNORE INTO distribution_deliveries VALUES (?, ?, ?, ?)",
                [(row.contractor_id, row.distribution_id, d, p) for d, p in row.panels],
            )
            await self._db.commit()

    async def distributions(
        self, contractor_id: str | None = None, distribution_id: str | None = None
    ) -> list[DistributionRow]:
        one = contractor_id is not None and distribution_id is not None
        where = " WHERE contractor_id = ? AND distribution_id = ?" if one else ""
        key = (contractor_id, distribution_id) if one else ()
        panels: dict[tuple[str, str], list[tuple[str, str]]] = {}
        async with self._db.execute(
            "SELECT contractor_id, distribution_id, dwelling_id, device_id"
            f" FROM distribution_deliveries{where} ORDER BY 1, 2, 3",
            key,
        ) as cursor:
            for contractor, distribution, dwelling, device in await cursor.fetchall():
                panels.setdefault((contractor, distribution), []).append((dwelling, device))
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM distributions{where} ORDER BY received_at, 1, 2", key
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            DistributionRow(
                contractor_id=r[0],
                distribution_id=r[1],
                building_id=r[2],
                kind=r[3],
                received_at=datetime.fromisoformat(r[4]),
                fingerprint=r[5],
                content=r[6],
                panels=tuple(panels.get((r[0], r[1]), ())),
            )
            for r in rows
        ]
