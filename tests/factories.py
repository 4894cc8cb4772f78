"""Small builders of valid events and settings changes for tests."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ChangeResult, ConsentState, apply_change
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import (
    DeviceRole,
    Event,
    SettingsChange,
    SettingsChangeBody,
    parse_event,
    utc_now,
)
from intercom_gateway.core.outcomes import Decision
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.records import DecisionRow
from intercom_gateway.core.registry import dump_registry, generate_registry
from intercom_gateway.core.router import Router
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.settings import settings_change
from intercom_gateway.store.sqlite import LedgerRow

_seq = itertools.count(1)
IMAGE = {
    "id": "img-1",
    "content_type": "image/jpeg",
    "size": 48_213,
    "sha256": "0" * 64,
}
_FIELDS: dict[str, dict[str, Any]] = {
    "visitor": {"call_id": "call-1", "origin": "door", "outcome": "answered", "image": IMAGE},
    "return_home": {"method": "key", "key_nickname": "Hana's key", "image": IMAGE},
    "alarm": {"kind": "fire", "zone": "kitchen", "severity": "critical"},
    "delivery_box": {"action": "arrival", "box_number": 12, "carrier": "yamato"},
    "unlock_mode": {
        "credential_kind": "pin",
        "service_id": "parcel-unlock",
        "result": "granted",
        "image": IMAGE,
    },
    "security": {"state": "armed", "mode": "away"},
    "device_failure": {
        "linked_device": {"kind": "air_conditioner", "model": "CS-X"},
        "code": "E-101",
        "message": "filter clogged",
    },
    "device_control": {
        "instruction_id": "ins-1",
        "linked_device": {"kind": "air_conditioner", "model": "CS-X"},
        "command": "set_temperature",
        "parameters": {"celsius": 26, "mode": "cool"},
        "result": "failed",
        "origin": "app",
        "error": "no answer from Hana's bedroom unit",
    },
    "scene": {
        "scene_id": "scene-1",
        "name": "Hana's good night",
        "action": "run",
        "devices_affected": 3,
    },
    "device_state": {
        "linked_device": {"kind": "water_heater", "model": "HE-1"},
        "values": {"power": True, "celsius": 42.5, "mode": "eco"},
    },
    "lobby_call": {
        "call_id": "call-7",
        "outcome": "answered",
        "handset": {
            "model": "Pixel 8",
            "os": "android",
            "app_version": "3.2.1",
            "uuid": "6f1c2a9e-2b7d-4c3e-9a5f-0d8e7b6a5c4d",
        },
    },
    "notice_read": {"distribution_id": "notice-1", "contractor_id": "kanri-kumiai-b001"},
    "survey_answer": {
        "distribution_id": "survey-1",
        "contractor_id": "kanri-kumiai-b001",
        "answers": [{"question_id": "q1", "choice_ids": ["yes"], "text": "More bicycle racks"}],
    },
}
_ROLE = {
    "unlock_mode": DeviceRole.LOBBY_PANEL,
    "lobby_call": DeviceRole.LOBBY_PANEL,
    "delivery_box": DeviceRole.DELIVERY_BOX,
}


def device_for(event_type: str, building: str, dwelling: str) -> tuple[str, DeviceRole]:
    role = _ROLE.get(event_type, DeviceRole.DWELLING_PANEL)
    if role is DeviceRole.LOBBY_PANEL:
        return f"lobby-{building}", role
    if role is DeviceRole.DELIVERY_BOX:
        return f"box-{building}", role
    return f"panel-{building}-{dwelling}", role


def event_dict(
    event_type: str,
    *,
    building: str = "b001",
    dwelling: str = "d0101",
    occurred_at: datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    device, role = device_for(event_type, building, dwelling)
    data: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "seq": next(_seq),
        "building_id": building,
        "dwelling_id": dwelling,
        "device": {"id": device, "role": role.value},
        "occurred_at": (occurred_at or utc_now() - timedelta(seconds=1)).isoformat(),
        "type": event_type,
        **_FIELDS[event_type],
    }
    data.update(overrides)
    return data


def event(event_type: str, **kwargs: Any) -> Event:

    return parse_event(json.dumps(event_dict(event_type, **kwargs)))


def panel_message(data: dict[str, Any]) -> tuple[str, bytes]:
    """(topic, payload) as the event's own device would publish it."""

    topic = topics.panel_events(data["building_id"], data["device"]["id"], data["type"])
    return topic, json.dumps(data).encode()


def settings_message(
    change: dict[str, Any], *, building: str = "b001", dwelling: str = "d0101"
) -> tuple[str, bytes]:
    body = SettingsChange.model_validate_json(
        json.dumps(
            {
                "schema_version": 1,
                "change_id": str(uuid.uuid4()),
                "building_id": building,
                "dwelling_id": dwelling,
                "requested_at": utc_now().isoformat(),
                "change": change,
            }
        )
    )
    return (
        topics.panel_settings(building, f"panel-{building}-{dwelling}"),
        body.model_dump_json().encode(),
    )


def consent_change(
    state: ConsentState,
    body: SettingsChangeBody,
    policy: Policy,
    partners: PartnerRegistry,
    *,
    now: datetime,
) -> ChangeResult:
    """``body`` made on the panel of ``state``'s own dwelling at ``now``, applied to it."""
    change = settings_change(state.building_id, state.dwelling_id, body, requested_at=now)
    return apply_change(state, change, policy=policy, partners=partners, now=now)


def decided(
    happened: Event,
    state: ConsentState,
    policy: Policy,
    partners: PartnerRegistry,
    *,
    now: datetime,
    gateway_id: str = "gw-1",
    decision_id: uuid.UUID | None = None,
) -> Decision:
    """``decide`` on a router compiled for ``policy`` and ``partners``; a fresh decision
    id unless one is given."""
    router = Router.compile(policy, partners)
    decision_id = decision_id or uuid.uuid4()
    return decide(
        happened, state, router=router, gateway_id=gateway_id, decision_id=decision_id, now=now
    )


_LEDGER_ROW = LedgerRow(
    at=datetime(2026, 4, 2, 9, 30, tzinfo=UTC),
    recipient="partner:concierge",
    recipient_kind="partner",
    third_party=True,
    building_id="b001",
    dwelling_id="d0001",
    event_id="e1",
    event_type="visitor",
    items=("outcome",),
    image=False,
    purposes=("partner_provision",),
    rule_id="partner-events",
    policy_version="2026-04-01",
    decision_id="decision-1",
)


def ledger_row(**changes: Any) -> LedgerRow:
    """A provision to the concierge partner service, with ``changes`` to its fields."""
    return replace(_LEDGER_ROW, **changes)


FORWARDED_TO_CLOUD = json.dumps([{"destination": "cloud", "forwarded": True, "purposes": ["p1"]}])


def decision_row(event_id: str, **changes: Any) -> DecisionRow:
    """A decision-log row of a visitor event at b001/d0001, forwarded to the cloud."""
    fields: dict[str, Any] = {
        "event_id": event_id,
        "decision_id": f"decision-{event_id}",
        "building_id": "b001",
        "dwelling_id": "d0001",
        "event_type": "visitor",
        "decided_at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        "policy_version": "2026-04-01",
        "consent_revision": 1,
        "outcomes": FORWARDED_TO_CLOUD,
    }
    return DecisionRow(**(fields | changes))


def gateway_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """A component test's gateway: one building of three dwellings using every sample
    service (registry written to ``tmp_path``), a store in ``tmp_path``, no event log
    lines unless ``log_events=True`` is given."""
    from tests.conftest import SAMPLE_SERVICES

    registry_path = tmp_path / "registry.yaml"
    registry = generate_registry(buildings=1, dwellings=3, services=SAMPLE_SERVICES)
    registry_path.write_text(dump_registry(registry))
    fields: dict[str, Any] = {"log_events": False, **overrides}
    return Settings(db_path=tmp_path / "gateway.sqlite", registry_path=registry_path, **fields)
