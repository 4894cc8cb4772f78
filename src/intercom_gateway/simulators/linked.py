"""What a dwelling's linked devices, scenes and Intercom app emit (§2(3)①, §2(4)): pure.

The panel simulation (``panels.py``) schedules the streams; this module draws each
event's contents from its random generators. A dwelling's handset is drawn once and
kept, as a household's phone is the same from call to call.
"""

from __future__ import annotations

import random
from typing import Any, Literal
from uuid import UUID

from intercom_gateway.core.models import (
    DeviceControlEvent,
    DeviceStateEvent,
    Handset,
    LinkedDevice,
    LobbyCallEvent,
    SceneEvent,
)

LinkedKind = Literal["aiseg", "air_conditioner", "water_heater", "lighting", "lock", "other"]
Command = Literal[
    "power_on", "power_off", "set_mode", "set_temperature", "set_level", "lock", "unlock"
]

# What one can tell each kind of device, and what it reports back.
COMMANDS: dict[LinkedKind, tuple[Command, ...]] = {
    "air_conditioner": ("power_on", "power_off", "set_mode", "set_temperature"),
    "water_heater": ("power_on", "power_off", "set_temperature"),
    "lighting": ("power_on", "power_off", "set_level"),
    "lock": ("lock", "unlock"),
}
CONTROLLED: tuple[tuple[LinkedKind, str], ...] = (
    ("air_conditioner", "CS-X402D"),
    ("water_heater", "GT-C2462"),
    ("lighting", "HH-CF1092A"),
    ("lock", "EL-2000"),
)
MODES = ("cool", "heat", "dry", "auto", "eco")
SCENES = (("good-night", "Good night"), ("going-out", "Going out"), ("home", "Welcome home"))
HANDSETS: tuple[tuple[str, Literal["ios", "android"]], ...] = (
    ("iPhone 15", "ios"),
    ("iPhone 13", "ios"),
    ("Pixel 8", "android"),
    ("Galaxy S23", "android"),
    ("AQUOS sense8", "android"),
)
APP_VERSIONS = ("3.1.4", "3.2.0", "3.2.1")


def _parameters(rng: random.Random, command: Command, kind: LinkedKind) -> dict[str, Any]:
    if command == "set_temperature":
        return {"celsius": rng.randint(18, 28) if kind == "air_conditioner" else 42}
    if command == "set_mode":
        return {"mode": rng.choice(MODES)}
    if command == "set_level":
        return {"percent": rng.choice((20, 50, 80, 100))}
    return {}


def device_control(
    envelope: dict[str, Any], rng: random.Random, ids: random.Random
) -> DeviceControlEvent:
    """An instruction from the panel or the app (about a third of them) and its result."""
    kind, model = rng.choice(CONTROLLED)
    command = rng.choice(COMMANDS[kind])
    result: Literal["ok", "failed", "timeout"] = rng.choices(
        ("ok", "failed", "timeout"), weights=(94, 4, 2)
    )[0]
    return DeviceControlEvent(
        **envelope,
        instruction_id=f"ins-{ids.getrandbits(48):012x}",
        linked_device=LinkedDevice(kind=kind, model=model),
        command=command,
        parameters=_parameters(rng, command, kind),
        result=result,
        origin="app" if rng.random() < 0.35 else "panel",
        error=None if result == "ok" else f"{model}: {result}",
    )


def scene(envelope: dict[str, Any], rng: random.Random) -> SceneEvent:
    """A scene run on the panel; now and then one is set (saved) instead."""
    scene_id, name = rng.choice(SCENES)
    return SceneEvent(
        **envelope,
        scene_id=scene_id,
        name=name,
        action="set" if rng.random() < 0.1 else "run",
        devices_affected=rng.randint(1, 6),
    )


def device_state(envelope: dict[str, Any], rng: random.Random) -> DeviceStateEvent:
    """A state report: an air conditioner's or water heater's power, mode and setting."""
    kind, model = rng.choice(CONTROLLED[:2])
    values: dict[str, Any] = {"power": rng.random() < 0.6, "celsius": rng.randint(18, 45)}
    if kind == "air_conditioner":
        values["mode"] = rng.choice(MODES)
    return DeviceStateEvent(
        **envelope, linked_device=LinkedDevice(kind=kind, model=model), values=values
    )


def handset(ids: random.Random) -> Handset:
    model, os = ids.choice(HANDSETS)
    return Handset(
        model=model,
        os=os,
        app_version=ids.choice(APP_VERSIONS),
        uuid=UUID(int=ids.getrandbits(128), version=4),
    )


def lobby_call(
    envelope: dict[str, Any], rng: random.Random, *, call_id: str, phone: Handset
) -> LobbyCallEvent:
    """The Intercom app's side of a visitor's call from the lobby (§2(4))."""
    outcome: Literal["answered", "missed", "declined"] = rng.choices(
        ("answered", "missed", "declined"), weights=(5, 4, 1)
    )[0]
    return LobbyCallEvent(
        **envelope,
        call_id=call_id,
        outcome=outcome,
        handset=phone if outcome == "answered" else None,
    )
