"""The gateway: validate, decide, plan, send and record; acknowledge only when safe.

One loop takes the panel messages in arrival order, so the events of a dwelling are
decided in order and a consent change applies from the very next message (spec item
9). Each message is checked (``core.ingress``), decided (``core.decide``) and planned
(``core.plan``: the publications and the rows); the plan is carried out here. Publishing
is pipelined: the loop does not wait for PUBACKs, but an inbound message is acknowledged
to the broker only when every publish it caused has an outcome and its records are
committed to the store, and never before an earlier one (``acks.AckQueue``). A crash
before that makes the broker deliver it again (persistent session), and the
completed-event record makes the second pass a no-op for the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import structlog

from intercom_gateway.bus import Bus, Message
from intercom_gateway.core import topics
from intercom_gateway.core.analytics import AnalyticsWindows
from intercom_gateway.core.configuration import Configuration
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.distributions import check_usage
from intercom_gateway.core.ingress import (
    InputRejected,
    check_event,
    check_properties,
    check_settings,
    check_topic,
)
from intercom_gateway.core.models import RejectReason, random_uuid, utc_now
from intercom_gateway.core.plan import Publication, decision_outcomes, logged_outcomes, plan
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.statistics import StatisticsAggregator
from intercom_gateway.core.trace import trace_properties
from intercom_gateway.errors import BusError
from intercom_gateway.gateway import notices
from intercom_gateway.gateway.acks import Inbound
from intercom_gateway.gateway.analytics import AnalyticsRelease
from intercom_gateway.gateway.completion import CompletedIds, Completion
from intercom_gateway.gateway.configs import Reconfigurable, configuration_at_start
from intercom_gateway.gateway.consents import Consents, consent_from_registry, seed_consents
from intercom_gateway.gateway.distributions import DistributionDesk
from intercom_gateway.gateway.metrics import MetricsServer
from intercom_gateway.gateway.receipts import Receipts
from intercom_gateway.gateway.rejections import Rejections, attempt_key
from intercom_gateway.gateway.status import (
    Metrics,
    StatisticsRelease,
    metrics_payload,
    status_payload,
)
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store

__all__ = [
    "CompletedIds",
    "Gateway",
    "Metrics",
    "consent_from_registry",
    "decision_outcomes",
    "logged_outcomes",
    "status_payload",
]

log = structlog.get_logger("intercom_gateway.gateway.service")


class Gateway(Reconfigurable):  # the configuration: one value, swapped (§10, configs.py)
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
        revision: int = 0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.config = Configuration.build(policy, partners, registry, revision=revision)
        self.completed = completed
        self.clock = clock
        self.limits = settings.ingress_limits()
        self.metrics = Metrics()
        self._consents = Consents(
            consents, store=store, policy=policy, partners=partners, metrics=self.metrics
        )
        self.receipts = Receipts(settings.gateway_id, clock=clock)
        self.statistics = StatisticsAggregator(
            window=timedelta(seconds=settings.statistics_window),
            min_group_size=settings.statistics_min_group,
            delay=timedelta(seconds=settings.statistics_delay),
        )
        self.analytics = AnalyticsWindows(window=timedelta(seconds=settings.analytics_window))
        # Tests move the clock by assigning ``gateway.clock``: read it through the gateway.
        self.completion = Completion(
            store=store,
            metrics=self.metrics,
            completed=completed,
            receipts=self.receipts,
            statistics=self.statistics,
            analytics=self.analytics,
            clock=lambda: self.clock(),
            bus=lambda: self._bus,
        )
        self.ledger = self.completion.ledger
        self._statistics = StatisticsRelease(
            self.statistics,
            store=store,
            policy=policy,
            metrics=self.metrics,
            gateway_id=settings.gateway_id,
            flush=self.completion.flush,
        )
        self._analytics = AnalyticsRelease(
            self.analytics,
            store=store,
            metrics=self.metrics,
            clock=lambda: self.clock(),
            flush=self.completion.flush,
        )
        self._rejections = Rejections(
            metrics=self.metrics,
            store=store,
            devices=self.devices,
            registered=self._consents.registered,
            gateway_id=settings.gateway_id,
            send=self.completion.send,
        )
        self.distributions = DistributionDesk(  # §2(1), §5(1)①: notices and surveys
            store, partners, self.devices, self.limits, self._consents, self.completion
        )
        self._bus: Bus | None = None
        self.announce = True  # publish status and metrics (a partition leaves them to its process)
        self.buildings: tuple[str, ...] | None = None  # a partition's buildings; None: all
        self.online = asyncio.Event()  # set while subscribed and taking messages
        # Where `run` serves this gateway's Prometheus metrics, if it does (run.py).
        self.metrics_server: MetricsServer | None = None

    @property
    def consents(self) -> dict[tuple[str, str], ConsentState]:
        return self._consents.states

    @classmethod
    async def load(
        cls, settings: Settings, store: Store, *, clock: Callable[[], datetime] = utc_now
    ) -> Gateway:
        """Read the registry, policy and partner files; restore consent and completed ids,
        and what a stopped process left (partitioned: per partition, as each is taken)."""
        policy, partners, registry, revision = await configuration_at_start(settings, store)
        await store.save_registry(registry)
        consents = await store.consents()
        await seed_consents(store, registry, consents, now=clock())
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
            revision=revision,
        )
        if not settings.partitioned:
            await gateway._recover()
        return gateway

    async def _recover(self) -> None:
        """Take up what a stopped process left in the store: its ledger intents and the
        statistics windows it had not published."""
        unconfirmed = await self.store.save_unconfirmed()
        if unconfirmed:
            log.warning(
                "ledger rows intended by a stopped gateway are marked unconfirmed (§8)",
                rows=unconfirmed,
            )
        counts, closed_before = await self.store.statistics_windows()
        self.statistics.restore(counts, closed_before=closed_before)
        self.analytics.restore(await self.store.analytics_held())

    # --- the loop ---------------------------------------------------------------------

    async def serve(
        self,
        bus: Bus,
        *,
        stop: asyncio.Event | None = None,
        filters: Sequence[str] | None = None,
        announce: bool = True,
    ) -> None:
        """Handle messages until ``stop`` is set (then finish in-flight work) or the bus fails.

        ``filters``: the panel topics to take, every building's by default (a partition
        takes its own buildings'); ``announce``: keep the retained status.
        """
        stop = stop or asyncio.Event()
        self._bus = bus
        self.announce = announce
        # Retain handling 2: the broker never replays retained panel messages at
        # subscribe time. A panel event is not state; a retained one would come back at
        # every restart, even after our session was cleared.
        await bus.subscribe(*(filters or topics.INBOUND_FILTERS), retain_handling=2)
        await bus.subscribe(topics.CONFIG, retain_handling=0)  # §10: retained, state
        # What a stopped gateway left unpublished, before any message (gateway.notices).
        await notices.republish_notices(bus, self.store, buildings=self.buildings)
        if announce:
            await self._publish_status(bus, "online")
        self.online.set()
        log.info("gateway online", gateway_id=self.settings.gateway_id)
        async with asyncio.TaskGroup() as tasks:
            background = [
                tasks.create_task(
                    self.completion.flush_loop(self.settings.flush_interval), name="store-flush"
                ),
                tasks.create_task(self._report_loop(bus), name="metrics-and-statistics"),
                tasks.create_task(self._analytics.loop(bus), name="analytics-release"),
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
                if announce:
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
        await self.completion.finish()

    async def wait_acked(self, count: int) -> None:
        """Wait until ``count`` inbound messages in all have been acknowledged."""
        await self.completion.wait_acked(count)

    async def handle(self, bus: Bus, message: Message) -> None:
        """Handle one message. Nothing raised while handling it escapes, but a lost bus.

        Bad input is rejected with its reason; an error of ours becomes an
        ``internal_error`` rejection naming the error. Either way the message is
        acknowledged and the loop goes on: a message whose handling killed the process
        was delivered again at every restart, and stopped every other event with it.
        """
        inbound = self.completion.take(message)
        if message.topic == topics.CONFIG:
            await self._control(bus, inbound)
            return
        self.metrics.received += 1
        now = self.clock()
        try:
            await self._attempt(bus, inbound, now)
        except (asyncio.CancelledError, BusError):
            # Stopped half-way (shutdown, or the connection went): some destinations
            # may lack it, so it is never acknowledged and the broker delivers it again.
            self.completion.handled(inbound, failed=True)
            raise
        self.completion.handled(inbound)

    async def _attempt(self, bus: Bus, inbound: Inbound, now: datetime) -> None:
        message = inbound.message
        # Only a message delivered again can have killed us before: those alone are
        # counted, durably, around their handling (a crash leaves the count up).
        attempt = attempt_key(message) if message.dup or message.retain else None
        try:
            try:
                if attempt is not None:
                    count = await self.store.save_attempt(attempt)
                    if count > self.settings.max_attempts:
                        raise InputRejected(
                            RejectReason.DEAD_LETTER,
                            f"delivered {count} times; handling it never finished",
                        )
                contractor = topics.parse_contractor_distributions(message.topic)
                topic = contractor or check_topic(message.topic)
                check_properties(message.user_properties, self.limits)
                if isinstance(topic, topics.ContractorTopic):
                    await self.distributions.handle(bus, inbound, topic, now)
                elif topic.is_settings:
                    await self._handle_settings(bus, inbound, topic, now)
                else:
                    await self._handle_event(bus, inbound, topic, now)
            except InputRejected as rejection:
                await self._rejections.reject(bus, inbound, rejection, now)
        except (asyncio.CancelledError, BusError):
            raise
        except Exception as error:
            await self._rejections.internal_error(bus, inbound, error, now)
        if attempt is not None:
            self.store.record_attempt_end(attempt)

    async def _handle_event(
        self, bus: Bus, inbound: Inbound, topic: topics.PanelTopic, now: datetime
    ) -> None:
        event = check_event(
            topic, inbound.message.payload, devices=self.config.devices, limits=self.limits, now=now
        )
        check_usage(event, await self.distributions.delivered(event))  # §5(1)①: its own only
        event_id = str(event.event_id)
        if event_id in self.completed:
            # Committed before: the panel missed its receipt (or resent), so name it again.
            inbound.receipt = (topic.building, topic.device, event_id)
        if event_id in self.completed or event_id in self.completion.in_flight:
            if inbound.message.dup:
                # The broker redelivers what we had not acknowledged before a crash.
                self.metrics.duplicates += 1
                return
            raise InputRejected(RejectReason.REPLAYED, f"event {event_id} was already received")
        self.metrics.events += 1
        self.completion.validated(inbound)  # checked, and not seen before
        self.completion.in_flight.add(event_id)
        inbound.event_id = event_id
        inbound.receipt = (topic.building, topic.device, event_id)
        gw = self.settings.gateway_id
        decision = decide(
            event,
            self.consent(event.building_id, event.dwelling_id),
            router=self.config.router,
            gateway_id=gw,
            decision_id=random_uuid(),
            now=now,
        )
        spans = self.completion.spans
        trace = (
            trace_properties(inbound.message.user_properties)  # core/trace.py
            if spans is None
            else spans.start(inbound, decision)  # ...and the span it exports (otel.py)
        )
        trace = (*trace, self.config.property)  # its revision, on identified copies (§10)
        planned = plan(decision, occurred_at=event.occurred_at, now=now, gateway_id=gw, trace=trace)
        self.completion.planned(inbound)
        # Spec item 7: an event that consent stops at the gateway (initialised dwelling,
        # §7(1)①; return-home notification off, §7(1)②) is neither forwarded nor stored,
        # not even as completed: a redelivery of it is simply withheld again.
        if planned.decision is not None:
            inbound.writes = True
            self.store.record_decision(planned.decision)
        self.metrics.withheld_by.update(planned.withheld)
        self.metrics.forwarded.update(planned.forwarded)
        # Counted, and held (§5(5)), when the event is committed, in that batch.
        inbound.statistic, inbound.analytics = planned.statistic, planned.analytics
        for publication in planned.publications:
            await self.completion.send(bus, inbound, publication)
        if self.settings.log_events:
            log.info(
                "event",
                event_id=event_id,
                type=event.type,
                dwelling=f"{event.building_id}/{event.dwelling_id}",
                forwarded=[o.destination for o in decision.forwarded],
            )

    async def _handle_settings(
        self, bus: Bus, inbound: Inbound, topic: topics.PanelTopic, now: datetime
    ) -> None:
        change = check_settings(
            topic, inbound.message.payload, devices=self.devices, limits=self.limits
        )
        if await self.store.consent_change_seen(str(change.change_id)):
            self.metrics.settings["duplicate"] += 1
            return
        await self.completion.commit_before(inbound)
        # Applied before the next message is taken: no later event is decided under the
        # old consent (spec item 9); the services it withdraws from are told first (11).
        applied = await self._consents.apply(change, source=f"panel:{topic.device}", now=now)
        await notices.send_notices(self.completion, bus, inbound, applied.notices)
        ack = Publication(topics.settings_ack(topic.building, topic.device), applied.ack)
        await self.completion.send(bus, inbound, ack)

    def consent(self, building_id: str, dwelling_id: str) -> ConsentState:
        return self._consents.state(building_id, dwelling_id)

    def reset_in_flight(self) -> None:
        """After a lost connection: what was not acknowledged will be delivered again."""
        self.online.clear()
        self.completion.reset()
        self._bus = None

    # --- reporting -----------------------------------------------------------------------

    async def _report_loop(self, bus: Bus) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            await self.publish_reports(bus)

    async def publish_reports(self, bus: Bus) -> None:
        """Retained metrics and any closed statistics windows."""
        report = {
            "gateway_id": self.settings.gateway_id,
            "config_revision": self.config.revision,  # §10
            **self.metrics.snapshot(),
            **self.completion.progress(self.settings.metrics_interval),
            "statistics_late": self.statistics.late,
            "ledger_intents": self.ledger.intents,
            "analytics_held": self.analytics.held,
            "analytics_released": self.analytics.released,
            "ledger_commits": self.ledger.commits,
        }
        if self.announce:
            await bus.publish(
                topics.METRICS,
                metrics_payload(report),
                retain=True,
                on_done=lambda _error: None,  # not awaited: the next report replaces it
            )
        await self._statistics.publish(bus, self.clock())

    async def release_analytics(self, bus: Bus) -> int:
        """Publish every held analytics copy whose window has ended; how many."""
        return await self._analytics.release(bus)

    async def wait_analytics_released(self) -> None:
        """Wait until no analytics copy is held (tests, the demo, the scenario runner)."""
        await self._analytics.wait_released()

    async def _publish_status(self, bus: Bus, state: Literal["online", "offline"]) -> None:
        payload = status_payload(self.settings.gateway_id, state, revision=self.config.revision)
        await bus.publish(topics.STATUS, payload, retain=True)
