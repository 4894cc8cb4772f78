"""The gateway: validate, decide, forward, record; acknowledge only when it is safe.

One loop takes the panel messages in arrival order, so the events of a dwelling are
decided in order and a consent change applies from the very next message (spec item
9). Publishing is pipelined: the loop does not wait for PUBACKs, but an inbound
message is acknowledged to the broker only when every publish it caused has been
acknowledged and its records are committed to the store. A crash before that makes
the broker deliver it again (persistent session), and the completed-event record
makes the second pass a no-op for the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from intercom_gateway.bus.mqtt import BrokerAddress, Bus, Message, MqttBus, TlsOptions, Will
from intercom_gateway.bus.paho import PahoBus
from intercom_gateway.core import topics
from intercom_gateway.core.analytics import AnalyticsWindows, Draft, HeldCopy
from intercom_gateway.core.consent import ConsentState, apply_change
from intercom_gateway.core.decide import decide
from intercom_gateway.core.encoding import Envelopes, user_properties
from intercom_gateway.core.ingress import (
    DeviceIndex,
    InputRejected,
    Limits,
    check_event,
    check_properties,
    check_settings,
    check_topic,
)
from intercom_gateway.core.models import (
    GatewayStatus,
    RejectReason,
    SettingsChange,
    random_uuid,
    utc_now,
)
from intercom_gateway.core.outcomes import Decision, Outcome
from intercom_gateway.core.policy import (
    DestinationKind,
    PartnerRegistry,
    Policy,
    Provision,
    load_partners,
    load_policy,
)
from intercom_gateway.core.registry import Dwelling, InitialConsent, Registry, load_registry
from intercom_gateway.core.rejections import RejectedInput
from intercom_gateway.core.router import Router
from intercom_gateway.core.statistics import StatisticsAggregator, Window
from intercom_gateway.core.tags import Copy
from intercom_gateway.errors import BusError, PublishFailed, SessionTakenOver
from intercom_gateway.gateway.ledger import WriteAhead
from intercom_gateway.gateway.receipts import Receipts, Target, rejected_target
from intercom_gateway.settings import Settings
from intercom_gateway.store.sqlite import DecisionRow, LedgerRow, RejectionRow, Store

log = structlog.get_logger("intercom_gateway.gateway.service")

# §8 and APPI: provisions to third parties are recorded; joint use (§4) is recorded too,
# marked as not a third-party provision.
_LEDGER = frozenset({Provision.THIRD_PARTY, Provision.JOINT_USE})


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


@dataclass
class Metrics:
    received: int = 0
    events: int = 0
    duplicates: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)
    withheld: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    settings: Counter[str] = field(default_factory=Counter)
    publish_refused: int = 0
    acked: int = 0
    internal_errors: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    session_takeovers: int = 0  # DISCONNECT 0x8E: another connection took our client id
    sessions_lost: int = 0  # reconnected to no session: what was queued for us is gone

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "events": self.events,
            "duplicates": self.duplicates,
            "forwarded": dict(self.forwarded),
            "withheld": dict(self.withheld),
            "rejected": dict(self.rejected),
            "settings": dict(self.settings),
            "publish_refused": self.publish_refused,
            "acked": self.acked,
            "internal_errors": self.internal_errors,
            "dead_lettered": self.dead_lettered,
            "reconnects": self.reconnects,
            "session_takeovers": self.session_takeovers,
            "sessions_lost": self.sessions_lost,
        }


@dataclass(eq=False)
class _Tracker:
    """What an inbound message still waits for before it may be acknowledged."""

    message: Message
    received: float = field(default_factory=time.monotonic)
    publishes: int = 1  # the extra 1 is released when handling has issued everything
    needs_store: bool = False
    stored: bool = False
    failed: bool = False
    event_id: str | None = None
    intents: list[LedgerRow] = field(default_factory=list)  # ledger rows written ahead
    provisions: list[LedgerRow] = field(default_factory=list)  # ...and acknowledged
    statistic: tuple[str, str, datetime] | None = None  # building, type, occurred_at
    analytics: Draft | None = None  # held at completion, released with its window
    receipt: Target | None = None  # the panel's event this message settles (receipts.py)

    @property
    def done(self) -> bool:
        return self.publishes == 0 and (self.stored or not self.needs_store)


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        policy: Policy,
        partners: PartnerRegistry,
        registry: Registry,
        consents: dict[tuple[str, str], ConsentState],
        completed: CompletedIds,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy
        self.partners = partners
        self.router = Router.compile(policy, partners)  # the policy, compiled once
        self.registry = registry
        self.devices = DeviceIndex.from_registry(registry)
        self.consents = consents
        self.completed = completed
        self.clock = clock
        self.limits = Limits(
            max_bytes=settings.max_payload_bytes,
            max_depth=settings.max_json_depth,
            max_age=timedelta(seconds=settings.max_event_age),
            max_skew=timedelta(seconds=settings.max_clock_skew),
            max_user_properties=settings.max_user_properties,
        )
        self.metrics = Metrics()
        self.receipts = Receipts(settings.gateway_id, clock=clock)
        self.statistics = StatisticsAggregator(
            window=timedelta(seconds=settings.statistics_window),
            min_group_size=settings.statistics_min_group,
            delay=timedelta(seconds=settings.statistics_delay),
        )
        self.analytics = AnalyticsWindows(window=timedelta(seconds=settings.analytics_window))
        self._analytics_changed = asyncio.Condition()
        self.ledger = WriteAhead(store)
        self._trackers: deque[_Tracker] = deque()
        self._unflushed: list[_Tracker] = []
        self._committing: set[str] = set()  # completed events of _unflushed
        self._settled = asyncio.Event()  # a message's publishes all have an outcome
        self._in_flight: set[str] = set()
        self._bus: Bus | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.online = asyncio.Event()  # set while subscribed and taking messages
        self._acked_changed = asyncio.Condition()
        self._waiting_for_acks = 0

    @classmethod
    async def load(
        cls, settings: Settings, store: Store, *, clock: Callable[[], datetime] = utc_now
    ) -> Gateway:
        """Read the registry, policy and partner files; restore consent and completed ids."""
        policy = load_policy(settings.policy_path)
        partners = load_partners(settings.partners_path, policy=policy)
        registry = load_registry(settings.registry_path)
        await store.sync_registry(registry)
        consents = await store.consents()
        await _seed_consents(store, registry, consents, now=clock())
        completed = CompletedIds(
            settings.completed_memory, await store.recent_completed(settings.completed_memory)
        )
        gateway = cls(
            settings=settings,
            store=store,
            policy=policy,
            partners=partners,
            registry=registry,
            consents=consents,
            completed=completed,
            clock=clock,
        )
        await gateway._recover()
        return gateway

    async def _recover(self) -> None:
        """Take up what a stopped process left in the store: its ledger intents and the
        statistics windows it had not published."""
        unconfirmed = await self.store.mark_unconfirmed()
        if unconfirmed:
            log.warning(
                "ledger rows intended by a stopped gateway are marked unconfirmed (§8)",
                rows=unconfirmed,
            )
        counts, closed_before = await self.store.statistics_windows()
        self.statistics.restore(counts, closed_before=closed_before)
        self.analytics.restore(await self.store.analytics_held())

    # --- the loop ---------------------------------------------------------------------

    async def serve(self, bus: Bus, *, stop: asyncio.Event | None = None) -> None:
        """Handle messages until ``stop`` is set (then finish in-flight work) or the bus fails."""
        stop = stop or asyncio.Event()
        self._bus = bus
        group = self.settings.share_group
        # Retain handling 2: the broker never replays retained panel messages at
        # subscribe time. A panel event is not state; a retained one would come back at
        # every restart, even after our session was cleared.
        await bus.subscribe(
            topics.shared(topics.PANEL_EVENTS_FILTER, group),
            topics.shared(topics.PANEL_SETTINGS_FILTER, group),
            retain_handling=2,
        )
        await self._publish_status(bus, "online")
        self.online.set()
        log.info("gateway online", gateway_id=self.settings.gateway_id)
        async with asyncio.TaskGroup() as tasks:
            background = [
                tasks.create_task(self._flush_loop(), name="store-flush"),
                tasks.create_task(self._report_loop(bus), name="metrics-and-statistics"),
                tasks.create_task(self._release_loop(bus), name="analytics-release"),
            ]
            consume = tasks.create_task(self._consume(bus), name="consume")
            stopping = tasks.create_task(stop.wait(), name="stop-signal")
            await asyncio.wait({consume, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if consume.done():
                stopping.cancel()
                consume.result()  # the bus failed: let the error out
            else:
                consume.cancel()
                await self.finish_in_flight()
                self.online.clear()
                await self._publish_status(bus, "offline")
            for task in background:
                task.cancel()

    async def _consume(self, bus: Bus) -> None:
        async for message in bus.messages():
            await self.handle(bus, message)
            # Neither a queued message nor a free publish window suspends us, so without
            # this the publishes of a whole burst of inbound messages would wait for the
            # burst to be handled before the loop got round to writing them.
            await asyncio.sleep(0)

    async def finish_in_flight(self) -> None:
        """Wait until every message taken so far is acknowledged (graceful shutdown)."""
        if self._bus is not None:
            await self._bus.drain()
        while True:
            # Copies held back for their ledger row (ledger.WriteAhead) are acknowledged
            # later than the rest: commit each message's records as it settles.
            self._settled.clear()
            await self._flush()
            if self._idle.is_set():
                return
            await self._settled.wait()

    async def handle(self, bus: Bus, message: Message) -> None:
        """Handle one message. Nothing raised while handling it escapes, but a lost bus.

        Bad input is rejected with its reason; an error of ours becomes an
        ``internal_error`` rejection naming the error. Either way the message is
        acknowledged and the loop goes on: a message whose handling killed the process
        was delivered again at every restart, and stopped every other event with it.
        """
        tracker = _Tracker(message)
        self._trackers.append(tracker)
        self._idle.clear()
        self.metrics.received += 1
        now = self.clock()
        try:
            await self._attempt(bus, tracker, now)
        except (asyncio.CancelledError, BusError):
            # Stopped half-way (shutdown, or the connection went): some destinations
            # may lack it, so it is never acknowledged and the broker delivers it again.
            tracker.failed = True
            self._release(tracker)
            raise
        self._release(tracker)

    async def _attempt(self, bus: Bus, tracker: _Tracker, now: datetime) -> None:
        message = tracker.message
        # Only a message delivered again can have killed us before: those alone are
        # counted, durably, around their handling (a crash leaves the count up).
        attempt = _attempt_key(message) if message.dup or message.retain else None
        try:
            try:
                if attempt is not None:
                    count = await self.store.begin_attempt(attempt)
                    if count > self.settings.max_attempts:
                        raise InputRejected(
                            RejectReason.DEAD_LETTER,
                            f"delivered {count} times; handling it never finished",
                        )
                topic = check_topic(message.topic)
                check_properties(message.user_properties, self.limits)
                if topic.is_settings:
                    await self._handle_settings(bus, tracker, topic, now)
                else:
                    await self._handle_event(bus, tracker, topic, now)
            except InputRejected as rejection:
                await self._reject(bus, tracker, rejection, now)
        except (asyncio.CancelledError, BusError):
            raise
        except Exception as error:
            await self._internal_error(bus, tracker, error, now)
        if attempt is not None:
            self.store.end_attempt(attempt)

    async def _internal_error(
        self, bus: Bus, tracker: _Tracker, error: Exception, now: datetime
    ) -> None:
        self.metrics.internal_errors += 1
        detail = _describe(error)
        log.error("internal error", topic=tracker.message.topic[:256], error=detail)
        rejection = InputRejected(RejectReason.INTERNAL_ERROR, detail)
        try:
            await self._reject(bus, tracker, rejection, now)
        except (asyncio.CancelledError, BusError):
            raise
        except Exception as again:  # not even the reduced echo could be made: a bare one
            log.error("internal error while rejecting", error=_describe(again))
            try:
                await self._reject(bus, tracker, rejection, now, bare=True)
            except (asyncio.CancelledError, BusError):
                raise
            except Exception as last:
                log.error("rejection not published", error=_describe(last))

    async def _handle_event(
        self, bus: Bus, tracker: _Tracker, topic: topics.PanelTopic, now: datetime
    ) -> None:
        event = check_event(
            topic, tracker.message.payload, devices=self.devices, limits=self.limits, now=now
        )
        event_id = str(event.event_id)
        if event_id in self.completed:
            # Committed before: the panel missed its receipt (or resent), so name it again.
            tracker.receipt = (topic.building, topic.device, event_id)
        if event_id in self.completed or event_id in self._in_flight:
            if tracker.message.dup:
                # The broker redelivers what we had not acknowledged before a crash.
                self.metrics.duplicates += 1
                return
            raise InputRejected(RejectReason.REPLAYED, f"event {event_id} was already received")
        self.metrics.events += 1
        self._in_flight.add(event_id)
        tracker.event_id = event_id
        tracker.receipt = (topic.building, topic.device, event_id)
        consent = self.consent(event.building_id, event.dwelling_id)
        decision = decide(
            event,
            consent,
            router=self.router,
            gateway_id=self.settings.gateway_id,
            decision_id=random_uuid(),
            now=now,
        )
        # Spec item 7: an event that consent stops at the gateway (initialised dwelling,
        # §7(1)①; return-home notification off, §7(1)②) is neither forwarded nor stored,
        # not even as completed: a redelivery of it is simply withheld again.
        tracker.needs_store = decision.gate is None
        if tracker.needs_store:
            self.store.record_decision(_decision_row(decision))
        envelopes = Envelopes(decision, now)
        for outcome in decision.outcomes:
            if not outcome.forwarded:
                self.metrics.withheld[outcome.reason.value if outcome.reason else "?"] += 1
                continue
            self.metrics.forwarded[outcome.kind.value] += 1
            if outcome.kind is DestinationKind.STATISTICS:
                # Counted when the event is committed, in the same batch (_settle).
                tracker.statistic = (event.building_id, str(event.type), event.occurred_at)
            if outcome.payload is None or outcome.topic is None:
                continue
            if outcome.kind is DestinationKind.ANALYTICS:
                # §5(5): held when the event is committed (_settle), released per window.
                tracker.analytics = Draft.of(
                    outcome,
                    policy_version=decision.policy_version,
                    gateway_id=self.settings.gateway_id,
                )
                continue
            # One publish per copy: the event's facts, and its image in a message of its
            # own (spec item 2). Each copy to a recipient has its own ledger row, written
            # ahead of that copy's publish.
            for copy in outcome.copies:
                if copy.payload is None or copy.topic is None:
                    continue
                payload, properties = envelopes.encode(outcome, copy)
                provision = (
                    _provision(decision, outcome, copy, now, event_id, envelopes.decision_id)
                    if outcome.provision in _LEDGER
                    else None
                )
                await self._send(bus, tracker, copy.topic, payload, properties, provision)
        if self.settings.log_events:
            log.info(
                "event",
                event_id=event_id,
                type=event.type,
                dwelling=f"{event.building_id}/{event.dwelling_id}",
                forwarded=[o.destination for o in decision.forwarded],
            )

    async def _handle_settings(
        self, bus: Bus, tracker: _Tracker, topic: topics.PanelTopic, now: datetime
    ) -> None:
        change = check_settings(
            topic, tracker.message.payload, devices=self.devices, limits=self.limits
        )
        if await self.store.consent_change_seen(str(change.change_id)):
            self.metrics.settings["duplicate"] += 1
            return
        applied = await self.apply_settings(change, source=f"panel:{topic.device}", now=now)
        await self._send(
            bus, tracker, topics.settings_ack(topic.building, topic.device), applied, ()
        )

    async def apply_settings(self, change: SettingsChange, *, source: str, now: datetime) -> bytes:
        """Apply and durably record one resident setting; returns the ack to publish.

        The in-memory state changes before the next message is taken, so no later
        event is decided under the old consent (spec item 9).
        """
        key = (change.building_id, change.dwelling_id)
        result = apply_change(
            self.consent(*key), change, policy=self.policy, partners=self.partners, now=now
        )
        await self.store.save_consent(
            result.state,
            change=change.model_dump_json(),
            change_id=str(change.change_id),
            source=source,
            applied=result.applied,
            detail=result.detail,
            at=now,
        )
        if result.applied:
            self.consents[key] = result.state
        self.metrics.settings["applied" if result.applied else "refused"] += 1
        log.info(
            "settings",
            dwelling=f"{key[0]}/{key[1]}",
            kind=change.change.kind,
            applied=result.applied,
            detail=result.detail,
        )
        return result.ack(change, now=now).model_dump_json().encode()

    def consent(self, building_id: str, dwelling_id: str) -> ConsentState:
        state = self.consents.get((building_id, dwelling_id))
        return state if state is not None else ConsentState.initial(building_id, dwelling_id)

    async def _reject(
        self,
        bus: Bus,
        tracker: _Tracker,
        rejection: InputRejected,
        now: datetime,
        *,
        bare: bool = False,
    ) -> None:
        message = tracker.message
        reason = rejection.reason
        if not bare:  # a bare echo repeats a rejection already counted
            self.metrics.rejected[reason.value] += 1
        record = (
            RejectedInput.bare(message.topic, rejection)
            if bare
            else RejectedInput.of(
                message.topic,
                message.payload,
                rejection,
                devices=self.devices,
                registered=self._registered,
            )
        )
        if tracker.receipt is None:
            tracker.receipt = rejected_target(message.topic, message.payload, reason)
        self.store.record_rejection(
            RejectionRow(now, reason.value, record.detail, record.topic, record.kept)
        )
        tracker.needs_store = True
        if reason is RejectReason.DEAD_LETTER:
            self.metrics.dead_lettered += 1
            log.error("dead-lettered", topic=record.topic, detail=record.detail)
            destination = topics.DEADLETTER
        else:
            log.warning("rejected", reason=reason.value, topic=record.topic, detail=record.detail)
            destination = topics.rejected(reason.value)
        envelope = record.envelope(received_at=now, gateway_id=self.settings.gateway_id)
        await self._send(
            bus,
            tracker,
            destination,
            envelope.model_dump_json().encode(),
            [("reason", reason.value)],
        )

    def _registered(self, building_id: str, dwelling_id: str) -> bool:
        # Ids from a rejected payload may be anything: look them up, never build on them.
        state = self.consents.get((building_id, dwelling_id))
        return state is not None and state.registered

    # --- acknowledgement bookkeeping ---------------------------------------------------

    async def _send(
        self,
        bus: Bus,
        tracker: _Tracker,
        topic: str,
        payload: bytes,
        properties: list[tuple[str, str]] | tuple[()],
        provision: LedgerRow | None = None,
    ) -> None:
        """Publish one copy for ``tracker``'s message; a copy with a ``provision`` is
        published only once its ledger row is committed (ledger.WriteAhead)."""
        tracker.publishes += 1

        def done(error: BaseException | None) -> None:
            if error is None:
                if provision is not None:
                    tracker.provisions.append(provision)
            elif isinstance(error, PublishFailed):
                # Refused by the broker (an ACL or size limit): retrying cannot help.
                self.metrics.publish_refused += 1
                log.error("publish refused", topic=topic, error=str(error))
            else:
                tracker.failed = True
            self._release(tracker)

        if provision is not None:
            tracker.intents.append(provision)
            self.ledger.submit(provision, bus, topic, payload, properties, done)
            return
        try:
            await bus.send(topic, payload, qos=1, user_properties=properties, on_done=done)
        except PublishFailed as error:
            # Refused before it left (e.g. over the broker's packet size): the same as a
            # refusal by the broker, never a reason to drop the connection.
            done(error)

    def _release(self, tracker: _Tracker) -> None:
        tracker.publishes -= 1
        if tracker.publishes == 0:
            self._settle(tracker)
            self._settled.set()
        self._ack_ready()

    def _settle(self, tracker: _Tracker) -> None:
        """Every publish of the message has an outcome: record what became of it."""
        store = self.store
        if len(tracker.provisions) < len(tracker.intents):
            delivered = {id(row) for row in tracker.provisions}
            # Refused, unacknowledged or never sent: it may or may not have reached the
            # recipient. §8: kept, marked unconfirmed; a later delivery upgrades it.
            store.record_unconfirmed([r for r in tracker.intents if id(r) not in delivered])
        if tracker.failed:
            # Not acknowledged, so the broker delivers it again and its completion waits
            # for that; a copy the broker did take is on record as delivered now.
            store.record_delivered(tracker.provisions)
            return
        if not tracker.needs_store:
            return
        # Every destination has it: now its ledger rows, statistics count and completion
        # are recorded, and the next flush lets the broker forget it.
        store.record_delivered(tracker.provisions)
        event_id = tracker.event_id
        if event_id is not None:
            first = self._first_completion(event_id)
            if tracker.statistic is not None and first:
                window = self.statistics.add(*tracker.statistic)
                if window is not None:
                    store.record_statistic(window, tracker.statistic[1])
            if tracker.analytics is not None and first:
                # In the batch that completes the event: on record before its ack.
                store.record_analytics_held(self.analytics.hold(tracker.analytics, self.clock()))
            store.record_completed(event_id, self.clock().timestamp())
            self._committing.add(event_id)
        self._unflushed.append(tracker)

    def _first_completion(self, event_id: str) -> bool:
        # After a lost connection the broker may deliver an event again before its first
        # completion is committed: it must not be counted twice.
        return event_id not in self._committing and event_id not in self.completed

    def _ack_ready(self) -> None:
        # Acknowledge in arrival order, as MQTT expects of a subscriber.
        bus = self._bus
        acked = self.metrics.acked
        while self._trackers:
            tracker = self._trackers[0]
            if not (tracker.done or tracker.failed):
                break
            self._trackers.popleft()
            if tracker.event_id is not None:
                self._in_flight.discard(tracker.event_id)
            if tracker.failed:
                continue  # left unacknowledged on purpose: the broker will redeliver it
            if bus is not None:
                bus.ack(tracker.message)
            self.metrics.acked += 1
            if tracker.receipt is not None:
                self.receipts.settle(tracker.receipt)
        if not self._trackers:
            self._idle.set()
        if self._waiting_for_acks and self.metrics.acked != acked:
            # Only then can a waiter's count have been reached; most releases ack nothing.
            asyncio.get_running_loop().create_task(self._notify_acked())

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

    async def _flush(self) -> None:
        batch, self._unflushed = self._unflushed, []
        await self.store.flush()
        for tracker in batch:
            tracker.stored = True
            # Committed as completed: a redelivery after a lost connection is a no-op
            # from here on, even if the broker never saw our acknowledgement.
            if tracker.event_id is not None:
                self.completed.add(tracker.event_id)
                self._committing.discard(tracker.event_id)
        self._ack_ready()
        if self._bus is not None:
            # After the commit, and after the inbound acks: a receipt never waits for them.
            await self.receipts.publish(self._bus)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)  # the batching period
            await self._flush()

    # --- reporting -----------------------------------------------------------------------

    async def _report_loop(self, bus: Bus) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            await self.publish_reports(bus)

    def progress(self) -> dict[str, Any]:
        """How far behind the gateway is: what ``health`` reads to tell a stall."""
        oldest = self._trackers[0].received if self._trackers else None
        return {
            "at": utc_now().isoformat(),
            "interval": self.settings.metrics_interval,
            "pending": len(self._trackers),
            "oldest_pending_s": round(time.monotonic() - oldest, 3) if oldest else 0.0,
        }

    async def publish_reports(self, bus: Bus) -> None:
        """Retained metrics and any closed statistics windows."""
        await bus.send(
            topics.METRICS,
            _json(
                {
                    "gateway_id": self.settings.gateway_id,
                    **self.metrics.snapshot(),
                    **self.progress(),
                    "statistics_late": self.statistics.late,
                    "ledger_intents": self.ledger.intents,
                    "analytics_held": self.analytics.held,
                    "analytics_released": self.analytics.released,
                    "ledger_commits": self.ledger.commits,
                }
            ),
            retain=True,
        )
        now = self.clock()
        due = self.statistics.flush(now)
        if not due:
            return
        # Every count of these windows is committed before it is published.
        await self._flush()
        for index, aggregate in enumerate(due):
            try:
                envelope = aggregate.message(
                    policy=self.policy,
                    gateway_id=self.settings.gateway_id,
                    decision_id=aggregate.id,  # the same if it is published again
                    now=now,
                )
            except ValueError as error:
                # No rule of this policy counted them (a window restored under another
                # policy): nothing flows without a rule. Kept in the store.
                log.error("statistics window not published", error=str(error))
                self.statistics.abandon(aggregate.window)
                continue
            try:
                await bus.send(
                    aggregate.topic,
                    envelope.model_dump_json().encode(),
                    user_properties=user_properties(envelope),
                    on_done=functools.partial(self._aggregate_sent, aggregate.window),
                )
            except BaseException:
                for unsent in due[index:]:
                    self.statistics.unsent(unsent.window)
                raise

    def _aggregate_sent(self, window: Window, error: BaseException | None) -> None:
        if error is None:
            # Published: its counts leave the store with the next batch. A crash before
            # that publishes it again after the restart, with the same id.
            self.statistics.published(window)
            self.store.record_window_published(window, closed_before=self.statistics.closed_before)
        elif isinstance(error, PublishFailed):
            self.metrics.publish_refused += 1
            log.error("statistics refused", topic=error.topic, error=str(error))
            self.statistics.abandon(window)  # kept in the store: a restart tries again
        else:
            self.statistics.unsent(window)  # the next report publishes it

    # --- analytics: held per window, released together (analytics.py) ---------------------

    async def _release_loop(self, bus: Bus) -> None:
        while True:
            await self.release_analytics(bus)
            wait = (self.analytics.next_release(self.clock()) - self.clock()).total_seconds()
            await asyncio.sleep(max(wait, 0.001))  # until the current window ends

    async def release_analytics(self, bus: Bus) -> int:
        """Publish every held copy whose window has ended, back to back, in shuffled
        order; each leaves the store once the broker acknowledged it. How many."""
        now = self.clock()
        if not self.analytics.any_due(now):
            return 0
        # Every copy of an ended window was held by a completion before it ended: once
        # this batch is committed, each is on record before it is published.
        await self._flush()
        due = self.analytics.due(now)
        for index, held in enumerate(due):
            try:
                await bus.send(
                    held.topic,
                    held.payload,
                    user_properties=held.properties,
                    on_done=functools.partial(self._analytics_sent, held),
                )
            except PublishFailed as error:
                # Refused before it left (over the packet size): as if the broker refused it.
                self._analytics_sent(held, error)
            except BaseException:
                for unsent in due[index:]:
                    self.analytics.unsent(unsent.copy_id)
                raise
        return len(due)

    def _analytics_sent(self, held: HeldCopy, error: BaseException | None) -> None:
        if error is None:
            self.analytics.published(held.copy_id)
            self.store.record_analytics_released(held.copy_id)
        elif isinstance(error, PublishFailed):
            self.metrics.publish_refused += 1
            log.error("analytics copy refused", topic=error.topic, error=str(error))
            self.analytics.abandon(held.copy_id)  # kept in the store: a restart tries again
        else:
            self.analytics.unsent(held.copy_id)  # the next release publishes it
        if not self.analytics.held:
            asyncio.get_running_loop().create_task(self._notify_analytics())

    async def _notify_analytics(self) -> None:
        async with self._analytics_changed:
            self._analytics_changed.notify_all()

    async def wait_analytics_released(self) -> None:
        """Wait until no analytics copy is held (tests, the demo, the scenario runner)."""
        async with self._analytics_changed:
            await self._analytics_changed.wait_for(lambda: not self.analytics.held)

    def reset_in_flight(self) -> None:
        """After a lost connection: what was not acknowledged will be delivered again."""
        self.online.clear()
        self._trackers.clear()
        self._in_flight.clear()
        self._bus = None
        self._idle.set()

    async def _publish_status(self, bus: Bus, state: Literal["online", "offline"]) -> None:
        await bus.publish(
            topics.STATUS, status_payload(self.settings.gateway_id, state), retain=True
        )


def status_payload(gateway_id: str, state: Literal["online", "offline"]) -> bytes:
    return (
        GatewayStatus(gateway_id=gateway_id, state=state, since=utc_now())
        .model_dump_json()
        .encode()
    )


def _attempt_key(message: Message) -> str:
    """The same message delivered again has the same key, across restarts."""
    digest = hashlib.blake2b(message.topic.encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(message.payload)
    return digest.hexdigest()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _decision_row(decision: Decision) -> DecisionRow:
    return DecisionRow(
        event_id=str(decision.event_id),
        decision_id=str(decision.decision_id),
        building_id=decision.building_id,
        dwelling_id=decision.dwelling_id,
        event_type=decision.event_type.value,
        decided_at=decision.decided_at,
        policy_version=decision.policy_version,
        consent_revision=decision.consent_revision,
        outcomes=logged_outcomes(decision),
    )


def decision_outcomes(decision: Decision) -> list[dict[str, Any]]:
    """Every destination's outcome as JSON-ready data (the decision log's content)."""
    return [_logged(o) for o in decision.outcomes]


def _logged(o: Outcome) -> dict[str, Any]:
    return _log_entry(_log_key(o))


def _log_key(o: Outcome) -> tuple[Any, ...]:
    return (
        o.destination,
        o.forwarded,
        o.purposes,
        o.fields,
        o.rule_id,
        o.clause,
        o.reason,
        o.detail,
        tuple(c.tags for c in o.copies),
        o.untrue,
    )


def _log_entry(key: tuple[Any, ...]) -> dict[str, Any]:
    destination, forwarded, purposes, fields, rule_id, clause, reason, detail, copies, untrue = key
    entry = {
        "destination": destination,
        "forwarded": forwarded,
        # The event copy's tags; every message the destination got is in "messages".
        "purposes": list(purposes),
        "fields": list(fields),
        "rule_id": rule_id,
        "clause": clause,
        "reason": reason.value if reason else None,
        "detail": detail,
    }
    if forwarded:
        entry["messages"] = [
            {
                "part": tags.part.value,
                "rule_id": tags.rule_id,
                "clause": tags.clause,
                "purposes": list(tags.purposes),
                "categories": list(tags.categories),
                "fields": list(tags.fields),
            }
            for tags in copies
        ]
    if untrue:
        entry["untrue"] = untrue  # a copy not produced: its tags would not hold
    return entry


@functools.lru_cache(maxsize=4_096)
def _log_text(key: tuple[Any, ...]) -> str:
    return json.dumps(_log_entry(key), separators=(",", ":"))


def logged_outcomes(decision: Decision) -> str:
    """``decision_outcomes`` as the decision log stores it: compact JSON text.

    A log entry has no payload or topic, so entries repeat from event to event: each
    distinct one is encoded once, and a row is their join, the same text as
    ``json.dumps`` of the whole list (tests/unit/test_decision_log.py).
    """
    return f"[{','.join([_log_text(_log_key(o)) for o in decision.outcomes])}]"


def _provision(
    decision: Decision,
    outcome: Outcome,
    copy: Copy,
    now: datetime,
    event_id: str,
    decision_id: str,
) -> LedgerRow:
    """The ledger row of one copy to a recipient: its own items, purposes and rule."""
    tags = copy.tags
    return LedgerRow(
        at=now,
        recipient=outcome.destination,
        recipient_kind=outcome.kind.value,
        third_party=outcome.third_party,
        building_id=decision.building_id,
        dwelling_id=decision.dwelling_id,
        event_id=event_id,
        event_type=decision.event_type.value,
        items=tags.fields,
        image="image" in tags.fields,
        purposes=tags.purposes,
        rule_id=tags.rule_id,
        policy_version=decision.policy_version,
        decision_id=decision_id,
        part=tags.part.value,
    )


async def _seed_consents(
    store: Store,
    registry: Registry,
    consents: dict[tuple[str, str], ConsentState],
    *,
    now: datetime,
) -> None:
    """Dwellings the store knows nothing about start with the registry's consent."""
    entries = []
    for building, dwelling in registry.dwellings():
        key = (building.id, dwelling.id)
        if key in consents or dwelling.consent is None:
            continue
        state = consent_from_registry(building.id, dwelling, now=now)
        entries.append((state, dwelling.consent.model_dump_json()))
        consents[key] = state
    if entries:
        await store.seed_consents(
            entries, source="registry", detail="initial consent from the device registry", at=now
        )


def consent_from_registry(building_id: str, dwelling: Dwelling, *, now: datetime) -> ConsentState:
    initial = dwelling.consent or InitialConsent(registered=False)
    return ConsentState(
        building_id=building_id,
        dwelling_id=dwelling.id,
        registered=initial.registered,
        return_home_enabled=initial.return_home_enabled,
        services_used=initial.services,
        accepted_policy_version=initial.policy_version,
        revision=1,
        updated_at=now,
    )


# --- running it: reconnect with jittered backoff --------------------------------------


def broker_address(settings: Settings) -> BrokerAddress:
    from intercom_gateway.broker.mosquitto import load_credentials

    password = settings.broker_password.get_secret_value() if settings.broker_password else None
    if password is None:
        password = load_credentials(settings.secrets_dir).passwords.get(settings.broker_user)
    tls = TlsOptions(ca_file=str(settings.broker_ca_file)) if settings.broker_ca_file else None
    return BrokerAddress(
        host=settings.broker_host,
        port=settings.broker_port,
        username=settings.broker_user,
        password=password,
        tls=tls,
    )


async def run_gateway(
    settings: Settings, *, stop: asyncio.Event, ready: Callable[[Gateway], None] | None = None
) -> Metrics:
    """Run until ``stop``; a lost broker connection is retried with jittered backoff.

    A session taken over by another connection, or missing when we come back, is
    logged as an error and counted: both mean events queued for us may be gone.
    """
    address = broker_address(settings)
    # The broker accepts only ids of the form <account>.<suffix> (docs/security.md).
    client_id = address.client_id(settings.gateway_id)
    transport = PahoBus if settings.mqtt_client == "paho" else MqttBus
    async with Store.open(settings.db_path) as store:
        gateway = await Gateway.load(settings, store)
        if ready is not None:
            ready(gateway)
        delay = settings.reconnect_min
        connected_before = False
        while not stop.is_set():
            connected_at: float | None = None
            acked_before = gateway.metrics.acked
            try:
                async with transport(
                    address,
                    client_id=client_id,
                    clean_start=False,  # keep our session: the broker queues while we are away
                    session_expiry=settings.session_expiry,
                    manual_ack=True,
                    receive_maximum=settings.receive_maximum,
                    publish_window=settings.publish_window,
                    keepalive=settings.keepalive,
                    will=Will(topics.STATUS, status_payload(settings.gateway_id, "offline")),
                ) as bus:
                    connected_at = time.monotonic()
                    # With session_expiry 0 no session is kept by design: nothing to report.
                    if connected_before and settings.session_expiry and not bus.session_present:
                        gateway.metrics.sessions_lost += 1
                        log.error(
                            "broker had no session for us: messages queued while we were "
                            "away are gone",
                            client_id=client_id,
                        )
                    connected_before = True
                    await gateway.serve(bus, stop=stop)
            except* BusError as group:
                error = group.exceptions[0]
                # SessionTakenOver itself, or a ConnectionLost raised from it later.
                taken = group.subgroup(
                    lambda e: (
                        isinstance(e, SessionTakenOver) or isinstance(e.__cause__, SessionTakenOver)
                    )
                )
                if taken is not None:
                    gateway.metrics.session_takeovers += 1
                    log.error(
                        "session taken over: another connection with our client id took it",
                        client_id=client_id,
                    )
                gateway.reset_in_flight()
                gateway.metrics.reconnects += 1
                # Only a connection that made progress or lived a while resets the
                # backoff: one that fails the same way each time (a publish the broker
                # refuses, a session taken over) must not become a tight reconnect loop.
                lived = connected_at is not None and (
                    gateway.metrics.acked > acked_before
                    or time.monotonic() - connected_at > settings.reconnect_max
                )
                if lived:
                    delay = settings.reconnect_min
                wait = delay * random.uniform(0.5, 1.5)
                log.warning(
                    "broker connection lost",
                    error=_describe(error),
                    reconnects=gateway.metrics.reconnects,
                    retry_in=round(wait, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                delay = min(delay * 2, settings.reconnect_max)
        await gateway.store.flush()
        return gateway.metrics
