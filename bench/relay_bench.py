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
import json
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.paths import Bench
from bench.report import aggregate, comparisons, machine, markdown_table, plot
from bench.workload import QUICK, REPO_ROOT, SCENARIOS, SERVICES, Options, Workload, prepare
from intercom_gateway.core.registry import dump_registry, generate_registry
from intercom_gateway.qa.runner import start_broker

# The names the benchmark has always been used by (``bench.relay_bench.X``), wherever
# they now live: bench/workload.py, bench/paths.py, bench/report.py.
__all__ = [
    "QUICK",
    "RESULTS",
    "SCENARIOS",
    "SERVICES",
    "Bench",
    "Options",
    "Workload",
    "aggregate",
    "comparisons",
    "main",
    "markdown_table",
    "measure",
    "parse",
    "prepare",
    "run",
]

RESULTS = REPO_ROOT / "bench" / "results"


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
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(start_broker(workdir, registry, SERVICES))
        bench = Bench(broker, registry_path, workload, payloads, options, workdir)
        if "gateway-pg" in options.scenarios:
            from intercom_gateway.qa.postgres import PostgresServer

            bench.postgres = stack.enter_context(PostgresServer(workdir / "postgres"))
        yield bench


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


# --- entry point --------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="intercom-gateway bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    full, quick = Options(), QUICK
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {quick.saturation_events} events, {quick.repeat} repetition,"
        f" {quick.buildings * quick.dwellings} dwellings",
    )
    parser.add_argument(
        "--events",
        type=int,
        help="events per saturation (closed-loop) run"
        f" [default: {full.saturation_events}; --quick: {quick.saturation_events}]",
    )
    parser.add_argument(
        "--latency-events",
        type=int,
        help="events per paced (latency) run"
        f" [default: {full.latency_events}; --quick: {quick.latency_events}]",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help=f"events per second of the paced (latency) runs [default: {full.rate:g}]",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="repetitions of every measurement, interleaved; medians are reported"
        f" [default: {full.repeat}; --quick: {quick.repeat}]",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        help=f"events sent but not yet delivered at saturation [default: {full.backlog}]",
    )
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated paths to measure, of {','.join(SCENARIOS)} [default: all but"
        " gateway-pg, the gateway on a PostgreSQL store, which needs PostgreSQL]",
    )
    parser.add_argument("--no-plot", action="store_true", help="write the JSON result only, no PNG")
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
