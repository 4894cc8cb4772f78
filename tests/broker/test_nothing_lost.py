"""Nothing lost: real Mosquitto, the gateway as a real process, killed and restarted.

Simulated panels publish thousands of events of every kind. The gateway is killed
with SIGKILL at random points (or stopped with SIGTERM, or the broker is restarted,
or the gateway is down for a whole burst) and started again. Then every valid event
must have reached every destination it is entitled to (computed with the same
policy, registry and consent), no destination may have seen one it is not entitled
to, and after de-duplication by event id each destination has each event once. The
counts are printed and written to reports/nothing-lost.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR, Mosquitto, generate_credentials
from intercom_gateway.bus.mqtt import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import Event, utc_now
from intercom_gateway.core.policy import default_policy, sample_partners
from intercom_gateway.core.registry import Registry, dump_registry, generate_registry
from intercom_gateway.core.router import Router
from intercom_gateway.errors import BusError
from intercom_gateway.gateway.service import consent_from_registry
from intercom_gateway.simulators.panels import iter_events

pytestmark = pytest.mark.slow

SERVICES = ("concierge", "elder-watch", "parcel-unlock")
REPORT = Path(__file__).resolve().parents[2] / "reports" / "nothing-lost.json"


# --- the world: broker, gateway process, recorders ---------------------------------------


@dataclass
class World:
    workdir: Path
    registry: Registry
    broker: Mosquitto
    gateway_id: str = field(default_factory=lambda: f"gw-{uuid.uuid4().hex[:6]}")
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INTERCOM_BROKER_PORT": str(self.broker.port),
            "INTERCOM_SECRETS_DIR": str(self.broker.credentials.directory),
            "INTERCOM_DB_PATH": str(self.workdir / "gateway.sqlite"),
            "INTERCOM_REGISTRY_PATH": str(self.workdir / "registry.yaml"),
            "INTERCOM_GATEWAY_ID": self.gateway_id,
            "INTERCOM_LOG_EVENTS": "false",
            "INTERCOM_LOG_LEVEL": "WARNING",
            "INTERCOM_RECONNECT_MIN": "0.05",
            "INTERCOM_RECONNECT_MAX": "0.5",
        }

    async def start_gateway(self, status: StatusWatch) -> None:
        self.starts += 1
        log = (self.workdir / f"gateway-{self.starts}.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "intercom_gateway", "run", env=self.env(), stdout=log, stderr=log
        )
        log.close()
        await status.wait_for("online", self.process)

    async def stop_gateway(self, sig: signal.Signals) -> int:
        process, self.process = self.process, None
        assert process is not None
        if process.returncode is None:
            process.send_signal(sig)
        return await asyncio.wait_for(process.wait(), 30)


class StatusWatch:
    """Follows gateway/v1/status: each start must be seen to come online."""

    def __init__(self, broker: Mosquitto, gateway_id: str) -> None:
        self.broker = broker
        self.gateway_id = gateway_id
        self.online_count = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusWatch:
        ready = asyncio.Event()
        client_id = self.broker.address(OPERATOR).client_id(f"status-{uuid.uuid4().hex[:6]}")
        self._task = asyncio.create_task(
            _resilient(self.broker, OPERATOR, client_id, [topics.STATUS], self._on, ready)
        )
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _on(self, topic: str, payload: bytes, _props: Any) -> None:
        status = json.loads(payload)
        if status["gateway_id"] == self.gateway_id and status["state"] == "online":
            async with self._changed:
                self.online_count += 1
                self._changed.notify_all()

    async def wait_for(self, state: str, process: asyncio.subprocess.Process) -> None:
        assert state == "online"
        target = self.online_count + 1

        async def online() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.online_count >= target)

        waiter = asyncio.create_task(online())
        exited = asyncio.create_task(process.wait())
        done, _ = await asyncio.wait(
            {waiter, exited}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        exited.cancel()
        if waiter not in done:
            raise AssertionError("the gateway did not come online (see its log in the workdir)")


async def _resilient(
    broker: Mosquitto,
    user: str,
    client_id: str,
    filters: list[str],
    on_message: Callable[[str, bytes, Any], Any],
    ready: asyncio.Event | None = None,
) -> None:
    """A subscriber with a persistent session that survives broker restarts."""
    while True:
        try:
            async with MqttBus(
                broker.address(user), client_id=client_id, clean_start=False, session_expiry=3600
            ) as bus:
                await bus.subscribe(*filters)
                if ready is not None:
                    ready.set()
                async for message in bus.messages():
                    await on_message(message.topic, message.payload, message)
        except BusError:
            await asyncio.sleep(0.05)  # reconnect pace while the broker restarts


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
    parts = topic.split("/")
    if parts[0] in ("cloud", "group"):
        name = parts[0]
    elif parts[0] == "partners":
        name = f"partner:{parts[1]}"
    else:
        return None
    return name + IMAGE if topics.is_image(topic) else name


def ledger_key(destination: str, event_id: str) -> tuple[str, str, str]:
    """(recipient, event, part): the ledger's key of a copy counted for ``destination``."""
    part = "image" if destination.endswith(IMAGE) else "event"
    return destination.removesuffix(IMAGE), event_id, part


# --- expectations -------------------------------------------------------------------------


def entitled(events: list[Event], registry: Registry) -> dict[str, set[str]]:
    """Destination -> event ids it must get, by the same pure decision the gateway makes."""
    policy, partners = default_policy(), sample_partners()
    consents: dict[tuple[str, str], ConsentState] = {
        (b.id, d.id): consent_from_registry(b.id, d, now=utc_now()) for b, d in registry.dwellings()
    }
    expected: dict[str, set[str]] = defaultdict(set)
    router = Router.compile(policy, partners)
    for event in events:
        decision = decide(
            event,
            consents[(event.building_id, event.dwelling_id)],
            router=router,
            gateway_id="expect",
            decision_id=uuid.uuid4(),
            now=utc_now(),
        )
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


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    registry = generate_registry(buildings=2, dwellings=10, services=SERVICES)
    (tmp_path / "registry.yaml").write_text(dump_registry(registry))
    credentials = generate_credentials(tmp_path / "secrets", registry, SERVICES)
    with Mosquitto(workdir=tmp_path / "broker", credentials=credentials) as broker:
        world = World(tmp_path, registry, broker)
        try:
            yield world
        finally:
            if world.process is not None and world.process.returncode is None:
                world.process.kill()
                await world.process.wait()


@contextlib.asynccontextmanager
async def recording(world: World) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    subscribers = [
        ("operator", ["cloud/#", "group/#"]),
        *((pid, [topics.partner_filter(pid)]) for pid in SERVICES),
    ]
    readies = [asyncio.Event() for _ in subscribers]
    tasks = [
        asyncio.create_task(
            _resilient(
                world.broker,
                user,
                world.broker.address(user).client_id(f"rec-{uuid.uuid4().hex[:6]}"),
                filters,
                recorder.on,
                ready,
            )
        )
        for (user, filters), ready in zip(subscribers, readies, strict=True)
    ]
    # Publish nothing until every recorder's session and subscription exist.
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
    try:
        yield recorder
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Publisher:
    """Publishes as the simulator fleet; survives broker restarts by resending what the
    broker had not acknowledged."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.acked: set[str] = set()

    async def publish(self, events: list[Event], *, rate: float | None = None) -> None:
        pending = list(events)
        while pending:
            try:
                address = self.broker.address(FLEET)
                async with MqttBus(
                    address, client_id=address.client_id(f"pub-{uuid.uuid4().hex[:6]}")
                ) as bus:
                    for event in pending:
                        await bus.send(*_message(event), on_done=self._done(str(event.event_id)))
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


def _message(event: Event) -> tuple[str, bytes]:
    return (
        topics.panel_events(event.building_id, event.device.id, event.type),
        event.model_dump_json().encode(),
    )


async def settle_and_check(
    name: str, world: World, recorder: Recorder, events: list[Event], *, extra: dict[str, Any]
) -> dict[str, Any]:
    expected = entitled(events, world.registry)
    await recorder.wait_complete(expected, timeout=120)
    lost = {d: len(ids - set(recorder.copies[d])) for d, ids in expected.items()}
    unentitled = {d: len(set(got) - expected.get(d, set())) for d, got in recorder.copies.items()}
    duplicates = {d: sum(n - 1 for n in got.values()) for d, got in recorder.copies.items()}
    delivered = {d: len(got) for d, got in recorder.copies.items()}
    result = {
        "scenario": name,
        "sent": len(events),
        "entitled": {d: len(ids) for d, ids in expected.items()},
        "delivered_distinct": delivered,
        "duplicates_before_dedup": duplicates,
        "lost": lost,
        "not_entitled": unentitled,
        **extra,
    }
    _report(result)
    assert sum(lost.values()) == 0, result
    assert sum(unentitled.values()) == 0, result
    assert delivered == {d: len(ids) for d, ids in expected.items()}, result
    # A graceful stop commits the last batch; then the ledger must be exact.
    assert await world.stop_gateway(signal.SIGTERM) == 0
    await _check_ledger(world, expected)
    return result


async def _check_ledger(world: World, expected: dict[str, set[str]]) -> None:
    """The ledger counts each third-party provision exactly once."""
    from intercom_gateway.store.sqlite import Store

    async with Store.open(world.workdir / "gateway.sqlite") as store:
        rows = await store.provisions()
    pairs = [(r["recipient"], r["event_id"], r["part"]) for r in rows if r["third_party"]]
    assert len(pairs) == len(set(pairs))
    third = {
        ledger_key(d, e) for d, ids in expected.items() if d.startswith("partner:") for e in ids
    }
    assert set(pairs) == third


def _report(result: dict[str, Any]) -> None:
    REPORT.parent.mkdir(exist_ok=True)
    existing = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    existing[result["scenario"]] = result
    REPORT.write_text(json.dumps(existing, indent=2))
    summary = (
        f"\n[nothing-lost] {result['scenario']}: sent {result['sent']}, "
        f"delivered {sum(result['delivered_distinct'].values())} (distinct, all destinations), "
        f"duplicates before de-dup {sum(result['duplicates_before_dedup'].values())}, "
        f"lost {sum(result['lost'].values())}"
    )
    sys.__stdout__.write(summary + "\n")


# --- the scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_gateway_killed_at_random_points(world: World, seed: int) -> None:
    rng = random.Random(seed)
    events = make_events(world.registry, 2000, seed)
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        publisher = Publisher(world.broker)
        publishing = asyncio.create_task(publisher.publish(events, rate=1500))
        kills = 0
        while not publishing.done() and kills < 3:
            await asyncio.sleep(rng.uniform(0.2, 0.8))  # a random point to crash at
            await world.stop_gateway(signal.SIGKILL)
            kills += 1
            await world.start_gateway(status)
        await publishing
        await settle_and_check(
            f"sigkill-seed-{seed}", world, recorder, events, extra={"gateway_kills": kills}
        )
    assert kills >= 1


async def test_broker_restarted_mid_stream(world: World) -> None:
    events = make_events(world.registry, 2000, 11)
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        publisher = Publisher(world.broker)
        first, second = events[:1000], events[1000:]
        await publisher.publish(first)  # fast: a backlog builds up in front of the gateway
        await asyncio.to_thread(world.broker.restart)
        await publisher.publish(second)
        await settle_and_check(
            "broker-restart", world, recorder, events, extra={"broker_restarts": 1}
        )


async def test_gateway_down_for_a_burst_larger_than_the_default_queue(world: World) -> None:
    events = make_events(world.registry, 3000, 21)  # Mosquitto's default keeps only 1000
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        await Publisher(world.broker).publish(events)
        await world.start_gateway(status)
        result = await settle_and_check("burst-while-down", world, recorder, events, extra={})
    assert result["sent"] > 1000


async def test_sigterm_finishes_in_flight_events_without_duplicates(world: World) -> None:
    events = make_events(world.registry, 1500, 31)
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        publishing = asyncio.create_task(Publisher(world.broker).publish(events, rate=2000))
        await asyncio.sleep(0.3)  # mid-stream
        assert await world.stop_gateway(signal.SIGTERM) == 0
        await world.start_gateway(status)
        await publishing
        result = await settle_and_check("sigterm", world, recorder, events, extra={})
    assert sum(result["duplicates_before_dedup"].values()) == 0
