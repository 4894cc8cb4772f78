"""Analytics copies held per window and released together (§5(5), issue 14).

The gateway on the in-memory bus with a real SQLite file, restarted by opening the file
again: a copy is held in the batch that completes its event, released only after its
window has ended, all of a window back to back in shuffled order with nothing finer
than the window, and deleted from the store only once the broker acknowledged it.
Device-failure codes (a field analytics may carry) tell the copies apart here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.errors import ConnectionLost, PublishFailed
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message
from tests.helpers import collect
from tests.stores import committed

DWELLINGS = ("d0001", "d0002", "d0003")


class FlakyBus(MemoryBus):
    """A memory bus whose analytics publishes can be lost, refused or left unacknowledged."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker, "gateway")
        self.fail: Callable[[str], BaseException | None] = lambda topic: None
        self.silent: Callable[[str], bool] = lambda topic: False  # never acknowledged
        self.sent: list[str] = []  # topics, in publish order

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        self.sent.append(topic)
        error, silent = self.fail(topic), self.silent(topic)
        if error is None and not silent:
            await super().publish(topic, payload, **kwargs)
            return
        if isinstance(error, PublishFailed):
            kwargs["on_done"](error)
            return
        self.broker.route(Message(topic, payload, 1, False, False, 0, ()))  # it got there
        if error is not None:
            kwargs["on_done"](error)
        # silent: the gateway dies before the PUBACK; nobody is told


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return gateway_settings(tmp_path, analytics_window=3_600.0)


@contextlib.asynccontextmanager
async def started(
    settings: Settings, *filters: str
) -> AsyncIterator[tuple[Gateway, FlakyBus, MemoryBus]]:
    """One life of the gateway: load from the store file, and close it on the way out.
    The observer reads ``filters`` (default: the analytics topics)."""
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = FlakyBus(broker)
        broker.buses.append(bus)
        gateway._bus = bus
        observer = broker.client("observer")
        await observer.subscribe(*(filters or ("analytics/#",)))
        yield gateway, bus, observer


def failures(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Device failures, told apart by their code, which analytics copies carry."""
    return [
        event_dict("device_failure", dwelling=DWELLINGS[i % 3], code=f"C-{i:03d}")
        for i in range(start, start + count)
    ]


async def handle(
    gateway: Gateway, bus: MemoryBus, *events: dict[str, Any], dup: bool = False
) -> None:
    for mid, data in enumerate(events, start=1):
        await gateway.handle(bus, Message(*panel_message(data), qos=1, dup=dup, mid=mid))
    await gateway.finish_in_flight()


def at_window_end(gateway: Gateway) -> datetime:
    """Move the gateway's clock to the end of the window it is in now."""
    end = gateway.analytics.next_release(gateway.clock())
    gateway.clock = lambda: end
    return end


def held_rows(settings: Settings) -> int:
    [(count,)] = committed(settings, "SELECT count(*) FROM analytics_held")
    return int(count)


def codes(messages: list[Message]) -> list[str]:
    return [json.loads(m.payload)["event"]["code"] for m in messages if _analytics(m)]


def _analytics(message: Message) -> bool:
    return message.topic.startswith("analytics/")


async def test_copies_are_held_then_released_together_shuffled_and_coarse(
    settings: Settings,
) -> None:
    events = failures(40)
    async with started(settings, "analytics/#", "cloud/#") as (gateway, bus, observer):
        await handle(gateway, bus, *events)
        cloud = await collect(observer, len(events))
        assert not any(_analytics(m) for m in cloud)  # nothing at arrival
        assert held_rows(settings) == 40  # on record with the events' completion
        assert len(bus.acked) == 40
        end = at_window_end(gateway)
        before = len(bus.sent)
        assert await gateway.release_analytics(bus) == 40
        copies = await collect(observer, 40)
        # Back to back: the release published the 40 copies and nothing in between.
        assert all(topic.startswith("analytics/") for topic in bus.sent[before:])
        await gateway.finish_in_flight()
        assert held_rows(settings) == 0  # acknowledged: gone from the store
    sent_order = [e["code"] for e in events]
    assert sorted(codes(copies)) == sorted(sent_order)
    assert codes(copies) != sent_order  # shuffled (by chance in order: 1 in 40!)
    start = (end - gateway.analytics.window).isoformat().replace("+00:00", "Z")
    identified = {json.loads(m.payload)["forwarded_at"] for m in cloud}
    for message in copies:
        envelope = json.loads(message.payload)
        assert envelope["forwarded_at"] == start
        assert envelope["forwarded_at"] not in identified
        assert envelope["event"]["occurred_at"].endswith(":00:00Z")
        assert envelope["event_id"] is None and message.properties("event_id") == []
        assert message.properties("decision_id") == [envelope["decision_id"]]
    assert len({json.loads(m.payload)["decision_id"] for m in copies}) == 40


async def test_a_window_not_yet_ended_is_not_released(settings: Settings) -> None:
    async with started(settings) as (gateway, bus, _):
        await handle(gateway, bus, *failures(3))
        end = gateway.analytics.next_release(gateway.clock())
        gateway.clock = lambda: end - timedelta(microseconds=1)
        assert await gateway.release_analytics(bus) == 0
        assert gateway.analytics.held == 3


async def test_held_copies_survive_restarts_and_are_released_once_complete(
    settings: Settings,
) -> None:
    async with started(settings) as (gateway, bus, _):
        await handle(gateway, bus, *failures(5))
    async with started(settings) as (gateway, bus, _):
        assert gateway.analytics.held == 5  # restored
        await handle(gateway, bus, *failures(4, start=5))
    async with started(settings) as (gateway, bus, observer):
        assert gateway.analytics.held == 9
        at_window_end(gateway)
        assert await gateway.release_analytics(bus) == 9
        copies = await collect(observer, 9)
        await gateway.finish_in_flight()
    assert sorted(codes(copies)) == [f"C-{i:03d}" for i in range(9)]
    async with started(settings) as (gateway, bus, _):
        assert gateway.analytics.held == 0  # the delete committed: nothing again
        at_window_end(gateway)
        assert await gateway.release_analytics(bus) == 0


async def test_a_copy_the_broker_may_not_have_acknowledged_comes_again_the_same(
    settings: Settings,
) -> None:
    """A crash between the publish and the store's record of its acknowledgement: the
    copy is published again after the restart, the very same bytes (same random id)."""
    async with started(settings) as (gateway, bus, observer):
        await handle(gateway, bus, *failures(2))
        bus.silent = _analytics_topic
        at_window_end(gateway)
        assert await gateway.release_analytics(bus) == 2
        first = await collect(observer, 2)
        await gateway.finish_in_flight()
        assert held_rows(settings) == 2
    async with started(settings) as (gateway, bus, observer):
        at_window_end(gateway)
        assert await gateway.release_analytics(bus) == 2
        again = await collect(observer, 2)
    assert sorted(m.payload for m in again) == sorted(m.payload for m in first)


async def test_a_lost_publish_is_sent_again_and_a_refused_one_waits_for_a_restart(
    settings: Settings,
) -> None:
    async with started(settings) as (gateway, bus, observer):
        await handle(gateway, bus, *failures(1))
        at_window_end(gateway)
        bus.fail = lambda topic: ConnectionLost("lost") if _analytics_topic(topic) else None
        assert await gateway.release_analytics(bus) == 1
        assert gateway.analytics.held == 1
        bus.fail = lambda topic: (
            PublishFailed("refused", topic=topic) if _analytics_topic(topic) else None
        )
        assert await gateway.release_analytics(bus) == 1  # handed back after the loss
        assert gateway.metrics.publish_refused == 1
        assert await gateway.release_analytics(bus) == 0  # not again from this process
        await gateway.finish_in_flight()
        assert held_rows(settings) == 1  # kept
        [arrived] = await collect(observer, 1)  # the lost publish got there; the refused not
    async with started(settings) as (gateway, bus, observer):
        at_window_end(gateway)
        assert await gateway.release_analytics(bus) == 1
        [again] = await collect(observer, 1)
        await gateway.finish_in_flight()
        assert held_rows(settings) == 0
    assert again.payload == arrived.payload  # a duplicate the consumer can recognise


async def test_an_event_is_held_once_only_when_it_completes(settings: Settings) -> None:
    [data] = failures(1)
    async with started(settings) as (gateway, bus, _):
        bus.fail = lambda topic: ConnectionLost("lost") if topic.startswith("cloud/") else None
        await handle(gateway, bus, data)
        assert bus.acked == [] and gateway.analytics.held == 0  # not completed: not held
        bus.fail = lambda topic: None
        await handle(gateway, bus, data, dup=True)  # the broker delivers it again
        await handle(gateway, bus, data, dup=True)  # ...and again, after it completed
        assert gateway.analytics.held == 1
        assert held_rows(settings) == 1


async def test_the_release_loop_publishes_each_window_after_it_ends(
    settings: Settings,
) -> None:
    """Served for real (memory bus, real clock): a short window's copies come out
    together, after the window, with nothing held afterwards."""
    short = settings.model_copy(update={"analytics_window": 0.4})
    broker = MemoryBroker()
    events = failures(12)
    async with open_store(short) as store:
        gateway = await Gateway.load(short, store)
        observer = broker.client("observer")
        await observer.subscribe("analytics/#")
        stop = asyncio.Event()
        async with broker.client("gateway") as bus:
            serving = asyncio.create_task(gateway.serve(bus, stop=stop))
            await asyncio.wait_for(gateway.online.wait(), 5)
            panel = broker.client("panel")
            for data in events:
                await panel.publish(*panel_message(data))
            copies = await collect(observer, len(events), timeout=10)
            await asyncio.wait_for(gateway.wait_analytics_released(), 5)
            stop.set()
            await asyncio.wait_for(serving, 10)
        assert gateway.analytics.released == len(events)
    assert sorted(codes(copies)) == sorted(e["code"] for e in events)
    assert held_rows(short) == 0


def _analytics_topic(topic: str) -> bool:
    return topic.startswith("analytics/")
