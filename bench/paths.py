"""The relay benchmark's paths, one measured run at a time: the processes it starts
(publisher, subscriber, a relay or the gateway) on one Mosquitto, what they used, and
what arrived. ``bench/relay_bench.py`` says what each path is and repeats them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import SharedCounter
from bench.stats import Delivery, cpu_per_10k, latency_summary, steady_rate
from bench.workload import REPO_ROOT, Options, Workload
from intercom_gateway.broker.mosquitto import CLOUD, FLEET, GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.settings import Settings

# Analytics copies are not per-event output: the gateway holds them and releases them
# once their window (an hour by default) has ended (§5(5)), so no run sees them; what
# holding them costs (a row per copy in the store batch) is in the gateway's figures.
OUTPUTS = (
    topics.cloud_filter(),
    topics.group_filter(),
    topics.partners_filter(),
    topics.app_filter(),  # §2(4): lobby calls to the Intercom app
)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# --- processes ----------------------------------------------------------------------------


def _stat_fields(stat: Path) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: state, ppid, ...;
    [11:13] are user and system ticks, [13:15] those of the children it reaped."""
    return stat.read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc (10 ms resolution)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children, live or ended (the server's
    backends, for a PostgreSQL store): its own, what it reaped, and each live child's."""

    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended
            fields = _stat_fields(stat)
            # The process itself, or a child (ppid is the field after the state): own
            # user + system time, and that of the children it reaped.
            if stat.parent.name == str(pid) or int(fields[1]) == pid:
                total += sum(int(f) for f in fields[11:15])
    return total / _CLOCK_TICKS


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
    postgres: Any = None  # qa.postgres.PostgresServer, for gateway-pg

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
        store = contextlib.AsyncExitStack()
        try:
            await subscriber.ready()
            dsn = await store.enter_async_context(self._own_store(scenario))
            relay = await self._start_relay(scenario, workdir, dsn)
            watched = {"broker": self._broker_pid()}
            if relay is not None:
                watched["relay"] = relay.process.pid
            cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            store_before = self._store_cpu()
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
            store_cpu = self._store_cpu() - store_before
            busy, wall = machine_busy_seconds() - busy_before, time.monotonic() - started
        finally:
            if relay is not None:
                await relay.stop()
            await subscriber.stop()
            await store.aclose()
        published = json.loads((workdir / "publisher.out.json").read_text(encoding="utf-8"))
        received = json.loads((workdir / "subscriber.out.json").read_text(encoding="utf-8"))
        cpu = {name: cpu_after[name] - cpu_before[name] for name in watched}
        cpu["publisher"] = published["cpu_seconds"]
        cpu["subscriber"] = received["cpu_seconds"]
        if scenario == "gateway-pg":
            cpu["store"] = store_cpu  # the PostgreSQL server: the store's work moved there
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

    @contextlib.asynccontextmanager
    async def _own_store(self, scenario: str) -> Any:
        """gateway-pg: a fresh database of its own for this run, dropped after it."""
        if scenario != "gateway-pg":
            yield None
            return
        from intercom_gateway.qa.postgres import own_database

        if self.postgres is None:
            raise RuntimeError("gateway-pg needs the bench's PostgreSQL server")
        async with own_database(self.postgres.dsn, f"run{self.runs:03d}") as dsn:
            yield dsn

    def _store_cpu(self) -> float:
        return 0.0 if self.postgres is None else tree_cpu_seconds(self.postgres.pid)

    def _broker_pid(self) -> int:
        process = self.broker.process
        if process is None:
            raise RuntimeError("the broker is not running")
        return process.pid

    async def _start_relay(
        self, scenario: str, workdir: Path, dsn: str | None = None
    ) -> Child | None:
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
        return await self._start_gateway(workdir, dsn)

    async def _start_gateway(self, workdir: Path, dsn: str | None = None) -> Child:
        gateway_id = f"gw-bench-{uuid.uuid4().hex[:8]}"
        env = {
            "INTERCOM_BROKER_HOST": self.broker.host,
            "INTERCOM_BROKER_PORT": str(self.broker.port),
            "INTERCOM_SECRETS_DIR": str(self.broker.credentials.directory),
            # A fresh store per run, whatever INTERCOM_STORE the caller has set (runs that
            # share a store would take the same events for duplicates): a SQLite file, or
            # for gateway-pg a database of its own on the bench's PostgreSQL.
            "INTERCOM_STORE": dsn or f"sqlite:///{(workdir / 'gateway.sqlite').resolve()}",
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
