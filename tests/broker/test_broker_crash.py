"""End to end, nothing lost even when the broker crashes: panels resend until a receipt.

Real Mosquitto with the project's ``mosquitto.conf``, the gateway as a real process,
panels that follow the panel protocol (``intercom_gateway.simulators.outbox``: keep each
event until the gateway's receipt names it, send it again, identical, after a timeout).
The gateway is down while the panels queue a backlog, then Mosquitto is SIGKILLed at random points
(one while the backlog is queued, more while the gateway drains it), so it loses what it
accepted since its last save (docs/benchmarks.md, "Broker crashes"). Once every event
has its receipt, every copy cloud, group and each partner are entitled to must have
arrived, and every partner delivery a subscriber saw must have its ledger row. The
counts are printed and written to reports/broker-crash.json.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import FLEET, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event
from intercom_gateway.errors import BusError
from intercom_gateway.qa.runner import StatusWatch, follow
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.outbox import Outbox, ResendPolicy, keep
from intercom_gateway.store import open_store
from tests.broker.worlds import (
    Recorder,
    World,
    entitled,
    ledger_key,
    make_events,
    open_world,
    output_subscriptions,
    report,
)
from tests.helpers import unawaited

pytestmark = pytest.mark.slow

REPORT = Path(__file__).resolve().parents[2] / "reports" / "broker-crash.json"
EVENTS = 300
# Short, so a test run is short; the protocol's default is 10 s doubling up to 120 s.
RESEND = ResendPolicy(timeout=1.0, backoff=2.0, max_timeout=4.0)


# --- subscribers that come back after every broker restart ------------------------------


class Subscribers:
    """Cloud/group and each partner, persistent sessions, reconnecting; counts connections."""

    def __init__(self, broker: Mosquitto, recorder: Recorder) -> None:
        self.broker = broker
        self.recorder = recorder
        self.connections: dict[str, int] = {}
        self._connected = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Subscribers:
        for user, filters in output_subscriptions():
            self.connections[user] = 0
            client_id = f"{user}.rec-{uuid.uuid4().hex[:6]}"
            subscriber = follow(
                self.broker,
                user,
                filters,
                self.recorder.on,
                client_id=client_id,
                connected=self._counter(user),
            )
            self._tasks.append(asyncio.create_task(subscriber))
        await self.all_connected(1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _counter(self, user: str) -> Callable[[], Awaitable[None]]:
        async def connected() -> None:
            async with self._connected:
                self.connections[user] += 1
                self._connected.notify_all()

        return connected

    async def all_connected(self, at_least: int) -> None:
        async with self._connected:
            await asyncio.wait_for(
                self._connected.wait_for(lambda: min(self.connections.values()) >= at_least),
                20,
            )


# --- panels that follow the protocol ------------------------------------------------------


@dataclass
class Panels:
    """The fleet account speaking for every panel: keep until receipt, resend, reconnect."""

    broker: Mosquitto
    outbox: Outbox = field(default_factory=lambda: Outbox(RESEND))
    connections: int = 0

    async def send_all(self, events: list[Event], *, rate: float, started: asyncio.Event) -> None:
        """Send every event once, then keep resending until receipts name them all."""
        queue = list(events)
        while True:
            try:
                async with MqttBus(
                    self.broker.address(FLEET), client_id=f"{FLEET}.panels-{uuid.uuid4().hex[:6]}"
                ) as bus:
                    self.connections += 1
                    await bus.subscribe(topics.RECEIPTS_FILTER)
                    async with asyncio.TaskGroup() as tasks:
                        keeper = tasks.create_task(keep(bus, self.outbox))
                        while queue:
                            event = queue[0]
                            topic = topics.panel_events(
                                event.building_id, event.device.id, event.type
                            )
                            payload = event.model_dump_json().encode()
                            await self.outbox.put(str(event.event_id), topic, payload)
                            queue.pop(0)
                            started.set()
                            await bus.publish(topic, payload, qos=1, on_done=unawaited)
                            await asyncio.sleep(1 / rate)  # pacing the panels, not syncing
                        while not await self.outbox.wait_empty(0.5):
                            if keeper.done():
                                break
                        keeper.cancel()
                    return
            except* BusError:
                await asyncio.sleep(0.05)  # the broker is restarting


# --- the world -------------------------------------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, dwellings=5) as world:
        yield world


async def crash_broker(world: World, subscribers: Subscribers, crashes: int) -> None:
    """SIGKILL Mosquitto and start it again on the same files; wait for the subscribers."""
    await asyncio.to_thread(world.broker.restart, kill=True)
    await subscribers.all_connected(crashes + 1)


async def ledger_gaps(world: World, recorder: Recorder) -> tuple[int, int, int]:
    """(partner deliveries seen, of them without a ledger row, duplicate ledger rows)."""
    # The gateway process's store: its SQLite file, or INTERCOM_STORE (--store=postgres).
    async with open_store(Settings(db_path=world.workdir / "gateway.sqlite")) as store:
        rows = [r.as_dict() for r in await store.provisions()]
    pairs = [(r["recipient"], r["event_id"], r["part"]) for r in rows if r["third_party"]]
    seen = {
        ledger_key(destination, event_id)
        for destination, ids in recorder.copies.items()
        if destination.startswith("partner:")
        for event_id in ids
    }
    return len(seen), len(seen - set(pairs)), len(pairs) - len(set(pairs))


def _report(result: dict[str, Any]) -> None:
    summary = (
        f"\n[broker-crash] {result['scenario']}: sent {result['sent']}, broker SIGKILLs "
        f"{result['broker_kills']}, panel resends {result['panel_resends']}, receipts "
        f"{result['confirmed']}, copies {sum(result['delivered_distinct'].values())} "
        f"(distinct), lost {sum(result['lost'].values())}, partner deliveries without a "
        f"ledger row {result['ledger_missing']}"
    )
    report(REPORT, result["scenario"], result, summary)


# --- the scenario ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_broker_crash_with_a_backlog_loses_nothing_once_panels_resend(
    world: World, seed: int
) -> None:
    rng = random.Random(seed)
    events = make_events(world.registry, EVENTS, seed)
    recorder = Recorder()
    kills = 0
    async with (
        StatusWatch(world.broker, world.gateway_id) as status,
        Subscribers(world.broker, recorder) as subscribers,
    ):
        # The gateway's session exists, then the gateway is down: the backlog queues.
        await world.start_gateway(status)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        panels = Panels(world.broker)
        started = asyncio.Event()
        sending = asyncio.create_task(panels.send_all(events, rate=300, started=started))
        await started.wait()
        await asyncio.sleep(rng.uniform(0.3, 0.9))  # a random point of the backlog
        kills += 1
        await crash_broker(world, subscribers, kills)
        await world.start_gateway(status)
        for _ in range(2):  # and while the gateway drains it
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            kills += 1
            await crash_broker(world, subscribers, kills)
        await asyncio.wait_for(sending, 120)  # every event named by a receipt

        expected = entitled(events, world.registry)
        await recorder.wait_complete(expected, timeout=60)
        lost = {d: len(ids - set(recorder.copies[d])) for d, ids in expected.items()}
        unentitled = {
            d: len(set(got) - expected.get(d, set())) for d, got in recorder.copies.items()
        }
        assert await world.stop_gateway(signal.SIGTERM) == 0
    seen, missing, duplicate_rows = await ledger_gaps(world, recorder)
    result = {
        "scenario": f"broker-sigkill-seed-{seed}",
        "sent": len(events),
        "broker_kills": kills,
        "panel_resends": panels.outbox.resent,
        "panel_connections": panels.connections,
        "confirmed": panels.outbox.confirmed,
        "entitled": {d: len(ids) for d, ids in expected.items()},
        "delivered_distinct": {d: len(got) for d, got in recorder.copies.items()},
        "duplicates_before_dedup": {
            d: sum(n - 1 for n in got.values()) for d, got in recorder.copies.items()
        },
        "lost": lost,
        "not_entitled": unentitled,
        "partner_deliveries_seen": seen,
        "ledger_missing": missing,
        "ledger_duplicate_rows": duplicate_rows,
    }
    _report(result)
    assert panels.outbox.confirmed == len(events), result
    assert sum(lost.values()) == 0, result
    assert sum(unentitled.values()) == 0, result
    assert missing == 0, result
    assert duplicate_rows == 0, result


async def test_without_resends_the_same_crash_loses_events(world: World) -> None:
    """The control: a panel that forgets an event at the broker's PUBACK loses some."""
    events = make_events(world.registry, EVENTS, 7)
    recorder = Recorder()
    async with (
        StatusWatch(world.broker, world.gateway_id) as status,
        Subscribers(world.broker, recorder) as subscribers,
    ):
        await world.start_gateway(status)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        async with MqttBus(world.broker.address(FLEET), client_id=f"{FLEET}.forgetful") as bus:
            for event in events:
                topic = topics.panel_events(event.building_id, event.device.id, event.type)
                await bus.publish(topic, event.model_dump_json().encode(), qos=1)
            await bus.drain()  # every event acknowledged by the broker
        await crash_broker(world, subscribers, 1)  # well within Mosquitto's 2 s save period
        await world.start_gateway(status)
        expected = entitled(events, world.registry)
        await recorder.wait_complete(expected, timeout=5)
        lost = {d: len(ids - set(recorder.copies[d])) for d, ids in expected.items()}
        assert await world.stop_gateway(signal.SIGTERM) == 0
    _report_control(len(events), lost)
    assert lost["cloud"] > 0, lost


def _report_control(sent: int, lost: dict[str, int]) -> None:
    summary = f"\n[broker-crash] control, no resend: sent {sent}, lost {lost}"
    report(REPORT, "control-no-resend", {"sent": sent, "lost": lost}, summary)
