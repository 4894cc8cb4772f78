"""From a scenario's ``setup`` and steps to what goes on the wire.

The registry, partner registry and gateway settings a scenario runs with, and the topic
and payload of every event, settings change and bad input it sends. Panels publish as
real panels do: the event's own device topic and a complete, valid event unless the
scenario says otherwise.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from intercom_gateway.core import topics
from intercom_gateway.core.models import DeviceRole, EventType
from intercom_gateway.core.policy import PartnerRegistry, default_policy, load_partners
from intercom_gateway.core.registry import (
    Building,
    Device,
    Dwelling,
    InitialConsent,
    Registry,
    building_id,
    dwelling_id,
)
from intercom_gateway.errors import ConfigError
from intercom_gateway.qa.scenario.model import (
    BadInputClass,
    ConsentSpec,
    EventSpec,
    PartnersSpec,
    Scenario,
    SettingsSpec,
    parse_offset,
)
from intercom_gateway.settings import DATA, Settings
from intercom_gateway.simulators import bad_input
from intercom_gateway.simulators.settings import settings_change

_IMAGE = {"id": "img-1", "content_type": "image/jpeg", "size": 48_213, "sha256": "0" * 64}
# A complete event of each type; a scenario overrides what it cares about.
DEFAULT_FIELDS: dict[EventType, dict[str, Any]] = {
    EventType.VISITOR: {
        "call_id": "call-1",
        "origin": "door",
        "outcome": "answered",
        "image": _IMAGE,
    },
    EventType.RETURN_HOME: {"method": "key", "key_nickname": "Hana's key", "image": _IMAGE},
    EventType.ALARM: {"kind": "fire", "zone": "kitchen", "severity": "critical", "cleared": False},
    EventType.DELIVERY_BOX: {"action": "arrival", "box_number": 12, "carrier": "yamato"},
    EventType.UNLOCK_MODE: {
        "credential_kind": "pin",
        "service_id": "parcel-unlock",
        "result": "granted",
        "image": _IMAGE,
    },
    EventType.SECURITY: {"state": "armed", "mode": "away"},
    EventType.DEVICE_FAILURE: {
        "linked_device": {"kind": "air_conditioner", "model": "CS-X"},
        "code": "E-101",
        "message": "filter clogged",
    },
    EventType.DEVICE_CONTROL: {
        "instruction_id": "ins-1",
        "linked_device": {"kind": "air_conditioner", "model": "CS-X"},
        "command": "set_temperature",
        "parameters": {"celsius": 26},
        "result": "failed",
        "origin": "app",
        "error": "no answer from the bedroom unit",
    },
    EventType.SCENE: {
        "scene_id": "good-night",
        "name": "Hana's good night",
        "action": "run",
        "devices_affected": 3,
    },
    EventType.DEVICE_STATE: {
        "linked_device": {"kind": "water_heater", "model": "GT-C2462"},
        "values": {"power": True, "celsius": 42},
    },
    EventType.LOBBY_CALL: {
        "call_id": "call-1",
        "outcome": "answered",
        "handset": {
            "model": "Pixel 8",
            "os": "android",
            "app_version": "3.2.1",
            "uuid": "6f1c2a9e-2b7d-4c3e-9a5f-0d8e7b6a5c4d",
        },
    },
    # A scenario posts the distribution they name first (a `raw` step), or expects them
    # rejected as unknown_distribution.
    EventType.NOTICE_READ: {"distribution_id": "notice-1", "contractor_id": "kanri-kumiai-b001"},
    EventType.SURVEY_ANSWER: {
        "distribution_id": "survey-1",
        "contractor_id": "kanri-kumiai-b001",
        "answers": [{"question_id": "q1", "choice_ids": ["yes"]}],
    },
}
_ROLE_OF = {
    EventType.UNLOCK_MODE: DeviceRole.LOBBY_PANEL,
    EventType.LOBBY_CALL: DeviceRole.LOBBY_PANEL,
    EventType.DELIVERY_BOX: DeviceRole.DELIVERY_BOX,
}
_seq = itertools.count(1)


@dataclass(frozen=True)
class World:
    registry: Registry
    partners: PartnerRegistry
    partners_path: Path
    overrides: dict[str, Any]

    @property
    def first_building(self) -> str:
        return self.registry.buildings[0].id


def build_world(scenario: Scenario, *, source: Path, workdir: Path) -> World:
    """The registry, partners and gateway settings of ``scenario`` (file at ``source``)."""
    partners, partners_path = _partners(scenario.setup.partners, source=source, workdir=workdir)
    ids = tuple(s.id for s in partners.services)
    services = ids if scenario.setup.services == "all" else scenario.setup.services
    registry = _registry(scenario, services)
    unknown = sorted(set(scenario.setup.gateway) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"setup.gateway: no such gateway setting {unknown}", path=str(source))
    return World(registry, partners, partners_path, dict(scenario.setup.gateway))


def _partners(
    spec: PartnersSpec | str, *, source: Path, workdir: Path
) -> tuple[PartnerRegistry, Path]:
    if not isinstance(spec, PartnersSpec):
        path = DATA / "partners.sample.yaml"
    elif spec.file is not None:
        path = spec.file if spec.file.is_absolute() else source.parent / spec.file
    else:
        path = workdir / "partners.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        services = [s.model_dump(mode="json") for s in spec.services or ()]
        path.write_text(yaml.safe_dump({"services": services}, sort_keys=False), encoding="utf-8")
    return load_partners(path, policy=default_policy()), path


def _registry(scenario: Scenario, services: tuple[str, ...]) -> Registry:
    setup = scenario.setup
    if setup.buildings is not None:
        layout = [(b.id, list(b.dwellings)) for b in setup.buildings]
    else:
        fleet = setup.fleet
        count, homes = (fleet.buildings, fleet.dwellings) if fleet else (1, 4)
        names = [dwelling_id(d) for d in range(1, homes + 1)]
        layout = [(building_id(b), names) for b in range(1, count + 1)]
    known = {f"{b}/{d}" for b, homes in layout for d in homes}
    first = layout[0][0]
    given = {key if "/" in key else f"{first}/{key}": spec for key, spec in setup.consent.items()}
    stray = sorted(set(given) - known)
    if stray:
        raise ConfigError(f"setup.consent names dwellings the setup does not have: {stray}")
    return Registry(
        buildings=tuple(_building(bid, homes, given, services) for bid, homes in layout)
    )


def _building(
    bid: str, homes: list[str], consent: dict[str, ConsentSpec], services: tuple[str, ...]
) -> Building:
    dwellings = tuple(
        Dwelling(id=d, consent=_initial(consent.get(f"{bid}/{d}") or ConsentSpec(), services))
        for d in homes
    )
    devices = [
        Device(id=f"lobby-{bid}", role=DeviceRole.LOBBY_PANEL),
        Device(id=f"box-{bid}", role=DeviceRole.DELIVERY_BOX),
        *(Device(id=panel_id(bid, d), role=DeviceRole.DWELLING_PANEL, dwelling=d) for d in homes),
    ]
    return Building(id=bid, dwellings=dwellings, devices=tuple(devices))


def _initial(spec: ConsentSpec, services: tuple[str, ...]) -> InitialConsent:
    return InitialConsent(
        registered=spec.registered,
        policy_version=spec.policy_version,
        return_home_enabled=spec.return_home,
        intercom_app=spec.intercom_app,
        services=spec.services if spec.services is not None else services,
    )


def panel_id(building: str, dwelling: str) -> str:
    return f"panel-{building}-{dwelling}"


# --- what the steps publish -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outbound:
    topic: str
    payload: bytes
    ident: str | None


def event_message(spec: EventSpec, world: World, *, now: datetime, start: datetime) -> Outbound:
    building = spec.building or world.first_building
    role = _ROLE_OF.get(spec.type, DeviceRole.DWELLING_PANEL)
    device = spec.device or _device(role, building, spec.dwelling)
    occurred = start + parse_offset(spec.occurred_at) if spec.occurred_at else now
    data: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "seq": next(_seq),
        "building_id": building,
        "dwelling_id": spec.dwelling,
        "device": {"id": device, "role": role.value},
        "occurred_at": _iso(occurred),
        "type": spec.type.value,
        **copy.deepcopy(DEFAULT_FIELDS[spec.type]),
    }
    for key in spec.omit:
        data.pop(key, None)
    data.update(spec.fields)
    topic = topics.panel_events(building, device, spec.type.value)
    return Outbound(topic, json.dumps(data).encode(), str(data.get("event_id")))


def _device(role: DeviceRole, building: str, dwelling: str) -> str:
    if role is DeviceRole.LOBBY_PANEL:
        return f"lobby-{building}"
    if role is DeviceRole.DELIVERY_BOX:
        return f"box-{building}"
    return panel_id(building, dwelling)


def settings_message(spec: SettingsSpec, world: World) -> Outbound:
    building = spec.building or world.first_building
    change = settings_change(building, spec.dwelling, spec.change)
    topic = topics.panel_settings(building, panel_id(building, spec.dwelling))
    return Outbound(topic, change.model_dump_json().encode(), str(change.change_id))


def bad_input_messages(
    kind: BadInputClass, world: World, *, now: datetime, seed: int
) -> list[Outbound]:
    """The sample(s) of one bad-input class; ``replayed`` is the original and its copy."""
    if kind == "replayed":
        samples = list(bad_input.replayed(world.registry, now=now, seed=seed))
    else:
        samples = [bad_input.GENERATORS[kind](world.registry, now=now, seed=seed)]
    return [Outbound(s.topic, s.payload, _event_id(s.payload)) for s in samples]


def _event_id(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    value = document.get("event_id") if isinstance(document, dict) else None
    return str(value) if value is not None else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
