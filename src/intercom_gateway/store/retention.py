"""What the store deletes: a dwelling's erasable records (§8), and rows past retention.

Each is committed before it returns. The ledger and the consent history are never
erased on request (resident.erase says why); the ledger is purged by age only.
"""

from __future__ import annotations

from datetime import datetime

import aiosqlite

from intercom_gateway.store.requests import rejection_filter
from intercom_gateway.store.results import Erased
from intercom_gateway.store.schema import utc_text


class Retention:
    """Erasure on request, and purges by age."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def erase_dwelling(self, building_id: str, dwelling_id: str) -> Erased:
        """Erase the decision log and rejected input of one dwelling, in one commit.

        The ledger and the consent history are not touched here: see resident.erase.
        """
        cursor = await self._db.execute(
            "DELETE FROM decisions WHERE building_id = ? AND dwelling_id = ?",
            (building_id, dwelling_id),
        )
        decisions = cursor.rowcount
        where, params = rejection_filter(building_id, dwelling_id)
        cursor = await self._db.execute(f"DELETE FROM rejections WHERE {where}", params)
        await self._db.commit()
        return Erased(decisions=decisions, rejections=cursor.rowcount)

    async def purge_ledger(self, *, before: datetime, chunk: int = 10_000) -> int:
        """Delete ledger rows recorded before ``before``; returns how many went.

        In chunks of one commit each: a running gateway writes to the same file, and one
        long delete would hold the write lock past its busy timeout.
        """
        deleted = 0
        while True:
            cursor = await self._db.execute(
                "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at < ? LIMIT ?)",
                (utc_text(before), chunk),
            )
            await self._db.commit()
            deleted += cursor.rowcount
            if cursor.rowcount < chunk:
                return deleted

    async def prune_completed(self, keep: int) -> int:
        """Forget all but the ``keep`` most recent completed event ids: the rows before
        the ``keep`` last, by rowid (the order they completed in)."""
        cursor = await self._db.execute(
            "DELETE FROM completed WHERE rowid <= (SELECT rowid FROM completed"
            " ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (keep,),
        )
        await self._db.commit()
        return cursor.rowcount
