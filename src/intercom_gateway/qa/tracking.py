"""The load generator's pure parts: what was sent, what each destination is entitled
to, what arrived, how late; the plan and its pacing; the result as data.

No I/O and no clock of its own: ``intercom_gateway.qa.load`` drives it.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import Event, utc_now
from intercom_gateway.core.policy import DestinationKind, PartnerRegistry, Policy
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.router import Router
from intercom_gateway.core.tags import Part
from intercom_gateway.gateway.service import consent_from_registry

ANALYTICS = "analytics"
IMAGE = "/image"  # suffix of a destination's image copies, e.g. "partner:concierge/image"
PERCENTILES = (50.0, 90.0, 99.0)


# --- pure: statistics and matching -----------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty.

    Nearest rank always answers a value that was measured, so p100 is the max and a
    p99 of 100 samples is the 99th slowest, not an interpolation between two.
    """
    if not 0 < q <= 100:
        raise ValueError("q is a percentage in (0, 100]")
    if not ordered:
        return None
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds; None where nothing was measured."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, seconds: Iterable[float]) -> LatencySummary:
        ordered = sorted(s * 1000 for s in seconds)
        p50, p90, p99 = (percentile(ordered, q) for q in PERCENTILES)
        mean = sum(ordered) / len(ordered) if ordered else None
        return cls(len(ordered), p50, p90, p99, ordered[-1] if ordered else None, mean)


@dataclass(slots=True)
class _Sent:
    at: float
    seq: int
    expected: frozenset[str]
    arrived: set[str] = field(default_factory=set)


@dataclass
class Tracker:
    """What was sent, what each destination must get, and what arrived (no I/O, no clock).

    ``destinations`` maps a destination name (as the decision names it: ``cloud``,
    ``group``, ``partner:<id>``, ``analytics``) to the topic filter of its outputs.
    """

    destinations: Mapping[str, str]
    on_complete: Callable[[], None] | None = None
    sent: dict[str, _Sent] = field(default_factory=dict)
    delivered: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    analytics_expected: int = 0
    analytics_received: int = 0
    foreign: int = 0  # arrivals of events this run did not send (a shared broker)
    outstanding: int = 0  # (event, destination) pairs still awaited
    sending_done: bool = False

    def expect(self, event_id: str, *, seq: int, at: float, destinations: Iterable[str]) -> None:
        """Record one sent event and the destinations it is entitled to."""
        wanted = set(destinations)
        if ANALYTICS in wanted:
            wanted.discard(ANALYTICS)
            self.analytics_expected += 1
        self.sent[event_id] = _Sent(at, seq, frozenset(wanted))
        self.outstanding += len(wanted)

    def destination_of(self, topic: str) -> str | None:
        found = next((d for d, f in self.destinations.items() if topics.matches(f, topic)), None)
        # An image travels in a message of its own: counted as a destination of its own.
        return found + IMAGE if found is not None and topics.is_image(topic) else found

    def arrived(self, destination: str, event_id: str | None, *, at: float) -> None:
        """One message on ``destination``'s topics about ``event_id``, received at ``at``."""
        if destination == ANALYTICS:
            self.analytics_received += 1
        elif event_id is None or (sent := self.sent.get(event_id)) is None:
            self.foreign += 1
        elif destination in sent.arrived:
            self.duplicates[destination] += 1
        elif destination not in sent.expected:
            # Forwarded somewhere the policy and consent do not allow: never acceptable.
            self.unexpected[destination] += 1
        else:
            sent.arrived.add(destination)
            self.delivered[destination] += 1
            self.latencies.setdefault(destination, []).append(at - sent.at)
            self.outstanding -= 1
        self._check_complete()

    def finish_sending(self) -> None:
        self.sending_done = True
        self._check_complete()

    @property
    def complete(self) -> bool:
        return (
            self.sending_done
            and self.outstanding == 0
            and self.analytics_received >= self.analytics_expected
        )

    def _check_complete(self) -> None:
        if self.complete and self.on_complete is not None:
            self.on_complete()

    def expected_counts(self) -> Counter[str]:
        return Counter(d for sent in self.sent.values() for d in sent.expected)

    def lost(self) -> Iterator[tuple[str, str, int]]:
        """(event id, destination, seq) of every entitled delivery that never came."""
        for event_id, sent in self.sent.items():
            for destination in sorted(sent.expected - sent.arrived):
                yield event_id, destination, sent.seq

    def per_destination(self) -> dict[str, dict[str, Any]]:
        expected = self.expected_counts()
        lost = Counter(d for _, d, _ in self.lost())
        names = sorted(set(expected) | set(self.delivered) | set(self.unexpected))
        return {
            name: {
                "expected": expected[name],
                "delivered": self.delivered[name],
                "lost": lost[name],
                "duplicates": self.duplicates[name],
                "unexpected": self.unexpected[name],
                "latency_ms": asdict(LatencySummary.of(self.latencies.get(name, []))),
            }
            for name in names
        }


def destination_filters(partner_ids: Iterable[str]) -> dict[str, str]:
    """Destination name -> topic filter, for every per-event output of the gateway."""
    found = {"cloud": topics.cloud_filter(), "group": topics.group_filter()}
    found |= {f"partner:{pid}": topics.partner_filter(pid) for pid in sorted(partner_ids)}
    found[ANALYTICS] = topics.analytics_filter()
    found["app"] = topics.app_filter()  # §2(4): the Intercom app's lobby calls
    return found


def event_id_of(message: Message) -> str | None:
    """The event id a forwarded message names: its user property, else its envelope."""
    for key, value in message.user_properties:
        if key == "event_id":
            return value
    try:
        found = json.loads(message.payload).get("event_id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


class Entitlements:
    """Where each event must arrive: the gateway's ``decide`` under the registry's consent.

    Only per-event publications count; statistics are aggregated, so not matched.
    """

    def __init__(self, registry: Registry, policy: Policy, partners: PartnerRegistry) -> None:
        self.policy = policy
        self.partners = partners
        self.router = Router.compile(policy, partners)
        now = utc_now()
        self.consents: dict[tuple[str, str], ConsentState] = {
            (b.id, d.id): consent_from_registry(b.id, d, now=now) for b, d in registry.dwellings()
        }

    def destinations(self, event: Event) -> list[str]:
        consent = self.consents.get((event.building_id, event.dwelling_id))
        if consent is None:
            return []  # not a dwelling of the registry: the gateway rejects it
        decision = decide(
            event,
            consent,
            router=self.router,
            gateway_id="load",
            decision_id=uuid.UUID(int=0),
            now=utc_now(),
        )
        return [
            o.destination if c.part is Part.EVENT else o.destination + IMAGE
            for o in decision.outcomes
            if o.forwarded and o.kind is not DestinationKind.STATISTICS
            for c in o.copies
        ]


# --- the plan and the pacing -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What to run. Exactly one of ``rate`` (events/s) and ``acceleration`` paces it;
    it stops after ``duration`` seconds or ``events`` events, whichever comes first."""

    rate: float | None = 200.0
    acceleration: float | None = None
    duration: float | None = 10.0
    events: int | None = None
    seed: int = 0
    publish_window: int = 1_000
    settle: float = 15.0  # seconds to wait for the last arrivals once sending stopped

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.acceleration is None):
            raise ValueError("give exactly one of rate and acceleration")
        if (self.rate or self.acceleration or 0) <= 0:
            raise ValueError("rate and acceleration must be positive")
        if self.duration is None and self.events is None:
            raise ValueError("give a duration or an event count, or the run never ends")
        if self.publish_window < 1:
            raise ValueError("publish_window must be at least 1")


def due_offsets(plan: LoadPlan, events: Iterable[Event]) -> Iterator[tuple[float, Event]]:
    """(seconds after the start, event) until the plan's duration or count is reached."""
    origin = None
    for index, event in enumerate(events):
        if plan.events is not None and index >= plan.events:
            return
        if plan.rate is not None:
            offset = index / plan.rate
        else:
            origin = origin or event.occurred_at
            offset = (event.occurred_at - origin).total_seconds() / (plan.acceleration or 1.0)
        if plan.duration is not None and offset > plan.duration:
            return
        yield offset, event


# --- what a run saw ----------------------------------------------------------------------


@dataclass
class Progress:
    """A snapshot for the progress display."""

    sent: int
    planned: int | None
    delivered: int
    outstanding: int
    elapsed: float
    phase: str


@dataclass
class RunStats:
    sent: int = 0
    publish_failed: int = 0
    send_seconds: float = 0.0
    settle_seconds: float = 0.0
    behind_schedule: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)
    gateway_metrics: dict[str, Any] | None = None
    phase: str = "starting"

    def on_published(self, error: BaseException | None) -> None:
        if error is not None:
            self.publish_failed += 1


# --- the result ------------------------------------------------------------------------


def result_data(
    plan: LoadPlan, registry: Registry, tracker: Tracker, stats: RunStats, *, mode: str
) -> dict[str, Any]:
    """Everything the run measured, JSON-ready."""
    destinations = tracker.per_destination()
    lost = list(tracker.lost())
    return {
        "mode": mode,
        "plan": asdict(plan),
        "fleet": {
            "buildings": len(registry.buildings),
            "dwellings": sum(1 for _ in registry.dwellings()),
            "devices": sum(1 for _ in registry.devices()),
        },
        "sent": stats.sent,
        "publish_failed": stats.publish_failed,
        "send_seconds": round(stats.send_seconds, 3),
        "events_per_second": round(stats.sent / stats.send_seconds, 1)
        if stats.send_seconds
        else None,
        "settle_seconds": round(stats.settle_seconds, 3),
        "behind_schedule_seconds": round(stats.behind_schedule, 3),
        "complete": tracker.complete,
        "delivered": sum(tracker.delivered.values()),
        "lost": len(lost),
        "lost_events": len({event_id for event_id, _, _ in lost}),
        "duplicates": sum(tracker.duplicates.values()),
        "unexpected": sum(tracker.unexpected.values()),
        "foreign": tracker.foreign,
        "destinations": destinations,
        "analytics": {
            "expected": tracker.analytics_expected,
            "received": tracker.analytics_received,
        },
        "rejected": dict(stats.rejected),
        "lost_sample": [{"event_id": e, "destination": d, "seq": s} for e, d, s in lost[:20]],
        "gateway_metrics": stats.gateway_metrics,
    }


def passed(data: Mapping[str, Any]) -> bool:
    """Nothing lost, duplicated, misdirected, refused or rejected."""
    analytics = data["analytics"]
    return (
        data["lost"] == 0
        and data["duplicates"] == 0
        and data["unexpected"] == 0
        and data["publish_failed"] == 0
        and not data["rejected"]
        and analytics["received"] == analytics["expected"]
    )
