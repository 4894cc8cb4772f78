"""What becomes of each message the gateway takes: its publishes, its records, and its
acknowledgement to the broker.

A message's publishes are sent as it is handled (those that confirm a ledger row only
once the row is committed, ``ledger.WriteAhead``). When every one has an outcome, its
records join the store's next batch: the ledger rows of what was delivered, the event's
statistics count and held analytics copy, and its completion. Once that batch is
committed, the message is acknowledged in its turn (``acks.AckQueue``) and its panel
named in the next receipt (``receipts.Receipts``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from intercom_gateway.bus import Bus, Message
from intercom_gateway.core.analytics import AnalyticsWindows
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.plan import Publication
from intercom_gateway.core.statistics import StatisticsAggregator
from intercom_gateway.errors import PublishFailed
from intercom_gateway.gateway.acks import AckQueue, Inbound
from intercom_gateway.gateway.ledger import WriteAhead
from intercom_gateway.gateway.receipts import Receipts
from intercom_gateway.gateway.status import Metrics
from intercom_gateway.store import Store

if TYPE_CHECKING:
    from intercom_gateway.gateway.otel import EventSpans

__all__ = ["CompletedIds", "Completion"]

log = structlog.get_logger("intercom_gateway.gateway.service")


class CompletedIds:
    """The ids of events already handled, bounded, oldest forgotten first."""

    def __init__(self, limit: int, ids: Iterable[str] = ()) -> None:
        self.limit = limit
        self._ids: dict[str, None] = dict.fromkeys(ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]


class Completion:
    """The messages taken and not yet acknowledged, and what their completion records."""

    def __init__(
        self,
        *,
        store: Store,
        metrics: Metrics,
        completed: CompletedIds,
        receipts: Receipts,
        statistics: StatisticsAggregator,
        analytics: AnalyticsWindows,
        clock: Callable[[], datetime],
        bus: Callable[[], Bus | None],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.completed = completed
        self.receipts = receipts
        self.statistics = statistics
        self.analytics = analytics
        self.clock = clock
        self.bus = bus  # the connection acknowledgements go to, if any
        self.ledger = WriteAhead(store, timing=metrics.timings.ledger_intent)
        self.acks: AckQueue[Inbound] = AckQueue(settle=self._settle, release=self._release)
        self.in_flight: set[str] = set()  # events taken and not yet released
        self._unflushed: list[Inbound] = []
        self._committing: set[str] = set()  # completed events of _unflushed
        self._settled = asyncio.Event()  # a message's publishes all have an outcome
        self._idle = asyncio.Event()
        self._idle.set()
        self._acked_changed = asyncio.Condition()
        self._waiting_for_acks = 0
        self.spans: EventSpans | None = None  # the OpenTelemetry export, when on (otel.py)

    def take(self, message: Message) -> Inbound:
        """A message is taken: it is acknowledged after every one taken before it."""
        self._idle.clear()
        return self.acks.add(Inbound(message=message))

    def validated(self, inbound: Inbound) -> None:
        """``inbound`` is a valid event: its validation's time is observed (metrics)."""
        inbound.validated = time.monotonic()
        self.metrics.timings.validate.observe(inbound.validated - inbound.received)

    def planned(self, inbound: Inbound) -> None:
        """``inbound``'s publications are planned: from here its copies are published."""
        inbound.planned = time.monotonic()
        self.metrics.timings.decide_plan.observe(inbound.planned - inbound.validated)

    def progress(self, interval: float) -> dict[str, Any]:
        """How far behind the gateway is: what ``health`` reads to tell a stall."""
        acks = self.acks
        oldest = acks.oldest.received if acks.oldest is not None else None
        return {
            "at": utc_now().isoformat(),
            "interval": interval,
            "pending": len(acks),
            "oldest_pending_s": round(time.monotonic() - oldest, 3) if oldest else 0.0,
        }

    def handled(self, inbound: Inbound, *, failed: bool = False) -> None:
        """Every publish of ``inbound`` is issued; ``failed``: handling stopped half-way."""
        self.acks.handled(inbound, failed=failed)
        self._acknowledge()

    async def finish(self) -> None:
        """Wait until every message taken so far is acknowledged (or left on purpose)."""
        while True:
            # Copies held back for their ledger row (ledger.WriteAhead) are acknowledged
            # later than the rest: commit each message's records as it settles.
            self._settled.clear()
            await self.flush()
            if self._idle.is_set():
                return
            await self._settled.wait()

    async def commit_before(self, inbound: Inbound) -> None:
        """Until every message taken before ``inbound`` is committed and acknowledged.

        A consent change is committed at once; an event before it whose records were
        not yet committed would, after a crash or a hand-over, be decided again under
        the newer consent (withheld from a partner it was entitled to). So the change
        waits for the events before it to be done first.
        """
        while self.acks.oldest is not None and self.acks.oldest is not inbound:
            self._settled.clear()
            await self.flush()
            if self.acks.oldest is None or self.acks.oldest is inbound:
                return
            await self._settled.wait()

    def reset(self) -> None:
        """After a lost connection: what was not acknowledged will be delivered again."""
        self.acks.clear()
        self.in_flight.clear()
        self._idle.set()

    async def send(
        self, bus: Bus, inbound: Inbound, publication: Publication, *, recorded: bool = False
    ) -> None:
        """Publish one message for ``inbound``; one that confirms a ledger row is
        published only once that row is committed (ledger.WriteAhead). ``recorded``: its
        row is committed already (a consent notice, with its change), so it goes at once,
        and a refusal marks the row "unconfirmed" (else it stays "intended": published
        again at the next start, gateway.notices)."""
        self.acks.publishing(inbound)
        row = publication.confirms

        def done(error: BaseException | None) -> None:
            if error is None:
                if row is not None:
                    inbound.provisions.append(row)
            elif isinstance(error, PublishFailed):
                # Refused by the broker (an ACL or size limit): retrying cannot help.
                self.metrics.publish_refused += 1
                log.error("publish refused", topic=publication.topic, error=str(error))
                if recorded and row is not None:
                    self.store.record_unconfirmed([row])
            # Lost (not refused): the message is never acknowledged, and comes again.
            lost = error is not None and not isinstance(error, PublishFailed)
            self.acks.published(inbound, failed=lost)
            self._acknowledge()

        if row is not None and not recorded:
            inbound.intents.append(row)
            self.ledger.submit(publication, bus, done)
            return
        try:
            await bus.publish(
                publication.topic,
                publication.payload,
                qos=publication.qos,
                retain=publication.retain,
                user_properties=publication.properties,
                on_done=done,
            )
        except PublishFailed as error:
            # Refused before it left (e.g. over the broker's packet size): the same as a
            # refusal by the broker, never a reason to drop the connection.
            done(error)

    def _settle(self, inbound: Inbound) -> bool:
        """Every publish of the message has an outcome: record what became of it.
        Whether it has records to commit before its acknowledgement."""
        waits = self._record(inbound)
        self._settled.set()
        if inbound.span is not None and self.spans is not None:
            self.spans.end(inbound.span, failed=inbound.failed)
        if inbound.planned and not inbound.failed:
            timings = self.metrics.timings
            now = time.monotonic()
            timings.publish.observe(now - inbound.planned)
            timings.end_to_end.observe(now - inbound.received)
        return waits

    def _record(self, inbound: Inbound) -> bool:
        store = self.store
        if len(inbound.provisions) < len(inbound.intents):
            delivered = {id(row) for row in inbound.provisions}
            # Refused, unacknowledged or never sent: it may or may not have reached the
            # recipient. §8: kept, marked unconfirmed; a later delivery upgrades it.
            store.record_unconfirmed([r for r in inbound.intents if id(r) not in delivered])
        if inbound.failed:
            # Not acknowledged, so the broker delivers it again and its completion waits
            # for that; a copy the broker did take is on record as delivered now.
            store.record_delivered(inbound.provisions)
            return False
        if not inbound.writes:
            return False
        # Every destination has it: now its ledger rows, statistics count and completion
        # are recorded, and the next flush lets the broker forget it.
        store.record_delivered(inbound.provisions)
        event_id = inbound.event_id
        if event_id is not None:
            first = self._first_completion(event_id)
            if inbound.statistic is not None and first:
                window = self.statistics.add(*inbound.statistic)
                if window is not None:
                    store.record_statistic(window, inbound.statistic[1])
            if inbound.analytics is not None and first:
                # In the batch that completes the event: on record before its ack.
                store.record_analytics_held(self.analytics.hold(inbound.analytics, self.clock()))
            store.record_completed(event_id, self.clock().timestamp())
            self._committing.add(event_id)
        self._unflushed.append(inbound)
        return True

    def _first_completion(self, event_id: str) -> bool:
        # After a lost connection the broker may deliver an event again before its first
        # completion is committed: it must not be counted twice.
        return event_id not in self._committing and event_id not in self.completed

    def _acknowledge(self) -> None:
        """Acknowledge, in arrival order as MQTT expects of a subscriber, what may be."""
        acked = self.metrics.acked
        self.acks.release_ready()
        if not self.acks:
            self._idle.set()
        if self._waiting_for_acks and self.metrics.acked != acked:
            # Only then can a waiter's count have been reached; most releases ack nothing.
            asyncio.get_running_loop().create_task(self._notify_acked())

    def _release(self, inbound: Inbound) -> None:
        if inbound.event_id is not None:
            self.in_flight.discard(inbound.event_id)
        if inbound.failed:
            return  # left unacknowledged on purpose: the broker will redeliver it
        bus = self.bus()
        if bus is not None:
            bus.ack(inbound.message)
        self.metrics.acked += 1
        if inbound.receipt is not None:
            self.receipts.settle(inbound.receipt)

    async def _notify_acked(self) -> None:
        async with self._acked_changed:
            self._acked_changed.notify_all()

    async def wait_acked(self, count: int) -> None:
        """Wait until ``count`` inbound messages in all have been acknowledged."""
        async with self._acked_changed:
            self._waiting_for_acks += 1
            try:
                await self._acked_changed.wait_for(lambda: self.metrics.acked >= count)
            finally:
                self._waiting_for_acks -= 1

    async def flush(self) -> None:
        batch, self._unflushed = self._unflushed, []
        started = time.monotonic()
        await self.store.flush()
        self.metrics.timings.store_flush.observe(time.monotonic() - started)
        for inbound in batch:
            self.acks.recorded(inbound)
            # Committed as completed: a redelivery after a lost connection is a no-op
            # from here on, even if the broker never saw our acknowledgement.
            if inbound.event_id is not None:
                self.completed.add(inbound.event_id)
                self._committing.discard(inbound.event_id)
        self._acknowledge()
        bus = self.bus()
        if bus is not None:
            # After the commit, and after the inbound acks: a receipt never waits for them.
            await self.receipts.publish(bus)

    async def flush_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)  # the batching period
            await self.flush()
