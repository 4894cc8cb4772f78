"""The panel simulators: determinism, realism of rates, pacing shell, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import ingress, topics
from intercom_gateway.core.distributions import check_usage
from intercom_gateway.core.models import (
    SETTINGS_ADAPTER,
    DeliveryBoxEvent,
    DeviceRole,
    Event,
    EventType,
    RejectReason,
    SecurityEvent,
    VisitorEvent,
    parse_event,
)
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.simulators import bad_input
from intercom_gateway.simulators.fleet import FleetSummary, iter_events, run_fleet
from intercom_gateway.simulators.images import fake_image_bytes, image_ref
from intercom_gateway.simulators.rates import Rates
from intercom_gateway.simulators.settings import (
    accept_policy,
    initialise,
    purpose_opt_out,
    register,
    return_home_notification,
    send_settings,
    service_use,
)

START = datetime(2026, 4, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def tower() -> Registry:
    """One building of twenty dwellings."""
    return generate_registry(buildings=1, dwellings=20)


@pytest.fixture(scope="module")
def small() -> Registry:
    """The fixtures' registry: b001 with d0001 and d0002."""
    return generate_registry(buildings=1, dwellings=2)


def _until(events: Iterator[Event], days: float) -> list[Event]:
    end = START + timedelta(days=days)
    return list(itertools.takewhile(lambda e: e.occurred_at < end, events))


@pytest.fixture(scope="module")
def month(tower: Registry) -> list[Event]:
    return _until(iter_events(tower, seed=7, start=START), days=30)


# --- the pure generator ------------------------------------------------------------------


def test_same_seed_gives_the_same_sequence(tower: Registry) -> None:
    first = list(itertools.islice(iter_events(tower, seed=3, start=START), 500))
    second = list(itertools.islice(iter_events(tower, seed=3, start=START), 500))
    assert [e.model_dump_json() for e in first] == [e.model_dump_json() for e in second]


def test_different_seeds_differ(tower: Registry) -> None:
    first = list(itertools.islice(iter_events(tower, seed=1, start=START), 100))
    second = list(itertools.islice(iter_events(tower, seed=2, start=START), 100))
    assert [e.occurred_at for e in first] != [e.occurred_at for e in second]
    assert {e.event_id for e in first}.isdisjoint(e.event_id for e in second)


def test_another_start_keeps_the_schedule_but_not_the_event_ids(tower: Registry) -> None:
    later = START + timedelta(days=1)
    first = list(itertools.islice(iter_events(tower, seed=1, start=START), 100))
    second = list(itertools.islice(iter_events(tower, seed=1, start=later), 100))
    assert [e.type for e in first] == [e.type for e in second]
    assert {e.event_id for e in first}.isdisjoint(e.event_id for e in second)


def test_events_come_in_time_order_and_are_all_valid(month: list[Event]) -> None:
    times = [e.occurred_at for e in month]
    assert times == sorted(times)
    assert all(parse_event(e.model_dump_json()) == e for e in month[:300])


def test_every_kind_appears_within_a_week(tower: Registry) -> None:
    week = _until(iter_events(tower, seed=0, start=START), days=7)
    kinds = Counter(_kind(e) for e in week)
    expected = {
        ("visitor", "door", DeviceRole.DWELLING_PANEL),
        ("visitor", "lobby", DeviceRole.DWELLING_PANEL),
        ("visitor", "lobby", DeviceRole.LOBBY_PANEL),
        ("return_home", None, DeviceRole.DWELLING_PANEL),
        ("alarm", False, DeviceRole.DWELLING_PANEL),
        ("alarm", True, DeviceRole.DWELLING_PANEL),
        ("security", "armed", DeviceRole.DWELLING_PANEL),
        ("security", "disarmed", DeviceRole.DWELLING_PANEL),
        ("device_failure", None, DeviceRole.DWELLING_PANEL),
        ("unlock_mode", "granted", DeviceRole.LOBBY_PANEL),
        ("unlock_mode", "denied", DeviceRole.LOBBY_PANEL),
        ("delivery_box", "arrival", DeviceRole.DELIVERY_BOX),
        ("delivery_box", "shipment", DeviceRole.DELIVERY_BOX),
    }
    assert expected <= set(kinds), expected - set(kinds)
    # Read receipts and answers answer a contractor's distribution: the distribution
    # simulator sends them (simulators/distribution.py), never the fleet on its own.
    usage = {EventType.NOTICE_READ.value, EventType.SURVEY_ANSWER.value}
    assert {e.type for e in week} == {t.value for t in EventType} - usage


def _kind(event: Event) -> tuple[str, object, DeviceRole]:
    detail = {
        "visitor": "origin",
        "alarm": "cleared",
        "security": "state",
        "unlock_mode": "result",
        "delivery_box": "action",
    }.get(event.type)
    return event.type, getattr(event, detail) if detail else None, event.device.role


def test_each_device_numbers_its_events_strictly_upwards(month: list[Event]) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in month:
        seqs[event.device.id].append(event.seq)
    assert len(seqs) == 22  # twenty panels, the lobby panel and the delivery box
    for device, numbers in seqs.items():
        assert numbers == list(range(len(numbers))), device


@pytest.mark.parametrize(
    ("kind", "per_day", "tolerance"),
    [
        ("visitor", Rates().visitors, 0.1),
        ("return_home", Rates().return_home, 0.1),
        ("arrival", Rates().deliveries, 0.15),
        ("unlock_mode", Rates().unlocks, 0.15),
        ("alarm", Rates().alarms, 0.6),  # ~20 a month: only the order of magnitude
    ],
)
def test_daily_rates_match_rates_over_a_month(
    month: list[Event], kind: str, per_day: float, tolerance: float
) -> None:
    def counted(event: Event) -> bool:
        if kind == "arrival":
            return isinstance(event, DeliveryBoxEvent) and event.action == "arrival"
        # A cleared alarm is the same alarm ending, not another one.
        return event.type == kind and not getattr(event, "cleared", False)

    dwelling_days = 20 * 30
    observed = sum(map(counted, month)) / dwelling_days
    assert observed == pytest.approx(per_day, rel=tolerance)


def test_evenings_are_busier_than_nights(month: list[Event]) -> None:
    local_hours = Counter((e.occurred_at + timedelta(hours=9)).hour for e in month)
    evening = sum(local_hours[h] for h in (18, 19, 20))
    night = sum(local_hours[h] for h in (2, 3, 4))
    # Primary streams follow the profile (~20x); follow-ups (pickups, disarming) less so.
    assert evening > 5 * night


def test_rates_scale_the_stream(tower: Registry) -> None:
    quiet = Rates(
        visitors=0.0,
        unlocks=0.0,
        deliveries=0.0,
        return_home=0.0,
        security_arms=0.0,
        device_controls=0.0,
        scenes=0.0,
        device_states=0.0,
    )
    week = _until(iter_events(tower, seed=0, start=START, rates=quiet), days=7)
    assert {e.type for e in week} <= {"alarm", "device_failure"}


def test_arrivals_precede_shipments_of_the_same_box(month: list[Event]) -> None:
    occupied: dict[int, str] = {}
    boxes = [e for e in month if isinstance(e, DeliveryBoxEvent)]
    assert len(boxes) > 100
    for event in boxes:
        if event.action == "arrival":
            assert event.box_number not in occupied
            occupied[event.box_number] = event.dwelling_id
        else:
            assert occupied.pop(event.box_number) == event.dwelling_id


def test_arming_and_disarming_alternate_per_dwelling(month: list[Event]) -> None:
    state: dict[str, str] = {}
    for event in month:
        if isinstance(event, SecurityEvent):
            assert state.get(event.dwelling_id, "disarmed") != event.state
            state[event.dwelling_id] = event.state


def test_dwelling_panels_speak_only_for_their_dwelling(month: list[Event]) -> None:
    for event in month:
        if event.device.role is DeviceRole.DWELLING_PANEL:
            assert event.device.id == f"panel-{event.building_id}-{event.dwelling_id}"


def test_visitor_calls_have_unique_ids(month: list[Event]) -> None:
    calls = [e.call_id for e in month if isinstance(e, VisitorEvent)]
    assert len(calls) == len(set(calls))


def test_image_reference_digests_its_deterministic_bytes() -> None:
    import random

    ref = image_ref(random.Random(1), prefix="visitor")
    content = fake_image_bytes(ref.id, ref.size, ref.content_type)
    assert len(content) == ref.size
    assert hashlib.sha256(content).hexdigest() == ref.sha256
    assert content.startswith(b"\xff\xd8") or content.startswith(b"\x89PNG")


def test_rates_refuse_a_bad_profile() -> None:
    with pytest.raises(ValueError, match="24"):
        Rates(hourly_profile=(1.0,) * 23)
    with pytest.raises(ValueError, match="share"):
        Rates(lobby_visitor_share=1.5)


# --- the I/O shell over the in-memory bus -------------------------------------------------


async def test_run_fleet_publishes_exactly_max_events_on_their_topics(tower: Registry) -> None:
    broker = MemoryBroker()
    listener = broker.client("listener")
    await listener.subscribe(topics.PANEL_EVENTS_FILTER)
    shown: list[tuple[str, Event]] = []

    summary = await run_fleet(
        broker.client("fleet"),
        tower,
        seed=5,
        acceleration=float("inf"),
        max_events=150,
        start=START,
        on_event=lambda topic, event: shown.append((topic, event)),
    )

    received = await _take(listener, 150)
    # Nothing beyond the limit: the next message is a sentinel sent after the run.
    sentinel = topics.panel_events("b001", "sentinel", "visitor")
    await broker.client("sentinel").publish(sentinel, b"{}")
    assert [m.topic for m in await _take(listener, 1)] == [sentinel]
    expected = list(itertools.islice(iter_events(tower, seed=5, start=START), 150))
    assert [parse_event(m.payload) for m in received] == expected
    assert [e for _, e in shown] == expected
    for message, event in zip(received, expected, strict=True):
        assert message.qos == 1
        assert message.topic == topics.panel_events(event.building_id, event.device.id, event.type)
    assert [t for t, _ in shown] == [m.topic for m in received]
    assert summary.published == 150
    assert sum(summary.by_type.values()) == 150
    assert summary.by_building == {"b001": 150}
    assert summary.first_occurred_at == expected[0].occurred_at
    assert summary.last_occurred_at == expected[-1].occurred_at
    assert "150 events" in summary.render()


async def _take(bus: MemoryBus, count: int) -> list[Message]:
    """Await ``count`` messages; the bus is in memory, so they are there or never come."""
    taken: list[Message] = []
    async with asyncio.timeout(5):
        async for message in bus.messages():
            taken.append(message)
            if len(taken) == count:
                break
    return taken


async def test_a_live_run_stamps_events_with_the_wall_clock(tower: Registry) -> None:
    """At 3600x simulated timestamps would be hours ahead; a live run's are not."""
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    shown: list[Event] = []
    await run_fleet(
        MemoryBroker().client(),
        tower,
        acceleration=3600,
        max_events=5,
        on_event=lambda _, event: shown.append(event),
    )
    after = datetime.now(UTC)
    assert len(shown) == 5
    assert all(before <= e.occurred_at <= after for e in shown)
    assert [e.occurred_at for e in shown] == sorted(e.occurred_at for e in shown)


async def test_run_fleet_stops_at_its_duration(tower: Registry) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    # 600x for 0.2 s is two simulated minutes: far fewer events than the iterator has.
    summary = await run_fleet(
        MemoryBroker().client(), tower, acceleration=600, duration=0.2, start=START
    )
    assert 0.2 <= loop.time() - began < 2.0
    assert summary.published < 10
    assert isinstance(summary.render(), str)


async def test_run_fleet_with_no_events_renders_an_empty_summary(tower: Registry) -> None:
    summary = await run_fleet(MemoryBroker().client(), tower, max_events=0)
    assert summary == FleetSummary({}, {}, None, None, 0, summary.wall_seconds)
    assert "no events" in summary.render()


async def test_settings_are_published_on_the_panel_settings_topic(small: Registry) -> None:
    broker = MemoryBroker()
    listener = broker.client("listener")
    await listener.subscribe(topics.PANEL_SETTINGS_FILTER)
    changes = [
        register("b001", "d0001", policy_version="2026-04-01"),
        initialise("b001", "d0001"),
        return_home_notification("b001", "d0001", enabled=False),
        service_use("b001", "d0001", partner_id="parcel-unlock", used=True),
        purpose_opt_out("b001", "d0001", purpose="marketing", opted_out=True),
        accept_policy("b001", "d0001", policy_version="2026-04-01"),
    ]
    for change in changes:
        await send_settings(broker.client(), "b001", "panel-b001-d0001", change)
    received = await _take(listener, 6)
    assert {m.topic for m in received} == {topics.panel_settings("b001", "panel-b001-d0001")}
    assert [SETTINGS_ADAPTER.validate_json(m.payload) for m in received] == changes
    assert len({c.change_id for c in changes}) == 6


# --- bad input ---------------------------------------------------------------------------


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


# Refused at the door, before the payload is looked at: the topic or the properties.
_AT_THE_DOOR = {RejectReason.BAD_TOPIC, RejectReason.TOO_MANY_PROPERTIES}


def _breaks_its_rule(sample: bad_input.Sample, registry: Registry) -> bool:
    """Whether the sample violates the rule its reason names, judged independently."""
    reason = sample.reason
    if reason is RejectReason.BAD_TOPIC:
        # Under the broker's packet limit, so that the gateway and not Mosquitto refuses it.
        return topics.MAX_TOPIC_LENGTH < len(sample.topic) < 65_536 - len(sample.payload)
    if reason is RejectReason.TOO_MANY_PROPERTIES:
        return len(sample.properties) > 16
    topic = topics.parse_panel_topic(sample.topic)
    assert topic is not None and topic.event_type is not None
    if reason is RejectReason.OVERSIZED:
        # Clearly over the gateway's limit, yet under the broker's max_packet_size.
        return 2 * ingress.Limits().max_bytes < len(sample.payload) < 65_536
    if reason is RejectReason.TOO_DEEP:
        return _depth(json.loads(sample.payload)) > 32
    if reason is RejectReason.MALFORMED_JSON:
        with pytest.raises(json.JSONDecodeError):
            json.loads(sample.payload)
        return True
    if reason is RejectReason.SCHEMA_VIOLATION and _out_of_range(json.loads(sample.payload)):
        return True  # a calendar edge or a huge seq: the schema's ranges, not its types
    if reason in {RejectReason.UNKNOWN_TYPE, RejectReason.SCHEMA_VIOLATION}:
        with pytest.raises(ValidationError):
            parse_event(sample.payload)
        return reason is not RejectReason.UNKNOWN_TYPE or topic.event_type not in set(EventType)
    event = parse_event(sample.payload)  # the rest are well-formed events
    devices = {device.id: device for _, device in registry.devices()}
    if reason is RejectReason.TOPIC_MISMATCH:
        return (topic.event_type, topic.device) != (event.type, event.device.id)
    if reason is RejectReason.UNKNOWN_DEVICE:
        return topic.device not in devices and event.device.id not in devices
    if reason is RejectReason.SPOOFED_DWELLING:
        return devices[event.device.id].dwelling not in {None, event.dwelling_id}
    if reason is RejectReason.STALE:
        return event.occurred_at < NOW - timedelta(days=2)
    if reason is RejectReason.FUTURE:
        return event.occurred_at > NOW + timedelta(hours=1)
    if reason is RejectReason.UNKNOWN_DISTRIBUTION:  # names a distribution never sent
        return event.type == "notice_read" and "never-sent" in sample.payload.decode()
    raise AssertionError(f"no rule for {reason}")


def _out_of_range(document: dict[str, object]) -> bool:
    """A timestamp outside years 2000-2999 or off by more than 14 hours, or a seq past
    63 bits; judged from the text, without the models."""
    text, seq = str(document["occurred_at"]), document["seq"]
    year, offset = int(text[:4]), text[19:].lstrip(".0123456789")
    hours = 0 if offset in ("Z", "") else int(offset[1:3]) + int(offset[4:6]) / 60
    huge = isinstance(seq, int) and seq > 2**63 - 1
    return huge or not 2000 <= year <= 2999 or hours > 14


_ALL_GENERATORS = bad_input.GENERATORS | bad_input.PROPERTY_GENERATORS


@pytest.mark.parametrize("name", sorted(_ALL_GENERATORS))
def test_bad_input_breaks_the_rule_of_its_reason(name: str, small: Registry) -> None:
    sample = _ALL_GENERATORS[name](small, now=NOW)
    assert sample.reason is not None
    if sample.reason not in _AT_THE_DOOR:
        assert topics.parse_panel_topic(sample.topic) is not None  # bad input, not a bad topic
    assert _breaks_its_rule(sample, small)


def test_every_calendar_edge_is_out_of_range(small: Registry) -> None:
    for seed, edge in enumerate(bad_input.CALENDAR_EDGES):
        sample = bad_input.calendar_edge(small, now=NOW, seed=seed)
        assert json.loads(sample.payload)["occurred_at"] == edge
        assert _breaks_its_rule(sample, small)


def test_replay_is_the_same_valid_payload_twice(small: Registry) -> None:
    original, replay = bad_input.replayed(small, now=NOW)
    assert (original.topic, original.payload) == (replay.topic, replay.payload)
    assert (original.reason, replay.reason) == (None, RejectReason.REPLAYED)
    parse_event(original.payload)


def test_bad_input_samples_cover_every_class_with_distinct_event_ids(small: Registry) -> None:
    samples = bad_input.all_samples(small, now=NOW, properties=True)
    assert {s.reason for s in samples} == {
        None,
        *(
            set(RejectReason)
            - {
                RejectReason.UNKNOWN_DWELLING,
                # a contractor's distributions, not a panel's input, cause these
                RejectReason.UNKNOWN_CONTRACTOR,
                RejectReason.BUILDING_NOT_ADDRESSABLE,
                # no payload a panel could send is meant to cause these
                RejectReason.INTERNAL_ERROR,
                RejectReason.DEAD_LETTER,
            }
        ),
    }
    ids = [json.loads(s.payload)["event_id"] for s in samples if s.reason not in _UNPARSEABLE]
    assert len(ids) == len(set(ids)) + 1  # only the replay repeats an id
    assert bad_input.all_samples(small, now=NOW, properties=True) == samples  # deterministic
    assert bad_input.all_samples(small, now=NOW, seed=1) != samples
    # Without properties: every sample sendable by any MQTT client, one class fewer.
    plain = bad_input.all_samples(small, now=NOW)
    assert all(s.properties == () for s in plain)
    assert {s.reason for s in samples} - {s.reason for s in plain} == {
        RejectReason.TOO_MANY_PROPERTIES
    }


_UNPARSEABLE = {RejectReason.MALFORMED_JSON}


_INGRESS_GENERATORS = {n: g for n, g in bad_input.GENERATORS.items() if n != "long_topic_level"}


@pytest.mark.parametrize("name", sorted(_INGRESS_GENERATORS))
def test_ingress_rejects_bad_input_with_the_expected_reason(name: str, small: Registry) -> None:
    """Cross-check against the gateway's own ingress rules and default limits (the door's
    limits are the gateway's: tests/component/test_poison_component.py)."""
    sample = bad_input.GENERATORS[name](small, now=NOW)
    topic = topics.parse_panel_topic(sample.topic)
    assert topic is not None
    devices = ingress.DeviceIndex.from_registry(small)
    with pytest.raises(ingress.InputRejected) as caught:
        event = ingress.check_event(
            topic, sample.payload, devices=devices, limits=ingress.Limits(), now=NOW
        )
        check_usage(event, None)  # the gateway's next check: no distribution was sent
    assert caught.value.reason is sample.reason


def test_linked_devices_and_app_calls_come_at_their_rates_from_the_right_devices(
    month: list[Event],
) -> None:
    """§2(3)① from dwelling panels at their daily rates; §2(4) lobby calls from the lobby
    panel, each the app's side of a lobby visitor's call, on the dwelling's one handset."""
    rates, dwellings, days = Rates(), 20, 30
    counts: Counter[str] = Counter(e.type for e in month)
    for kind, per_day in (
        ("device_control", rates.device_controls),
        ("device_state", rates.device_states),
    ):
        expected = per_day * dwellings * days
        assert 0.85 * expected < counts[kind] < 1.15 * expected, kind
    assert counts["scene"] > 0.6 * rates.scenes * dwellings * days
    lobby_visits = {
        e.call_id: e for e in month if isinstance(e, VisitorEvent) and e.origin == "lobby"
    }
    handsets: dict[str, set[str]] = defaultdict(set)
    calls = [e for e in month if e.type == "lobby_call"]
    for call in calls:
        assert call.device.role is DeviceRole.LOBBY_PANEL
        visit = lobby_visits[call.call_id]
        assert (visit.dwelling_id, visit.occurred_at) == (call.dwelling_id, call.occurred_at)
        if call.handset is not None:
            handsets[call.dwelling_id].add(str(call.handset.uuid))
    share = len(calls) / len(lobby_visits)
    assert 0.4 < share < 0.6  # Rates.lobby_app_share
    assert handsets and all(len(uuids) == 1 for uuids in handsets.values())
    for control in (e for e in month if e.type == "device_control"):
        assert control.device.role is DeviceRole.DWELLING_PANEL
        assert (control.error is None) is (control.result == "ok")
