"""QA's and developers' commands: the live demo, panel simulators, scenario files, the
load generator (``cli/load.py``) and the relay benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from intercom_gateway import logs
from intercom_gateway.cli.bench import bench
from intercom_gateway.cli.common import (
    EXIT_NO,
    acceleration_option,
    broker_address,
    broker_options,
    group,
    note_own_run,
    registry_option,
    require_gateway,
    run,
    running_broker_options,
    running_stack_of,
    seed_option,
    settings_of,
    stack_option,
    stop_on_signals,
    stopped_by_signals,
    workdir_option,
)
from intercom_gateway.cli.load import load
from intercom_gateway.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from intercom_gateway.qa.scenario.loader import LoadedScenario
    from intercom_gateway.qa.scenario.runner import ScenarioResult

LIBRARY = Path(str(resources.files("intercom_gateway.qa").joinpath("scenarios")))


@click.command()
@click.option(
    "--duration",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to run; 0 runs until Ctrl-C.",
)
@seed_option
@acceleration_option(
    "Simulated seconds per real second (7200: two hours a second).", default=7200.0
)
@workdir_option("Where the broker, store and generated accounts go [default: a temporary folder].")
@running_broker_options(
    host=None,
    port="Use a running broker with accounts from --secrets-dir.",
    secrets="Accounts of the running broker given by --broker-port (`credentials generate`).",
    folder=False,
)
def demo(
    duration: float,
    seed: int,
    acceleration: float,
    workdir: Path | None,
    broker_port: int | None,
    secrets_dir: Path | None,
) -> None:
    """Run Mosquitto, the gateway and simulated panels, and show the flow live."""
    from rich.console import Console

    from intercom_gateway.qa.demo import run_demo

    console = Console() if Console().is_terminal else Console(width=160)
    # The view shows rejections and consent changes itself; keep the log for errors.
    logs.configure("ERROR")

    async def go(folder: Path) -> None:
        # A signal stops the demo once (its broker and gateway too); the temp folder goes.
        stop = asyncio.Event()
        received: list[int] = []
        work = run_demo(
            console=console,
            workdir=folder,
            duration=duration or None,
            seed=seed,
            acceleration=acceleration,
            broker_port=broker_port,
            secrets_dir=secrets_dir,
            stop=stop,
        )
        await stopped_by_signals(work, received, stop=stop)
        if received:
            console.print("stopped")

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="intercom-demo-"))
            )
        asyncio.run(go(workdir))


@click.command()
@broker_options
@registry_option("Device registry to simulate [default: the sample registry].")
@click.option("--buildings", type=int, help="Generate a fleet of this many buildings instead.")
@click.option(
    "--dwellings", type=int, default=20, show_default=True, help="...of this many dwellings each."
)
@seed_option
@acceleration_option("Simulated seconds per real second (3600: an hour a second).", default=3600.0)
@click.option("--duration", type=float, help="Stop after this many real seconds.")
@click.option("--events", "max_events", type=int, help="Stop after this many events.")
@click.option("--user", default="fleet", show_default=True, help="Broker account to publish as.")
@click.option(
    "--resend-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Keep each event until the gateway's receipt names it and send it again after "
    "this many seconds, doubling up to 120 (README, 'Panel protocol'); 0: do not keep.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="After the last event, wait up to this many seconds for missing receipts.",
)
@click.option("--verbose", "-v", is_flag=True, help="Print every event sent.")
@click.pass_context
def simulate(
    ctx: click.Context,
    /,
    registry_path: Path | None,
    buildings: int | None,
    dwellings: int,
    seed: int,
    acceleration: float,
    duration: float | None,
    max_events: int | None,
    user: str,
    resend_timeout: float,
    settle: float,
    verbose: bool,
    **options: Any,
) -> None:
    """Simulate dwelling panels, lobby panels and delivery boxes publishing events.

    They talk to the gateway only over MQTT, as real panels would. Without --duration
    or --events it runs until Ctrl-C.
    """
    from intercom_gateway.bus import MqttBus
    from intercom_gateway.core.registry import generate_registry, load_registry
    from intercom_gateway.simulators.fleet import run_fleet
    from intercom_gateway.simulators.outbox import Outbox, ResendPolicy

    settings = settings_of(ctx, **options)
    if buildings is not None:
        registry = generate_registry(buildings=buildings, dwellings=dwellings)
    else:
        registry = load_registry(registry_path or settings.registry_path)
    require_gateway(settings)  # after the files: a bad file is said first, without a broker
    address = broker_address(settings, user)

    def show(topic: str, event: Any) -> None:
        if verbose:
            click.echo(f"{event.occurred_at:%Y-%m-%d %H:%M} {topic}")

    async def go() -> None:
        outbox = None
        if resend_timeout > 0:
            timeout = resend_timeout
            outbox = Outbox(ResendPolicy(timeout=timeout, max_timeout=max(timeout, 120.0)))
        client_id = address.client_id(f"simulator-{uuid.uuid4().hex[:8]}")
        async with MqttBus(address, client_id=client_id) as bus:
            task = asyncio.create_task(
                run_fleet(
                    bus,
                    registry,
                    seed=seed,
                    acceleration=acceleration,
                    duration=duration,
                    max_events=max_events,
                    on_event=show,
                    outbox=outbox,
                    settle=settle,
                )
            )
            stop = asyncio.Event()
            stop_on_signals(stop)
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():
                task.cancel()
                click.echo("stopped", err=True)
                return
            click.echo(task.result().render())

    run(go)


# --- scenarios ---------------------------------------------------------------------------


@group()
def scenario() -> None:
    """QA scenarios: setup, timed steps and expectations in YAML, with a pass/fail report.

    The library of scenarios, one or more per clause of the privacy policy the gateway
    enforces, ships in the package (intercom_gateway/qa/scenarios/).
    `scenario schema` prints the file format.
    """


@scenario.command("run")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@running_broker_options(
    host="Use a running broker and gateway on this host.",
    port="Use a running broker and gateway on this port.",
    secrets="Accounts of the running broker (from `credentials generate`).",
)
@stack_option
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="JUnit XML here.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The results as JSON here.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Interleave the gateway's log lines with the progress (default: quiet).",
)
@click.pass_context
def scenario_run(
    ctx: click.Context,
    paths: tuple[Path, ...],
    broker_host: str | None,
    broker_port: int | None,
    secrets_dir: Path | None,
    stack: bool,
    junit: Path | None,
    json_path: Path | None,
    verbose: bool,
) -> None:
    """Run scenario FILEs or every *.yaml of DIRs (default: the scenario library).

    By default it is self-contained: one Mosquitto with the project's configuration for
    the run and a fresh gateway and store per scenario (with INTERCOM_STORE naming a
    PostgreSQL database, a database of its own beside it, dropped after). With
    --broker-port or --secrets-dir it uses a broker and gateway already running (start
    the gateway with the registry that `scenario registry FILE` prints); --stack uses the
    running dev stack (`up --registry` with that registry). Exit status 0 only if every
    expectation held.

    Analytics copies are held until their window ends (INTERCOM_ANALYTICS_WINDOW, an
    hour by default): the self-contained gateway uses 0.5 s windows; start a running
    gateway with a window of a second or so to judge analytics expectations against it.
    """
    from rich.console import Console

    from intercom_gateway.qa.scenario.loader import load_scenarios
    from intercom_gateway.qa.scenario.report import print_report, write_reports

    if not verbose:
        # The rejections the scenarios provoke on purpose would print a warning line
        # each between the progress marks: the report judges them instead.
        logs.configure("CRITICAL")
    loaded = load_scenarios(list(paths) or [LIBRARY])
    external = None
    if stack:
        running_stack_of(ctx)
        external = settings_of(ctx)
        require_gateway(external)
    elif broker_port is not None or secrets_dir is not None or broker_host is not None:
        external = settings_of(
            ctx, broker_host=broker_host, broker_port=broker_port, secrets_dir=secrets_dir
        )
    else:
        note_own_run(ctx, "scenario run")
    console = Console(stderr=True)
    results = asyncio.run(_run_scenarios(loaded, external, console))
    print_report(Console(), results)
    write_reports(results, junit=junit, json_path=json_path)
    sys.exit(0 if results and all(r.passed for r in results) else EXIT_NO)


async def _run_scenarios(
    loaded: Sequence[LoadedScenario], external: Settings | None, console: Console
) -> list[ScenarioResult]:
    from rich.progress import Progress

    from intercom_gateway.qa.scenario.report import progress_line
    from intercom_gateway.qa.scenario.runner import External, SelfContained, run_scenarios

    with (
        tempfile.TemporaryDirectory(prefix="scenarios-") as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task("scenarios", total=len(loaded))

        def done(result: ScenarioResult) -> None:
            progress.console.print(progress_line(result))
            progress.advance(task)

        workdir = Path(tmp)
        if external is not None:
            running = External(
                host=external.broker_host,
                port=external.broker_port,
                secrets_dir=external.secrets_dir,
            )
            return await run_scenarios(loaded, running, workdir=workdir, on_done=done)
        with SelfContained.start(workdir / "broker") as own:
            return await run_scenarios(loaded, own, workdir=workdir, on_done=done)


@scenario.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def check(paths: tuple[Path, ...]) -> None:
    """Validate scenario files without running them; errors name the line."""
    from intercom_gateway.qa.scenario.loader import load_scenarios

    for item in load_scenarios(list(paths) or [LIBRARY]):
        click.echo(f"{item.path}: {item.name}: ok")


@scenario.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write it here.")
def schema(out: Path | None) -> None:
    """The JSON Schema of the scenario file format."""
    from intercom_gateway.qa.scenario.model import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(out)


@scenario.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def registry(path: Path) -> None:
    """The device registry a scenario's setup describes, for a gateway run elsewhere."""
    from intercom_gateway.core.registry import dump_registry
    from intercom_gateway.qa.scenario.loader import load_scenario
    from intercom_gateway.qa.scenario.world import build_world

    loaded = load_scenario(path)
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(loaded.scenario, source=loaded.path, workdir=Path(tmp))
    click.echo(dump_registry(world.registry), nl=False)


# --- the relay benchmark -----------------------------------------------------------------

COMMANDS = (demo, simulate, scenario, load, bench)
