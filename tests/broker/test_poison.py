"""The poison suite (issue 13): real Mosquitto, the gateway as a real process.

Every poison class of issue 13 (timestamps at the calendar's edge with an offset, a
``seq`` of 10^30 and of 4,000 digits, a 32,500-character topic level, more user
properties than the gateway takes) is published normally and retained, amid a stream
of valid events from several dwellings of two buildings. The gateway process must never
exit or reconnect, every valid event must reach the cloud and every partner entitled
to it, and every poison message must be rejected exactly once, with its reason. Then
the gateway restarts (graceful, with retained poison published while it is away; then
with its session gone) and the retained poison brings it down neither time.

A kill during a poison: with store batches written rarely, the gateway is SIGKILLed
after it has echoed a poison's rejection but before it acknowledged it; the broker
delivers it again to the next process, which rejects it again and goes on. A message
whose handling itself kills the process every time, set aside on the dead-letter topic
after ``max_attempts``, cannot be made without a hook in the product:
tests/component/test_gateway_containment.py covers it by cancelling the handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event, RejectReason, utc_now
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.runner import StatusWatch, following
from intercom_gateway.simulators import bad_input
from intercom_gateway.simulators.bad_input import Sample
from tests.broker.worlds import (
    Recorder,
    World,
    entitled,
    make_events,
    message_of,
    open_world,
    recording,
)
from tests.helpers import unawaited

pytestmark = pytest.mark.slow

GRACE = 60.0  # seconds for everything published to come through


# --- the poison ---------------------------------------------------------------------------


def poisons(registry: Registry, *, now: datetime, seed: int) -> list[Sample]:
    """One message of every poison class of issue 13 (seed: distinct event ids per set)."""
    base = seed * 100
    found = [
        bad_input.calendar_edge(registry, now=now, seed=base + i, moment=moment)
        for i, moment in enumerate(bad_input.CALENDAR_EDGES)
    ]
    return [
        *found,
        bad_input.huge_seq(registry, now=now, seed=base + 10),
        bad_input.huge_seq(registry, now=now, seed=base + 11, seq=int("9" * 4_000)),
        bad_input.long_topic_level(registry, now=now, seed=base + 20),
        bad_input.too_many_properties(registry, now=now, seed=base + 30),
    ]


def sentinel() -> Sample:
    """A bad message on a topic of its own, sent last: once its rejection is in, every
    message sent before it has been handled."""
    device = f"sentinel-{uuid.uuid4().hex[:8]}"
    topic = topics.panel_events("b001", device, "visitor")
    return Sample(topic, b"{}", RejectReason.UNKNOWN_DEVICE)


class Rejections:
    """Every message on gateway/v1/rejected/# and gateway/v1/deadletter."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._grew = asyncio.Condition()

    async def on(self, topic: str, payload: bytes, _message: Any) -> None:
        async with self._grew:
            self.seen.append((topic, json.loads(payload)))
            self._grew.notify_all()

    async def wait_for(self, sample: Sample, timeout: float = GRACE) -> None:
        """Until the rejection of ``sample`` (matched by reason and topic) has arrived."""

        def arrived() -> bool:
            return any(self._is(sample, topic, body) for topic, body in self.seen)

        async with self._grew:
            await asyncio.wait_for(self._grew.wait_for(arrived), timeout)

    def count(self, sample: Sample) -> int:
        return sum(1 for topic, body in self.seen if self._is(sample, topic, body))

    @staticmethod
    def _is(sample: Sample, topic: str, body: dict[str, Any]) -> bool:
        assert sample.reason is not None
        same_topic = body.get("topic") == sample.topic[: topics.MAX_TOPIC_LENGTH]
        echoed = body.get("payload") or ""
        event_id = _event_id(sample)
        same_event = event_id is None or event_id in echoed
        return topic == topics.rejected(sample.reason) and same_topic and same_event

    def reasons(self) -> Counter[str]:
        return Counter(str(body.get("reason")) for _, body in self.seen)


def _event_id(sample: Sample) -> str | None:
    try:
        return str(json.loads(sample.payload)["event_id"])
    except (ValueError, KeyError):
        return None


# --- the world -----------------------------------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, dwellings=6) as world:
        yield world


@contextlib.asynccontextmanager
async def watching(world: World) -> AsyncIterator[Rejections]:
    rejections = Rejections()
    subscription = (OPERATOR, [topics.REJECTED_FILTER, topics.DEADLETTER])
    async with following(world.broker, [subscription], rejections.on, prefix="rejections"):
        yield rejections


def fleet(broker: Mosquitto) -> MqttBus:
    """The simulators' account, with a client id bound to it."""
    address = broker.address(FLEET)
    return MqttBus(address, client_id=address.client_id(f"poison-{uuid.uuid4().hex[:6]}"))


async def publish(
    broker: Mosquitto, events: list[Event], normal: list[Sample], retained: list[Sample]
) -> None:
    """Valid events with a poison message between every few, normal and retained."""
    bad = [(s, False) for s in normal] + [(s, True) for s in retained]
    step = max(1, len(events) // (len(bad) + 1))
    async with fleet(broker) as bus:
        for index, event in enumerate(events):
            await bus.publish(*message_of(event), on_done=unawaited)
            if index % step == step - 1 and bad:
                await queue(bus, *bad.pop(0))
        for sample, retain in bad:
            await queue(bus, sample, retain)
        await bus.drain()


async def send(broker: Mosquitto, sample: Sample, *, retain: bool = False) -> None:
    async with fleet(broker) as bus:
        await queue(bus, sample, retain)
        await bus.drain()


async def queue(bus: MqttBus, sample: Sample, retain: bool) -> None:
    """Publish a poison sample; its PUBACK is awaited by ``drain``."""
    await bus.publish(
        sample.topic,
        sample.payload,
        retain=retain,
        user_properties=sample.properties,
        on_done=unawaited,
    )


async def unless_exited(world: World, awaitable: Any) -> None:
    """Await ``awaitable``, failing at once if the gateway process exits meanwhile."""
    assert world.process is not None
    waiting = asyncio.ensure_future(awaitable)
    exited = asyncio.ensure_future(world.process.wait())
    await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not waiting.done():
        waiting.cancel()
        raise AssertionError(f"the gateway exited with status {world.process.returncode}")
    waiting.result()


async def all_forwarded(recorder: Recorder, world: World, events: list[Event]) -> dict[str, int]:
    expected = entitled(events, world.registry)
    await unless_exited(world, recorder.wait_complete(expected, timeout=GRACE))
    lost = {d: len(ids - set(recorder.copies[d])) for d, ids in expected.items()}
    assert {"cloud", "partner:concierge", "partner:elder-watch"} <= set(expected)
    assert sum(lost.values()) == 0, lost
    return {d: len(ids) for d, ids in expected.items()}


async def handled_through(rejections: Rejections, world: World) -> None:
    """Send a sentinel and wait for its rejection: the gateway handled all before it."""
    mark = sentinel()
    await send(world.broker, mark)
    await unless_exited(world, rejections.wait_for(mark))


# --- the suite -----------------------------------------------------------------------------


async def test_poison_amid_valid_traffic_never_stops_the_gateway(world: World) -> None:
    now = utc_now()
    normal = poisons(world.registry, now=now, seed=1)
    retained = poisons(world.registry, now=now, seed=2)
    events = make_events(world.registry, 300, seed=41)
    async with (
        StatusWatch(world.broker, world.gateway_id) as status,
        recording(world) as recorder,
        watching(world) as rejections,
    ):
        await world.start_gateway(status)
        await publish(world.broker, events, normal, retained)
        counts = await all_forwarded(recorder, world, events)
        await handled_through(rejections, world)
        assert world.alive() and status.online_count == 1  # never exited, never reconnected
        for sample in normal + retained:
            assert rejections.count(sample) == 1, (sample.reason, sample.topic[:80])
        expected = Counter(str(s.reason) for s in normal + retained)
        expected[RejectReason.UNKNOWN_DEVICE.value] += 1  # the sentinel
        assert rejections.reasons() == expected
        summary = f"{len(normal) + len(retained)} poison messages rejected once each"
        print(f"\n[poison] {len(events)} valid events forwarded {counts}; {summary}")

        # Away, gracefully; retained poison published meanwhile waits in its session.
        assert await world.stop_gateway(signal.SIGTERM) == 0
        while_away = poisons(world.registry, now=utc_now(), seed=3)
        for sample in while_away:
            await send(world.broker, sample, retain=True)
        await world.start_gateway(status)
        later = make_events(world.registry, 100, seed=42)
        await publish(world.broker, later, [], [])
        await all_forwarded(recorder, world, events + later)
        await handled_through(rejections, world)
        assert world.alive()
        for sample in while_away:
            assert rejections.count(sample) == 1, (sample.reason, sample.topic[:80])
        for sample in normal + retained:  # handled and acknowledged: not again
            assert rejections.count(sample) == 1, (sample.reason, sample.topic[:80])

        # A gateway with no session: all that is left of the poison is retained.
        assert await world.stop_gateway(signal.SIGTERM) == 0
        world.gateway_id = status.gateway_id = f"gw-{uuid.uuid4().hex[:6]}"
        await world.start_gateway(status)
        last = make_events(world.registry, 100, seed=43)
        await publish(world.broker, last, [], [])
        await all_forwarded(recorder, world, events + later + last)
        await handled_through(rejections, world)
        assert world.alive()
        for sample in retained + while_away:  # retained: at most once more, never a crash
            assert rejections.count(sample) <= 2
        assert rejections.reasons()[RejectReason.DEAD_LETTER.value] == 0
        assert await world.stop_gateway(signal.SIGTERM) == 0


async def test_a_gateway_killed_with_a_poison_in_flight_rejects_it_again_and_goes_on(
    world: World,
) -> None:
    # Store batches (and so acknowledgements) every 30 s: once the rejection is echoed,
    # the message stays unacknowledged long enough to kill the process with it in flight.
    world.extra = {"INTERCOM_FLUSH_INTERVAL": "30"}
    poison = bad_input.calendar_edge(world.registry, now=utc_now(), seed=77)
    async with (
        StatusWatch(world.broker, world.gateway_id) as status,
        recording(world) as recorder,
        watching(world) as rejections,
    ):
        await world.start_gateway(status)
        await send(world.broker, poison)
        await unless_exited(world, rejections.wait_for(poison))
        await world.stop_gateway(signal.SIGKILL)

        world.extra = {}
        await world.start_gateway(status)  # the broker delivers the poison again
        events = make_events(world.registry, 100, seed=44)
        await publish(world.broker, events, [], [])
        await all_forwarded(recorder, world, events)
        await handled_through(rejections, world)
        assert world.alive() and status.online_count == 2
        assert rejections.count(poison) == 2  # once per process that took it

        assert await world.stop_gateway(signal.SIGTERM) == 0
        await world.start_gateway(status)
        await handled_through(rejections, world)
        assert rejections.count(poison) == 2  # acknowledged by the second: never again
        assert rejections.reasons()[RejectReason.DEAD_LETTER.value] == 0
        assert await world.stop_gateway(signal.SIGTERM) == 0
