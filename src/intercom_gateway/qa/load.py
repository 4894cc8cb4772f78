"""``intercom-gateway load``: drive a large simulated fleet through the broker and the
gateway, and measure what arrives where, how late, and what never does.

The panels' events come from ``intercom_gateway.simulators.panels.iter_events`` (10,000 dwellings or
more), paced at a target rate or an acceleration of simulated time, and are published
as the ``fleet`` account. An ``operator`` subscriber listens on every output. Arrivals
are matched to what was sent by event id (the ``event_id`` user property, or the
envelope's): the event's own per-device ``seq`` numbers it, and a map event id -> send
time kept here gives the latency. What each destination is entitled to is computed
with the gateway's own pure ``decide`` and the dwelling's consent from the registry,
so a lost event is one the policy says must arrive and that never did. Analytics
copies carry no event id by design (§5(5)): they are counted, not matched, and have no
latency: the gateway holds them and releases them per window (``INTERCOM_ANALYTICS_WINDOW``),
so they arrive up to a window after their events. The self-contained gateway uses
windows of ``ANALYTICS_WINDOW`` seconds; against a running gateway, ``--settle`` must
outlast its window for the analytics count to be complete.

Pure parts first (``percentile``, ``Tracker``, ``Entitlements``), then the I/O shell
(``run_load``, the self-contained broker and gateway, the PNG and JSON reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from intercom_gateway.broker.mosquitto import (
    FLEET,
    OPERATOR,
    Credentials,
    Mosquitto,
    generate_credentials,
)
from intercom_gateway.bus.mqtt import BrokerAddress, Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import Event, GatewayStatus, utc_now
from intercom_gateway.core.policy import DestinationKind, PartnerRegistry, Policy
from intercom_gateway.core.registry import Registry, dump_registry
from intercom_gateway.core.router import Router
from intercom_gateway.core.tags import Part
from intercom_gateway.errors import GatewayError
from intercom_gateway.gateway.service import consent_from_registry
from intercom_gateway.simulators.panels import iter_events

ANALYTICS = "analytics"
ANALYTICS_WINDOW = 1.0  # seconds, for the self-contained gateway (settings.analytics_window)
IMAGE = "/image"  # suffix of a destination's image copies, e.g. "partner:concierge/image"
PERCENTILES = (50.0, 90.0, 99.0)


class LoadError(GatewayError):
    """The load run could not be set up (broker or gateway did not come up)."""


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
    found = {"cloud": "cloud/#", "group": "group/#"}
    found |= {f"partner:{pid}": topics.partner_filter(pid) for pid in sorted(partner_ids)}
    found[ANALYTICS] = "analytics/#"
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


# --- the shell: publish, listen, settle ------------------------------------------------


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


async def measure(
    plan: LoadPlan,
    *,
    registry: Registry,
    entitlements: Entitlements,
    address: Callable[[str], BrokerAddress],
    progress: Callable[[Progress], None] | None = None,
) -> tuple[Tracker, RunStats]:
    """Publish the plan's events as ``fleet`` and match what ``operator`` receives."""
    complete = asyncio.Event()
    partner_ids = [s.id for s in entitlements.partners.services]
    tracker = Tracker(destination_filters(partner_ids), on_complete=complete.set)
    stats = RunStats()
    tag = uuid.uuid4().hex[:8]
    observing, publishing = address(OPERATOR), address(FLEET)
    async with (
        MqttBus(observing, client_id=observing.client_id(f"load-{tag}")) as observer,
        MqttBus(
            publishing,
            client_id=publishing.client_id(f"load-{tag}"),
            publish_window=plan.publish_window,
        ) as fleet,
        asyncio.TaskGroup() as tasks,
    ):
        await observer.subscribe(
            *tracker.destinations.values(), topics.REJECTED_FILTER, topics.METRICS
        )
        listener = tasks.create_task(_listen(observer, tracker, stats), name="load-listen")
        ticker = tasks.create_task(_tick(plan, tracker, stats, progress), name="load-progress")
        began = time.monotonic()
        await _publish(plan, fleet, registry, entitlements, tracker, stats)
        await fleet.drain()
        stats.send_seconds = time.monotonic() - began
        stats.phase = "settling"
        tracker.finish_sending()
        settle_began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), plan.settle)
        stats.settle_seconds = time.monotonic() - settle_began
        stats.phase = "done"
        for task in (listener, ticker):
            task.cancel()
    if progress is not None:
        progress(_snapshot(plan, tracker, stats, began))
    return tracker, stats


async def _publish(
    plan: LoadPlan,
    fleet: MqttBus,
    registry: Registry,
    entitlements: Entitlements,
    tracker: Tracker,
    stats: RunStats,
) -> None:
    stats.phase = "sending"
    unlock = tuple(s.id for s in entitlements.partners.services if s.kind == "unlock_service")
    events = iter_events(registry, seed=plan.seed, start=utc_now(), unlock_services=unlock)
    began = time.monotonic()
    for offset, event in due_offsets(plan, events):
        wait = began + offset - time.monotonic()
        # How far the generator fell behind its own schedule: if this grows, the
        # measurement is limited by this process, not by the broker or the gateway.
        stats.behind_schedule = max(stats.behind_schedule, -wait)
        if wait > 0.001 or stats.sent % 64 == 0:
            # Pacing; a zero sleep now and then also lets the socket and listener run.
            await asyncio.sleep(max(wait, 0.0))
        # Stamped as it is sent, as a real panel's clock would: the gateway refuses
        # events from the simulated future or past (stale, future).
        event = event.model_copy(update={"occurred_at": _wall_clock()})
        destinations = entitlements.destinations(event)
        topic = topics.panel_events(event.building_id, event.device.id, event.type)
        await fleet.send(topic, event.model_dump_json().encode(), on_done=stats.on_published)
        # No await between the send and this record: the listener cannot see the
        # arrival before its send time is known.
        tracker.expect(
            str(event.event_id), seq=event.seq, at=time.monotonic(), destinations=destinations
        )
        stats.sent += 1


def _wall_clock() -> datetime:
    now = utc_now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # panels stamp ms


async def _listen(observer: MqttBus, tracker: Tracker, stats: RunStats) -> None:
    async for message in observer.messages():
        at = time.monotonic()
        destination = tracker.destination_of(message.topic)
        if destination is not None:
            tracker.arrived(destination, event_id_of(message), at=at)
        elif message.topic == topics.METRICS:
            stats.gateway_metrics = json.loads(message.payload)
        elif topics.matches(topics.REJECTED_FILTER, message.topic):
            stats.rejected[json.loads(message.payload).get("reason", "?")] += 1


async def _tick(
    plan: LoadPlan,
    tracker: Tracker,
    stats: RunStats,
    progress: Callable[[Progress], None] | None,
) -> None:
    began = time.monotonic()
    while progress is not None:
        progress(_snapshot(plan, tracker, stats, began))
        await asyncio.sleep(0.25)  # display refresh period


def _snapshot(plan: LoadPlan, tracker: Tracker, stats: RunStats, began: float) -> Progress:
    planned = plan.events
    if plan.rate is not None and plan.duration is not None:
        by_time = int(plan.rate * plan.duration) + 1
        planned = by_time if planned is None else min(planned, by_time)
    return Progress(
        sent=stats.sent,
        planned=planned,
        delivered=sum(tracker.delivered.values()) + tracker.analytics_received,
        outstanding=tracker.outstanding,
        elapsed=time.monotonic() - began,
        phase=stats.phase,
    )


# --- self-contained: Mosquitto and a gateway process -----------------------------------


@contextlib.asynccontextmanager
async def self_contained(
    workdir: Path, registry: Registry, partner_ids: Sequence[str], *, startup: float = 180.0
) -> AsyncIterator[tuple[Credentials, int]]:
    """Mosquitto with the project's configuration and the gateway as a separate process.

    The gateway gets its own process (its own core) so the generator's CPU does not
    distort its latency, as it would on one event loop.
    """
    credentials = await asyncio.to_thread(
        generate_credentials, workdir / "secrets", registry, partner_ids
    )
    async with (
        Mosquitto(workdir=workdir / "broker", credentials=credentials) as mosquitto,
        gateway_process(workdir, registry, credentials, mosquitto.port, startup=startup),
    ):
        yield credentials, mosquitto.port


@contextlib.asynccontextmanager
async def gateway_process(
    workdir: Path, registry: Registry, credentials: Credentials, port: int, *, startup: float
) -> AsyncIterator[str]:
    """``intercom-gateway run`` on the generated registry; stopped with SIGTERM (graceful)."""
    registry_path = workdir / "registry.yaml"
    await asyncio.to_thread(registry_path.write_text, dump_registry(registry), "utf-8")
    gateway_id = f"gw-load-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "-m", "intercom_gateway", "--log-level", "WARNING", "run"]
    argv += ["--broker-port", str(port), "--secrets-dir", str(credentials.directory)]
    argv += ["--registry", str(registry_path), "--db", str(workdir / "gateway.sqlite")]
    argv += ["--gateway-id", gateway_id]
    env = {
        "INTERCOM_ANALYTICS_WINDOW": str(ANALYTICS_WINDOW),  # the environment may say otherwise
        **os.environ,
        "INTERCOM_LOG_EVENTS": "false",
        "INTERCOM_BROKER_HOST": "127.0.0.1",
    }
    with (workdir / "gateway.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=log, env=env)
    try:
        await _wait_online(credentials.address(OPERATOR, port=port), gateway_id, process, startup)
        yield gateway_id
    finally:
        await _stop(process)


async def _wait_online(
    address: BrokerAddress, gateway_id: str, process: asyncio.subprocess.Process, limit: float
) -> None:
    async with MqttBus(address, client_id=address.client_id(f"load-wait-{gateway_id}")) as bus:
        await bus.subscribe(topics.STATUS)

        async def online() -> None:
            async for message in bus.messages():
                status = GatewayStatus.model_validate_json(message.payload)
                if status.gateway_id == gateway_id and status.state == "online":
                    return

        waiter = asyncio.create_task(online())
        exited = asyncio.create_task(process.wait())
        done, _ = await asyncio.wait({waiter, exited}, timeout=limit, return_when="FIRST_COMPLETED")
        for task in (waiter, exited):
            task.cancel()
        if waiter not in done:
            why = "exited" if exited in done else f"was not online within {limit:.0f} s"
            raise LoadError(f"the gateway {why}; see its log in the work directory")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


# --- one run, end to end ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class External:
    """A broker and gateway already running, with the accounts ``credentials`` made."""

    credentials: Credentials
    host: str
    port: int


@contextlib.asynccontextmanager
async def _target(
    external: External | None, workdir: Path, registry: Registry, partner_ids: Sequence[str]
) -> AsyncIterator[External]:
    if external is not None:
        yield external
        return
    async with self_contained(workdir, registry, partner_ids) as (credentials, port):
        yield External(credentials, "127.0.0.1", port)


async def run_load(
    plan: LoadPlan,
    *,
    registry: Registry,
    policy: Policy,
    partners: PartnerRegistry,
    out_dir: Path,
    workdir: Path,
    external: External | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Run the plan against ``external`` (or a broker and gateway started in ``workdir``),
    write ``load-result.json`` and ``load-latency.png`` into ``out_dir``, return the result."""
    entitlements = await asyncio.to_thread(Entitlements, registry, policy, partners)
    partner_ids = [s.id for s in partners.services]
    async with _target(external, workdir, registry, partner_ids) as target:
        tracker, stats = await measure(
            plan,
            registry=registry,
            entitlements=entitlements,
            address=lambda user: target.credentials.address(
                user, host=target.host, port=target.port
            ),
            progress=progress,
        )
    data = result_data(
        plan, registry, tracker, stats, mode="external" if external else "self-contained"
    )
    json_path, png_path = out_dir / "load-result.json", out_dir / "load-latency.png"
    data["files"] = {"json": str(json_path), "histogram": str(png_path)}
    await asyncio.to_thread(write_histogram, png_path, tracker.latencies)
    await asyncio.to_thread(write_json, json_path, data)
    return data


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


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_histogram(path: Path, latencies: Mapping[str, Sequence[float]]) -> Path:
    """A latency histogram per destination, on log-spaced bins (tails stay visible)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5))
    values_ms = {d: [s * 1000 for s in v] for d, v in sorted(latencies.items()) if v}
    everything = [x for v in values_ms.values() for x in v]
    if everything:
        low, high = max(min(everything), 0.01), max(max(everything), 0.02)
        bins = [low * (high / low) ** (i / 60) for i in range(61)]
        for destination, values in values_ms.items():
            ordered = sorted(values)
            label = (
                f"{destination} (n={len(values)}, p50 {percentile(ordered, 50):.1f} ms,"
                f" p99 {percentile(ordered, 99):.1f} ms)"
            )
            axes.hist(values, bins=bins, histtype="step", linewidth=1.4, label=label)
        axes.set_xscale("log")
        axes.legend(fontsize="small")
    axes.set_xlabel("end-to-end latency, panel publish to subscriber (ms)")
    axes.set_ylabel("messages")
    axes.set_title("intercom-gateway load: latency per destination")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
