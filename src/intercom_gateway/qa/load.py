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

The pure parts (``percentile``, ``Tracker``, ``Entitlements``, the plan, the result) are
in ``intercom_gateway.qa.tracking``; this is the I/O shell (``run_load``, the
self-contained broker and gateway started through ``intercom_gateway.qa.runner``, the
PNG and JSON reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR
from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.runner import Broker, Endpoint, gateway_process, started_broker
from intercom_gateway.qa.tracking import (
    Entitlements,
    LoadPlan,
    Progress,
    RunStats,
    Tracker,
    destination_filters,
    due_offsets,
    event_id_of,
    passed,
    percentile,
    result_data,
)
from intercom_gateway.simulators.panels import iter_events

# What the CLI and the tests take from here (the pure parts live in qa.tracking).
__all__ = [
    "ANALYTICS_WINDOW",
    "External",
    "LoadPlan",
    "Progress",
    "measure",
    "passed",
    "run_load",
    "self_contained",
    "write_histogram",
    "write_json",
]

ANALYTICS_WINDOW = 1.0  # seconds, for the self-contained gateway (settings.analytics_window)
# A broker and gateway already running, with the accounts its credentials made.
External = Endpoint


# --- the shell: publish, listen, settle ------------------------------------------------


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
        await fleet.publish(topic, event.model_dump_json().encode(), on_done=stats.on_published)
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
) -> AsyncIterator[Broker]:
    """Mosquitto with the project's configuration and the gateway as a separate process,
    stopped with SIGTERM (graceful) on the way out.

    The gateway gets its own process (its own core) so the generator's CPU does not
    distort its latency, as it would on one event loop.
    """
    # The environment may say otherwise.
    window = os.environ.get("INTERCOM_ANALYTICS_WINDOW", str(ANALYTICS_WINDOW))
    async with (
        started_broker(workdir, registry, partner_ids) as mosquitto,
        gateway_process(
            mosquitto,
            workdir,
            registry,
            env={"INTERCOM_ANALYTICS_WINDOW": window},
            gateway_id=f"gw-load-{uuid.uuid4().hex[:6]}",
            timeout=startup,
        ),
    ):
        yield mosquitto


# --- one run, end to end ---------------------------------------------------------------


async def run_load(
    plan: LoadPlan,
    *,
    registry: Registry,
    policy: Policy,
    partners: PartnerRegistry,
    out_dir: Path,
    workdir: Path,
    external: Endpoint | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Run the plan against ``external`` (or a broker and gateway started in ``workdir``),
    write ``load-result.json`` and ``load-latency.png`` into ``out_dir``, return the result."""
    entitlements = await asyncio.to_thread(Entitlements, registry, policy, partners)
    partner_ids = [s.id for s in partners.services]
    # A broker given, or one of our own (with a gateway) for the time of the run.
    own: contextlib.AbstractAsyncContextManager[Broker] = (
        contextlib.nullcontext(external)
        if external is not None
        else self_contained(workdir, registry, partner_ids)
    )
    async with own as target:
        tracker, stats = await measure(
            plan,
            registry=registry,
            entitlements=entitlements,
            address=target.address,
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
