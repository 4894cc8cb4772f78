"""The world of the slow broker-tier tests: a real Mosquitto, the gateway as a real
process (``intercom_gateway.qa.runner``), simulated panels and recording subscribers.

Shared by test_nothing_lost, test_commit_path_restarts, test_broker_crash, test_poison
and test_analytics_unlinkable: each makes its ``world`` fixture with ``open_world``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import Event, utc_now
from intercom_gateway.core.outcomes import Decision
from intercom_gateway.core.policy import default_policy, sample_partners
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.core.router import Router
from intercom_gateway.errors import BusError
from intercom_gateway.gateway.service import consent_from_registry
from intercom_gateway.qa.runner import (
    GatewayProcess,
    StatusWatch,
    following,
    started_broker,
)
from intercom_gateway.simulators.panels import iter_events

SERVICES = ("concierge", "elder-watch", "parcel-unlock")
# Quick reconnects: the tests restart the broker under the gateway.
RECONNECT = {"INTERCOM_RECONNECT_MIN": "0.05", "INTERCOM_RECONNECT_MAX": "0.5"}

# --- the world: broker, gateway process ---------------------------------------------------


@dataclass
class World:
    """A broker of its own and one gateway process; ``extra`` adds gateway settings
    (``INTERCOM_*``) from the next start on."""

    workdir: Path
    registry: Registry
    broker: Mosquitto
    gateway: GatewayProcess
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        return self.gateway.process

    @property
    def gateway_id(self) -> str:
        return self.gateway.gateway_id

    @gateway_id.setter
    def gateway_id(self, value: str) -> None:
        self.gateway.gateway_id = value

    async def start_gateway(self, status: StatusWatch) -> None:
        self.gateway.env = {**RECONNECT, **self.extra}
        await self.gateway.start(status)

    async def stop_gateway(self, sig: signal.Signals) -> int:
        return await self.gateway.stop(sig)

    def alive(self) -> bool:
        return self.gateway.alive


@contextlib.asynccontextmanager
async def open_world(workdir: Path, *, dwellings: int) -> AsyncIterator[World]:
    """Two buildings of ``dwellings`` each, using every sample service; the gateway not
    yet started, and killed on the way out if a test left it running."""
    registry = generate_registry(buildings=2, dwellings=dwellings, services=SERVICES)
    async with started_broker(workdir, registry, SERVICES) as broker:
        gateway = GatewayProcess(broker, workdir)
        await gateway.write_registry(registry)
        try:
            yield World(workdir, registry, broker, gateway)
        finally:
            await gateway.aclose(graceful=False)


# --- recorders -------------------------------------------------------------------------------


class Recorder:
    """Every copy each destination receives, keyed by event id."""

    def __init__(self) -> None:
        self.copies: dict[str, Counter[str]] = defaultdict(Counter)  # destination -> ids
        self._grew = asyncio.Condition()

    async def on(self, topic: str, payload: bytes, message: Any) -> None:
        destination = _destination(topic)
        ids = message.properties("event_id")
        if destination is None or not ids:
            return
        async with self._grew:
            self.copies[destination][ids[0]] += 1
            self._grew.notify_all()

    async def wait_complete(self, expected: dict[str, set[str]], timeout: float) -> None:
        def complete() -> bool:
            return all(ids <= set(self.copies[d]) for d, ids in expected.items())

        async with self._grew:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grew.wait_for(complete), timeout)


# A destination's image copies are counted apart, as "<destination>/image": an image is
# a message of its own (spec item 2), one more copy to lose or to duplicate.
IMAGE = "/image"


def _destination(topic: str) -> str | None:
    if topics.matches(topics.cloud_filter(), topic):
        name = "cloud"
    elif topics.matches(topics.group_filter(), topic):
        name = "group"
    elif topics.matches(topics.partners_filter(), topic):
        name = f"partner:{topic.split('/')[1]}"
    else:
        return None
    return name + IMAGE if topics.is_image(topic) else name


def ledger_key(destination: str, event_id: str) -> tuple[str, str, str]:
    """(recipient, event, part): the ledger's key of a copy counted for ``destination``."""
    part = "image" if destination.endswith(IMAGE) else "event"
    return destination.removesuffix(IMAGE), event_id, part


def output_subscriptions() -> list[tuple[str, list[str]]]:
    """(account, filters) of cloud and group (read as the operator) and each partner."""
    return [
        (OPERATOR, [topics.cloud_filter(), topics.group_filter()]),
        *((pid, [topics.partner_filter(pid)]) for pid in SERVICES),
    ]


@contextlib.asynccontextmanager
async def recording(world: World) -> AsyncIterator[Recorder]:
    """A recorder of every output, subscribed before anything is published."""
    recorder = Recorder()
    async with following(world.broker, output_subscriptions(), recorder.on):
        yield recorder


# --- expectations -------------------------------------------------------------------------


def decisions(events: Iterable[Event], registry: Registry) -> Iterator[tuple[Event, Decision]]:
    """Each event with the pure decision the gateway makes for it under the registry."""
    router = Router.compile(default_policy(), sample_partners())
    consents: dict[tuple[str, str], ConsentState] = {
        (b.id, d.id): consent_from_registry(b.id, d, now=utc_now()) for b, d in registry.dwellings()
    }
    for event in events:
        yield (
            event,
            decide(
                event,
                consents[(event.building_id, event.dwelling_id)],
                router=router,
                gateway_id="expect",
                decision_id=uuid.uuid4(),
                now=utc_now(),
            ),
        )


def entitled(events: list[Event], registry: Registry) -> dict[str, set[str]]:
    """Destination -> event ids it must get, by the same pure decision the gateway makes."""
    expected: dict[str, set[str]] = defaultdict(set)
    for event, decision in decisions(events, registry):
        for outcome in decision.forwarded:
            if outcome.kind.value in ("cloud", "group", "partner", "unlock_service"):
                expected[outcome.destination].add(str(event.event_id))
                if outcome.image_copy is not None:
                    expected[outcome.destination + IMAGE].add(str(event.event_id))
    return expected


def make_events(registry: Registry, count: int, seed: int) -> list[Event]:
    """``count`` events of every kind, stamped now (the gateway refuses stale ones)."""
    now = utc_now()
    events = []
    for event in iter_events(registry, seed=seed, start=now):
        events.append(event.model_copy(update={"occurred_at": now}))
        if len(events) == count:
            return events
    raise AssertionError("the simulator ran dry")


# --- the panels ---------------------------------------------------------------------------


class Publisher:
    """Publishes as the simulator fleet; survives broker restarts by resending what the
    broker had not acknowledged."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.acked: set[str] = set()

    async def publish(self, events: Sequence[Event], *, rate: float | None = None) -> None:
        pending = list(events)
        while pending:
            try:
                address = self.broker.address(FLEET)
                async with MqttBus(
                    address, client_id=address.client_id(f"pub-{uuid.uuid4().hex[:6]}")
                ) as bus:
                    for event in pending:
                        await bus.publish(
                            *message_of(event), on_done=self._done(str(event.event_id))
                        )
                        if rate:
                            await asyncio.sleep(1 / rate)  # pacing the panels, not syncing
                    await bus.drain()
            except BusError:
                await asyncio.sleep(0.05)
            pending = [e for e in pending if str(e.event_id) not in self.acked]

    def _done(self, event_id: str) -> Callable[[BaseException | None], None]:
        def done(error: BaseException | None) -> None:
            if error is None:
                self.acked.add(event_id)

        return done


def message_of(event: Event) -> tuple[str, bytes]:
    """The panel's topic and payload of ``event``."""
    return (
        topics.panel_events(event.building_id, event.device.id, event.type),
        event.model_dump_json().encode(),
    )


# --- reports ------------------------------------------------------------------------------


def report(path: Path, key: str, result: Mapping[str, Any], summary: str) -> None:
    """Keep ``result`` under ``key`` in the JSON report at ``path``; print ``summary``
    past pytest's capture."""
    path.parent.mkdir(exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[key] = result
    path.write_text(json.dumps(existing, indent=2))
    sys.__stdout__.write(summary + "\n")  # type: ignore[union-attr]
