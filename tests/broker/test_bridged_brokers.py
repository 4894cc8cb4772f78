"""Sharded brokers bridged to a central one (docs/scale-out.md, issue #17 item 6).

Two shard Mosquittos, each running the project's configuration with half of the
registry's buildings and a gateway process of its own, bridge the output trees to a
central Mosquitto (``broker.bridge``), where the cloud account and each partner
subscribe. Simulated panels publish on both shards. Every copy a gateway's own
``decide()`` entitles must reach the central subscribers exactly once after
de-duplication by event id, and no partner may receive anything else (a partner that
subscribes to ``#`` on the central broker gets its own copies only). Then the central
broker is restarted mid-stream: the bridges queue (QoS 1, ``cleansession false``) and
deliver when it is back. The counts go to reports/bridged-brokers.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.accounts import CLOUD, GATEWAY, OPERATOR, generate_credentials
from intercom_gateway.broker.bridge import Bridge
from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa.runner import GatewayProcess, client, follow, following, gateway_process
from tests.broker.worlds import (
    RECONNECT,
    SERVICES,
    Publisher,
    Recorder,
    entitled,
    make_events,
    output_subscriptions,
    report,
)

pytestmark = pytest.mark.slow

REPORT = Path(__file__).resolve().parents[2] / "reports" / "bridged-brokers.json"
SHARDS = ("shard-a", "shard-b")
SNOOPER = SERVICES[0]  # a partner that subscribes to everything on the central broker


@dataclass
class Shard:
    """A building group: its broker (bridged to the central one) and its gateway."""

    name: str
    registry: Registry
    broker: Mosquitto
    gateway: GatewayProcess


@dataclass
class Topology:
    registry: Registry  # every building; each shard has half of them
    central: Mosquitto
    shards: list[Shard]


def halves(registry: Registry) -> Iterator[Registry]:
    """The registry's buildings split in two: one building group per shard."""
    middle = len(registry.buildings) // 2
    yield Registry(buildings=registry.buildings[:middle])
    yield Registry(buildings=registry.buildings[middle:])


@contextlib.asynccontextmanager
async def bridged(workdir: Path) -> AsyncIterator[Topology]:
    """The central broker, then each shard's broker (bridged to it) and gateway."""
    registry = generate_registry(buildings=4, dwellings=5, services=SERVICES)
    # The central broker has no panels: partners, the cloud and the bridges log in there.
    central_credentials = await asyncio.to_thread(
        generate_credentials,
        workdir / "central" / "secrets",
        Registry(buildings=()),
        SERVICES,
        fleet=False,
        bridge=True,
    )
    central = Mosquitto(workdir=workdir / "central" / "broker", credentials=central_credentials)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(central)
        shards = []
        for name, half in zip(SHARDS, halves(registry), strict=True):
            shards.append(
                await stack.enter_async_context(_shard(workdir / name, name, half, central))
            )
        yield Topology(registry, central, shards)


@contextlib.asynccontextmanager
async def _shard(
    workdir: Path, name: str, half: Registry, central: Mosquitto
) -> AsyncIterator[Shard]:
    credentials = await asyncio.to_thread(generate_credentials, workdir / "secrets", half, SERVICES)
    link = Bridge.to(central.credentials, name=name, host=central.host, port=central.port)
    async with Mosquitto(
        workdir=workdir / "broker", credentials=credentials, bridge=link
    ) as broker:
        await bridge_up(broker, central, name)
        async with gateway_process(broker, workdir / "gateway", half, env=RECONNECT) as gateway:
            yield Shard(name, half, broker, gateway)


async def bridge_up(shard: Mosquitto, central: Mosquitto, name: str) -> None:
    """Until a probe published on the shard arrives on the central broker.

    Each scenario then starts with both links up, so that its own restart is the only
    disruption, and the central ACL is seen to let the bridge account publish. The probe
    is resent until one arrives: the first may precede the bridge's connection.
    """
    probe = topics.statistics(f"probe-{name}")
    arrived = asyncio.Event()
    async with client(central, OPERATOR) as watcher, client(shard, GATEWAY) as publisher:
        await watcher.subscribe(probe)

        async def watch() -> None:
            async for message in watcher.messages():
                if message.topic == probe:
                    arrived.set()
                    return

        watching = asyncio.create_task(watch())
        try:
            for _ in range(50):
                await publisher.publish(probe, b"{}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.2)  # awaited; resent on timeout
                    return
            raise AssertionError(f"the bridge of {name} did not connect: {shard.log_tail()}")
        finally:
            watching.cancel()


def central_subscriptions() -> list[tuple[str, list[str]]]:
    """The cloud account reads cloud and group copies; each partner its own tree."""
    return [
        (CLOUD, [topics.cloud_filter(), topics.group_filter()]),
        *((pid, [topics.partner_filter(pid)]) for pid in SERVICES),
    ]


@contextlib.asynccontextmanager
async def recording(topology: Topology) -> AsyncIterator[tuple[Central, Snooper]]:
    """Recorders on the central broker, and a partner subscribed to ``#`` there."""
    recorder, snooper = Central(), Snooper()
    ready = asyncio.Event()
    client_id = topology.central.address(SNOOPER).client_id(f"snoop-{uuid.uuid4().hex[:6]}")
    snooping = asyncio.create_task(
        follow(topology.central, SNOOPER, ["#"], snooper.on, client_id=client_id, ready=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with following(topology.central, central_subscriptions(), recorder.on):
            yield recorder, snooper
    finally:
        snooping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await snooping


class Central(Recorder):
    """The recorder of the central subscribers, which can also say when it is mid-stream."""

    async def until_copies(self, count: int) -> None:
        """Until it holds ``count`` distinct copies in all."""
        async with self._grew:
            await self._grew.wait_for(lambda: sum(map(len, self.copies.values())) >= count)


class Snooper(Recorder):
    """A partner subscribed to ``#``: the central ACL must confine it to its own copies
    (Mosquitto grants the subscription and then delivers only what the ACL allows)."""

    def __init__(self) -> None:
        super().__init__()
        self.foreign: list[str] = []

    async def on(self, topic: str, payload: bytes, message: Any) -> None:
        if not topics.matches(topics.partner_filter(SNOOPER), topic):
            self.foreign.append(topic)
        await super().on(topic, payload, message)

    async def settle(self, expected: dict[str, set[str]]) -> None:
        """Until it holds every copy of its own (it follows apart from the recorder)."""
        mine = {d: ids for d, ids in expected.items() if d.startswith(f"partner:{SNOOPER}")}
        await self.wait_complete(mine, timeout=60)


def by_shard(topology: Topology, events: list[Event]) -> list[list[Event]]:
    """Each shard's events: those of its own buildings (its panels' broker)."""
    return [
        [e for e in events if e.building_id in {b.id for b in shard.registry.buildings}]
        for shard in topology.shards
    ]


async def publish(topology: Topology, events: list[Event], *, rate: float) -> None:
    """Both shards' panels at once, each on its own broker."""
    await asyncio.gather(
        *(
            Publisher(shard.broker).publish(mine, rate=rate)
            for shard, mine in zip(topology.shards, by_shard(topology, events), strict=True)
        )
    )


def tally(
    name: str,
    topology: Topology,
    recorder: Recorder,
    snooper: Snooper,
    expected: dict[str, set[str]],
    events: list[Event],
) -> dict[str, Any]:
    """The report: per destination, what was entitled, delivered, lost, duplicated; and
    per shard, how many copies came twice (which bridge resent them)."""
    shard_of = {
        str(event.event_id): shard.name
        for shard, mine in zip(topology.shards, by_shard(topology, events), strict=True)
        for event in mine
    }
    twice = Counter(
        shard_of[event_id]
        for got in recorder.copies.values()
        for event_id, count in got.items()
        for _ in range(count - 1)
    )
    lost = {d: len(ids - set(recorder.copies[d])) for d, ids in expected.items()}
    unentitled = {d: len(set(got) - expected.get(d, set())) for d, got in recorder.copies.items()}
    duplicates = {d: sum(n - 1 for n in got.values()) for d, got in recorder.copies.items()}
    return {
        "scenario": name,
        "sent": len(events),
        "entitled": {d: len(ids) for d, ids in expected.items()},
        "delivered_distinct": {d: len(got) for d, got in recorder.copies.items()},
        "duplicates_before_dedup": duplicates,
        "duplicates_by_shard": {shard.name: twice[shard.name] for shard in topology.shards},
        "lost": lost,
        "not_entitled": unentitled,
        "snooper_received": {d: len(got) for d, got in snooper.copies.items()},
        "snooper_foreign": len(snooper.foreign),
    }


def check(result: dict[str, Any], expected: dict[str, set[str]]) -> None:
    summary = (
        f"\n[bridged-brokers] {result['scenario']}: sent {result['sent']}, entitled copies "
        f"{sum(result['entitled'].values())}, delivered "
        f"{sum(result['delivered_distinct'].values())} (distinct), duplicates before de-dup "
        f"{sum(result['duplicates_before_dedup'].values())} {result['duplicates_by_shard']}, "
        f"lost {sum(result['lost'].values())}, "
        f"not entitled {sum(result['not_entitled'].values())}"
    )
    report(REPORT, result["scenario"], result, summary)
    assert sum(result["lost"].values()) == 0, result
    assert sum(result["not_entitled"].values()) == 0, result
    assert result["delivered_distinct"] == {d: len(ids) for d, ids in expected.items()}, result
    assert result["snooper_foreign"] == 0, result
    mine = {d: len(ids) for d, ids in expected.items() if d.startswith(f"partner:{SNOOPER}")}
    assert result["snooper_received"] == mine, result


# --- the scenarios ------------------------------------------------------------------------


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    async with bridged(tmp_path) as topology:
        yield topology


async def test_every_entitled_copy_reaches_the_central_subscribers_once(
    topology: Topology,
) -> None:
    events = make_events(topology.registry, 2000, 41)
    expected = entitled(events, topology.registry)
    async with recording(topology) as (recorder, snooper):
        await publish(topology, events, rate=1000)
        await recorder.wait_complete(expected, timeout=120)
        await snooper.settle(expected)
        result = tally("steady", topology, recorder, snooper, expected, events)
    check(result, expected)
    assert all(len(mine) > 0 for mine in by_shard(topology, events))
    # Nothing was restarted: QoS 1 had nothing to resend.
    assert sum(result["duplicates_before_dedup"].values()) == 0, result


async def test_the_bridges_queue_while_the_central_broker_restarts(topology: Topology) -> None:
    events = make_events(topology.registry, 3000, 43)
    expected = entitled(events, topology.registry)
    async with recording(topology) as (recorder, snooper):
        publishing = asyncio.create_task(publish(topology, events, rate=600))
        await asyncio.wait_for(recorder.until_copies(500), 60)
        mid_stream = not publishing.done()
        restarted = time.monotonic()
        await asyncio.to_thread(topology.central.restart)  # SIGTERM: it saves its sessions
        await publishing
        await recorder.wait_complete(expected, timeout=120)
        recovered = time.monotonic() - restarted
        await snooper.settle(expected)
        result = tally("central-restart", topology, recorder, snooper, expected, events)
    result |= {"central_restarts": 1, "mid_stream": mid_stream, "complete_after_s": recovered}
    check(result, expected)
    assert mid_stream, "the stream ended before the central broker was restarted"


async def test_a_shard_restart_keeps_what_its_bridge_queued(topology: Topology) -> None:
    """The central broker is away while both gateways decide every event; the copies wait
    in the shards' bridge queues. One shard broker is then restarted (SIGTERM: it saves
    its persistence file) before the central one is back: ``cleansession false`` keeps
    the bridge's local session, so its queue outlives the restart."""
    events = make_events(topology.registry, 2000, 47)
    expected = entitled(events, topology.registry)
    async with recording(topology) as (recorder, snooper):
        await asyncio.to_thread(topology.central.stop)
        await asyncio.gather(*(decided(topology, shard, events) for shard in topology.shards))
        await asyncio.to_thread(topology.shards[0].broker.restart)
        back = time.monotonic()
        await asyncio.to_thread(topology.central.start)
        await recorder.wait_complete(expected, timeout=120)
        recovered = time.monotonic() - back
        await snooper.settle(expected)
        result = tally(
            "shard-restart-while-central-down", topology, recorder, snooper, expected, events
        )
    result |= {"central_down_during_decisions": True, "complete_after_s": recovered}
    check(result, expected)


async def decided(topology: Topology, shard: Shard, events: list[Event]) -> None:
    """Publish a shard's events and wait until its gateway has sent every copy they are
    entitled to (seen on the shard broker itself, where the bridge queues them too)."""
    index = topology.shards.index(shard)
    mine = by_shard(topology, events)[index]
    local = Recorder()
    async with following(shard.broker, output_subscriptions(), local.on, prefix="local"):
        await Publisher(shard.broker).publish(mine)
        expected = entitled(mine, topology.registry)
        await local.wait_complete(expected, timeout=120)
    assert all(ids <= set(local.copies[d]) for d, ids in expected.items())
