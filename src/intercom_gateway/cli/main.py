"""``intercom-gateway``: the command line. Settings are built once here and passed down."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from intercom_gateway import logs
from intercom_gateway.core import topics
from intercom_gateway.errors import GatewayError
from intercom_gateway.settings import Settings, retired_setting

T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    """Environment (INTERCOM_*) first, then the options given on the command line."""
    base: Settings = ctx.obj["settings"]
    given = {key: value for key, value in overrides.items() if value is not None}
    return base.model_copy(update=given) if given else base


def _run(coroutine: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coroutine())  # type: ignore[arg-type]
    except GatewayError as error:
        raise click.ClickException(str(error)) from error


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def broker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--broker-host", help="Broker host [env INTERCOM_BROKER_HOST]."),
            click.option("--broker-port", type=int, help="Broker port [env INTERCOM_BROKER_PORT]."),
            click.option(
                "--secrets-dir",
                type=click.Path(path_type=Path),
                help="Where `credentials generate` wrote the broker accounts "
                "[default .secrets/broker].",
            ),
        ]
    ):
        func = option(func)
    return func


@click.group(context_settings=CONTEXT)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log threshold [env INTERCOM_LOG_LEVEL, default INFO].",
)
@click.version_option(package_name="intercom-gateway")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """Apartment-intercom panel simulators and the consent-enforcing MQTT gateway.

    Panels publish events to Mosquitto; the gateway validates each one, applies the
    dwelling's consent and the privacy policy's purpose limits, and forwards it to the
    cloud, partner, group, analytics and statistics topics it is entitled to.

    Start with `intercom-gateway demo`; every command explains itself with --help.
    """
    retired = retired_setting(os.environ)
    if retired is not None:
        raise click.ClickException(retired)
    try:
        settings = Settings()
    except ValueError as error:
        raise click.ClickException(f"bad INTERCOM_* environment: {error}") from error
    if log_level:
        settings = settings.model_copy(update={"log_level": log_level.upper()})
    logs.configure(settings.log_level)
    ctx.obj = {"settings": settings}


@main.command()
@broker_options
@click.option("--gateway-id", help="Client id and name of this gateway [default gw-1].")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="SQLite store file.")
@click.option("--registry", "registry_path", type=click.Path(exists=True, path_type=Path))
@click.option("--policy", "policy_path", type=click.Path(exists=True, path_type=Path))
@click.option("--partners", "partners_path", type=click.Path(exists=True, path_type=Path))
@click.option("--share-group", help="MQTT 5 shared-subscription group, for several gateways.")
@click.pass_context
def run(ctx: click.Context, /, **options: Any) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (it finishes in-flight events first)."""
    from intercom_gateway.gateway.service import run_gateway

    settings = _settings(ctx, **options)

    async def serve() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        metrics = await run_gateway(settings, stop=stop, ready=_freeze_heap)
        click.echo(json.dumps(metrics.snapshot()), err=True)

    _run(serve)


def _freeze_heap(_gateway: object) -> None:
    """Take what start-up loaded out of the garbage collector's scans.

    The policy, registry, consents and modules live as long as the process. Left in
    the oldest generation, every full collection scanned them: 24-27 ms each, a stall
    every few seconds at 1,000 events/s. Frozen, a full collection takes 0.5-1.3 ms
    (docs/benchmarks.md). Only the ``run`` command does this; tests share a process.
    """
    gc.collect()
    gc.freeze()


@main.command()
@broker_options
@click.option(
    "--registry",
    "registry_path",
    type=click.Path(exists=True, path_type=Path),
    help="Device registry to simulate [default: the sample registry].",
)
@click.option("--buildings", type=int, help="Generate a fleet of this many buildings instead.")
@click.option(
    "--dwellings", type=int, default=20, show_default=True, help="...of this many dwellings each."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same events.")
@click.option(
    "--acceleration",
    type=float,
    default=3600.0,
    show_default=True,
    help="Simulated seconds per real second (3600: an hour a second).",
)
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
    from intercom_gateway.broker.mosquitto import load_credentials
    from intercom_gateway.bus import MqttBus
    from intercom_gateway.core.registry import generate_registry, load_registry
    from intercom_gateway.simulators.fleet import run_fleet
    from intercom_gateway.simulators.outbox import Outbox, ResendPolicy

    settings = _settings(ctx, **options)
    if buildings is not None:
        registry = generate_registry(buildings=buildings, dwellings=dwellings)
    else:
        registry = load_registry(registry_path or settings.registry_path)
    address = load_credentials(settings.secrets_dir).address(
        user, host=settings.broker_host, port=settings.broker_port
    )

    def show(topic: str, event: Any) -> None:
        if verbose:
            click.echo(f"{event.occurred_at:%Y-%m-%d %H:%M} {topic}")

    async def go() -> None:
        outbox = None
        if resend_timeout > 0:
            timeout = resend_timeout
            outbox = Outbox(ResendPolicy(timeout=timeout, max_timeout=max(timeout, 120.0)))
        async with MqttBus(
            address, client_id=address.client_id(f"simulator-{uuid.uuid4().hex[:8]}")
        ) as bus:
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
            _stop_on_signals(stop)
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():
                task.cancel()
                click.echo("stopped", err=True)
                return
            click.echo(task.result().render())

    _run(go)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Folder to write the JSON Schemas into.",
)
def schemas(out: Path) -> None:
    """Export the JSON Schema of every event, settings change and output envelope."""
    from intercom_gateway.contract.schemas import write_schemas

    for path in write_schemas(out):
        click.echo(path)


@main.command()
@click.argument("event_file", type=click.File("rb"), required=False)
@click.option("--event-id", help="Explain a past event from the decision log instead.")
@click.option(
    "--consent",
    "consent_file",
    type=click.File("rb"),
    help="Consent state as JSON (default: the dwelling's consent in the store).",
)
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="SQLite store file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def explain(
    ctx: click.Context,
    event_file: Any,
    event_id: str | None,
    consent_file: Any,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """Show, per destination, whether an event is forwarded and the rule or reason why.

    EVENT_FILE is an event as a panel sends it ('-' for stdin). With --event-id the
    answer comes from the decision log: where that event went, and why not elsewhere.
    """
    from intercom_gateway.gateway.explain import explain_event, explain_logged

    settings = _settings(ctx, db_path=db_path)
    if event_id is not None:
        text = _run(lambda: explain_logged(settings, event_id, as_json=as_json))
    elif event_file is not None:
        consent = consent_file.read() if consent_file is not None else None
        text = _run(lambda: explain_event(settings, event_file.read(), consent, as_json=as_json))
    else:
        raise click.UsageError("give an EVENT_FILE (or '-') or --event-id")
    click.echo(text)


@main.command()
@broker_options
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="seconds to wait for the retained status and metrics",
)
@click.option(
    "--stall-after",
    type=float,
    default=30.0,
    show_default=True,
    help="seconds a message may wait for its acknowledgement before the gateway counts as stuck",
)
@click.pass_context
def health(ctx: click.Context, /, timeout: float, stall_after: float, **options: Any) -> None:
    """Exit 0 if the gateway is online and making progress; print its status and metrics.

    Online alone is not enough: its retained metrics must be fresh (a hung loop stops
    publishing them) and no message may have waited longer than --stall-after.
    """
    from intercom_gateway.broker.mosquitto import OPERATOR, load_credentials
    from intercom_gateway.bus import MqttBus
    from intercom_gateway.core.health import verdict
    from intercom_gateway.core.models import utc_now

    settings = _settings(ctx, **options)
    address = load_credentials(settings.secrets_dir).address(
        OPERATOR, host=settings.broker_host, port=settings.broker_port
    )

    async def check() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with MqttBus(
            address, client_id=address.client_id(f"health-{uuid.uuid4().hex[:8]}")
        ) as bus:
            await bus.subscribe(topics.STATUS, topics.METRICS)

            async def read() -> None:
                async for message in bus.messages():
                    found[message.topic] = json.loads(message.payload)
                    if len(found) == 2:
                        return

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(read(), timeout)
        return found

    found = _run(check)
    status, metrics = found.get(topics.STATUS), found.get(topics.METRICS)
    click.echo(json.dumps({"status": status, "metrics": metrics}, indent=2))
    result = verdict(status, metrics, now=utc_now(), stall_after=stall_after)
    click.echo(f"health: {result.reason}", err=True)
    if not result.healthy:
        sys.exit(1)


def _register_extensions() -> None:
    from intercom_gateway.cli.bench import bench
    from intercom_gateway.cli.consent import consent
    from intercom_gateway.cli.load import load
    from intercom_gateway.cli.resident import api, ledger, resident
    from intercom_gateway.cli.scenario import scenario
    from intercom_gateway.cli.security import credentials, tls
    from intercom_gateway.cli.tokens import token
    from intercom_gateway.contract.asyncapi import asyncapi
    from intercom_gateway.qa.demo import demo

    main.add_command(consent)
    main.add_command(credentials)
    main.add_command(tls)
    main.add_command(resident)
    main.add_command(ledger)
    main.add_command(api)
    main.add_command(token)
    main.add_command(demo)
    main.add_command(scenario)
    main.add_command(load)
    main.add_command(asyncapi)
    main.add_command(bench)


_register_extensions()
