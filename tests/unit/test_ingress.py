"""Ingress checks, one row per reason they can give (replays are the gateway's, with memory)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from intercom_gateway.core.ingress import (
    DeviceIndex,
    InputRejected,
    Limits,
    check_event,
    check_settings,
)
from intercom_gateway.core.models import RejectReason
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.core.topics import PanelTopic
from tests.factories import event_dict

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()
# Two buildings b001/b002 of dwellings d0001-d0004; per building lobby-bNNN, box-bNNN
# and a dwelling panel panel-bNNN-dNNNN per dwelling.
REGISTRY = generate_registry(buildings=2, dwellings=4)
DEVICES = DeviceIndex.from_registry(REGISTRY)
LOBBY = {"id": "lobby-b001", "role": "lobby_panel"}
BOX = {"id": "box-b001", "role": "delivery_box"}


def event(
    event_type: str = "alarm", *, dwelling: str = "d0001", **overrides: Any
) -> dict[str, Any]:
    """A valid event as panel-b001-<dwelling> (or the device in ``overrides``) sends it."""
    return event_dict(
        event_type, building="b001", dwelling=dwelling, occurred_at=NOW - timedelta(minutes=1),
        **overrides,
    )  # fmt: skip


def settings(*, dwelling: str = "d0001", **overrides: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "change_id": str(uuid.uuid4()),
        "building_id": "b001",
        "dwelling_id": dwelling,
        "requested_at": NOW.isoformat(),
        "change": {"kind": "service_use", "partner_id": "concierge", "used": True},
        **overrides,
    }


def topic_of(data: dict[str, Any], **overrides: str) -> PanelTopic:
    fields = {
        "building": data["building_id"],
        "device": data["device"]["id"],
        "event_type": data["type"],
    }
    return PanelTopic(**(fields | overrides))


def dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def nested(depth: int) -> Any:
    return [nested(depth - 1)] if depth else 0


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@dataclass(frozen=True)
class Row:
    reason: RejectReason
    topic: PanelTopic
    payload: bytes


A = event()  # panel-b001-d0001's alarm
EVENT_ROWS = {
    "oversized": Row(RejectReason.OVERSIZED, topic_of(A), dumps(A) + b" " * LIMITS.max_bytes),
    "too deep": Row(
        RejectReason.TOO_DEEP, topic_of(A), dumps(A | {"zone": nested(LIMITS.max_depth)})
    ),
    "truncated JSON": Row(RejectReason.MALFORMED_JSON, topic_of(A), dumps(A)[:-7]),
    "not JSON at all": Row(RejectReason.MALFORMED_JSON, topic_of(A), b"\xff\xfe alarm"),
    "unknown type in topic": Row(
        RejectReason.UNKNOWN_TYPE, topic_of(A, event_type="teleport"), dumps(A)
    ),
    "unknown type in payload": Row(
        RejectReason.UNKNOWN_TYPE, topic_of(A), dumps(A | {"type": "teleport"})
    ),
    "missing field": Row(RejectReason.SCHEMA_VIOLATION, topic_of(A), dumps(without(A, "severity"))),
    "extra field": Row(
        RejectReason.SCHEMA_VIOLATION, topic_of(A), dumps(A | {"gps": "35.6,139.7"})
    ),
    "string for a number": Row(RejectReason.SCHEMA_VIOLATION, topic_of(A), dumps(A | {"seq": "7"})),
    "naive timestamp": Row(
        RejectReason.SCHEMA_VIOLATION,
        topic_of(A),
        dumps(A | {"occurred_at": "2026-05-01T11:59:00"}),
    ),
    "role cannot emit type": Row(
        RejectReason.SCHEMA_VIOLATION,
        topic_of(A, device="lobby-b001"),
        dumps(A | {"device": LOBBY}),
    ),
    "topic type differs from payload": Row(
        RejectReason.TOPIC_MISMATCH, topic_of(A, event_type="security"), dumps(A)
    ),
    "payload names another device": Row(
        RejectReason.TOPIC_MISMATCH, topic_of(A, device="panel-b001-d0002"), dumps(A)
    ),
    "device in another building's topic": Row(
        RejectReason.TOPIC_MISMATCH, topic_of(A, building="b002"), dumps(A)
    ),
    "payload names another building": Row(
        RejectReason.TOPIC_MISMATCH, topic_of(A), dumps(A | {"building_id": "b002"})
    ),
    "payload claims another role": Row(
        RejectReason.TOPIC_MISMATCH,
        topic_of(event("visitor")),
        dumps(event("visitor") | {"device": {"id": "panel-b001-d0001", "role": "lobby_panel"}}),
    ),
    "unregistered device": Row(
        RejectReason.UNKNOWN_DEVICE,
        topic_of(A, device="panel-b001-d0009"),
        dumps(A | {"device": {"id": "panel-b001-d0009", "role": "dwelling_panel"}}),
    ),
    "lobby names a dwelling that does not exist": Row(
        RejectReason.UNKNOWN_DWELLING,
        topic_of(event("visitor", device=LOBBY)),
        dumps(event("visitor", device=LOBBY, dwelling="d0099")),
    ),
    "dwelling panel speaks for the next door": Row(
        RejectReason.SPOOFED_DWELLING, topic_of(A), dumps(A | {"dwelling_id": "d0002"})
    ),
    "stale": Row(
        RejectReason.STALE,
        topic_of(A),
        dumps(A | {"occurred_at": (NOW - timedelta(days=2)).isoformat()}),
    ),
    "future": Row(
        RejectReason.FUTURE,
        topic_of(A),
        dumps(A | {"occurred_at": (NOW + timedelta(hours=1)).isoformat()}),
    ),
}

OWN_SETTINGS = PanelTopic("b001", "panel-b001-d0001", None)
SETTINGS_ROWS = {
    "oversized": Row(
        RejectReason.OVERSIZED, OWN_SETTINGS, dumps(settings()) + b" " * LIMITS.max_bytes
    ),
    "malformed": Row(RejectReason.MALFORMED_JSON, OWN_SETTINGS, b"{'kind': 'initialise'}"),
    "unknown kind": Row(
        RejectReason.UNKNOWN_TYPE, OWN_SETTINGS, dumps(settings(change={"kind": "sell_my_data"}))
    ),
    "missing field": Row(
        RejectReason.SCHEMA_VIOLATION, OWN_SETTINGS, dumps(without(settings(), "change_id"))
    ),
    "lobby panel changes resident settings": Row(
        RejectReason.TOPIC_MISMATCH, PanelTopic("b001", "lobby-b001", None), dumps(settings())
    ),
    "payload names another building": Row(
        RejectReason.TOPIC_MISMATCH, OWN_SETTINGS, dumps(settings(building_id="b002"))
    ),
    "unregistered device": Row(
        RejectReason.UNKNOWN_DEVICE, PanelTopic("b001", "panel-b001-d0009", None), dumps(settings())
    ),
    "dwelling that does not exist": Row(
        RejectReason.UNKNOWN_DWELLING, OWN_SETTINGS, dumps(settings(dwelling="d0099"))
    ),
    "dwelling panel changes the next door's consent": Row(
        RejectReason.SPOOFED_DWELLING, OWN_SETTINGS, dumps(settings(dwelling="d0002"))
    ),
}


def test_every_reason_ingress_can_give_has_a_row() -> None:
    covered = {row.reason for row in EVENT_ROWS.values()}
    # BAD_TOPIC is decided before ingress (the topic grammar); the gateway decides
    # REPLAYED, and the reasons about the message rather than its payload. The
    # distribution reasons are core.distributions' (tests/unit/test_distributions.py).
    assert covered == set(RejectReason) - {
        RejectReason.UNKNOWN_DISTRIBUTION,
        RejectReason.UNKNOWN_CONTRACTOR,
        RejectReason.BUILDING_NOT_ADDRESSABLE,
        RejectReason.BAD_TOPIC,
        RejectReason.REPLAYED,
        RejectReason.TOO_MANY_PROPERTIES,
        RejectReason.INTERNAL_ERROR,
        RejectReason.DEAD_LETTER,
    }


@pytest.mark.parametrize("row", EVENT_ROWS.values(), ids=EVENT_ROWS.keys())
def test_event_rejected(row: Row) -> None:
    with pytest.raises(InputRejected) as rejected:
        check_event(row.topic, row.payload, devices=DEVICES, limits=LIMITS, now=NOW)
    assert rejected.value.reason is row.reason, rejected.value.detail


@pytest.mark.parametrize("row", SETTINGS_ROWS.values(), ids=SETTINGS_ROWS.keys())
def test_settings_rejected(row: Row) -> None:
    with pytest.raises(InputRejected) as rejected:
        check_settings(row.topic, row.payload, devices=DEVICES, limits=LIMITS)
    assert rejected.value.reason is row.reason, rejected.value.detail


@pytest.mark.parametrize("dwelling", ["d0001", "d0002", "d0003", "d0004"])
@pytest.mark.parametrize(
    ("event_type", "device"), [("visitor", LOBBY), ("unlock_mode", LOBBY), ("delivery_box", BOX)]
)
def test_building_devices_speak_for_any_dwelling_of_their_building(
    event_type: str, device: dict[str, str], dwelling: str
) -> None:
    data = event(event_type, dwelling=dwelling, device=device)
    accepted = check_event(topic_of(data), dumps(data), devices=DEVICES, limits=LIMITS, now=NOW)
    assert (accepted.building_id, accepted.dwelling_id, accepted.device.id) == (
        "b001", dwelling, device["id"],
    )  # fmt: skip


@pytest.mark.parametrize(
    "event_type", ["visitor", "return_home", "alarm", "security", "device_failure"]
)
def test_dwelling_panel_speaks_for_its_own_dwelling(event_type: str) -> None:
    data = event(event_type, dwelling="d0003")
    accepted = check_event(topic_of(data), dumps(data), devices=DEVICES, limits=LIMITS, now=NOW)
    assert (accepted.type, accepted.dwelling_id, accepted.event_id) == (
        event_type, "d0003", uuid.UUID(data["event_id"]),
    )  # fmt: skip


@pytest.mark.parametrize(
    "age",
    [
        timedelta(0),
        LIMITS.max_age - timedelta(seconds=1),
        -LIMITS.max_skew + timedelta(seconds=1),
        LIMITS.max_age,  # the window's edges are inside it
        -LIMITS.max_skew,
    ],
)
def test_timestamps_inside_the_window_pass(age: timedelta) -> None:
    data = A | {"occurred_at": (NOW - age).isoformat()}
    accepted = check_event(topic_of(data), dumps(data), devices=DEVICES, limits=LIMITS, now=NOW)
    assert (accepted.event_id, accepted.occurred_at) == (uuid.UUID(data["event_id"]), NOW - age)


def test_own_settings_pass() -> None:
    change = check_settings(OWN_SETTINGS, dumps(settings()), devices=DEVICES, limits=LIMITS)
    assert (change.building_id, change.dwelling_id) == ("b001", "d0001")
