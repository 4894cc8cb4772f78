"""Throughput of N partitioned gateways (issue #17): N = 1, 2, 3 in one run, as ratios.

One Mosquitto (the packaged config), one throwaway PostgreSQL, and N gateway processes
started with ``run --partitioned`` sharing the 64 partitions of a fleet of buildings.
For each N in turn (interleaved over ``--repeat`` rounds, so that a slow moment of the
machine does not land on one N only): the gateways start and settle on their shares,
``--events`` events of every kind are published at once by the simulator account (a
backlog the gateways drain at their own pace), and the run ends when the cloud has
every event. Reported per N, median over the rounds:

- events/s from the first publish to the last cloud copy, and its ratio to N = 1;
- CPU seconds per 10,000 events, gateways and broker, read from /proc;
- lost events (must be 0: a run with one fails the benchmark).

On a 2-core machine that also runs the broker, PostgreSQL and the publisher, more
gateway processes cannot add cores; the point of the ratio is that partitioning costs
little (issue: not below 0.85), and the CPU per event says what more cores would buy.
Writes ``bench/results/gateways.json``. Run from the checkout:
``.venv/bin/python -m bench.gateways_bench`` (or ``intercom-gateway bench --gateways 1,2,3``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.workload import prepare
from intercom_gateway.broker.mosquitto import OPERATOR
from intercom_gateway.core import topics
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.qa.postgres import PostgresServer
from intercom_gateway.qa.runner import (
    GatewayProcess,
    follow,
    partitioned_process,
    started_broker,
)
from intercom_gateway.qa.testing import publish_as_fleet

RESULTS = Path(__file__).resolve().parent / "results" / "gateways.json"
SERVICES = ("concierge", "elder-watch", "parcel-unlock")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _events(registry: Any, count: int, seed: int) -> list[tuple[str, bytes]]:
    """Simulated events of every kind, stamped as just happened (bench/workload.py)."""
    work = prepare(registry, count, seed=seed)
    return [(topic, payload.encode()) for topic, payload in work.messages]


class Cloud:
    """Counts distinct events on cloud/#, and wakes when ``expected`` have arrived."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.expected = 0
        self.done = asyncio.Event()
        self.last = 0.0

    async def on(self, topic: str, payload: bytes, _message: Any) -> None:
        self.seen.add(json.loads(payload)["event_id"])
        self.last = time.perf_counter()
        if self.expected and len(self.seen) >= self.expected:
            self.done.set()


class Shares:
    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.changed = asyncio.Condition()

    async def on(self, topic: str, payload: bytes, _message: Any) -> None:
        if not topic.endswith("/status") or topic == topics.STATUS or not payload:
            return
        status = json.loads(payload)
        async with self.changed:
            online = status["state"] == "online"
            self.held[status["gateway_id"]] = len(status["partitions"]) if online else 0
            self.changed.notify_all()

    async def settled(self, names: Sequence[str]) -> None:
        def ok() -> bool:
            counts = [self.held.get(n, 0) for n in names]
            return sum(counts) == 64 and max(counts) - min(counts) <= 1

        async with asyncio.timeout(120), self.changed:
            await self.changed.wait_for(ok)


async def one_run(
    broker: Any, registry: Any, dsn: str, workdir: Path, n: int, events: int, tag: str
) -> dict[str, Any]:
    shares, cloud = Shares(), Cloud()
    names = [f"gw-{tag}-{i}" for i in range(n)]
    followers = [
        asyncio.create_task(follow(broker, OPERATOR, [topics.gateway_filter()], shares.on)),
        asyncio.create_task(follow(broker, OPERATOR, [topics.cloud_filter()], cloud.on)),
    ]
    processes: list[GatewayProcess] = []
    try:
        for name in names:
            process = await partitioned_process(
                broker,
                workdir / name,
                registry,
                gateway_id=name,
                store=dsn,
                env={"INTERCOM_LOG_LEVEL": "WARNING", "INTERCOM_SESSION_EXPIRY": "0"},
            )
            await process.launch()
            processes.append(process)
        await shares.settled(names)
        messages = _events(registry, events, seed=int(tag))
        cloud.expected = len(messages)
        pids = [p.process.pid for p in processes if p.process is not None]
        assert broker.process is not None
        before = [cpu_seconds(pid) for pid in pids], cpu_seconds(broker.process.pid)
        started = time.perf_counter()
        await publish_as_fleet(broker, messages)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cloud.done.wait(), 300)
        elapsed = (cloud.last or time.perf_counter()) - started
        gateway_cpu = sum(cpu_seconds(pid) for pid in pids) - sum(before[0])
        broker_cpu = cpu_seconds(broker.process.pid) - before[1]
        return {
            "gateways": n,
            "events": len(messages),
            "lost": len(messages) - len(cloud.seen),
            "events_per_s": len(cloud.seen) / elapsed,
            "gateway_cpu_s_per_10k": gateway_cpu / len(messages) * 10_000,
            "broker_cpu_s_per_10k": broker_cpu / len(messages) * 10_000,
        }
    finally:
        for process in processes:
            await process.aclose()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def measure(counts: Sequence[int], events: int, repeat: int) -> dict[str, Any]:
    registry = generate_registry(buildings=64, dwellings=4, services=SERVICES)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gateways-bench-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg") as postgres:
            async with started_broker(root / "mqtt", registry, SERVICES) as broker:
                for round_ in range(repeat):
                    for n in counts:
                        dsn = f"{postgres.dsn[: postgres.dsn.rfind('/')]}/r{round_}n{n}"
                        await _create_database(postgres, f"r{round_}n{n}")
                        run = await one_run(
                            broker,
                            registry,
                            dsn,
                            root / f"r{round_}n{n}",
                            n,
                            events,
                            f"{round_}{n}",
                        )
                        print(json.dumps(run), flush=True)
                        runs.append(run)
    return summarise(runs, counts)


async def _create_database(postgres: PostgresServer, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(postgres.dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def summarise(runs: list[dict[str, Any]], counts: Sequence[int]) -> dict[str, Any]:
    by_n = {n: [r for r in runs if r["gateways"] == n] for n in counts}
    median = {
        n: {
            key: statistics.median(r[key] for r in rows)
            for key in ("events_per_s", "gateway_cpu_s_per_10k", "broker_cpu_s_per_10k")
        }
        for n, rows in by_n.items()
    }
    base = median[counts[0]]["events_per_s"]
    for n in counts:
        median[n]["ratio_to_first"] = median[n]["events_per_s"] / base
        median[n]["lost"] = sum(r["lost"] for r in by_n[n])
    return {"runs": runs, "median": {str(n): m for n, m in median.items()}, "cores": os.cpu_count()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", default="1,2,3", help="Counts to measure [1,2,3].")
    parser.add_argument("--events", type=int, default=6000, help="Events per run [6000].")
    parser.add_argument("--repeat", type=int, default=3, help="Interleaved rounds [3].")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.gateways.split(",")]
    result = asyncio.run(measure(counts, args.events, args.repeat))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    for n, m in result["median"].items():
        print(
            f"N={n}: {m['events_per_s']:,.0f} events/s ({m['ratio_to_first']:.2f} x N={counts[0]}),"
            f" gateways {m['gateway_cpu_s_per_10k']:.2f} CPU s/10k, broker"
            f" {m['broker_cpu_s_per_10k']:.2f}, lost {m['lost']}"
        )
    lost = sum(m["lost"] for m in result["median"].values())
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
