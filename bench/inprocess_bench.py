"""The gateway's own CPU per event, in one process, without MQTT.

The real ``Gateway`` (``Gateway.load`` and ``serve``) runs on the in-memory bus with a
real SQLite file in a temporary directory. The events are the relay benchmark's
(``bench.workload.prepare``: simulated panels of dwellings that use all three sample
partner services, about four copies an event). Every event is put on the bus at once,
then the run waits until all are acknowledged, which the gateway does only after their
records are committed. CPU is ``time.process_time()``, so the aiosqlite thread counts.
The memory bus encodes and decodes every message with the MQTT codec, as Mosquitto and
the transport would between them, so that work counts too (docs/benchmarks.md, "The
restructuring of issue 15").

``.venv/bin/python -m bench.inprocess_bench --events 20000`` prints each run and the
median of ``--repeat`` runs; ``--profile out.prof`` writes a cProfile of one more run
(read it with ``python -m pstats out.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import SERVICES, prepare
from intercom_gateway.bus import MemoryBroker
from intercom_gateway.core.registry import dump_registry, generate_registry
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
    workdir: Path, registry_path: Path, messages: list[tuple[str, bytes]], *, name: str
) -> Run:
    settings = Settings(
        db_path=workdir / f"{name}.sqlite", registry_path=registry_path, log_events=False
    )
    broker = MemoryBroker()
    async with SqliteStore.open(settings.db_path) as store:
        gateway = await Gateway.load(settings, store)
        bus, panels = broker.client("gateway"), broker.client("panels")
        stop = asyncio.Event()
        serving = asyncio.create_task(gateway.serve(bus, stop=stop), name="gateway")
        await gateway.online.wait()
        cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
        for topic, payload in messages:
            await panels.publish(topic, payload)
        await gateway.wait_acked(len(messages))
        cpu, main = time.process_time() - cpu, time.thread_time() - main
        wall = time.perf_counter() - wall
        stop.set()
        await serving
        if gateway.metrics.events != len(messages) or gateway.metrics.rejected:
            raise RuntimeError(f"not every event was handled: {gateway.metrics.snapshot()}")
    return Run(len(messages), cpu, main, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--buildings", type=int, default=10)
    parser.add_argument("--dwellings", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more run here")
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
