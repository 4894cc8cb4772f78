"""The event path on PostgreSQL: the buffered batch, flushed in one transaction.

What is recorded, and how, is ``store.events.Recorder``'s, the same as on SQLite: rows
arrive as the SQLite store writes them (moments as UTC ISO text, flags as 0 or 1), and
the statements here cast them (``$1::text::timestamptz``), so recording an event costs
the same on both. A flush is one transaction of ``executemany`` calls on one pooled
connection; flushes (and ``save_attempt``, which forgets finished attempts) take turns,
as a later batch may name an outcome set only an earlier one wrote; the ledger's
intents take their turn with them, as on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.statistics import Window
from intercom_gateway.store import analytics as store_analytics
from intercom_gateway.store.events import EventBatch, Recorder, ledger_row
from intercom_gateway.store.postgres.queries import rowcount

if TYPE_CHECKING:
    from intercom_gateway.core.records import LedgerRow

_TS = "::text::timestamptz"
_LEDGER_COLUMNS = (
    "at, recipient, recipient_kind, third_party, building_id, dwelling_id, event_id, "
    "event_type, items, image, purposes, rule_id, policy_version, decision_id, part, status"
)
# LedgerRow.as_params: at, recipient, kind, third_party (0/1), ..., image (0/1), ...
_LEDGER_VALUES = (
    f"VALUES ($1{_TS}, $2, $3, $4::int::boolean, $5, $6, $7, $8, $9, $10::int::boolean,"
    " $11, $12, $13, $14, $15"
)
# The write-ahead record of a provision; a row that exists is kept as it is.
INSERT_INTENDED = (
    f"INSERT INTO ledger ({_LEDGER_COLUMNS}) {_LEDGER_VALUES}, 'intended')"
    " ON CONFLICT (event_id, recipient, part) DO NOTHING"
)
# A consent notice's row stays "intended" until its delivery is confirmed (as on SQLite,
# store.events): nothing marks it "unconfirmed".
_NOT_A_NOTICE = " AND event_type <> 'consent_notice'"
_PENDING_NOTICES = (
    f"SELECT {_LEDGER_COLUMNS} FROM ledger"
    " WHERE status = 'intended' AND event_type = 'consent_notice'"
)
_CLOSED_BEFORE = "closed_before"


class PgEventLog(Recorder):
    """The event path's batch, written to PostgreSQL through ``pool``."""

    def __init__(
        self,
        pool: Any,
        *,
        writing: asyncio.Lock | None = None,
        fence: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._pool = pool
        # One flush at a time, in recording order; shared by a store's fenced views.
        self._writing = writing or asyncio.Lock()
        # A partition's lease check, run first in each flush's own transaction (its row
        # stays locked FOR SHARE till commit): see PostgresStore.fenced.
        self._fence = fence

    @property
    def writing(self) -> asyncio.Lock:
        return self._writing

    async def flush(self) -> None:
        """Write everything recorded since the last flush in one transaction."""
        async with self._writing:
            batch, done = self._take()
            if not batch and not done:
                return
            try:
                async with self._pool.acquire() as db, db.transaction():
                    if self._fence is not None:
                        await self._fence(db)
                    await _forget(db, done)
                    await _write(db, batch)
            except BaseException:
                self._lost(done)
                raise

    # --- saved: committed before returning --------------------------------------------

    async def save_intents(self, rows: Sequence[LedgerRow]) -> None:
        """The ledger's write-ahead record ("intended"); a row that exists is kept.

        In turn with the flushes, as on SQLite: a flush asked for while intents are
        being saved (the last one, at close) writes after them, with what their
        acknowledged copies recorded."""
        async with self._writing, self._pool.acquire() as db, db.transaction():
            if self._fence is not None:  # no copy leaves once the partition moved on
                await self._fence(db)
            await db.executemany(INSERT_INTENDED, [row.as_params() for row in rows])

    async def save_unconfirmed(self, buildings: Collection[str] | None = None) -> int:
        """At start: the intents a stopped process left, now "unconfirmed"; how many.
        ``buildings``: only theirs (a partition taken over; the other gateways' rows in
        flight are theirs to settle)."""
        query = "UPDATE ledger SET status = 'unconfirmed' WHERE status = 'intended'" + _NOT_A_NOTICE
        params: list[Any] = []
        if buildings is not None:
            query += " AND building_id = ANY($1::text[])"
            params.append(list(buildings))
        async with self._pool.acquire() as db:
            status = await db.execute(query, *params)
        return rowcount(status)

    async def save_attempt(self, key: str) -> int:
        """One more delivery of a message about to be handled; the count so far."""
        async with self._writing:
            done, self._finished_attempts = self._finished_attempts, []
            async with self._pool.acquire() as db, db.transaction():
                await _forget(db, done)
                count = await db.fetchval(
                    "INSERT INTO attempts VALUES ($1, 1, $2) ON CONFLICT (key) DO UPDATE"
                    " SET count = attempts.count + 1, last_at = excluded.last_at"
                    " RETURNING count",
                    key,
                    time.time(),
                )
        return int(count) if count is not None else 1

    # --- read back at start -------------------------------------------------------------

    async def pending_notices(self, buildings: Collection[str] | None = None) -> list[LedgerRow]:
        """Consent notices on record whose delivery is not confirmed: every one, or those
        of ``buildings``; oldest first."""
        query, params = _PENDING_NOTICES, []
        if buildings is not None:
            query += " AND building_id = ANY($1::text[])"
            params.append(list(buildings))
        async with self._pool.acquire() as db:
            rows = await db.fetch(query + " ORDER BY at, event_id", *params)
        return [ledger_row(dict(row)) for row in rows]

    async def recent_completed(self, limit: int) -> list[str]:
        async with self._pool.acquire() as db:
            rows = await db.fetch("SELECT event_id FROM completed ORDER BY at DESC LIMIT $1", limit)
        return [str(row[0]) for row in reversed(rows)]

    async def statistics_windows(self) -> tuple[list[tuple[Window, str, int]], datetime | None]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(
                "SELECT building_id, window_start, window_end, event_type, count"
                " FROM statistics_counts ORDER BY window_start, building_id, event_type"
            )
            closed = await db.fetchval(
                "SELECT value FROM statistics_state WHERE name = $1", _CLOSED_BEFORE
            )
        counts = [(Window(b, s, e), str(t), int(n)) for b, s, e, t, n in rows]
        return counts, closed

    async def analytics_held(self, buildings: Collection[str] | None = None) -> list[HeldCopy]:
        query = f"SELECT {store_analytics.COLUMNS} FROM analytics_held"
        params: list[Any] = []
        if buildings is not None:
            query += " WHERE building_id = ANY($1::text[])"
            params.append(list(buildings))
        async with self._pool.acquire() as db:
            rows = await db.fetch(query + " ORDER BY copy_id", *params)
        return [
            HeldCopy(
                copy_id=str(copy_id),
                window_start=start,
                window_end=end,
                topic=str(topic),
                payload=bytes(payload),
                properties=tuple((str(k), str(v)) for k, v in json.loads(properties)),
                building_id=str(building),
            )
            for copy_id, start, end, topic, payload, properties, building in rows
        ]


async def _forget(db: Any, done: list[str]) -> None:
    if done:
        await db.executemany("DELETE FROM attempts WHERE key = $1", [(k,) for k in done])


async def _write(db: Any, batch: EventBatch) -> None:
    """The batch, in the SQLite store's order, within the caller's transaction."""
    if batch.outcome_sets:
        await db.executemany(
            "INSERT INTO outcome_sets VALUES ($1, $2) ON CONFLICT DO NOTHING", batch.outcome_sets
        )
    if batch.decisions:
        await db.executemany(
            f"INSERT INTO decisions VALUES ($1, $2, $3, $4, $5, $6{_TS}, $7, $8, $9)"
            " ON CONFLICT (event_id) DO UPDATE SET decision_id = excluded.decision_id,"
            " building_id = excluded.building_id, dwelling_id = excluded.dwelling_id,"
            " event_type = excluded.event_type, decided_at = excluded.decided_at,"
            " policy_version = excluded.policy_version,"
            " consent_revision = excluded.consent_revision, outcome_set = excluded.outcome_set",
            batch.decisions,
        )
    if batch.unconfirmed:
        # Before the deliveries: a redelivery in the same batch upgrades it again.
        await db.executemany(
            "UPDATE ledger SET status = 'unconfirmed'"
            " WHERE event_id = $1 AND recipient = $2 AND part = $3 AND status = 'intended'",
            batch.unconfirmed,
        )
    if batch.ledger:
        await db.executemany(
            f"INSERT INTO ledger ({_LEDGER_COLUMNS}) {_LEDGER_VALUES}, 'delivered')"
            " ON CONFLICT (event_id, recipient, part) DO UPDATE SET status = 'delivered'",
            batch.ledger,
        )
    if batch.delivered:
        await db.executemany(
            "UPDATE ledger SET status = 'delivered'"
            " WHERE event_id = $1 AND recipient = $2 AND part = $3",
            batch.delivered,
        )
    if batch.completed:
        await db.executemany("INSERT INTO completed VALUES ($1, $2)", batch.completed)
    if batch.rejections:
        await db.executemany(
            "INSERT INTO rejections (at, reason, detail, topic, payload, named_building,"
            f" named_dwelling) VALUES ($1{_TS}, $2, $3, $4, $5, $6, $7)",
            [_rejection(*row) for row in batch.rejections],
        )
    await _write_statistics(db, batch)
    await _write_analytics(db, batch)


def _rejection(at: str, reason: str, detail: str, topic: str, payload: str) -> tuple[Any, ...]:
    building, dwelling = named_dwelling(payload)
    return (at, reason, no_nul(detail), no_nul(topic), payload.encode(), building, dwelling)


def named_dwelling(payload: str) -> tuple[str | None, str | None]:
    """The building and dwelling a JSON object payload names (text only), as SQLite's
    ``json_extract(payload, '$.building_id')`` would find them."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    building, dwelling = value.get("building_id"), value.get("dwelling_id")
    return (
        building if isinstance(building, str) else None,
        dwelling if isinstance(dwelling, str) else None,
    )


def no_nul(text: str) -> str:
    """PostgreSQL text cannot hold U+0000; a rejection's detail or topic may quote one."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


async def _write_statistics(db: Any, batch: EventBatch) -> None:
    stats = batch.statistics
    if stats.counts:
        await db.executemany(
            f"INSERT INTO statistics_counts VALUES ($1, $2{_TS}, $3{_TS}, $4, $5)"
            " ON CONFLICT (building_id, window_start, event_type)"
            " DO UPDATE SET count = statistics_counts.count + excluded.count",
            [(*key, n) for key, n in stats.counts.items()],
        )
    if stats.published:
        await db.executemany(
            f"DELETE FROM statistics_counts WHERE building_id = $1 AND window_start = $2{_TS}",
            stats.published,
        )
    if stats.closed_before is not None:
        await db.execute(
            f"INSERT INTO statistics_state VALUES ($1, $2{_TS}) ON CONFLICT (name)"
            " DO UPDATE SET value = GREATEST(statistics_state.value, excluded.value)",
            _CLOSED_BEFORE,
            stats.closed_before,
        )


async def _write_analytics(db: Any, batch: EventBatch) -> None:
    held = batch.analytics
    if held.held:
        await db.executemany(
            f"INSERT INTO analytics_held ({store_analytics.COLUMNS})"
            f" VALUES ($1, $2{_TS}, $3{_TS}, $4, $5, $6, $7)"
            " ON CONFLICT DO NOTHING",
            held.held,
        )
    if held.released:
        await db.executemany("DELETE FROM analytics_held WHERE copy_id = $1", held.released)
