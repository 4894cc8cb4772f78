"""The event and settings models against the fixture payloads."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from intercom_gateway.core.models import (
    EVENTS_BY_ROLE,
    SETTINGS_ADAPTER,
    DeviceRole,
    EventType,
    parse_event,
    random_uuid,
)
from tests.conftest import FIXTURES

VALID = sorted((FIXTURES / "events" / "valid").glob("*.json"))
INVALID = sorted((FIXTURES / "events" / "invalid").glob("*.json"))
SETTINGS = sorted((FIXTURES / "settings" / "valid").glob("*.json"))

# The one error each invalid fixture must produce: (pydantic error type, field).
EXPECTED_ERRORS = {
    "visitor": ("literal_error", "origin"),
    "return_home": ("timezone_aware", "occurred_at"),
    "alarm": ("value_error", None),  # the role rule is a model-level check
    "delivery_box": ("greater_than_equal", "box_number"),
    "unlock_mode": ("extra_forbidden", "image_bytes"),
    "security": ("literal_error", "state"),
    "device_failure": ("missing", "linked_device"),
    "device_control": ("literal_error", "result"),
    "scene": ("less_than_equal", "devices_affected"),
    "device_state": ("too_long", "values"),
    "lobby_call": ("extra_forbidden", "image"),
    "notice_read": ("string_pattern_mismatch", "contractor_id"),
    "survey_answer": ("too_short", "answers"),
}


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def test_one_valid_and_one_invalid_fixture_per_event_type() -> None:
    kinds = {t.value for t in EventType}
    assert {p.stem for p in VALID} == kinds
    assert {p.stem for p in INVALID} == kinds
    assert {p.stem for p in SETTINGS} == {
        "register",
        "initialise",
        "return_home_notification",
        "service_use",
        "purpose_opt_out",
        "accept_policy",
        "intercom_app",
    }


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture_parses_as_its_type(path: Path) -> None:
    event = parse_event(path.read_bytes())
    assert event.type == path.stem


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_dump_and_parse_round_trip(path: Path) -> None:
    event = parse_event(path.read_bytes())
    again = parse_event(event.model_dump_json())
    assert again == event
    assert again.model_dump_json() == event.model_dump_json()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_fails_for_its_stated_reason(path: Path) -> None:
    why = path.with_suffix(".why")
    assert why.read_text(encoding="utf-8").strip(), f"{why.name} must say what is wrong"
    with pytest.raises(ValidationError) as caught:
        parse_event(path.read_bytes())
    assert caught.value.error_count() == 1
    error = caught.value.errors()[0]
    kind, field = EXPECTED_ERRORS[path.stem]
    assert error["type"] == kind
    assert error["loc"][-1] == (field or path.stem)


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: p.stem)
def test_settings_fixture_parses_and_round_trips(path: Path) -> None:
    change = SETTINGS_ADAPTER.validate_json(path.read_bytes())
    assert change.change.kind == path.stem
    assert SETTINGS_ADAPTER.validate_json(change.model_dump_json()) == change


def _as_role(document: dict[str, Any], role: DeviceRole) -> bytes:
    device = {"id": document["device"]["id"], "role": role.value}
    return json.dumps(document | {"device": device}).encode()


@pytest.mark.parametrize("role", list(DeviceRole), ids=str)
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_role_may_emit_only_its_event_types(path: Path, role: DeviceRole) -> None:
    payload = _as_role(_document(path), role)
    if EventType(path.stem) in EVENTS_BY_ROLE[role]:
        assert parse_event(payload).device.role is role
    else:
        with pytest.raises(ValidationError, match=f"does not emit {path.stem}"):
            parse_event(payload)


def test_every_role_emits_something_and_every_type_has_an_emitter() -> None:
    assert set(EVENTS_BY_ROLE) == set(DeviceRole)
    assert set().union(*EVENTS_BY_ROLE.values()) == set(EventType)


@pytest.mark.parametrize("stamp", ["2026-04-02T18:15:30.250+09:00", "2026-04-02T04:15:30.25-05:00"])
def test_occurred_at_is_normalised_to_utc(stamp: str) -> None:
    document = _document(FIXTURES / "events" / "valid" / "security.json")
    event = parse_event(json.dumps(document | {"occurred_at": stamp}))
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == datetime(2026, 4, 2, 9, 15, 30, 250_000, tzinfo=UTC)
    assert event.model_dump_json().count("09:15:30.250000Z") == 1


def test_images_are_references_never_bytes() -> None:
    document = _document(FIXTURES / "events" / "valid" / "return_home.json")
    document["image"] = document["image"] | {"data": "/9j/4AAQ"}
    with pytest.raises(ValidationError, match="extra"):
        parse_event(json.dumps(document))


def test_random_ids_are_version_4_and_do_not_repeat_across_refills() -> None:
    ids = [random_uuid() for _ in range(1_000)]  # about four reads of os.urandom
    random_uuid.forget()  # what a forked child does: fresh bytes from here on
    ids += [random_uuid() for _ in range(100)]
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)
