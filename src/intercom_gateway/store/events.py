"""The event path's tables: decisions, ledger, rejections, completed ids and attempts.

Everything an event leaves is recorded (``record_*``, sync) into one batch and written in
one transaction per ``flush``: each awaited aiosqlite call costs ~0.3 ms (pitfalls #9),
and the gateway acknowledges an event to the broker only after its batch is committed.
The exceptions are committed at once (``save_*``, async): the ledger's write-ahead record
(``save_intents``: a provision is committed before its copy is published, in commits of
its own, ``ledger.WriteAhead``), the intents a stopped process left, and the count of a
redelivered message's attempts. The statistics counts and the held analytics copies
(``store.statistics``, ``store.analytics``) are written in the same batches.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.core.statistics import Window
from intercom_gateway.store import analytics as store_analytics
from intercom_gateway.store import statistics as store_statistics
from intercom_gateway.store.analytics import AnalyticsBatch
from intercom_gateway.store.schema import outcome_set_id
from intercom_gateway.store.statistics import StatisticsBatch

if TYPE_CHECKING:
    from intercom_gateway.core.records import DecisionRow, RejectionRow

# Outcome sets this process has recorded, by text; past this many it starts over (a set
# recorded again is ignored by the store).
_OUTCOME_SETS_REMEMBERED = 4_096

_LEDGER_COLUMNS = (
    "at, recipient, recipient_kind, third_party, building_id, dwelling_id, event_id, "
    "event_type, items, image, purposes, rule_id, policy_version, decision_id, part, status"
)
_LEDGER_VALUES = "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
# The write-ahead record of a provision; a row that exists is kept as it is.
INSERT_INTENDED = f"INSERT OR IGNORE INTO ledger ({_LEDGER_COLUMNS}) {_LEDGER_VALUES}, 'intended')"
# A consent notice's row stays "intended" until its delivery is confirmed: the gateway
# publishes it again at every start until then (gateway.notices), so nothing marks it
# "unconfirmed" (the same text in the PostgreSQL store).
_NOT_A_NOTICE = " AND event_type <> 'consent_notice'"
_PENDING_NOTICES = (
    # The partial index of the few "intended" rows: else SQLite scans the whole ledger.
    f"SELECT {_LEDGER_COLUMNS} FROM ledger INDEXED BY ledger_intended"
    " WHERE status = 'intended' AND event_type = 'consent_notice'"
)


@dataclass
class EventBatch:
    """What the event path recorded since the last flush, as rows ready to write."""

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


class Recorder:
    """The event path's buffered batch: what every backend records the same way.

    A backend's event log adds ``flush`` (and its few committed exceptions) over it.
    """

    def __init__(self) -> None:
        self._batch = EventBatch()
        self._outcome_sets: dict[str, str] = {}  # text -> id, recorded by this process
        self._finished_attempts: list[str] = []

    # --- recorded: buffered, written by flush() ---------------------------------------

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

    def record_provisions(self, rows: Iterable[LedgerRow]) -> None:
        """Provisions the recipients' broker acknowledged: "delivered", intended or not."""
        self._batch.ledger.extend(row.as_params() for row in rows)

    def record_delivered(self, rows: Iterable[LedgerRow]) -> None:
        """Like ``record_provisions``, for rows whose intent is committed: a key is enough."""
        self._batch.delivered.extend((row.event_id, row.recipient, row.part) for row in rows)

    def record_unconfirmed(self, rows: Iterable[LedgerRow]) -> None:
        """Intents whose publish this process lost track of; a delivered row stays so."""
        self._batch.unconfirmed.extend((row.event_id, row.recipient, row.part) for row in rows)

    def record_statistic(self, window: Window, event_type: str) -> None:
        """One event counted in ``window``; written with the event's completion."""
        self._batch.statistics.count(window, event_type)

    def record_window_published(self, window: Window, *, closed_before: datetime) -> None:
        """The broker acknowledged the window's aggregate: its counts can go."""
        self._batch.statistics.mark_published(window, closed_before)

    def record_analytics_held(self, copy: HeldCopy) -> None:
        """One analytics copy held for its window; written with its event's completion."""
        self._batch.analytics.hold(copy)

    def record_analytics_released(self, copy_id: str) -> None:
        """The broker acknowledged a held analytics copy: it can go."""
        self._batch.analytics.release(copy_id)

    def record_completed(self, event_id: str, at: float) -> None:
        self._batch.completed.append((event_id, at))

    def record_rejection(self, row: RejectionRow) -> None:
        self._batch.rejections.append(
            (row.at.isoformat(), row.reason, row.detail, row.topic, row.payload)
        )

    def record_attempt_end(self, key: str) -> None:
        """The handling finished (forwarded, rejected or set aside): forget the count.

        Buffered: written by the next ``save_attempt`` or ``flush``, whichever is first.
        """
        self._finished_attempts.append(key)

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    def _take(self) -> tuple[EventBatch, list[str]]:
        """The batch and finished attempts to write now; recording starts a new one."""
        batch, self._batch = self._batch, EventBatch()
        done, self._finished_attempts = self._finished_attempts, []
        return batch, done

    def _lost(self, done: list[str]) -> None:
        """A flush failed: sets recorded in the lost batch must be recorded again with
        later rows, and the finished attempts are still to be forgotten."""
        self._outcome_sets.clear()
        self._finished_attempts[:0] = done


class EventLog(Recorder):
    """The buffered batch of the event path, and its few committed exceptions."""

    def __init__(self, db: aiosqlite.Connection, writing: asyncio.Lock) -> None:
        super().__init__()
        self._db = db
        self._writing = writing  # the store's one transaction at a time

    async def flush(self) -> None:
        """Write everything recorded since the last flush in one transaction."""
        async with self._writing:
            batch, self._batch = self._batch, EventBatch()
            if not batch and not self._finished_attempts:
                return
            try:
                await self._forget_finished_attempts()
                await self._write(batch)
            except BaseException:
                # Sets recorded in the lost batch must be recorded again with later rows.
                self._outcome_sets.clear()
                raise

    async def _write(self, batch: EventBatch) -> None:
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
            await db.executemany("INSERT INTO completed VALUES (?, ?)", batch.completed)
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

    # --- saved: committed before returning --------------------------------------------

    async def save_intents(self, rows: Sequence[LedgerRow]) -> None:
        """Commit provisions about to be published, as "intended", at once (not batched).

        The ledger's write-ahead record: a copy to a recipient is published only after
        this returns. A row that exists already (an event handled again) is kept as it is.
        """
        async with self._writing:
            await self._db.executemany(INSERT_INTENDED, [row.as_params() for row in rows])
            await self._db.commit()

    async def save_unconfirmed(self, buildings: Collection[str] | None = None) -> int:
        """At start: what a stopped process intended but never completed (§8: kept, as
        "unconfirmed"); ``buildings``: only theirs. Returns how many rows."""
        query = "UPDATE ledger SET status = 'unconfirmed' WHERE status = 'intended'" + _NOT_A_NOTICE
        params: tuple[str, ...] = ()
        if buildings is not None:
            params = tuple(buildings)
            query += f" AND building_id IN ({', '.join('?' * len(params))})"
        async with self._writing:
            cursor = await self._db.execute(query, params)
            await self._db.commit()
        return cursor.rowcount

    async def save_attempt(self, key: str) -> int:
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

    async def _forget_finished_attempts(self) -> None:
        done, self._finished_attempts = self._finished_attempts, []
        if done:
            await self._db.executemany("DELETE FROM attempts WHERE key = ?", [(k,) for k in done])

    # --- read back at start -------------------------------------------------------------

    async def pending_notices(self, buildings: Collection[str] | None = None) -> list[LedgerRow]:
        """Consent notices on record whose delivery is not confirmed: every one, or those
        of ``buildings``; oldest first."""
        query, params = _PENDING_NOTICES, tuple(buildings or ())
        if buildings is not None:
            query += f" AND building_id IN ({', '.join('?' * len(params))})"
        async with self._db.execute(query + " ORDER BY at, event_id", params) as cursor:
            rows = await cursor.fetchall()
        return [ledger_row(dict(row)) for row in rows]

    async def recent_completed(self, limit: int) -> list[str]:
        async with self._db.execute(
            "SELECT event_id FROM completed ORDER BY rowid DESC LIMIT ?", (limit,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [row[0] for row in reversed(list(rows))]

    async def statistics_windows(self) -> tuple[list[tuple[Window, str, int]], datetime | None]:
        """The open windows' counts and the start of the oldest window still open."""
        return await store_statistics.load(self._db)

    async def analytics_held(self, buildings: Collection[str] | None = None) -> list[HeldCopy]:
        """The analytics copies held and not yet acknowledged by the broker: every one, or
        those of ``buildings``."""
        return await store_analytics.load(self._db, buildings)


def ledger_row(row: dict[str, Any]) -> LedgerRow:
    """A ledger row as read back (SQLite's text and integers, or PostgreSQL's values)."""
    at = row["at"]
    items, purposes = row["items"], row["purposes"]
    return LedgerRow(
        at=datetime.fromisoformat(at) if isinstance(at, str) else at,
        recipient=row["recipient"],
        recipient_kind=row["recipient_kind"],
        third_party=bool(row["third_party"]),
        building_id=row["building_id"],
        dwelling_id=row["dwelling_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        items=tuple(json.loads(items) if isinstance(items, str) else items),
        image=bool(row["image"]),
        purposes=tuple(json.loads(purposes) if isinstance(purposes, str) else purposes),
        rule_id=row["rule_id"],
        policy_version=row["policy_version"],
        decision_id=row["decision_id"],
        part=row["part"],
    )
