"""Relay benchmark: what the gateway costs against a raw broker relay, measured in one run.

One Mosquitto (the project's ``mosquitto.conf``), one set of prepared events (mixed
kinds, ~300-470 bytes, dwellings that use all three partner services, so 3.2 per-event
copies on average: analytics copies are held and released per window, not counted here),
the same publisher and subscriber processes, and six paths:

``raw``                 publisher -> Mosquitto -> subscriber
``raw-fanout``          publisher -> Mosquitto -> one subscriber connection per
                        destination the gateway would copy an event to, each
                        subscribed to the panel topics directly: the same copies,
                        fanned out by the broker with no relay at all (the most any
                        relay of these copies could carry through this broker)
``passthrough``         ... -> a minimal Python relay (parse JSON, republish to the
                        cloud topic, ack after PUBACK) -> Mosquitto -> subscriber
``passthrough-fanout``  the same relay copying each event to the destinations the
                        gateway would use (isolates the cost of the copies from the
                        cost of the policy)
``gateway``             ... -> ``intercom-gateway run`` (validation, consent, purposes,
                        ledger, every destination) -> Mosquitto -> subscriber
``passthrough-paho``    the pass-through relay on paho-mqtt (``tests/reference_paho``)
                        instead of our MQTT transport: what the transport gains

Every path is measured twice per repetition: at saturation (closed loop: the
publisher keeps ``backlog`` events sent-but-not-delivered) for events/s and CPU per
process, and paced at a moderate rate for end-to-end latency. Repetitions interleave
the paths so that drift of the machine touches all of them alike. An event counts as
delivered when its cloud copy arrives (raw: the relayed copy; raw-fanout: its copy on
the cloud connection); a run in which any event or copy is missing is failed and left
out of the medians.

Run: ``intercom-gateway bench`` or ``python -m bench.relay_bench`` from the checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.clients import SharedCounter
from bench.stats import Delivery, cpu_per_10k, latency_summary, ratio, spread, steady_rate
from intercom_gateway.broker.mosquitto import CLOUD, FLEET, GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import Event
from intercom_gateway.core.policy import DestinationKind, load_partners, load_policy
from intercom_gateway.core.registry import Registry, dump_registry, generate_registry
from intercom_gateway.core.router import Router
from intercom_gateway.gateway.service import consent_from_registry
from intercom_gateway.qa.runner import start_broker
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.panels import iter_events

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
SERVICES = ("concierge", "elder-watch", "parcel-unlock")
SCENARIOS = (
    "raw",
    "raw-fanout",
    "passthrough",
    "passthrough-fanout",
    "passthrough-paho",
    "gateway",
)
# Analytics copies are not per-event output: the gateway holds them and releases them
# once their window (an hour by default) has ended (§5(5)), so no run sees them; what
# holding them costs (a row per copy in the store batch) is in the gateway's figures.
OUTPUTS = (topics.cloud_filter(), topics.group_filter(), topics.partners_filter())
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    scenarios: tuple[str, ...] = SCENARIOS
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


# --- processes ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat).

    The benchmark shares the machine: the difference between this and what our own
    processes used is the load others put on it during a run, reported with the run.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log: Path

    async def ready(self, timeout: float = 30.0) -> None:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            raise RuntimeError(f"{self.name} did not start: {self.tail()}")

    async def wait(self, timeout: float) -> None:
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise RuntimeError(f"{self.name} did not finish in {timeout:.0f} s") from None
        if code != 0:
            raise RuntimeError(f"{self.name} exited with {code}: {self.tail()}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(encoding="utf-8", errors="replace")[-2_000:]
        return ""


async def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> Child:
    log = workdir / f"{name}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        )
    return Child(name, process, log)


async def client_process(role: str, name: str, workdir: Path, config: dict[str, Any]) -> Child:
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    os.chmod(path, 0o600)  # it holds a broker password
    return await spawn(name, [sys.executable, "-m", "bench.clients", role, str(path)], workdir, {})


# --- one run ------------------------------------------------------------------------------


@dataclass
class Bench:
    broker: Mosquitto
    registry_path: Path
    workload: Workload
    payloads: dict[int, Path]  # event count -> file of the first ``count`` messages
    options: Options
    workdir: Path
    runs: int = 0
    log: list[str] = field(default_factory=list)

    def account(self, user: str) -> dict[str, Any]:
        address = self.broker.address(user)
        return {
            "host": address.host,
            "port": address.port,
            "user": address.username,
            "password": address.password,
            # "<user>.<suffix>": the broker refuses ids not bound to the account.
            "client_id": address.client_id(f"bench-{uuid.uuid4().hex[:8]}"),
        }

    async def run(self, scenario: str, mode: str) -> dict[str, Any]:
        self.runs += 1
        count = (
            self.options.saturation_events if mode == "saturation" else self.options.latency_events
        )
        workdir = self.workdir / f"run-{self.runs:03d}-{scenario}-{mode}"
        workdir.mkdir()
        counter = workdir / "delivered.counter"
        SharedCounter.create(counter)
        if scenario in ("raw", "passthrough", "passthrough-paho"):
            copies = count
        elif scenario.startswith("gateway"):
            copies = sum(self.workload.gateway_copies[:count])
        else:
            copies = sum(self.workload.copies[:count])
        subscriber_user = GATEWAY if scenario.startswith("raw") else OPERATOR
        filters = {
            "raw": [topics.PANEL_EVENTS_FILTER],
            "passthrough": [topics.cloud_filter()],
            "passthrough-paho": [topics.cloud_filter()],
        }
        connections = self.direct_subscribers() if scenario == "raw-fanout" else None
        subscriber = await client_process(
            "subscribe",
            "subscriber",
            workdir,
            {
                **self.account(subscriber_user),
                "filters": filters.get(scenario, list(OUTPUTS)),
                "connections": connections,
                "primary": (
                    topics.PANEL_EVENTS_FILTER if scenario == "raw" else topics.cloud_filter()
                ),
                "expected_events": count,
                "expected_copies": copies,
                "counter": str(counter),
                "idle": self.options.idle,
                "out": str(workdir / "subscriber.out.json"),
            },
        )
        relay: Child | None = None
        try:
            await subscriber.ready()
            relay = await self._start_relay(scenario, workdir)
            watched = {"broker": self._broker_pid()}
            if relay is not None:
                watched["relay"] = relay.process.pid
            cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            busy_before, started = machine_busy_seconds(), time.monotonic()
            publisher = await client_process(
                "publish",
                "publisher",
                workdir,
                {
                    **self.account(FLEET),
                    "payloads": str(self.payloads[count]),
                    "window": 1_000,
                    "rate": self.options.rate if mode == "latency" else None,
                    "backlog": self.options.backlog if mode == "saturation" else None,
                    "counter": str(counter),
                    "out": str(workdir / "publisher.out.json"),
                },
            )
            limit = 60 + count / 200
            await publisher.wait(limit)
            await subscriber.wait(limit)
            cpu_after = {name: cpu_seconds(pid) for name, pid in watched.items()}
            busy, wall = machine_busy_seconds() - busy_before, time.monotonic() - started
        finally:
            if relay is not None:
                await relay.stop()
            await subscriber.stop()
        published = json.loads((workdir / "publisher.out.json").read_text(encoding="utf-8"))
        received = json.loads((workdir / "subscriber.out.json").read_text(encoding="utf-8"))
        cpu = {name: cpu_after[name] - cpu_before[name] for name in watched}
        cpu["publisher"] = published["cpu_seconds"]
        cpu["subscriber"] = received["cpu_seconds"]
        result = self._summarise(scenario, mode, count, copies, published, received, cpu)
        # Cores busy with anything but this run's processes, on average over the run.
        result["foreign_cores"] = max(0.0, busy - sum(cpu.values())) / wall
        result["loadavg_1m"] = os.getloadavg()[0]
        print(_progress(result), flush=True)
        return result

    def direct_subscribers(self) -> list[dict[str, Any]]:
        """The gateway's destinations as if each subscribed to the panels directly.

        One connection per destination, subscribed to the panel topics of exactly the
        event types the gateway copies to it: the broker delivers the same copies the
        gateway would publish, with no relay in between.
        """
        types_of: dict[str, list[str]] = {}
        for kind, destinations in self.workload.fanout.items():
            if "cloud" not in destinations:
                raise ValueError(f"{kind} events have no cloud copy to count deliveries by")
            for destination in destinations:
                types_of.setdefault(destination, []).append(kind)
        return [
            {
                "label": destination,
                "primary": destination == "cloud",
                "filters": [topics.panel_events("+", "+", kind) for kind in kinds],
            }
            for destination, kinds in types_of.items()
        ]

    def _broker_pid(self) -> int:
        process = self.broker.process
        if process is None:
            raise RuntimeError("the broker is not running")
        return process.pid

    async def _start_relay(self, scenario: str, workdir: Path) -> Child | None:
        if scenario.startswith("raw"):
            return None
        if scenario.startswith("passthrough"):
            relay = await client_process(
                "relay",
                "relay",
                workdir,
                {
                    **self.account(GATEWAY),
                    "window": Settings().publish_window,
                    "receive_maximum": Settings().receive_maximum,
                    "fanout": self.workload.fanout if scenario.endswith("fanout") else None,
                    "transport": "paho" if scenario.endswith("paho") else "ours",
                },
            )
            await relay.ready()
            return relay
        return await self._start_gateway(workdir)

    async def _start_gateway(self, workdir: Path) -> Child:
        gateway_id = f"gw-bench-{uuid.uuid4().hex[:8]}"
        env = {
            "INTERCOM_BROKER_HOST": self.broker.host,
            "INTERCOM_BROKER_PORT": str(self.broker.port),
            "INTERCOM_SECRETS_DIR": str(self.broker.credentials.directory),
            "INTERCOM_DB_PATH": str(workdir / "gateway.sqlite"),
            "INTERCOM_REGISTRY_PATH": str(self.registry_path),
            "INTERCOM_GATEWAY_ID": gateway_id,
            "INTERCOM_LOG_EVENTS": "false",
            "INTERCOM_LOG_LEVEL": "WARNING",
            "INTERCOM_SESSION_EXPIRY": "0",  # nothing of a benchmark gateway outlives it
        }
        argv = [sys.executable, "-m", "intercom_gateway", "run"]
        gateway = await spawn("gateway", argv, workdir, env)
        # Online means subscribed: the gateway publishes its retained status after SUBACK.
        cloud = self.broker.address(CLOUD)
        async with MqttBus(
            cloud, client_id=cloud.client_id(f"bench-ready-{gateway_id}")
        ) as watcher:
            await watcher.subscribe(topics.STATUS)

            async def online() -> None:
                async for message in watcher.messages():
                    status = json.loads(message.payload)
                    if status.get("gateway_id") == gateway_id and status.get("state") == "online":
                        return

            waiting = asyncio.create_task(online())
            exited = asyncio.create_task(gateway.process.wait())
            await asyncio.wait({waiting, exited}, timeout=30, return_when="FIRST_COMPLETED")
            if not waiting.done():
                waiting.cancel()
                exited.cancel()
                await gateway.stop()
                raise RuntimeError(f"the gateway did not come online: {gateway.tail()}")
            exited.cancel()
        return gateway

    def _summarise(
        self,
        scenario: str,
        mode: str,
        count: int,
        copies: int,
        published: dict[str, Any],
        received: dict[str, Any],
        cpu: dict[str, float],
    ) -> dict[str, Any]:
        index = {event_id: i for i, event_id in enumerate(self.workload.event_ids[:count])}
        arrived: list[int] = received["arrived_ns"]
        ids: list[str] = received["ids"]
        known = [(index[e], t) for e, t in zip(ids, arrived, strict=True) if e in index]
        delivery = Delivery(
            expected_events=count,
            delivered_events=len(known),
            expected_copies=copies,
            delivered_copies=sum(received["copies"].values()),
            duplicates=received["duplicates"],
        )
        result: dict[str, Any] = {
            "scenario": scenario,
            "mode": mode,
            "events": count,
            "delivery": delivery.as_dict(),
            "failed": delivery.failed,
            "copies_by_prefix": received["copies"],
            "cpu_seconds": cpu,
        }
        if len(known) >= 2:
            sent: list[int] = published["sent_ns"]
            first_sent = min(sent)
            last_arrival = max(t for _, t in known)
            result["elapsed_s"] = (last_arrival - first_sent) / 1e9
            result["overall_rate"] = len(known) / result["elapsed_s"]
            result["steady_rate"] = steady_rate([t for _, t in known])
            result["cpu_per_10k"] = cpu_per_10k(cpu, len(known))
            result["latency"] = latency_summary([(t - sent[i]) / 1e6 for i, t in known])
        return result


def _progress(run: dict[str, Any]) -> str:
    delivery = run["delivery"]
    line = f"{run['scenario']:>19} {run['mode']:<10} "
    line += f"FAILED: {delivery['reason']}" if run["failed"] else "ok"
    if "steady_rate" in run:
        latency = run["latency"]
        line += (
            f"  {run['steady_rate']:7.0f} ev/s  p50 {latency['p50_ms']:8.2f} ms"
            f"  p99 {latency['p99_ms']:8.2f} ms"
        )
    return line + f"  (others busy: {run['foreign_cores']:.2f} cores)"


# --- the whole benchmark ------------------------------------------------------------------


def _write_payloads(workload: Workload, counts: set[int], workdir: Path) -> dict[int, Path]:
    paths = {}
    for count in counts:
        path = workdir / f"payloads-{count}.json"
        path.write_text(json.dumps(workload.messages[:count]), encoding="utf-8")
        paths[count] = path
    return paths


@contextlib.asynccontextmanager
async def _bench(options: Options, workdir: Path) -> AsyncIterator[Bench]:
    registry = generate_registry(
        buildings=options.buildings, dwellings=options.dwellings, services=SERVICES
    )
    registry_path = workdir / "registry.yaml"
    registry_path.write_text(dump_registry(registry), encoding="utf-8")
    count = max(options.saturation_events, options.latency_events)
    workload = prepare(registry, count, seed=options.seed)
    payloads = _write_payloads(
        workload, {options.saturation_events, options.latency_events}, workdir
    )
    with start_broker(workdir, registry, SERVICES) as broker:
        yield Bench(broker, registry_path, workload, payloads, options, workdir)


async def measure(options: Options, workdir: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    async with _bench(options, workdir) as bench:
        for repetition in range(options.repeat):
            print(f"-- repetition {repetition + 1}/{options.repeat}", flush=True)
            for scenario in options.scenarios:
                for mode in ("saturation", "latency"):
                    result = await bench.run(scenario, mode)
                    result["repetition"] = repetition + 1
                    runs.append(result)
        workload = bench.workload
    return {
        "workload": {
            "events_saturation": options.saturation_events,
            "events_latency": options.latency_events,
            "latency_rate": options.rate,
            "backlog": options.backlog,
            "mean_payload_bytes": round(workload.mean_bytes, 1),
            "kinds": workload.kinds,
            "fanout": workload.fanout,
            "mean_copies_per_event": sum(workload.copies) / len(workload.copies),
            "dwellings": options.buildings * options.dwellings,
        },
        "runs": runs,
        "scenarios": {s: aggregate(runs, s) for s in options.scenarios},
    }


def aggregate(runs: Sequence[dict[str, Any]], scenario: str) -> dict[str, Any]:
    """Median and spread over the repetitions that lost nothing."""
    mine = [r for r in runs if r["scenario"] == scenario]
    good = {
        mode: [r for r in mine if r["mode"] == mode and not r["failed"] and "latency" in r]
        for mode in ("saturation", "latency")
    }
    result: dict[str, Any] = {
        "failed_runs": sum(1 for r in mine if r["failed"]),
        "runs": len(mine),
    }
    saturated = good["saturation"]
    if saturated:
        result["events_per_s"] = spread([r["steady_rate"] for r in saturated]).as_dict()
        processes = sorted({p for r in saturated for p in r["cpu_per_10k"]})
        result["cpu_per_10k"] = {
            p: spread([r["cpu_per_10k"][p] for r in saturated if p in r["cpu_per_10k"]]).as_dict()
            for p in processes
        }
    paced = good["latency"]
    if paced:
        result["latency"] = {
            key: spread([r["latency"][key] for r in paced]).as_dict()
            for key in ("p50_ms", "p99_ms", "max_ms")
        }
    return result


def _median(scenarios: dict[str, Any], scenario: str, *path: str) -> float | None:
    node: Any = scenarios.get(scenario)
    for key in (*path, "median"):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node)


def comparisons(scenarios: dict[str, Any]) -> dict[str, float | None]:
    def rate(name: str) -> float | None:
        return _median(scenarios, name, "events_per_s")

    def p99(name: str) -> float | None:
        return _median(scenarios, name, "latency", "p99_ms")

    full_p99, raw_p99 = p99("gateway"), p99("raw")
    return {
        "full/raw": ratio(rate("gateway"), rate("raw")),
        "full/raw-fanout": ratio(rate("gateway"), rate("raw-fanout")),
        "raw-fanout/raw": ratio(rate("raw-fanout"), rate("raw")),
        "full/passthrough": ratio(rate("gateway"), rate("passthrough")),
        "full/passthrough-fanout": ratio(rate("gateway"), rate("passthrough-fanout")),
        "passthrough/raw": ratio(rate("passthrough"), rate("raw")),
        "lean/paho transport": ratio(rate("passthrough"), rate("passthrough-paho")),
        "added_p99_ms": None if full_p99 is None or raw_p99 is None else full_p99 - raw_p99,
    }


# --- reporting ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mosquitto = subprocess.run(
        ["mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosquitto[0] if mosquitto else "unknown",
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "pydantic": importlib.metadata.version("pydantic"),
        "intercom_gateway": importlib.metadata.version("intercom-gateway"),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cell(node: dict[str, Any] | None, digits: int = 0) -> str:
    if not node:
        return "failed"
    return (
        f"{_fmt(node['median'], digits)} ({_fmt(node['min'], digits)}-{_fmt(node['max'], digits)})"
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The results as the table of docs/benchmarks.md: median (min-max) of the repetitions."""
    processes = ("publisher", "relay", "subscriber", "broker")
    lines = [
        "| path | events/s at saturation | p50 ms | p99 ms | max ms | CPU s / 10k events: "
        + " / ".join(processes)
        + " | failed runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, data in result["scenarios"].items():
        latency = data.get("latency", {})
        cpu = data.get("cpu_per_10k", {})
        lines.append(
            f"| {name} | {_cell(data.get('events_per_s'))} | {_cell(latency.get('p50_ms'), 2)}"
            f" | {_cell(latency.get('p99_ms'), 2)} | {_cell(latency.get('max_ms'), 1)} | "
            + " / ".join(_fmt(cpu[p]["median"], 2) if p in cpu else "-" for p in processes)
            + f" | {data['failed_runs']} of {data['runs']} |"
        )
    ratios = result["comparisons"]
    lines.append("")
    lines.append(
        "Ratios of medians: "
        + ", ".join(
            f"{key} = {_fmt(value, 2)}" for key, value in ratios.items() if key != "added_p99_ms"
        )
        + f"; p99 added by the gateway over raw at {result['workload']['latency_rate']:,.0f}"
        f" events/s = {_fmt(ratios['added_p99_ms'], 2)} ms."
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["scenarios"])
    data = result["scenarios"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    def bars(axis: Any, key: Sequence[str], offset: float, width: float, label: str) -> None:
        medians: list[float] = []
        errors: list[list[float]] = [[], []]
        for name in names:
            node: Any = data[name]
            for part in key:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            median = node.get("median", 0.0)
            medians.append(median)
            errors[0].append(median - node.get("min", median))
            errors[1].append(node.get("max", median) - median)
        positions = [i + offset for i in range(len(names))]
        axis.bar(positions, medians, width, yerr=errors, capsize=4, label=label)

    bars(left, ("events_per_s",), 0, 0.6, "median, min-max")
    left.set_title("Delivered events/s at saturation (QoS 1)")
    bars(right, ("latency", "p50_ms"), -0.2, 0.4, "p50")
    bars(right, ("latency", "p99_ms"), 0.2, 0.4, "p99")
    right.set_title(f"End-to-end latency at {result['workload']['latency_rate']:,.0f} events/s")
    right.set_ylabel("ms, log scale")
    right.set_yscale("log")
    for axis in (left, right):
        axis.set_xticks(range(len(names)), names, rotation=15)
        axis.legend()
    figure.suptitle(f"{result['machine']['cpu_model']}, {result['machine']['nproc']} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- entry point --------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="intercom-gateway bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: a few hundred events")
    parser.add_argument("--events", type=int, help="events per saturation run")
    parser.add_argument("--latency-events", type=int, help="events per paced run")
    parser.add_argument("--rate", type=float, help="events/s of the paced (latency) runs")
    parser.add_argument("--repeat", type=int, help="repetitions of every measurement")
    parser.add_argument("--backlog", type=int, help="events in flight at saturation")
    parser.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Options()
    chosen = tuple(args.scenarios.split(",")) if args.scenarios else base.scenarios
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return Options(
        saturation_events=args.events or base.saturation_events,
        latency_events=args.latency_events or base.latency_events,
        rate=args.rate or base.rate,
        repeat=args.repeat or base.repeat,
        backlog=args.backlog or base.backlog,
        buildings=base.buildings,
        dwellings=base.dwellings,
        idle=base.idle,
        seed=base.seed,
        scenarios=chosen,
        plot=not args.no_plot,
        label="quick" if args.quick else "full",
    )


def run(options: Options, *, results: Path = RESULTS, command: str = "") -> dict[str, Any]:
    """Measure everything and write ``<results>/<stamp>-<label>.json`` (and a PNG)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="intercom-bench-") as tmp:
        result = asyncio.run(measure(options, Path(tmp)))
    result["comparisons"] = comparisons(result["scenarios"])
    result["machine"] = machine()
    result["command"] = command
    result["options"] = _options_dict(options)
    result["duration_s"] = time.monotonic() - started
    result["finished_at"] = datetime.now(UTC).isoformat()
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"{stamp}-{options.label}.json"
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["files"] = {"json": str(path)}
    if options.plot:
        image = path.with_suffix(".png")
        plot(result, image)
        result["files"]["png"] = str(image)
    return result


def _options_dict(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in Options.__dataclass_fields__}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = parse(arguments)
    result = run(options, command=shlex.join(["intercom-gateway", "bench", *arguments]))
    print()
    print(markdown_table(result))
    print()
    for kind, path in result["files"].items():
        print(f"{kind}: {path}")
    return result


if __name__ == "__main__":
    main()
