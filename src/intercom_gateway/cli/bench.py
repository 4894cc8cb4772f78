"""``intercom-gateway bench``: the relay benchmark of ``bench/relay_bench.py``.

The benchmark lives in the repository, not in the package: it starts Mosquitto with
the repository's ``mosquitto.conf`` and runs its own publisher, subscriber and relay
processes from the checkout. This command finds it there and hands it the arguments.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from intercom_gateway.broker.mosquitto import REPO_ROOT


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,  # --help belongs to the benchmark's own parser
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def bench(arguments: tuple[str, ...]) -> None:
    """Throughput, latency and CPU of raw, pass-through and full-gateway relays
    (`bench --help` for the options, `bench --quick` for a smoke run)."""
    if not (REPO_ROOT / "bench" / "relay_bench.py").exists():
        raise click.ClickException("the benchmark runs from a source checkout (bench/)")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    main: Callable[[Sequence[str]], Any] = importlib.import_module("bench.relay_bench").main
    main(list(arguments))
