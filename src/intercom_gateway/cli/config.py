"""``config``: change the configuration of running gateways without a restart (§10)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import click

from intercom_gateway.cli.common import (
    EXIT_NO,
    EXIT_UNREACHABLE,
    broker_address,
    broker_options,
    db_option,
    echo_json,
    existing_store,
    group,
    registry_option,
    run,
    settings_of,
)


@group()
def config() -> None:
    """Live configuration (§10): policy, partner and device registry changes."""


@config.command("apply")
@broker_options
@db_option
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Privacy policy YAML [default: the gateway's, INTERCOM_POLICY_PATH].",
)
@click.option(
    "--partners",
    "partners_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Partner registry YAML [default: the gateway's, INTERCOM_PARTNERS_PATH].",
)
@registry_option("Device registry YAML [default: the gateway's, INTERCOM_REGISTRY_PATH].")
@click.option("--actor", help="Who makes the change, on record [default: the login name].")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the running gateways to confirm.",
)
@click.pass_context
def apply(ctx: click.Context, /, actor: str | None, timeout: float, **options: Any) -> None:
    """Validate the files, record them as the next configuration revision, announce it
    on gateway/v1/config, and wait until the running gateways confirm.

    Each gateway takes the revision up between two messages: every event is decided
    under one configuration, named on its copies (config_revision). Exit 0 when every
    gateway online confirmed, 1 when one refused it, 3 when none answered (the revision
    stays recorded: gateways take it up when they start) or one online did not.
    """
    from intercom_gateway.broker.mosquitto import OPERATOR
    from intercom_gateway.gateway.reconfigure import apply_config, load_files
    from intercom_gateway.store import open_store, sqlite_path

    settings = settings_of(ctx, **options)
    files = load_files(settings)  # every file validated before anything is recorded
    if (path := sqlite_path(settings)) is not None:
        existing_store(path)  # the gateways' store, not a new file no gateway reads
    address = broker_address(settings, OPERATOR)
    who = actor or getpass.getuser()

    async def go() -> Any:
        async with open_store(settings) as store:
            return await apply_config(address, store, files, actor=who, timeout=timeout)

    applied = run(go)
    echo_json(
        {
            "revision": applied.notice.revision,
            "policy_version": applied.notice.policy_version,
            "actor": who,
            "gateways": {g: a.model_dump(mode="json") for g, a in applied.answers.items()},
        }
    )
    for answer in applied.failed:
        click.echo(f"Error: {answer.gateway_id} refused it: {answer.detail}", err=True)
    for gateway_id in applied.missing:
        click.echo(f"Error: {gateway_id} is online but did not answer in {timeout:g} s", err=True)
    if applied.failed:
        sys.exit(EXIT_NO)
    if applied.missing:
        sys.exit(EXIT_UNREACHABLE)


COMMANDS = (config,)
