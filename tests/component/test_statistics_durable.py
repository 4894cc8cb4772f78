"""Statistics windows survive restarts, and nothing is counted twice (issue 13).

An event is counted in the store batch that completes it; the open windows come back
from the store at start; a window leaves the store once the broker acknowledged its
aggregate, whose id is the same every time it is published. The gateway on the
in-memory bus with a real SQLite file, restarted by opening the file again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.statistics import Window, aggregate_id
from intercom_gateway.errors import ConnectionLost
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message
from tests.helpers import collect

HOUR = timedelta(hours=1)


class FlakyBus(MemoryBus):
    """A memory bus whose publishes can be made to fail, or to go unacknowledged."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker, "gateway")
        self.lose: Callable[[str], bool] = lambda topic: False  # connection lost after it
        self.silent: Callable[[str], bool] = lambda topic: False  # never acknowledged

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        lose, silent = self.lose(topic), self.silent(topic)
        if not (lose or silent):
            await super().publish(topic, payload, **kwargs)
            return
        self.broker.route(Message(topic, payload, 1, False, False, 0, ()))  # it got there
        if lose:
            kwargs["on_done"](ConnectionLost("lost"))
        # silent: the gateway dies before the PUBACK; nobody is told


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return gateway_settings(tmp_path, statistics_min_group=1, statistics_delay=0)


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[Gateway, FlakyBus, MemoryBus]]:
    """One life of the gateway: load from the store file, and close it on the way out."""
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = FlakyBus(broker)
        broker.buses.append(bus)
        gateway._bus = bus
        observer = broker.client("observer")
        await observer.subscribe("statistics/#")
        yield gateway, bus, observer


def inbound(data: dict[str, Any], *, mid: int = 1, dup: bool = False) -> Message:
    return Message(*panel_message(data), qos=1, dup=dup, mid=mid)


async def handle(
    gateway: Gateway, bus: MemoryBus, *events: dict[str, Any], dup: bool = False
) -> None:
    for mid, data in enumerate(events, start=1):
        await gateway.handle(bus, inbound(data, mid=mid, dup=dup))
    await gateway.finish_in_flight()


def later(gateway: Gateway, moment: datetime) -> None:
    gateway.clock = lambda: moment


async def stored_counts(gateway: Gateway) -> int:
    counts, _ = await gateway.store.statistics_windows()
    return sum(n for _, _, n in counts)


def window_of(gateway: Gateway, occurred_at: datetime) -> Window:
    start = gateway.statistics.window_start(occurred_at)
    return Window("b001", start, start + gateway.statistics.window)


async def test_an_open_window_survives_restarts_and_is_published_once_with_every_event(
    settings: Settings,
) -> None:
    first = [event_dict("alarm", dwelling="d0001") for _ in range(3)]
    second = [event_dict("alarm", dwelling="d0002") for _ in range(2)]
    async with started(settings) as (gateway, bus, _):
        await handle(gateway, bus, *first)
        assert await stored_counts(gateway) == 3
    async with started(settings) as (gateway, bus, observer):
        assert gateway.statistics.pending == 3  # restored
        await handle(gateway, bus, *second)
        window = window_of(gateway, utc_now())
        later(gateway, window.end)
        await gateway.publish_reports(bus)
        [message] = await collect(observer, 1)
        await gateway.finish_in_flight()
        assert await stored_counts(gateway) == 0  # published: gone from the store
    envelope = json.loads(message.payload)
    assert envelope["event"]["counts"] == {"alarm": 5}
    assert envelope["decision_id"] == str(aggregate_id(window))


async def test_an_event_not_completed_is_counted_when_it_comes_again_and_only_then(
    settings: Settings,
) -> None:
    data = event_dict("alarm", dwelling="d0003")
    async with started(settings) as (gateway, bus, _):
        bus.lose = lambda topic: topic.startswith("cloud/")
        await handle(gateway, bus, data)
        assert bus.acked == [] and gateway.statistics.pending == 0
        bus.lose = lambda topic: False
        await handle(gateway, bus, data, dup=True)  # the broker delivers it again
        await handle(gateway, bus, data, dup=True)  # ...and again, after it completed
        assert gateway.metrics.duplicates == 1
        assert gateway.statistics.pending == 1
        assert await stored_counts(gateway) == 1


async def test_a_redelivery_before_the_first_completion_is_committed_is_not_counted_twice(
    settings: Settings,
) -> None:
    """A lost connection forgets what is in flight, not what waits for the store: the
    event can come back and be handled again before its first batch is written."""
    data = event_dict("security", dwelling="d0001")
    async with started(settings) as (gateway, bus, _):
        await gateway.handle(bus, inbound(data))
        await gateway.ledger.drain()  # every copy acknowledged; the batch not written
        gateway.reset_in_flight()
        gateway._bus = bus
        await handle(gateway, bus, data, dup=True)
        assert gateway.statistics.pending == 1
        assert await stored_counts(gateway) == 1


async def test_a_published_window_is_not_reopened_after_a_restart(settings: Settings) -> None:
    data = event_dict("alarm", dwelling="d0001")
    async with started(settings) as (gateway, bus, observer):
        await handle(gateway, bus, data)
        window = window_of(gateway, utc_now())
        later(gateway, window.end + timedelta(minutes=1))
        await gateway.publish_reports(bus)
        await collect(observer, 1)
        await gateway.finish_in_flight()
    late = event_dict("alarm", dwelling="d0002")
    async with started(settings) as (gateway, bus, observer):
        later(gateway, window.end + timedelta(minutes=2))  # still fresh enough to accept
        await handle(gateway, bus, late)
        assert gateway.statistics.late == 1  # a second count for it would slip past §5(2)②
        later(gateway, window.end + 2 * HOUR)
        await gateway.publish_reports(bus)
        await bus.publish("statistics/v1/sentinel", b"{}")
        [message] = await collect(observer, 1)
        assert message.topic == "statistics/v1/sentinel"  # nothing more was published


async def test_a_window_published_but_not_acknowledged_is_published_again_the_same(
    settings: Settings,
) -> None:
    """A crash between the broker taking the aggregate and the store forgetting it: a
    consumer sees the same aggregate (same id, same counts) twice."""
    events = [event_dict("alarm", dwelling="d0002") for _ in range(4)]
    async with started(settings) as (gateway, bus, observer):
        await handle(gateway, bus, *events)
        window = window_of(gateway, utc_now())
        later(gateway, window.end)
        bus.silent = lambda topic: topic.startswith("statistics/")
        await gateway.publish_reports(bus)
        [first] = await collect(observer, 1)
    async with started(settings) as (gateway, bus, observer):
        later(gateway, window.end + timedelta(seconds=5))
        await gateway.publish_reports(bus)
        [again] = await collect(observer, 1)
        await gateway.finish_in_flight()
        assert await stored_counts(gateway) == 0
    one, two = json.loads(first.payload), json.loads(again.payload)
    assert one["decision_id"] == two["decision_id"] == str(aggregate_id(window))
    assert one["event"] == two["event"] and one["event"]["counts"] == {"alarm": 4}


async def test_a_failed_publish_is_retried_by_the_next_report(settings: Settings) -> None:
    async with started(settings) as (gateway, bus, observer):
        await handle(gateway, bus, event_dict("alarm", dwelling="d0001"))
        window = window_of(gateway, utc_now())
        later(gateway, window.end)
        bus.lose = lambda topic: topic.startswith("statistics/")
        await gateway.publish_reports(bus)
        await gateway.finish_in_flight()
        assert await stored_counts(gateway) == 1  # not acknowledged: still on record
        bus.lose = lambda topic: False
        await gateway.publish_reports(bus)
        first, second = await collect(observer, 2)
        await gateway.finish_in_flight()
        assert await stored_counts(gateway) == 0
    assert json.loads(first.payload)["decision_id"] == json.loads(second.payload)["decision_id"]
