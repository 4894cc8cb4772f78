"""``intercom-gateway load``: the load generator's command line, progress and summary
(with the other QA commands of ``cli/qa.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table

from intercom_gateway.cli.common import (
    EXIT_NO,
    acceleration_option,
    note_own_run,
    out_option,
    registry_option,
    require_gateway,
    running_broker_options,
    running_stack_of,
    seed_option,
    settings_of,
    stack_option,
    stopped_by_signals,
    workdir_option,
)
from intercom_gateway.settings import Settings


@click.command()
@click.option("--buildings", type=int, default=100, show_default=True, help="Fleet to generate.")
@click.option("--dwellings", type=int, default=100, show_default=True, help="...per building.")
@click.option(
    "--services",
    help="Comma-separated partner services every dwelling uses [default: all registered].",
)
@registry_option(
    "Use this device registry instead (with --broker-port: the one the gateway runs).",
    dir_okay=False,
)
@click.option("--rate", type=float, help="Target events per second [default 200].")
@acceleration_option(
    "Pace by simulated time instead: simulated seconds per real second (1: realistic)."
)
@click.option("--duration", type=float, help="Seconds of sending [default 10 unless --events].")
@click.option("--events", type=int, help="Stop after this many events.")
@seed_option
@click.option(
    "--publish-window",
    type=int,
    default=1000,
    show_default=True,
    help="Most QoS 1 publishes unacknowledged at once.",
)
@click.option(
    "--settle",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds to wait for the last arrivals after sending stopped; against a running"
    " gateway, longer than its INTERCOM_ANALYTICS_WINDOW (analytics copies are released per"
    " window; the self-contained gateway uses 1 s windows).",
)
@out_option(Path("reports/load"), "Folder for load-result.json and load-latency.png.", folder=True)
@workdir_option(
    "Self-contained: where broker, accounts and store go [default: a temporary folder]."
)
@running_broker_options(
    host="With --broker-port: a running broker's host.",
    port="Use a running broker and gateway (accounts from --secrets-dir) instead of starting both.",
    secrets="With --broker-port: the running broker's accounts (`credentials generate`).",
)
@stack_option
@click.pass_context
def load(ctx: click.Context, /, **options: Any) -> None:
    """Drive a large simulated fleet through Mosquitto and the gateway and measure it.

    Reports delivered, lost, duplicated and misdirected events per destination and
    end-to-end latency percentiles, writes a JSON result and a latency histogram, and
    exits 1 unless every entitled event arrived exactly once and nowhere else.
    Ctrl-C, SIGTERM or SIGHUP (a closed terminal) stop the broker and gateway it started
    and remove its temporary work folder (exit status 128 + the signal's number).
    """
    from intercom_gateway.qa.load import LoadPlan

    settings = settings_of(ctx)
    if options.pop("stack"):
        state = running_stack_of(ctx)
        require_gateway(settings)
        options.update(
            broker_host=state.broker_host,
            broker_port=state.broker_port,
            secrets_dir=state.secrets_dir,
        )
    elif options["broker_port"] is None:
        note_own_run(ctx, "load")
    try:
        plan = LoadPlan(
            rate=options["rate"] or (None if options["acceleration"] else 200.0),
            acceleration=options["acceleration"],
            duration=options["duration"] or (None if options["events"] else 10.0),
            events=options["events"],
            seed=options["seed"],
            publish_window=options["publish_window"],
            settle=options["settle"],
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    console = Console(stderr=True)
    data = _execute(plan, settings, options, console)
    out = Console() if Console().is_terminal else Console(width=120)
    out.print(summary_table(data))
    from intercom_gateway.qa.load import passed

    console.print(f"result: {data['files']['json']}  histogram: {data['files']['histogram']}")
    sys.exit(0 if passed(data) else EXIT_NO)


def _execute(
    plan: Any, settings: Settings, options: dict[str, Any], console: Console
) -> dict[str, Any]:
    from intercom_gateway.broker.mosquitto import load_credentials
    from intercom_gateway.core.policy import load_partners, load_policy
    from intercom_gateway.qa.load import External, run_load

    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    registry = _registry(options, [s.id for s in partners.services])
    external = None
    if options["broker_port"] is not None:
        credentials = load_credentials(options["secrets_dir"] or settings.secrets_dir)
        host = options["broker_host"] or settings.broker_host
        external = External(credentials, host, options["broker_port"])
    dwellings = sum(1 for _ in registry.dwellings())
    console.print(f"fleet: {len(registry.buildings)} buildings, {dwellings} dwellings")

    async def work() -> dict[str, Any]:
        # The work folder is made and removed inside the signal-guarded run, so a
        # signal cannot fall between its creation and the cleanup that removes it.
        with _workdir(options["workdir"]) as workdir, _progress(console) as show:
            if external is None:
                console.print(f"work folder: {workdir}", soft_wrap=True, markup=False)
            return await run_load(
                plan,
                registry=registry,
                policy=policy,
                partners=partners,
                out_dir=options["out"],
                workdir=workdir,
                external=external,
                progress=_announcing(show, console),
            )

    received: list[int] = []
    data = asyncio.run(stopped_by_signals(work(), received))
    if data is None:
        name = signal.Signals(received[0]).name
        console.print(f"load: stopped by {name}; what it started is stopped and removed")
        sys.exit(128 + received[0])
    return data


def _announcing(show: Callable[[Any], None], console: Console) -> Callable[[Any], None]:
    """``show``, and one line when sending begins: the broker and gateway are up."""
    announced = False

    def progress(snapshot: Any) -> None:
        nonlocal announced
        if not announced and snapshot.phase == "sending":
            announced = True
            console.print("sending: broker and gateway are up (Ctrl-C stops and cleans up)")
        show(snapshot)

    return progress


def _registry(options: dict[str, Any], partner_ids: list[str]) -> Any:
    from intercom_gateway.core.registry import generate_registry, load_registry

    if options["registry_path"] is not None:
        return load_registry(options["registry_path"])
    services = options["services"]
    chosen = tuple(s for s in services.split(",") if s) if services is not None else partner_ids
    unknown = set(chosen) - set(partner_ids)
    if unknown:
        raise click.UsageError(f"unknown services: {', '.join(sorted(unknown))}")
    return generate_registry(
        buildings=options["buildings"], dwellings=options["dwellings"], services=tuple(chosen)
    )


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="intercom-load-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[Callable[[Any], None]]:
    """A live bar on a terminal; nothing otherwise (the summary says it all)."""
    bar = Bar(
        TextColumn("{task.fields[phase]:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("delivered {task.fields[delivered]}  awaited {task.fields[outstanding]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task("load", total=None, phase="starting", delivered=0, outstanding=0)

    def show(snapshot: Any) -> None:
        bar.update(
            task,
            completed=snapshot.sent,
            total=snapshot.planned,
            phase=snapshot.phase,
            delivered=snapshot.delivered,
            outstanding=snapshot.outstanding,
        )

    with bar:
        yield show


def summary_table(data: dict[str, Any]) -> Table:
    rate = data["events_per_second"]
    table = Table(
        title=f"{data['sent']} events sent in {data['send_seconds']:.1f} s ({rate} events/s)"
        f" to {data['fleet']['dwellings']} dwellings; lost {data['lost']},"
        f" duplicates {data['duplicates']}, misdirected {data['unexpected']}",
    )
    for column in ("destination", "expected", "delivered", "lost", "dup", "p50 ms"):
        table.add_column(column, justify="left" if column == "destination" else "right")
    for column in ("p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for name, row in data["destinations"].items():
        lat = row["latency_ms"]
        cells = [lat[k] for k in ("p50", "p90", "p99", "max")]
        table.add_row(
            name,
            *(str(row[k]) for k in ("expected", "delivered", "lost", "duplicates")),
            *("-" if c is None else f"{c:.1f}" for c in cells),
        )
    analytics = data["analytics"]
    table.add_row("analytics (count)", str(analytics["expected"]), str(analytics["received"]))
    notes = []
    if not data["complete"]:
        notes.append(
            f"still awaited when the {data['plan']['settle']:.0f} s settle time ran out:"
            " counted as lost (raise --settle, or lower --rate, to tell slow from lost)"
        )
    if data["behind_schedule_seconds"] > 1:
        notes.append(
            f"the generator fell {data['behind_schedule_seconds']:.1f} s behind its schedule:"
            " this machine, not the gateway, limited the rate"
        )
    if data["rejected"]:
        notes.append(f"rejected by the gateway: {data['rejected']}")
    table.caption = "\n".join(notes) or None
    return table
