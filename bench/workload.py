"""What the relay benchmark measures: its options, and the prepared events with the
gateway's fan-out for them (``bench/relay_bench.py`` runs them through every path).

The events are simulated panels of dwellings that use all three partner services, re-
stamped as just happened; ``prepare`` decides each shape of event once with the
gateway's own policy to learn how many copies every path must deliver.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from intercom_gateway.core import topics
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import Event
from intercom_gateway.core.policy import DestinationKind, load_partners, load_policy
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.router import Router
from intercom_gateway.gateway.service import consent_from_registry
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.panels import iter_events

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("concierge", "elder-watch", "parcel-unlock")
SCENARIOS = (
    "raw",
    "raw-fanout",
    "passthrough",
    "passthrough-fanout",
    "passthrough-paho",
    "gateway",
    # The gateway on a PostgreSQL store (a server the bench starts itself), beside the
    # SQLite one: chosen by name only, since it needs PostgreSQL and the postgres extra.
    "gateway-pg",
)
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s != "gateway-pg")


@dataclass(frozen=True, slots=True)
class Options:
    saturation_events: int = 20_000
    latency_events: int = 5_000
    rate: float = 1_000.0
    repeat: int = 3
    backlog: int = 2_000
    buildings: int = 10
    dwellings: int = 40
    idle: float = 5.0
    seed: int = 1
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    plot: bool = True
    label: str = "full"


QUICK = Options(
    saturation_events=300, latency_events=300, repeat=1, buildings=2, dwellings=4, idle=3.0
)


# --- the events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The prepared events, the gateway's fan-out for them, and where they are written."""

    messages: list[tuple[str, str]]  # (panel topic, JSON payload)
    event_ids: list[str]
    fanout: dict[str, list[str]]  # event type -> destinations with a per-event copy
    copies: list[int]  # per-event copies to the fan-out's destinations, by event index
    mean_bytes: float
    kinds: dict[str, int]
    # Per-event copies the gateway publishes: ``copies`` plus an event's image, which
    # travels in a message of its own wherever it may go (spec item 2).
    gateway_copies: list[int]


def prepare(registry: Registry, count: int, *, seed: int) -> Workload:
    """``count`` simulated events, re-stamped as just happened (the gateway checks age)."""
    settings = Settings()
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    now = datetime.now(UTC)
    dwellings = {(b.id, d.id): d for b, d in registry.dwellings()}
    source = iter_events(registry, seed=seed, start=now - timedelta(days=1))
    messages: list[tuple[str, str]] = []
    ids: list[str] = []
    copies: list[int] = []
    gateway_copies: list[int] = []
    fanout: dict[str, list[str]] = {}
    # The gateway's copies per (event type, with an image): an image is one more.
    published: dict[tuple[str, bool], int] = {}
    kinds: dict[str, int] = {}
    stamp = now - timedelta(minutes=1)
    router = Router.compile(policy, partners)
    for index in range(count):
        event: Event = next(source).model_copy(
            update={"occurred_at": stamp + timedelta(microseconds=index)}
        )
        shape = (event.type, event.__dict__.get("image") is not None)
        if shape not in published:
            consent = consent_from_registry(
                event.building_id, dwellings[(event.building_id, event.dwelling_id)], now=now
            )
            decision = decide(
                event,
                consent,
                router=router,
                gateway_id="bench",
                decision_id=uuid.uuid4(),
                now=now,
            )
            per_event = [
                o
                for o in decision.outcomes
                if o.forwarded
                and o.payload is not None
                and o.kind is not DestinationKind.ANALYTICS  # held per window, not per event
            ]
            fanout.setdefault(event.type, [o.destination for o in per_event])
            published[shape] = sum(len(o.copies) for o in per_event)
        topic = topics.panel_events(event.building_id, event.device.id, event.type)
        messages.append((topic, event.model_dump_json()))
        ids.append(str(event.event_id))
        copies.append(len(fanout[event.type]))
        gateway_copies.append(published[shape])
        kinds[event.type] = kinds.get(event.type, 0) + 1
    mean = sum(len(p) for _, p in messages) / max(1, len(messages))
    return Workload(messages, ids, fanout, copies, mean, kinds, gateway_copies)
