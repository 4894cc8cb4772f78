"""The gateway's own CPU per event, in one process, without MQTT.

The real ``Gateway`` (``Gateway.load`` and ``serve``) runs on the in-memory bus with a
real SQLite file in a temporary directory, with the heap settled as ``intercom-gateway
run`` settles it (``gateway.run.settle_heap``). The events are the relay benchmark's
(``bench.workload.prepare``: simulated panels of dwellings that use all three sample
partner services, about four copies an event). Every event is put on the bus at once,
then the run waits until all are acknowledged, which the gateway does only after their
records are committed. CPU is ``time.process_time()``, so the aiosqlite thread counts.
The memory bus encodes and decodes every message with the MQTT codec, as Mosquitto and
the transport would between them, so that work counts too (docs/benchmarks.md, "The
restructuring of issue 15").

``.venv/bin/python -m bench.inprocess_bench --events 20000`` prints each run and the
median of ``--repeat`` runs; ``--profile out.prof`` writes a cProfile of one more run
(read it with ``python -m pstats out.prof``). ``--stages`` times the gateway's pure
per-event steps one at a time over the same events, outside the loop: parse alone
(``json.loads``), parse and validate (``check_topic``, ``check_event``), ``decide``,
``plan`` (with its decision log row and envelope bytes apart). Best of ``--repeat``
passes, µs per event (docs/benchmarks.md, "Issue #18: where a gateway event's CPU goes").
``--rate 1000`` instead paces the events at that rate and prints the p50, p99 and
maximum of each cloud copy's latency from the panel's publish (what the relay bench's
latency run measures, without Mosquitto: here only the gateway's loop, which the
subscriber shares, can delay a copy; docs/benchmarks.md, "Issue #18: the gateway's own
work").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.workload import SERVICES, prepare
from intercom_gateway.bus import MemoryBroker
from intercom_gateway.core.decide import decide
from intercom_gateway.core.encoding import Envelopes
from intercom_gateway.core.ingress import check_event, check_topic
from intercom_gateway.core.models import Event, random_uuid, utc_now
from intercom_gateway.core.plan import logged_outcomes, plan
from intercom_gateway.core.registry import dump_registry, generate_registry
from intercom_gateway.gateway.otel import open_spans
from intercom_gateway.gateway.run import settle_heap
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store.sqlite import SqliteStore


@dataclass(frozen=True, slots=True)
class Run:
    events: int
    cpu_s: float
    main_thread_cpu_s: float  # the rest is mostly aiosqlite's thread
    wall_s: float

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.events

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s


async def run_once(
    workdir: Path,
    registry_path: Path,
    messages: list[tuple[str, bytes]],
    *,
    name: str,
    otel: str | None = None,
) -> Run:
    settings = Settings(
        db_path=workdir / f"{name}.sqlite",
        registry_path=registry_path,
        log_events=False,
        otel_endpoint=otel,
    )
    broker = MemoryBroker()
    async with SqliteStore.open(settings.db_path) as store:
        gateway = await Gateway.load(settings, store)
        spans = gateway.completion.spans = open_spans(settings)  # as run_gateway does
        settle_heap(gateway)  # as ``intercom-gateway run`` does once loaded
        bus, panels = broker.client("gateway"), broker.client("panels")
        stop = asyncio.Event()
        serving = asyncio.create_task(gateway.serve(bus, stop=stop), name="gateway")
        await gateway.online.wait()
        cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
        for topic, payload in messages:
            await panels.publish(topic, payload)
        await gateway.wait_acked(len(messages))
        if spans is not None:
            # Every span encoded and posted: the export thread's work counts too.
            await asyncio.to_thread(spans.shutdown)
        cpu, main = time.process_time() - cpu, time.thread_time() - main
        wall = time.perf_counter() - wall
        stop.set()
        await serving
        if gateway.metrics.events != len(messages) or gateway.metrics.rejected:
            raise RuntimeError(f"not every event was handled: {gateway.metrics.snapshot()}")
    return Run(len(messages), cpu, main, wall)


async def latency_once(
    workdir: Path, registry_path: Path, messages: list[tuple[str, bytes]], *, rate: float
) -> list[float]:
    """Each event's cloud copy latency in ms, the events published ``rate`` a second."""
    settings = Settings(
        db_path=workdir / "latency.sqlite", registry_path=registry_path, log_events=False
    )
    broker = MemoryBroker()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    async with SqliteStore.open(settings.db_path) as store:
        gateway = await Gateway.load(settings, store)
        settle_heap(gateway)
        bus, panels, cloud = (broker.client(name) for name in ("gateway", "panels", "cloud"))
        await cloud.subscribe("cloud/#")
        stop = asyncio.Event()
        serving = asyncio.create_task(gateway.serve(bus, stop=stop), name="gateway")
        await gateway.online.wait()

        async def receive() -> None:
            async for message in cloud.messages():
                if message.topic.endswith("/image"):
                    continue
                at = time.perf_counter()
                latencies.append(1e3 * (at - sent[json.loads(message.payload)["event_id"]]))
                if len(latencies) == len(messages):
                    return

        receiving = asyncio.create_task(receive(), name="cloud-subscriber")
        ids = [json.loads(payload)["event_id"] for _, payload in messages]
        start = time.perf_counter()
        for index, (topic, payload) in enumerate(messages):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[ids[index]] = time.perf_counter()
            await panels.publish(topic, payload)
        await receiving
        stop.set()
        await serving
    return latencies


def _best_us(step: Callable[[], object], events: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return 1e6 * best / events


async def stages(
    workdir: Path, registry_path: Path, messages: list[tuple[str, bytes]], *, repeat: int
) -> dict[str, float]:
    """µs per event of each pure step of ``Gateway._handle_event``, one at a time."""
    settings = Settings(
        db_path=workdir / "stages.sqlite", registry_path=registry_path, log_events=False
    )
    async with SqliteStore.open(settings.db_path) as store:
        gateway = await Gateway.load(settings, store)
    now, gid, n = utc_now(), settings.gateway_id, len(messages)

    def ingress(topic: str, payload: bytes) -> Event:
        return check_event(
            check_topic(topic), payload, devices=gateway.devices, limits=gateway.limits, now=now
        )

    events = [ingress(t, p) for t, p in messages]
    consents = [gateway.consent(e.building_id, e.dwelling_id) for e in events]
    decisions = [
        decide(e, c, router=gateway.router, gateway_id=gid, decision_id=random_uuid(), now=now)
        for e, c in zip(events, consents, strict=True)
    ]

    def encode_all() -> None:
        for d in decisions:
            envelopes = Envelopes(d, now)
            for o in d.outcomes:
                if o.forwarded and o.kind.value != "analytics":
                    for c in o.copies:
                        if c.payload is not None:
                            envelopes.encode(o, c)

    steps: dict[str, Callable[[], object]] = {
        "parse (json.loads alone)": lambda: [json.loads(p) for _, p in messages],
        "ingress: topic, size, parse + validate, device": lambda: [
            ingress(t, p) for t, p in messages
        ],
        "decide (with the decision id)": lambda: [
            decide(e, c, router=gateway.router, gateway_id=gid, decision_id=random_uuid(), now=now)
            for e, c in zip(events, consents, strict=True)
        ],
        "plan (all of it)": lambda: [
            plan(d, occurred_at=e.occurred_at, now=now, gateway_id=gid)
            for d, e in zip(decisions, events, strict=True)
        ],
        "  of which: decision log text": lambda: [logged_outcomes(d) for d in decisions],
        "  of which: envelope bytes + properties": encode_all,
    }
    return {name: _best_us(step, n, repeat) for name, step in steps.items()}


_SINK = """
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def compare_otel(
    workdir: Path, registry_path: Path, workloads: list[list[tuple[str, str]]]
) -> None:
    """Off and on in turn, per workload: the export's CPU per event. The spans go over
    OTLP/HTTP to a sink in another process, so only the gateway's side is counted."""
    # A burst of every event at once would overflow the default queue (2,048 spans) and
    # drop spans, which would hide their cost: keep them all.
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(2 * max(map(len, workloads))))
    with subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True) as sink:
        assert sink.stdout is not None
        url = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        try:
            pairs = []
            for index, workload in enumerate(workloads):
                messages = [(t, p.encode()) for t, p in workload]
                off, on = (
                    asyncio.run(
                        run_once(workdir, registry_path, messages, name=f"{tag}{index}", otel=otel)
                    )
                    for tag, otel in (("off", None), ("on", url))
                )
                pairs.append((off.cpu_us_per_event, on.cpu_us_per_event))
                print(
                    f"run {index + 1}: off {off.cpu_us_per_event:6.1f}, on"
                    f" {on.cpu_us_per_event:6.1f} µs CPU/event (main thread"
                    f" {1e6 * off.main_thread_cpu_s / off.events:.1f} →"
                    f" {1e6 * on.main_thread_cpu_s / on.events:.1f})",
                    flush=True,
                )
            ratio = statistics.median(on / off for off, on in pairs)
            print(f"median on/off: {ratio:.3f}")
        finally:
            sink.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--buildings", type=int, default=10)
    parser.add_argument("--dwellings", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more run here")
    parser.add_argument(
        "--stages", action="store_true", help="time each pure step apart, then stop"
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="each run twice, without and with the OpenTelemetry export (to a local sink)",
    )
    parser.add_argument(
        "--rate", type=float, help="pace the events at this rate: cloud copy latency, then stop"
    )
    args = parser.parse_args()

    registry = generate_registry(
        buildings=args.buildings, dwellings=args.dwellings, services=SERVICES
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry_path = workdir / "registry.yaml"
        registry_path.write_text(dump_registry(registry), encoding="utf-8")
        # Fresh event ids per run: a store never sees an event twice.
        workloads = [
            prepare(registry, args.events, seed=args.seed + index)
            for index in range(args.repeat + (1 if args.profile else 0))
        ]
        if args.stages:
            messages = [(t, p.encode()) for t, p in workloads[0].messages]
            timed = asyncio.run(stages(workdir, registry_path, messages, repeat=args.repeat))
            for name, us in timed.items():
                print(f"{us:7.1f} µs/event  {name}")
            return
        if args.rate:
            for index in range(args.repeat):
                messages = [(t, p.encode()) for t, p in workloads[index].messages]
                ms = sorted(
                    asyncio.run(latency_once(workdir, registry_path, messages, rate=args.rate))
                )
                p50, p99 = ms[len(ms) // 2], ms[int(len(ms) * 0.99)]
                print(f"run {index + 1}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms")
            return
        if args.otel:
            compare_otel(workdir, registry_path, [w.messages for w in workloads[: args.repeat]])
            return
        runs = []
        for index in range(args.repeat):
            messages = [(t, p.encode()) for t, p in workloads[index].messages]
            run = asyncio.run(run_once(workdir, registry_path, messages, name=f"run{index}"))
            runs.append(run)
            print(
                f"run {index + 1}: {run.cpu_us_per_event:6.1f} µs CPU/event"
                f" ({1e6 * run.main_thread_cpu_s / run.events:.1f} in the main thread),"
                f" {run.events_per_s:7.0f} events/s wall",
                flush=True,
            )
        cpu = statistics.median(r.cpu_us_per_event for r in runs)
        rate = statistics.median(r.events_per_s for r in runs)
        print(f"median of {len(runs)}: {cpu:.1f} µs CPU/event, {rate:.0f} events/s wall")
        if args.profile:
            messages = [(t, p.encode()) for t, p in workloads[-1].messages]
            # Thread CPU time, not wall time: a call that releases the GIL (os.urandom,
            # sqlite3) would otherwise be charged the aiosqlite thread's turn.
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            asyncio.run(run_once(workdir, registry_path, messages, name="profile"))
            profiler.disable()
            profiler.dump_stats(args.profile)
            print(f"wrote {args.profile}")


if __name__ == "__main__":
    main()
