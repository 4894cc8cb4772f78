"""``intercom-gateway bench``: the relay benchmark of ``bench/relay_bench.py``, a
developer tool that runs from a source checkout (docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

# The benchmark's own paths (bench/workload.SCENARIOS; tests/unit/test_cli_help.py checks
# that these and the defaults named below are the benchmark's).
BENCH_PATHS = (
    "raw",
    "raw-fanout",
    "passthrough",
    "passthrough-fanout",
    "passthrough-paho",
    "gateway",
    "gateway-pg",
)


@click.command()
@click.option("--quick", is_flag=True, help="Smoke run: 300 events, 1 repetition, 8 dwellings.")
@click.option(
    "--events",
    type=click.IntRange(min=1),
    help="Events per saturation (closed-loop) run [default: 20000; --quick: 300].",
)
@click.option(
    "--latency-events",
    type=click.IntRange(min=1),
    help="Events per paced (latency) run [default: 5000; --quick: 300].",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Events per second of the paced (latency) runs [default: 1000].",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    help="Repetitions of every measurement, interleaved; medians are reported"
    " [default: 3; --quick: 1].",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    help="Events sent but not yet delivered at saturation [default: 2000].",
)
@click.option(
    "--scenarios",
    help=f"Comma-separated paths to measure, of {','.join(BENCH_PATHS)} [default: all but"
    " gateway-pg, the gateway on a PostgreSQL store of the bench's own, which needs PostgreSQL].",
)
@click.option("--no-plot", is_flag=True, help="Write the JSON result only, no PNG.")
@click.option(
    "--gateways",
    metavar="N,N,...",
    help="Instead: partitioned gateways, e.g. 1,2,3, on one broker and one PostgreSQL, each"
    " count's throughput as a ratio to the first (bench/gateways_bench.py; --events and"
    " --repeat apply).",
)
def bench(**options: Any) -> None:
    """Throughput, latency and CPU of raw, pass-through and full-gateway relays, measured
    in one run; `bench --quick` for a smoke run (docs/benchmarks.md).

    The benchmark is a developer tool that lives in the checkout, not in the package:
    it starts Mosquitto with the packaged mosquitto.conf and runs its own processes
    (bench/relay_bench.py, also `python -m bench.relay_bench` with the same options).
    Results go to bench/results/. It is the one place that looks for the repository
    around the package (an editable install).
    """
    if options["scenarios"] is not None:
        unknown = set(options["scenarios"].split(",")) - set(BENCH_PATHS)
        if unknown:
            raise click.BadParameter(
                f"unknown: {', '.join(sorted(unknown))}", param_hint="'--scenarios'"
            )
    checkout = Path(__file__).resolve().parents[3]
    if not (checkout / "bench" / "relay_bench.py").exists():
        raise click.ClickException(
            "bench is a developer tool: it runs from a source checkout (bench/relay_bench.py)"
            " with an editable install (pip install -e .), not from an installed wheel"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    if options["gateways"] is not None:
        counts = options["gateways"].split(",")
        if not all(c.isdigit() and int(c) > 0 for c in counts):
            raise click.BadParameter("give counts like 1,2,3", param_hint="'--gateways'")
        arguments = [f"--gateways={options['gateways']}"]
        for name in ("events", "repeat"):
            if options[name] is not None:
                arguments.append(f"--{name}={options[name]}")
        partitioned = importlib.import_module("bench.gateways_bench").main
        sys.exit(partitioned(arguments))
    main: Callable[[Sequence[str]], Any] = importlib.import_module("bench.relay_bench").main
    main(bench_arguments(options))


def bench_arguments(options: dict[str, Any]) -> list[str]:
    """The values given, as the benchmark's own parser takes them (and records them in
    the result's ``command``); what is not given keeps the benchmark's default."""
    arguments = ["--quick"] if options["quick"] else []
    for name in ("events", "latency_events", "rate", "repeat", "backlog", "scenarios"):
        if options[name] is not None:
            arguments.append(f"--{name.replace('_', '-')}={options[name]}")
    return [*arguments, *(["--no-plot"] if options["no_plot"] else [])]
