"""One generator per class of bad input the gateway must reject, with the reason it should give.

Each returns a ``Sample``: the topic, the raw payload and the expected
``models.RejectReason``. Apart from the one thing each breaks, a sample is a valid
event of a registered panel, so a gateway that rejects it for another reason is wrong.
``replayed`` returns two samples: the original (``reason`` None: it must be accepted)
and the identical copy that must be rejected.

The gateway's limits are settings; these use clearly-over values: 48 KiB against a
16 KiB payload limit, depth 64 against 16 or 32, three days for staleness and six
hours for future skew. The payload stays under 64 KiB on purpose: the project's
mosquitto.conf sets ``max_packet_size 65536``, and a larger publish makes Mosquitto
disconnect the publisher ("Packet too large"), so it would never reach the gateway's
rejected topic. Pass ``size=`` above 65536 to test the broker's own cap.

The poison classes of issue 13 have samples too: timestamps at the calendar's edge
with an offset (``calendar_edge``; once they made the gateway exit and crash-loop), a
``seq`` of 10^30 (``huge_seq``; once forwarded), an event-type topic level of 32,500
characters (``long_topic_level``; once its rejection echo outgrew the broker's packet
limit) and, in ``PROPERTY_GENERATORS`` because sending it needs the sample's MQTT 5
user ``properties``, more user properties than the gateway takes
(``too_many_properties``).

Event ids derive from the generator's name and ``seed``, so samples never collide
with each other; vary ``seed`` to send the set again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from intercom_gateway.core import topics
from intercom_gateway.core.models import (
    DeviceRef,
    DeviceRole,
    NoticeReadEvent,
    RejectReason,
    VisitorEvent,
)
from intercom_gateway.core.registry import Building, Device, Registry

OVERSIZED_BYTES = 48 * 1024  # under the broker's 64 KiB max_packet_size, see above
NESTING_DEPTH = 64
STALE_BY = timedelta(days=3)
FUTURE_BY = timedelta(hours=6)
# Instants at the calendar's edge written with an offset: converting them to UTC leaves
# the calendar. Each once made the gateway exit (issue 13, item 1).
CALENDAR_EDGES = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-14:00",
)
HUGE_SEQ = 10**30  # past any 64-bit counter (issue 13, item 8)
LONG_LEVEL = 32_500  # characters in the event-type level (issue 13, item 2)
MAX_USER_PROPERTIES = 16  # what the gateway takes on an inbound message


class Sample(NamedTuple):
    topic: str
    payload: bytes
    reason: RejectReason | None  # None: a valid message the gateway must forward
    properties: tuple[tuple[str, str], ...] = ()  # MQTT 5 user properties to send it with


SampleFactory = Callable[..., Sample]


def _panel(registry: Registry, index: int = 0) -> tuple[Building, Device]:
    building = registry.buildings[0]
    panels = [d for d in building.devices if d.role is DeviceRole.DWELLING_PANEL]
    return building, panels[index]


def _visitor(
    registry: Registry, *, now: datetime, name: str, seed: int, **changes: Any
) -> VisitorEvent:
    """A valid visitor call at the first dwelling's door, with ``changes`` applied."""
    building, panel = _panel(registry)
    assert panel.dwelling is not None
    rng = random.Random(f"bad-input/{name}/{seed}")
    fields: dict[str, Any] = {
        "event_id": UUID(int=rng.getrandbits(128), version=4),
        "seq": rng.randrange(1_000_000),
        "building_id": building.id,
        "dwelling_id": panel.dwelling,
        "device": DeviceRef(id=panel.id, role=panel.role),
        "occurred_at": now,
        "call_id": f"call-{rng.getrandbits(48):012x}",
        "origin": "door",
        "outcome": "missed",
    }
    return VisitorEvent(**(fields | changes))


def _topic(event: VisitorEvent, *, event_type: str = "visitor", device: str | None = None) -> str:
    return topics.panel_events(event.building_id, device or event.device.id, event_type)


def _document(event: VisitorEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def malformed_json(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    event = _visitor(registry, now=now, name="malformed", seed=seed)
    cut = event.model_dump_json().encode()[:-7]  # a panel that lost the end of its buffer
    return Sample(_topic(event), cut, RejectReason.MALFORMED_JSON)


def unknown_event_type(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    """An event type neither the topic grammar nor the schema knows, in topic and payload."""
    event = _visitor(registry, now=now, name="unknown-type", seed=seed)
    document = _document(event) | {"type": "doorbell"}
    payload = json.dumps(document).encode()
    return Sample(_topic(event, event_type="doorbell"), payload, RejectReason.UNKNOWN_TYPE)


def missing_field(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    event = _visitor(registry, now=now, name="missing-field", seed=seed)
    document = _document(event)
    del document["outcome"]
    return Sample(_topic(event), json.dumps(document).encode(), RejectReason.SCHEMA_VIOLATION)


def wrong_enum(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    event = _visitor(registry, now=now, name="wrong-enum", seed=seed)
    document = _document(event) | {"origin": "garage"}
    return Sample(_topic(event), json.dumps(document).encode(), RejectReason.SCHEMA_VIOLATION)


def type_mismatch(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    """A valid visitor event published on the alarm topic of its own panel."""
    event = _visitor(registry, now=now, name="type-mismatch", seed=seed)
    topic = _topic(event, event_type="alarm")
    return Sample(topic, event.model_dump_json().encode(), RejectReason.TOPIC_MISMATCH)


def device_mismatch(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    """A valid event of one dwelling panel published on another registered panel's topic."""
    event = _visitor(registry, now=now, name="device-mismatch", seed=seed)
    _, other = _panel(registry, 1)
    topic = _topic(event, device=other.id)
    return Sample(topic, event.model_dump_json().encode(), RejectReason.TOPIC_MISMATCH)


def unknown_device(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    stranger = DeviceRef(id="panel-unregistered", role=DeviceRole.DWELLING_PANEL)
    event = _visitor(registry, now=now, name="unknown-device", seed=seed, device=stranger)
    return Sample(_topic(event), event.model_dump_json().encode(), RejectReason.UNKNOWN_DEVICE)


def spoofed_dwelling(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    """The first dwelling's panel naming the second dwelling (a lobby panel could)."""
    _, neighbour = _panel(registry, 1)
    event = _visitor(registry, now=now, name="spoofed", seed=seed, dwelling_id=neighbour.dwelling)
    return Sample(_topic(event), event.model_dump_json().encode(), RejectReason.SPOOFED_DWELLING)


def oversized(
    registry: Registry, *, now: datetime, seed: int = 0, size: int = OVERSIZED_BYTES
) -> Sample:
    """A payload of ``size`` bytes; above 65536 Mosquitto refuses it before the gateway."""
    event = _visitor(registry, now=now, name="oversized", seed=seed)
    document = _document(event) | {"padding": ""}
    overhead = len(json.dumps(document).encode())
    document["padding"] = "x" * max(0, size - overhead)
    return Sample(_topic(event), json.dumps(document).encode(), RejectReason.OVERSIZED)


def too_deep(
    registry: Registry, *, now: datetime, seed: int = 0, depth: int = NESTING_DEPTH
) -> Sample:
    """An event carrying an extra field nested ``depth`` arrays deep."""
    event = _visitor(registry, now=now, name="too-deep", seed=seed)
    body = json.dumps(_document(event))
    nested = "[" * depth + "]" * depth
    payload = body[:-1] + f', "extra": {nested}}}'
    return Sample(_topic(event), payload.encode(), RejectReason.TOO_DEEP)


def replayed(registry: Registry, *, now: datetime, seed: int = 0) -> tuple[Sample, Sample]:
    """The same payload twice: the first must be accepted, the second rejected."""
    event = _visitor(registry, now=now, name="replayed", seed=seed)
    payload = event.model_dump_json().encode()
    return Sample(_topic(event), payload, None), Sample(
        _topic(event), payload, RejectReason.REPLAYED
    )


def stale(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    event = _visitor(registry, now=now, name="stale", seed=seed, occurred_at=now - STALE_BY)
    return Sample(_topic(event), event.model_dump_json().encode(), RejectReason.STALE)


def future(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    event = _visitor(registry, now=now, name="future", seed=seed, occurred_at=now + FUTURE_BY)
    return Sample(_topic(event), event.model_dump_json().encode(), RejectReason.FUTURE)


def calendar_edge(
    registry: Registry, *, now: datetime, seed: int = 0, moment: str | None = None
) -> Sample:
    """``occurred_at`` at the calendar's edge with an offset (``seed`` picks which)."""
    event = _visitor(registry, now=now, name="calendar-edge", seed=seed)
    edge = moment or CALENDAR_EDGES[seed % len(CALENDAR_EDGES)]
    document = _document(event) | {"occurred_at": edge}
    return Sample(_topic(event), json.dumps(document).encode(), RejectReason.SCHEMA_VIOLATION)


def huge_seq(registry: Registry, *, now: datetime, seed: int = 0, seq: int = HUGE_SEQ) -> Sample:
    """A sequence number no 64-bit counter holds (``seq=int("9" * 4000)`` works too)."""
    event = _visitor(registry, now=now, name="huge-seq", seed=seed)
    document = _document(event) | {"seq": seq}
    return Sample(_topic(event), json.dumps(document).encode(), RejectReason.SCHEMA_VIOLATION)


def long_topic_level(
    registry: Registry, *, now: datetime, seed: int = 0, length: int = LONG_LEVEL
) -> Sample:
    """A valid event under an event-type level of ``length`` characters."""
    event = _visitor(registry, now=now, name="long-topic-level", seed=seed)
    level = "visitor" + "x" * max(0, length - len("visitor"))
    return Sample(
        _topic(event, event_type=level), event.model_dump_json().encode(), RejectReason.BAD_TOPIC
    )


def too_many_properties(
    registry: Registry, *, now: datetime, seed: int = 0, count: int = 4 * MAX_USER_PROPERTIES
) -> Sample:
    """A valid event sent with ``count`` MQTT 5 user properties."""
    event = _visitor(registry, now=now, name="too-many-properties", seed=seed)
    properties = tuple((f"p{i}", "x") for i in range(count))
    payload = event.model_dump_json().encode()
    return Sample(_topic(event), payload, RejectReason.TOO_MANY_PROPERTIES, properties)


def unknown_distribution(registry: Registry, *, now: datetime, seed: int = 0) -> Sample:
    """A read receipt for a notice no contractor sent this dwelling (§5(1)①)."""
    building, panel = _panel(registry)
    assert panel.dwelling is not None
    rng = random.Random(f"bad-input/unknown-distribution/{seed}")
    event = NoticeReadEvent(
        event_id=UUID(int=rng.getrandbits(128), version=4),
        seq=rng.randrange(1_000_000),
        building_id=building.id,
        dwelling_id=panel.dwelling,
        device=DeviceRef(id=panel.id, role=panel.role),
        occurred_at=now,
        distribution_id=f"never-sent-{rng.getrandbits(32):08x}",
        contractor_id="kanri-kumiai-b001",
    )
    topic = topics.panel_events(building.id, panel.id, event.type)
    return Sample(topic, event.model_dump_json().encode(), RejectReason.UNKNOWN_DISTRIBUTION)


# Every single-sample generator, by name (``replayed`` returns two and stands apart).
GENERATORS: dict[str, SampleFactory] = {
    "malformed_json": malformed_json,
    "unknown_event_type": unknown_event_type,
    "missing_field": missing_field,
    "wrong_enum": wrong_enum,
    "type_mismatch": type_mismatch,
    "device_mismatch": device_mismatch,
    "unknown_device": unknown_device,
    "spoofed_dwelling": spoofed_dwelling,
    "oversized": oversized,
    "too_deep": too_deep,
    "stale": stale,
    "future": future,
    "calendar_edge": calendar_edge,
    "huge_seq": huge_seq,
    "long_topic_level": long_topic_level,
    "unknown_distribution": unknown_distribution,
}
# Samples that must be sent with their ``properties``: a sender that cannot send MQTT 5
# user properties would deliver a valid event instead.
PROPERTY_GENERATORS: dict[str, SampleFactory] = {"too_many_properties": too_many_properties}


def all_samples(
    registry: Registry, *, now: datetime, seed: int = 0, properties: bool = False
) -> list[Sample]:
    """One sample of every class, the replay pair included, in a fixed order; with
    ``properties``, the samples that need MQTT 5 user properties too."""
    generators = [*GENERATORS.values(), *(PROPERTY_GENERATORS.values() if properties else ())]
    samples = [generate(registry, now=now, seed=seed) for generate in generators]
    return [*samples, *replayed(registry, now=now, seed=seed)]
