"""``intercom-gateway scenario``: run QA scenario files, check them, export their schema."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from intercom_gateway import logs
from intercom_gateway.errors import GatewayError
from intercom_gateway.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from intercom_gateway.qa.scenario.loader import LoadedScenario
    from intercom_gateway.qa.scenario.runner import ScenarioResult

T = TypeVar("T")
LIBRARY = Path(__file__).resolve().parents[1] / "qa" / "scenarios"


@click.group()
def scenario() -> None:
    """QA scenarios: setup, timed steps and expectations in YAML, with a pass/fail report.

    The library of scenarios, one or more per clause of the privacy policy the gateway
    enforces, ships in the package (intercom_gateway/qa/scenarios/).
    `scenario schema` prints the file format.
    """


@scenario.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--broker-host", help="Use a running broker and gateway on this host.")
@click.option("--broker-port", type=int, help="Use a running broker and gateway on this port.")
@click.option(
    "--secrets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Accounts of the running broker (from `credentials generate`).",
)
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="JUnit XML here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--verbose", "-v", is_flag=True, help="Keep the gateway's log lines.")
@click.pass_context
def run(
    ctx: click.Context,
    paths: tuple[Path, ...],
    broker_host: str | None,
    broker_port: int | None,
    secrets_dir: Path | None,
    junit: Path | None,
    json_path: Path | None,
    verbose: bool,
) -> None:
    """Run scenario FILEs or every *.yaml of DIRs (default: the scenario library).

    By default it is self-contained: one Mosquitto with the project's configuration for
    the run and a fresh gateway per scenario. With --broker-port or --secrets-dir it
    uses a broker and gateway already running (start the gateway with the registry that
    `scenario registry FILE` prints). Exit status 0 only if every expectation held.

    Analytics copies are held until their window ends (INTERCOM_ANALYTICS_WINDOW, an
    hour by default): the self-contained gateway uses 0.5 s windows; start a running
    gateway with a window of a second or so to judge analytics expectations against it.
    """
    from rich.console import Console

    from intercom_gateway.qa.scenario.loader import load_scenarios
    from intercom_gateway.qa.scenario.report import print_report, write_reports

    if not verbose:
        logs.configure("WARNING")
    settings: Settings = ctx.obj["settings"] if ctx.obj else Settings()
    loaded = _or_fail(lambda: load_scenarios(list(paths) or [LIBRARY]))
    external = None
    if broker_port is not None or secrets_dir is not None or broker_host is not None:
        external = settings.model_copy(
            update={
                k: v
                for k, v in {
                    "broker_host": broker_host,
                    "broker_port": broker_port,
                    "secrets_dir": secrets_dir,
                }.items()
                if v is not None
            }
        )
    console = Console(stderr=True)
    results = _or_fail(lambda: asyncio.run(_run(loaded, external, console)))
    print_report(Console(), results)
    write_reports(results, junit=junit, json_path=json_path)
    sys.exit(0 if results and all(r.passed for r in results) else 1)


async def _run(
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

    loaded = _or_fail(lambda: load_scenarios(list(paths) or [LIBRARY]))
    for item in loaded:
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

    loaded = _or_fail(lambda: load_scenario(path))
    with tempfile.TemporaryDirectory() as tmp:
        world = _or_fail(
            lambda: build_world(loaded.scenario, source=loaded.path, workdir=Path(tmp))
        )
    click.echo(dump_registry(world.registry), nl=False)


def _or_fail(make: Callable[[], T]) -> T:
    try:
        return make()
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
