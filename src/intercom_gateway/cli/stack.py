"""The developer's dev stack: ``up``, ``down`` and ``status`` (``qa.stack``).

While ``up`` runs, the other commands started with the same state folder (the current
folder's ``var/stack`` unless ``--state-dir`` or INTERCOM_STATE_DIR says otherwise) use
its broker, accounts, store and gateway id by default (``qa.stackfile``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from intercom_gateway.cli.common import (
    EXIT_NO,
    echo_json,
    registry_option,
    settings_of,
    stopped_by_signals,
)

if TYPE_CHECKING:
    from intercom_gateway.qa.stackfile import StackState
    from intercom_gateway.settings import Settings

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The stack's state folder [env INTERCOM_STATE_DIR, default var/stack].",
)


@click.command()
@state_dir_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=18830,
    show_default=True,
    help="The broker's MQTT port; 0 takes any free port. Not 1883: Debian's own "
    "Mosquitto listens there.",
)
@click.option(
    "--tls-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="The broker's MQTT-over-TLS port (a development CA); 0 takes any free port.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@registry_option("Device registry [env INTERCOM_REGISTRY_PATH, default: the packaged sample].")
@click.option("--gateway-id", help="The gateway's id [env INTERCOM_GATEWAY_ID, default gw-1].")
@click.option(
    "--gateway/--no-gateway",
    default=True,
    show_default=True,
    help="--no-gateway starts the broker only, for a gateway you run yourself "
    "(`intercom-gateway run` picks the stack up).",
)
@click.pass_context
def up(ctx: click.Context, /, **options: Any) -> None:
    """Start the dev stack: the project's Mosquitto and a gateway, until Ctrl-C or `down`.

    Prints what a partner needs to connect (host, port, account, topics). While it runs,
    `consent`, `resident`, `simulate`, `health`, `api`, `run` and `explain` started from
    this folder use it with no flags; `load` and `scenario run` with --stack. The state
    folder keeps the store, accounts and logs across restarts; SIGTERM, SIGHUP or Ctrl-C
    stop the gateway (it drains), then the broker, and remove the state file.
    """
    from intercom_gateway.qa.stack import StackOptions, serve_stack

    settings = settings_of(
        ctx,
        state_dir=options["state_dir"],
        registry_path=options["registry_path"],
        gateway_id=options["gateway_id"],
    )
    stack_options = StackOptions(
        state_dir=settings.state_dir.resolve(),
        host=options["host"],
        port=options["port"],
        tls_port=options["tls_port"],
        gateway=options["gateway"],
    )
    received: list[int] = []
    work = serve_stack(settings, stack_options, ready=lambda state: _announce(state, settings))
    asyncio.run(stopped_by_signals(work, received))
    name = signal.Signals(received[0]).name if received else "its end"
    click.echo(f"up: stopped by {name}; the gateway and the broker are stopped", err=True)


def _announce(state: StackState, settings: Settings) -> None:
    """What a developer and a partner need, printed once the stack serves."""
    from intercom_gateway.broker.mosquitto import load_credentials
    from intercom_gateway.core import topics
    from intercom_gateway.core.policy import load_partners, load_policy

    passwords = load_credentials(state.secrets_dir).passwords
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    lines = [
        f"dev stack up from {state.state_dir} (pid {state.up_pid}):"
        " Ctrl-C or `intercom-gateway down` stops it",
        f"  broker    mqtt://{state.where}  MQTT 5; TLS on port {state.tls_port}"
        f" (CA {state.ca_file})",
    ]
    if state.gateway:
        lines.append(f"  gateway   {state.gateway_id}, store {state.db_path}")
        lines.append(f"  metrics   {state.metrics_url}  (Prometheus; docs/grafana has a dashboard)")
    else:
        lines.append("  gateway   none (--no-gateway): `intercom-gateway run` here starts one")
    lines += [
        f"  accounts  {state.secrets_dir / 'credentials.json'} (every account and password)",
        f"  API       `intercom-gateway api` here; operator token in {state.api_token_file}",
        "  partners  each reads only its own topics; client id <account> or <account>.<suffix>",
    ]
    for service in partners.services:
        password = passwords.get(service.id, "?")
        filter_ = topics.partner_filter(service.id)
        lines.append(f"    {service.id:<22} password {password}  subscribe {filter_}")
    for line in lines:
        click.echo(line)


@click.command()
@state_dir_option
@click.pass_context
def down(ctx: click.Context, /, state_dir: Path | None) -> None:
    """Stop the dev stack running from the state folder (its gateway drains first).

    The state folder stays (store, accounts, logs): the next `up` goes on from it.
    """
    from intercom_gateway.qa.stack import stop_stack

    folder = settings_of(ctx, state_dir=state_dir).state_dir
    stopped = stop_stack(folder)
    if stopped is None:
        click.echo(f"down: no dev stack runs from {folder}; nothing to stop", err=True)
        return
    click.echo(f"down: stopped the dev stack from {folder} (broker {stopped.where})", err=True)


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, /, state_dir: Path | None, as_json: bool) -> None:
    """Show the dev stack: its broker, its processes, its gateway's own status.

    Exit 0 if it runs and its gateway is online (or it has none), 1 otherwise.
    """
    from intercom_gateway.qa.stack import describe_stack

    folder = settings_of(ctx, state_dir=state_dir).state_dir
    report = describe_stack(folder)
    if as_json:
        echo_json(report)
    else:
        for key, value in report.items():
            click.echo(f"{key:<10} {value}")
    if not report["healthy"]:
        sys.exit(EXIT_NO)


COMMANDS = (up, down, status)
