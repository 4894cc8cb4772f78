"""The console's live flow on a PostgreSQL store: the decisions and rejected input that
several gateways commit concurrently, each row once, none skipped.

A number alone is no safe cursor there: a gateway's transaction takes its numbers when
it inserts, and commits later, so a row with a lower number can commit after a higher
one has been read. Nor is "numbers above the last one read, of transactions older than
every running one" (``xid < pg_snapshot_xmin``) enough with the number as cursor: a
transaction takes its id at its first write (the outcome sets, before its decisions),
so an older transaction can take a *higher* number than a younger one still running,
commit, be read, and move the cursor past the younger one's lower number.

So the cursor is the pair (writer's transaction id, number), and rows are read in that
order, only those of transactions below the snapshot's xmin (migration 4 of
``store.postgres.schema`` keeps ``xid``, ``pg_current_xact_id()``, on each row):

- every transaction below xmin has finished: its rows are all committed (and visible
  to the same statement's snapshot) or never will be, so what is read is final;
- xmin never moves back, and a transaction still running, or not begun, has an id at
  least xmin, above every row already read: whatever commits later sorts after the
  cursor. Rows of one transaction commit together and are read by their number.

Hence no row is skipped and none read twice; the order is the writers' start order,
not their commit order. A row waits for the oldest transaction running on the database
(a long one delays the flow, it loses nothing). A decision rewritten by a redelivery
(``ON CONFLICT DO UPDATE``) keeps its first place and is not sent again.

Its own small pool of read-only connections (``default_transaction_read_only``), so a
slow page never holds the gateways' or the desk's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from intercom_gateway.console.queries import BATCH, Position, decision_item, rejection_item

POOL_MAX = 2  # streams and the dwellings page share it: each poll is one short query
RECENT_SECONDS = 120.0  # completions searched for a latency (the stream watches for 30 s)
FINISHED = "xid < pg_snapshot_xmin(pg_current_snapshot())"  # rows no commit can precede now


class PgFeed:
    """The console's reads of a PostgreSQL store (``queries.Feed``)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str) -> AsyncIterator[PgFeed]:
        """The feed over the database at ``dsn`` (the desk, opened first, has migrated it)."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=POOL_MAX,
            server_settings={"default_transaction_read_only": "on"},
        )
        try:
            yield cls(pool)
        finally:
            await pool.close()

    async def position(self, *, back: int = 0) -> Position:
        decision = await self._pool.fetchrow(
            "SELECT xid::text AS xid, seq FROM decisions"
            f" WHERE {FINISHED} ORDER BY xid DESC, seq DESC OFFSET $1 LIMIT 1",
            back,
        )
        rejection = await self._pool.fetchrow(
            f"SELECT xid::text AS xid, id FROM rejections WHERE {FINISHED}"
            " ORDER BY xid DESC, id DESC LIMIT 1"
        )
        return Position(
            int(decision["seq"]) if decision else 0,
            int(rejection["id"]) if rejection else 0,
            int(decision["xid"]) if decision else 0,
            int(rejection["xid"]) if rejection else 0,
        )

    async def since(self, at: Position) -> tuple[list[dict[str, Any]], Position]:
        """Decisions and rejections of finished transactions after ``at``, in (transaction,
        number) order, and the new position. Latencies as ``SqliteFeed.since``."""
        rows = await self._pool.fetch(
            "SELECT d.seq AS position, d.xid::text AS xid, d.event_id, d.building_id,"
            " d.dwelling_id, d.event_type, d.decided_at, s.outcomes"
            " FROM decisions AS d JOIN outcome_sets AS s ON s.id = d.outcome_set"
            f" WHERE (d.xid, d.seq) > ($1::text::xid8, $2) AND d.{FINISHED}"
            " ORDER BY d.xid, d.seq LIMIT $3",
            str(at.decision_xid),
            at.decision,
            BATCH,
        )
        done = await self.completions([row["event_id"] for row in rows]) if rows else {}
        decisions = [
            _with_xid(decision_item(_iso(row, "decided_at"), done.get(row["event_id"])), row)
            for row in rows
        ]
        rows = await self._pool.fetch(
            "SELECT id, xid::text AS xid, at, reason, detail, topic FROM rejections"
            f" WHERE (xid, id) > ($1::text::xid8, $2) AND {FINISHED}"
            " ORDER BY xid, id LIMIT $3",
            str(at.rejection_xid),
            at.rejection,
            BATCH,
        )
        rejections = [_with_xid(rejection_item(_iso(row, "at")), row) for row in rows]
        moved = at
        for item in decisions + rejections:
            moved = moved.after(item)
        return decisions + rejections, moved

    async def completions(self, event_ids: list[str]) -> dict[str, float]:
        """When each of these events completed, searched among the completions of the last
        ``RECENT_SECONDS`` (``completed`` is read by its ``at`` index: it has no key on
        the event id, migration 3): the stream asks about events it has just shown."""
        rows = await self._pool.fetch(
            "SELECT event_id, max(at) AS at FROM completed"
            " WHERE at > $1 AND event_id = ANY($2::text[]) GROUP BY event_id",
            time.time() - RECENT_SECONDS,
            event_ids,
        )
        return {row["event_id"]: float(row["at"]) for row in rows}

    async def dwellings(self) -> list[tuple[str, str]]:
        rows = await self._pool.fetch(
            "SELECT building_id, dwelling_id FROM dwellings ORDER BY building_id, dwelling_id"
        )
        return [(row[0], row[1]) for row in rows]


def _iso(row: Any, moment: str) -> dict[str, Any]:
    """The row as ``queries`` reads a SQLite one: its moment as ISO text."""
    return {**dict(row), moment: row[moment].isoformat()}


def _with_xid(item: dict[str, Any], row: Any) -> dict[str, Any]:
    """The item with its writer's transaction id: the first key of its position."""
    item["xid"] = int(row["xid"])
    return item
