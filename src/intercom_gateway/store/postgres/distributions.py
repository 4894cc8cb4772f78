"""The distribution tables on PostgreSQL (migration 6): as on SQLite
(``store.distributions``), a distribution and its deliveries are saved in one
transaction."""

from __future__ import annotations

from typing import Any

from intercom_gateway.core.distributions import DistributionRow

SCHEMA = """
CREATE TABLE distributions (
    contractor_id text NOT NULL, distribution_id text NOT NULL, building_id text NOT NULL,
    kind text NOT NULL, received_at timestamptz NOT NULL, fingerprint text NOT NULL,
    content text NOT NULL, PRIMARY KEY (contractor_id, distribution_id));
CREATE TABLE distribution_deliveries (
    contractor_id text NOT NULL, distribution_id text NOT NULL, dwelling_id text NOT NULL,
    device_id text NOT NULL, PRIMARY KEY (contractor_id, distribution_id, dwelling_id),
    FOREIGN KEY (contractor_id, distribution_id)
        REFERENCES distributions (contractor_id, distribution_id));
"""

_COLUMNS = "contractor_id, distribution_id, building_id, kind, received_at, fingerprint, content"


class PgDistributionTables:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def save_distribution(self, row: DistributionRow) -> None:
        async with self._pool.acquire() as db, db.transaction():
            await db.execute(
                f"INSERT INTO distributions ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT DO NOTHING",
                row.contractor_id,
                row.distribution_id,
                row.building_id,
                row.kind,
                row.received_at,
                row.fingerprint,
                row.content,
            )
            await db.executemany(
                "INSERT INTO distribution_deliveries VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                [(row.contractor_id, row.distribution_id, d, p) for d, p in row.panels],
            )

    async def distributions(
        self, contractor_id: str | None = None, distribution_id: str | None = None
    ) -> list[DistributionRow]:
        one = contractor_id is not None and distribution_id is not None
        where = " WHERE contractor_id = $1 AND distribution_id = $2" if one else ""
        key = (contractor_id, distribution_id) if one else ()
        async with self._pool.acquire() as db:
            deliveries = await db.fetch(
                "SELECT contractor_id, distribution_id, dwelling_id, device_id"
                f" FROM distribution_deliveries{where} ORDER BY 1, 2, 3",
                *key,
            )
            rows = await db.fetch(
                f"SELECT {_COLUMNS} FROM distributions{where} ORDER BY received_at, 1, 2", *key
            )
        panels: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for d in deliveries:
            whose = (d["contractor_id"], d["distribution_id"])
            panels.setdefault(whose, []).append((d["dwelling_id"], d["device_id"]))
        return [
            DistributionRow(
                contractor_id=r["contractor_id"],
                distribution_id=r["distribution_id"],
                building_id=r["building_id"],
                kind=r["kind"],
                received_at=r["received_at"],
                fingerprint=r["fingerprint"],
                content=r["content"],
                panels=tuple(panels.get((r["contractor_id"], r["distribution_id"]), ())),
            )
            for r in rows
        ]
