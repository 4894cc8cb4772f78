"""Issue 14 at the broker tier: analytics copies cannot be joined to the identified ones.

The gateway runs as a real process on a real Mosquitto with short analytics windows.
A cloud subscriber and an analytics subscriber (each its own account) record every
copy with its arrival time.

- Unlinkable: a few hundred simulated events of every kind. No value of any analytics
  copy (envelope field or MQTT user property) equals an identifying value of a cloud
  copy; every time in it sits on the window grid; the copies of one window arrive
  together, after the window has ended and so after every cloud copy of its events.
- Shuffled: device failures told apart by their fault code (test tracers, linkable by
  construction): within a batch, the rank correlation between the order the events
  were sent and the order their copies arrived is near 0.
- Crash: SIGKILL while a window holds copies; after the restart every copy is
  published once, complete, and the store holds none.

Counts are printed and written to reports/analytics-windows.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import ANALYTICS, CLOUD, GATEWAY, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event
from intercom_gateway.core.policy import DestinationKind
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.runner import StatusWatch
from intercom_gateway.settings import Settings
from tests.broker.worlds import Publisher, World, decisions, make_events, open_world, report
from tests.stores import committed

pytestmark = pytest.mark.slow

REPORT = Path(__file__).resolve().parents[2] / "reports" / "analytics-windows.json"
SENTINEL = topics.analytics("zz-sentinel")
# What names a dwelling, device or event in a cloud copy, or times it finely.
IDENTIFYING = ("event_id", "decision_id", "forwarded_at")
# (``seq``, a small per-device counter, is left out of the copy; compared as a value, a
# seq of 1 would "match" every copy's schema_version.)
IDENTIFYING_EVENT = ("event_id", "building_id", "dwelling_id", "occurred_at")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, dwellings=10) as world:
        yield world


@dataclass
class Arrival:
    at: float  # wall clock, seconds since the epoch
    envelope: dict[str, Any]
    properties: tuple[tuple[str, str], ...]


@dataclass
class Subscriber:
    """One account's copies on one filter, in arrival order, until a sentinel."""

    broker: Mosquitto
    user: str
    filters: tuple[str, ...]
    seen: list[Arrival] = field(default_factory=list)
    sentinels: int = 0
    _grew: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, ready: asyncio.Event) -> None:
        address = self.broker.address(self.user)
        async with MqttBus(address, client_id=address.client_id(uuid.uuid4().hex[:8])) as bus:
            await bus.subscribe(*self.filters)
            ready.set()
            async for message in bus.messages():
                at = time.time()
                async with self._grew:
                    if message.topic == SENTINEL:
                        self.sentinels += 1
                    else:
                        envelope = json.loads(message.payload)
                        self.seen.append(Arrival(at, envelope, tuple(message.user_properties)))
                    self._grew.notify_all()

    async def wait_for(self, count: int, *, timeout: float) -> None:
        async with self._grew:
            await asyncio.wait_for(self._grew.wait_for(lambda: len(self.seen) >= count), timeout)

    async def wait_sentinel(self, count: int, *, timeout: float) -> None:
        async with self._grew:
            await asyncio.wait_for(self._grew.wait_for(lambda: self.sentinels >= count), timeout)


@contextlib.asynccontextmanager
async def subscribed(*subscribers: Subscriber) -> AsyncIterator[None]:
    readies = [asyncio.Event() for _ in subscribers]
    tasks = [asyncio.create_task(s.run(r)) for s, r in zip(subscribers, readies, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def sentinel(broker: Mosquitto, subscriber: Subscriber) -> None:
    """Behind everything the gateway published before it stopped: nothing more comes."""
    address = broker.address(GATEWAY)
    count = subscriber.sentinels + 1
    async with MqttBus(address, client_id=address.client_id(uuid.uuid4().hex[:8])) as bus:
        await bus.publish(SENTINEL, b"{}")
    await subscriber.wait_sentinel(count, timeout=10)


def analytics_entitled(events: list[Event], registry: Registry) -> list[Event]:
    """The events that get an analytics copy, by the gateway's own pure decision."""
    kept = []
    for event, decision in decisions(events, registry):
        if any(o.kind is DestinationKind.ANALYTICS for o in decision.forwarded):
            kept.append(event)
    return kept


def leaves(value: Any) -> list[str]:
    """Every scalar in a JSON document, as text."""
    if isinstance(value, dict):
        return [text for v in value.values() for text in leaves(v)]
    if isinstance(value, list):
        return [text for v in value for text in leaves(v)]
    return [] if value is None else [str(value)]


def on_grid(text: str, window: timedelta) -> bool:
    moment = datetime.fromisoformat(text)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (moment - epoch) % window == timedelta(0)


def spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation of two lists of distinct values."""
    n = len(xs)
    rx = {x: i for i, x in enumerate(sorted(xs))}
    ry = {y: i for i, y in enumerate(sorted(ys))}
    d2 = sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def batches(arrivals: list[Arrival]) -> dict[str, list[Arrival]]:
    by_window: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        by_window[arrival.envelope["forwarded_at"]].append(arrival)
    return by_window


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def window_end(start: str, window: timedelta) -> float:
    return (datetime.fromisoformat(start) + window).timestamp()


async def test_no_analytics_copy_can_be_joined_to_an_identified_one(world: World) -> None:
    window = timedelta(seconds=3)
    world.extra.update({"INTERCOM_ANALYTICS_WINDOW": "3"})
    events = make_events(world.registry, 400, seed=61)
    wanted = analytics_entitled(events, world.registry)
    failures = [e for e in make_events(world.registry, 3000, seed=62) if e.type == "device_failure"]
    tracers: list[Event] = [
        failures[index % len(failures)].model_copy(
            update={"event_id": uuid.uuid4(), "code": f"T-{index:04d}"}
        )
        for index in range(200)
    ]
    cloud = Subscriber(world.broker, CLOUD, (topics.cloud_filter(),))
    analytics = Subscriber(world.broker, ANALYTICS, (topics.analytics_filter(),))
    async with StatusWatch(world.broker, world.gateway_id) as status, subscribed(cloud, analytics):
        await world.start_gateway(status)
        await Publisher(world.broker).publish(events, rate=200)
        await analytics.wait_for(len(wanted), timeout=60)
        realistic = len(analytics.seen)
        await Publisher(world.broker).publish(tracers)  # as fast as the broker takes them
        await analytics.wait_for(realistic + len(tracers), timeout=60)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        await sentinel(world.broker, analytics)

    copies, traced = analytics.seen[:realistic], analytics.seen[realistic:]
    assert len(copies) == len(wanted)  # one each, none twice
    assert len({c.envelope["decision_id"] for c in analytics.seen}) == len(analytics.seen)
    # Fields and properties: nothing in a copy names or times an identified copy.
    identifying = set()
    for arrival in cloud.seen:
        identifying |= {str(arrival.envelope[key]) for key in IDENTIFYING}
        event = arrival.envelope["event"]  # an image's own copy has fewer fields
        identifying |= {str(event[key]) for key in IDENTIFYING_EVENT if key in event}
        if "device" in event:
            identifying.add(event["device"]["id"])
    for copy in copies:
        values = set(leaves(copy.envelope)) | {v for _, v in copy.properties}
        assert not values & identifying, values & identifying
        assert copy.envelope["event_id"] is None
        assert not {"seq", "event_id", "building_id", "dwelling_id"} & set(copy.envelope["event"])
        assert not [k for k, _ in copy.properties if k == "event_id"]
        assert on_grid(copy.envelope["forwarded_at"], window)
        assert on_grid(copy.envelope["event"]["occurred_at"], timedelta(hours=1))
    # Arrival times: each window's copies land together, after the window has ended,
    # so after the cloud copies of every one of its events.
    spans = {}
    for start, batch in batches(copies).items():
        first, last = min(a.at for a in batch), max(a.at for a in batch)
        assert first >= window_end(start, window), (start, first)
        spans[start] = last - first
        assert spans[start] < 0.5, (start, spans[start])
        opened = datetime.fromisoformat(start)
        before = [a.at for a in cloud.seen if _moment(a.envelope["forwarded_at"]) < opened]
        assert not before or first > max(before)
    # Order: within each tracer batch, unrelated to the order the events were sent.
    sent_rank = {f"T-{i:04d}": i for i in range(len(tracers))}
    correlations = {}
    for start, batch in batches(traced).items():
        ranks = [sent_rank[a.envelope["event"]["code"]] for a in batch]
        if len(ranks) >= 30:
            correlations[start] = spearman(list(range(len(ranks))), [float(r) for r in ranks])
    assert correlations
    assert all(abs(rho) < 0.4 for rho in correlations.values()), correlations
    _report(
        {
            "scenario": "unlinkable",
            "events_sent": len(events),
            "analytics_copies": len(copies),
            "cloud_copies": len(cloud.seen),
            "windows": len(spans),
            "batch_span_ms_max": round(1000 * max(spans.values()), 1),
            "tracers": len(tracers),
            "spearman_per_batch": {k: round(v, 3) for k, v in correlations.items()},
        }
    )


def held_rows(world: World) -> int:
    # The gateway process's store: its SQLite file, or INTERCOM_STORE (--store=postgres).
    settings = Settings(db_path=world.workdir / "gateway.sqlite")
    [(count,)] = committed(settings, "SELECT count(*) FROM analytics_held")
    return int(count)


async def test_a_window_held_through_a_sigkill_is_published_once_complete(
    world: World,
) -> None:
    window = 10
    world.extra.update({"INTERCOM_ANALYTICS_WINDOW": str(window)})
    events = make_events(world.registry, 300, seed=71)
    wanted = analytics_entitled(events, world.registry)
    cloud = Subscriber(world.broker, CLOUD, (topics.cloud_filter(),))
    analytics = Subscriber(world.broker, ANALYTICS, (topics.analytics_filter(),))
    async with StatusWatch(world.broker, world.gateway_id) as status, subscribed(cloud, analytics):
        await world.start_gateway(status)
        # Start just after a window begins, so that the whole burst falls in it.
        now = time.time()
        await asyncio.sleep(window - now % window + 0.2)  # a point in time, not a sync
        began = time.time()
        await Publisher(world.broker).publish(events)
        await cloud.wait_for(len(events), timeout=30)  # every event handled, most committed
        # The held copies are committed with their events' batch, a flush after the cloud
        # copies went out: kill only once some are on record (another process's file).
        for _ in range(100):  # at most 5 s: the batch is due within 50 ms
            if held_rows(world):
                break
            await asyncio.sleep(0.05)
        assert await world.stop_gateway(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.time()
        assert killed_at - began < window - 1, "the burst took too long to test a held window"
        assert analytics.seen == []  # nothing released before the window ended
        held_at_kill = held_rows(world)
        assert held_at_kill > 0
        await world.start_gateway(status)
        await analytics.wait_for(len(wanted), timeout=window + 30)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        await sentinel(world.broker, analytics)
        left = held_rows(world)

    ids = [a.envelope["decision_id"] for a in analytics.seen]
    by_type: dict[str, int] = defaultdict(int)
    for arrival in analytics.seen:
        by_type[arrival.envelope["event"]["type"]] += 1
    expected_by_type: dict[str, int] = defaultdict(int)
    for event in wanted:
        expected_by_type[event.type] += 1
    _report(
        {
            "scenario": "sigkill-while-held",
            "events_sent": len(events),
            "analytics_expected": len(wanted),
            "held_in_store_at_kill": held_at_kill,
            "analytics_received": len(ids),
            "distinct": len(set(ids)),
            "windows": len(batches(analytics.seen)),
            "left_in_store": left,
        }
    )
    assert len(ids) == len(set(ids)) == len(wanted)  # once each, complete
    assert by_type == expected_by_type
    assert left == 0


def _report(result: dict[str, Any]) -> None:
    report(REPORT, result["scenario"], result, f"\n[analytics-windows] {json.dumps(result)}")
