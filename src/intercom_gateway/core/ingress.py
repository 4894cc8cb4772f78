"""Ingress checks: from (topic, bytes) to a trusted event, or a typed rejection.

Pure functions; the clock is a parameter. The order is cheapest first, and nothing
is parsed before its size and nesting are known to be sane. Replays need memory of
what was seen, so the gateway checks them (``RejectReason.REPLAYED``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from intercom_gateway.core.models import (
    SETTINGS_ADAPTER,
    DeviceRole,
    Event,
    EventType,
    RejectReason,
    SettingsChange,
    parse_event,
)
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.topics import (
    MAX_TOPIC_LENGTH,
    MAX_TOPIC_LEVELS,
    PanelTopic,
    parse_panel_topic,
)
from intercom_gateway.errors import InputRejected as InputRejected

_EVENT_TYPES = frozenset(t.value for t in EventType)


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    building: str
    role: DeviceRole
    dwelling: str | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 16_384
    max_depth: int = 16
    max_age: timedelta = timedelta(days=1)
    max_skew: timedelta = timedelta(minutes=5)
    max_user_properties: int = 16


@dataclass(frozen=True)
class DeviceIndex:
    devices: dict[str, DeviceEntry]
    dwellings: frozenset[tuple[str, str]]

    @classmethod
    def from_registry(cls, registry: Registry) -> DeviceIndex:
        return cls(
            devices={
                device.id: DeviceEntry(building.id, device.role, device.dwelling)
                for building, device in registry.devices()
            },
            dwellings=frozenset((b.id, d.id) for b, d in registry.dwellings()),
        )


def json_depth(payload: bytes) -> int:
    """Maximum nesting of objects and arrays, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return deepest


def check_topic(topic: str) -> PanelTopic:
    """The panel topic a message came on, or ``bad_topic``; its size is checked first."""
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InputRejected(
            RejectReason.BAD_TOPIC, f"{len(topic):,} characters, limit {MAX_TOPIC_LENGTH}"
        )
    levels = topic.count("/") + 1
    if levels > MAX_TOPIC_LEVELS:
        raise InputRejected(RejectReason.BAD_TOPIC, f"{levels} levels, limit {MAX_TOPIC_LEVELS}")
    parsed = parse_panel_topic(topic)
    if parsed is None:
        raise InputRejected(RejectReason.BAD_TOPIC, "not a panel topic")
    return parsed


def check_properties(properties: tuple[tuple[str, str], ...], limits: Limits) -> None:
    """Panels send no user properties of their own; a pile of them is refused unread."""
    if len(properties) > limits.max_user_properties:
        raise InputRejected(
            RejectReason.TOO_MANY_PROPERTIES,
            f"{len(properties)} user properties, limit {limits.max_user_properties}",
        )


def check_size(payload: bytes, limits: Limits) -> None:
    if len(payload) > limits.max_bytes:
        raise InputRejected(
            RejectReason.OVERSIZED, f"{len(payload)} bytes, limit {limits.max_bytes}"
        )
    # Counting brackets is cheap; the exact scan runs only when the count could exceed.
    if payload.count(b"{") + payload.count(b"[") > limits.max_depth:
        depth = json_depth(payload)
        if depth > limits.max_depth:
            raise InputRejected(RejectReason.TOO_DEEP, f"nesting {depth}, limit {limits.max_depth}")


def _classify(error: ValidationError) -> InputRejected:
    first = error.errors()[0]
    kind = first["type"]
    if kind == "json_invalid":
        return InputRejected(RejectReason.MALFORMED_JSON, str(first["msg"]))
    if kind == "union_tag_invalid":
        return InputRejected(RejectReason.UNKNOWN_TYPE, str(first["msg"]))
    where = ".".join(str(part) for part in first["loc"])
    return InputRejected(
        RejectReason.SCHEMA_VIOLATION,
        f"{error.error_count()} error(s); first at {where or 'top'}: {first['msg']}",
    )


def _device(topic: PanelTopic, devices: DeviceIndex) -> DeviceEntry:
    entry = devices.devices.get(topic.device)
    if entry is None:
        raise InputRejected(RejectReason.UNKNOWN_DEVICE, f"device {topic.device} is not registered")
    if entry.building != topic.building:
        raise InputRejected(
            RejectReason.TOPIC_MISMATCH,
            f"device {topic.device} belongs to building {entry.building}, not {topic.building}",
        )
    return entry


def _check_dwelling(entry: DeviceEntry, building: str, dwelling: str, devices: DeviceIndex) -> None:
    if (building, dwelling) not in devices.dwellings:
        raise InputRejected(
            RejectReason.UNKNOWN_DWELLING, f"dwelling {dwelling} is not in building {building}"
        )
    # A dwelling panel speaks only for its own dwelling; lobby panels and delivery
    # boxes serve every dwelling of their building.
    if entry.role is DeviceRole.DWELLING_PANEL and entry.dwelling != dwelling:
        raise InputRejected(
            RejectReason.SPOOFED_DWELLING,
            f"dwelling panel of {entry.dwelling} may not speak for {dwelling}",
        )


def check_event(
    topic: PanelTopic, payload: bytes, *, devices: DeviceIndex, limits: Limits, now: datetime
) -> Event:
    """Return the validated event or raise ``InputRejected``."""
    check_size(payload, limits)
    if topic.event_type not in _EVENT_TYPES:
        raise InputRejected(RejectReason.UNKNOWN_TYPE, f"no event type {topic.event_type!r}")
    entry = _device(topic, devices)
    try:
        event = parse_event(payload)
    except ValidationError as error:
        raise _classify(error) from None
    if event.type != topic.event_type:
        raise InputRejected(
            RejectReason.TOPIC_MISMATCH, f"topic says {topic.event_type}, payload {event.type}"
        )
    if event.device.id != topic.device or event.building_id != topic.building:
        raise InputRejected(
            RejectReason.TOPIC_MISMATCH,
            f"payload names {event.building_id}/{event.device.id}, topic "
            f"{topic.building}/{topic.device}",
        )
    if event.device.role is not entry.role:
        raise InputRejected(
            RejectReason.TOPIC_MISMATCH,
            f"device {topic.device} is a {entry.role.value}, not a {event.device.role.value}",
        )
    _check_dwelling(entry, event.building_id, event.dwelling_id, devices)
    if event.occurred_at > now + limits.max_skew:
        raise InputRejected(
            RejectReason.FUTURE, f"occurred_at {event.occurred_at} is ahead of {now}"
        )
    if event.occurred_at < now - limits.max_age:
        raise InputRejected(RejectReason.STALE, f"occurred_at {event.occurred_at} is too old")
    return event


def check_settings(
    topic: PanelTopic, payload: bytes, *, devices: DeviceIndex, limits: Limits
) -> SettingsChange:
    """Settings come only from the dwelling's own panel (§7, §8: the resident decides)."""
    check_size(payload, limits)
    entry = _device(topic, devices)
    if entry.role is not DeviceRole.DWELLING_PANEL:
        raise InputRejected(
            RejectReason.TOPIC_MISMATCH, f"a {entry.role.value} cannot change resident settings"
        )
    try:
        change = SETTINGS_ADAPTER.validate_json(payload)
    except ValidationError as error:
        raise _classify(error) from None
    if change.building_id != topic.building:
        raise InputRejected(RejectReason.TOPIC_MISMATCH, "payload building differs from topic")
    _check_dwelling(entry, change.building_id, change.dwelling_id, devices)
    return change
