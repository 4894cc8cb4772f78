"""Fuzzing the ingress checks with hypothesis: random and mutated payloads and topics.

Invariants: ``check_event``/``check_settings`` raise nothing but ``InputRejected``;
what they accept parses on its own and names a registered device bound to the
dwelling, in the window of time, with a timestamp written at a real offset (within
±14:00) and a ``seq`` that fits 63 bits. The oracle reads the registry directly, not
the ``DeviceIndex`` under test, and counts nesting on the decoded value, not with the
gateway's byte scanner. Valid events are always accepted, at any real offset.

Inputs: mutations of valid events (field by field and byte by byte), the event
models' own JSON grammar anchored to registered devices, the valid fixtures, the
simulator's events and the bad-input samples, and edge values (tests/fuzzing.py).
Budget: the ``fuzz`` hypothesis profile; ``scripts/fuzz`` runs ``fuzz-long``
(docs/fuzzing.md). ``INTERCOM_FUZZ_EXAMPLES`` overrides the examples per test.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.core.ingress import InputRejected, check_event, check_settings
from intercom_gateway.core.models import (
    EVENTS_BY_ROLE,
    SETTINGS_ADAPTER,
    DeviceRole,
    Event,
    SettingsChange,
    parse_event,
)
from intercom_gateway.core.registry import Device
from intercom_gateway.core.topics import PanelTopic, parse_panel_topic
from tests import fuzzing
from tests.fuzzing import OFFSETS, budget, payload_depth
from tests.unit.test_ingress import DEVICES, LIMITS, NOW, REGISTRY, event
from tests.unit.test_ingress import settings as settings_dict

FUZZ = budget(1.0)

BY_ID: dict[str, tuple[str, Device]] = {d.id: (b.id, d) for b, d in REGISTRY.devices()}
DWELLINGS = {(b.id, d.id) for b, d in REGISTRY.dwellings()}
BUILDINGS = ["b001", "b002", "b003", ""]
DWELLING_IDS = ["d0001", "d0002", "d0003", "d0004", "d0099", "D0001"]
DEVICE_IDS = [*BY_ID, "panel-b003-d0001", "lobby-b003", "Panel-b001-d0001"]
ROLES = [role.value for role in DeviceRole] + ["thermostat"]
TYPES = ["visitor", "return_home", "alarm", "delivery_box", "unlock_mode", "security"]
TYPES += ["device_failure", "teleport", ""]
JSON_VALUES = fuzzing.JSON_VALUES


REGISTERED = st.sampled_from(sorted(BY_ID.values(), key=lambda bd: bd[1].id))
# Strategies are built once: building them inside every draw doubled the run time.
ANY_TOPIC = st.builds(
    PanelTopic,
    st.sampled_from(BUILDINGS) | st.text(max_size=6),
    st.sampled_from(DEVICE_IDS) | st.text(max_size=6),
    st.sampled_from(TYPES) | st.text(max_size=6),
)
RANDOM_BYTES = st.binary(max_size=300)
# Weighted toward well-formed lies (another dwelling, device or role), which only the
# binding checks catch; broken JSON is caught by the parser and needs fewer examples.
MUTATIONS = st.sampled_from(
    ["identity"] * 4 + ["device"] * 2 + ["drop", "flip", "time", "deep", "extra"]
)
ENCODINGS = st.sampled_from(["plain"] * 6 + ["duplicate", "truncate", "flip_byte", "pad"])


# --- valid events ------------------------------------------------------------------


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    building, device = draw(REGISTERED)
    event_type = draw(st.sampled_from(sorted(EVENTS_BY_ROLE[device.role])))
    if device.role is DeviceRole.DWELLING_PANEL:
        dwelling = device.dwelling
    else:
        dwelling = draw(st.sampled_from(sorted(d for b, d in DWELLINGS if b == building)))
    age = draw(st.timedeltas(-LIMITS.max_skew, LIMITS.max_age))
    data = event(
        event_type.value,
        dwelling=str(dwelling),
        device={"id": device.id, "role": device.role.value},
    )
    # Drawn, not left to the factory's uuid4 and counter: hypothesis must replay it.
    identity = {"event_id": str(draw(st.uuids())), "seq": draw(st.integers(0, 2**31))}
    # Any real offset: the same instant written in another time zone is the same event.
    occurred_at = (NOW - age).astimezone(draw(OFFSETS)).isoformat()
    return data | identity | {"building_id": building, "occurred_at": occurred_at}


def topic_of(data: dict[str, Any]) -> PanelTopic:
    device = data.get("device")
    device_id = device.get("id") if isinstance(device, dict) else None
    return PanelTopic(str(data.get("building_id")), str(device_id), str(data.get("type")))


# --- mutations ---------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """One change to a decoded event: the kinds of lie and mistake a panel can make."""
    key = draw(st.sampled_from(sorted(data)))
    kind = draw(MUTATIONS)
    if kind == "drop":
        return {k: v for k, v in data.items() if k != key}
    if kind == "flip":
        return data | {key: draw(JSON_VALUES)}
    if kind == "identity":
        field, pool = draw(
            st.sampled_from(
                [("building_id", BUILDINGS), ("dwelling_id", DWELLING_IDS), ("type", TYPES)]
            )
        )
        return data | {field: draw(st.sampled_from(pool))}
    if kind == "device":
        return data | {
            "device": {
                "id": draw(st.sampled_from(DEVICE_IDS)),
                "role": draw(st.sampled_from(ROLES)),
            }
        }
    if kind == "time":
        shift = draw(st.timedeltas(timedelta(days=-3), timedelta(days=3)))
        return data | {"occurred_at": (NOW + shift).isoformat()}
    if kind == "deep":
        depth = draw(st.integers(1, 3 * LIMITS.max_depth))
        return data | {key: json.loads("[" * depth + "]" * depth)}
    return data | {draw(st.text(max_size=10)): draw(JSON_VALUES)}


@st.composite
def encoded(draw: st.DrawFn, data: dict[str, Any]) -> bytes:
    """Serialise, sometimes with byte-level damage or a duplicated key."""
    text = json.dumps(data)
    kind = draw(ENCODINGS)
    if kind == "duplicate" and data:
        key = draw(st.sampled_from(sorted(data)))
        value = draw(JSON_VALUES)
        text = "{" + json.dumps(key) + ": " + json.dumps(value) + ", " + text[1:]
        if draw(st.booleans()):  # the duplicate last: JSON parsers keep the last one
            text = text[:-1] + ", " + json.dumps(key) + ": " + json.dumps(value) + "}"
    payload = text.encode()
    if kind == "truncate":
        return payload[: draw(st.integers(0, len(payload)))]
    if kind == "flip_byte" and payload:
        at = draw(st.integers(0, len(payload) - 1))
        return payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1 :]
    if kind == "pad":
        return payload + b" " * draw(st.sampled_from([1, LIMITS.max_bytes]))
    return payload


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[PanelTopic, bytes]:
    data = draw(valid_events())
    for _ in range(draw(st.integers(0, 2))):
        data = draw(mutated(data))
    payload = draw(RANDOM_BYTES) if draw(st.integers(0, 9)) == 0 else draw(encoded(data))
    # Mostly as the device would publish it: the likeliest to pass, so to matter.
    topic = draw(ANY_TOPIC) if draw(st.integers(0, 3)) == 0 else topic_of(data)
    return topic, payload


# --- the oracle --------------------------------------------------------------------


def assert_event_trustworthy(topic: PanelTopic, payload: bytes, event: Event) -> None:
    assert len(payload) <= LIMITS.max_bytes and payload_depth(payload) <= LIMITS.max_depth
    assert parse_event(payload) == event  # it parses on its own, to the same event
    assert 0 <= event.seq <= fuzzing.MAX_SEQ
    assert abs(written_offset(json.loads(payload)["occurred_at"])) <= timedelta(hours=14)
    building, device = BY_ID[topic.device]
    assert (event.type, event.device.id, event.building_id) == (
        topic.event_type,
        device.id,
        building,
    )
    assert topic.building == building and event.device.role is device.role
    if device.role is DeviceRole.DWELLING_PANEL:
        assert event.dwelling_id == device.dwelling
    else:
        assert (building, event.dwelling_id) in DWELLINGS
    assert NOW - LIMITS.max_age <= event.occurred_at <= NOW + LIMITS.max_skew


def written_offset(text: object) -> timedelta:
    """The offset a timestamp was written with. pydantic's lax mode also takes a Unix time
    (a number, or digits in a string) as UTC, although the published JSON Schema says
    ``date-time``: reported, not enforced here."""
    if isinstance(text, int | float) or str(text).lstrip("-").replace(".", "", 1).isdigit():
        return timedelta(0)
    offset = datetime.fromisoformat(str(text)).utcoffset()
    assert offset is not None, f"{text} has no offset"
    return offset


def assert_settings_trustworthy(topic: PanelTopic, payload: bytes, change: SettingsChange) -> None:
    assert SETTINGS_ADAPTER.validate_json(payload) == change
    building, device = BY_ID[topic.device]
    assert device.role is DeviceRole.DWELLING_PANEL
    assert (topic.building, change.building_id, change.dwelling_id) == (
        building,
        building,
        device.dwelling,
    )


# --- the properties ----------------------------------------------------------------


@FUZZ
@given(hostile_messages())
def test_events_are_rejected_or_trustworthy(message: tuple[PanelTopic, bytes]) -> None:
    topic, payload = message
    try:
        accepted = check_event(topic, payload, devices=DEVICES, limits=LIMITS, now=NOW)
    except InputRejected:
        return
    assert_event_trustworthy(topic, payload, accepted)


@FUZZ
@given(
    st.text(max_size=80) | st.sampled_from(["intercom/v1/b001/panel-b001-d0001/events/alarm"]),
    st.binary(max_size=200),
)
def test_random_topics_and_bytes_only_ever_get_input_rejected(
    topic_text: str, payload: bytes
) -> None:
    topic = parse_panel_topic(topic_text)
    if topic is None or topic.is_settings:
        return
    try:
        accepted = check_event(topic, payload, devices=DEVICES, limits=LIMITS, now=NOW)
    except InputRejected:
        return
    assert_event_trustworthy(topic, payload, accepted)


@st.composite
def hostile_settings(draw: st.DrawFn) -> tuple[PanelTopic, bytes]:
    data = settings_dict(dwelling=draw(st.sampled_from(DWELLING_IDS)))
    data["change_id"] = str(draw(st.uuids()))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(data)))
        kind = draw(st.sampled_from(["drop", "flip", "building"]))
        if kind == "drop":
            data = {k: v for k, v in data.items() if k != key}
        elif kind == "flip":
            data = data | {key: draw(JSON_VALUES)}
        else:
            data = data | {"building_id": draw(st.sampled_from(BUILDINGS))}
    topic = PanelTopic(draw(st.sampled_from(BUILDINGS)), draw(st.sampled_from(DEVICE_IDS)), None)
    return topic, draw(encoded(data))


@FUZZ
@given(hostile_settings())
def test_settings_are_rejected_or_trustworthy(message: tuple[PanelTopic, bytes]) -> None:
    topic, payload = message
    try:
        accepted = check_settings(topic, payload, devices=DEVICES, limits=LIMITS)
    except InputRejected:
        return
    assert_settings_trustworthy(topic, payload, accepted)


@FUZZ
@given(valid_events())
def test_valid_events_are_always_accepted(data: dict[str, Any]) -> None:
    payload = json.dumps(data).encode()
    accepted = check_event(topic_of(data), payload, devices=DEVICES, limits=LIMITS, now=NOW)
    assert_event_trustworthy(topic_of(data), payload, accepted)


# --- the grammar, the corpus and the edges (tests/fuzzing.py) ------------------------------


CORPUS = fuzzing.corpus(REGISTRY, now=NOW)
DOCUMENTS = fuzzing.documents(REGISTRY, now=NOW, max_age=LIMITS.max_age, max_skew=LIMITS.max_skew)


@st.composite
def edge_messages(draw: st.DrawFn) -> tuple[PanelTopic, bytes]:
    """A document of the corpus or the grammar, then an edge value, nesting or byte damage."""
    data = draw(DOCUMENTS)
    return topic_of(data), draw(fuzzing.payload_variant(data, CORPUS))


@FUZZ
@given(edge_messages())
def test_the_corpus_grammar_and_edge_values_are_rejected_or_trustworthy(
    message: tuple[PanelTopic, bytes],
) -> None:
    topic, payload = message
    try:
        accepted = check_event(topic, payload, devices=DEVICES, limits=LIMITS, now=NOW)
    except InputRejected:
        return
    assert_event_trustworthy(topic, payload, accepted)


@budget(0.15)
@given(st.sampled_from(fuzzing.CALENDAR_EDGES), st.sampled_from(["occurred_at", "seq"]))
def test_calendar_edges_and_huge_sequence_numbers_are_rejected_as_schema_violations(
    edge: str, field: str
) -> None:
    """Issue 13, items 1 and 8: each once crashed the gateway or was forwarded."""
    data = event()
    token = json.dumps(edge) if field == "occurred_at" else "1" + "0" * 30
    body = json.dumps({k: v for k, v in data.items() if k != field})
    payload = (body[:-1] + f", {json.dumps(field)}: {token}}}").encode()
    try:
        accepted = check_event(topic_of(data), payload, devices=DEVICES, limits=LIMITS, now=NOW)
    except InputRejected:
        return
    # Only an edge that is a real instant near NOW may pass (none of the list is).
    assert_event_trustworthy(topic_of(data), payload, accepted)


@FUZZ
@given(st.one_of(fuzzing.topic_texts(REGISTRY), st.text(max_size=80)), st.sampled_from(CORPUS))
def test_topics_parse_to_the_grammar_or_to_nothing(text: str, data: dict[str, Any]) -> None:
    """A parsed topic rebuilds to the same text from non-empty, wildcard-free levels; an
    event under it is still only ever rejected or trustworthy."""
    topic = parse_panel_topic(text)
    if topic is None:
        return
    levels = text.split("/")
    assert levels[:2] == ["intercom", "v1"] and len(levels) in (5, 6)
    assert all(level and not ({"+", "#"} & set(level)) for level in levels)
    assert not any(level.startswith("$") for level in levels)
    assert levels[2:4] == [topic.building, topic.device]
    assert levels[4:] == (["settings"] if topic.is_settings else ["events", topic.event_type])
    payload = json.dumps(data).encode()
    try:
        if topic.is_settings:
            check_settings(topic, payload, devices=DEVICES, limits=LIMITS)
            raise AssertionError("an event was accepted as a settings change")
        accepted = check_event(topic, payload, devices=DEVICES, limits=LIMITS, now=NOW)
    except InputRejected:
        return
    assert_event_trustworthy(topic, payload, accepted)
