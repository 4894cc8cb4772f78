"""``intercom-gateway``: the root command. Settings are built once here and passed down.

The commands live with the people who use them: ``gateway`` (the operator), ``resident``
and ``tokens`` (a resident's consent, requests and API tokens), ``web`` (the HTTP API and
the operator's console), ``qa`` and ``load`` (QA and developers), ``security`` (broker
accounts and TLS). ``common`` holds what they share,
with the one mapping from errors to exit statuses.
"""

from __future__ import annotations

import os

import click
from pydantic import ValidationError

from intercom_gateway import logs
from intercom_gateway.cli import (
    config,
    distribute,
    gateway,
    qa,
    resident,
    security,
    stack,
    tokens,
    web,
)
from intercom_gateway.cli.common import cli_error, group, validation_line
from intercom_gateway.qa.stackfile import apply_stack, running_stack
from intercom_gateway.settings import Settings, retired_setting


@group()
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log threshold [env INTERCOM_LOG_LEVEL, default INFO].",
)
@click.option(
    "--debug",
    is_flag=True,
    help="On an error, print its traceback too [env INTERCOM_DEBUG=1].",
)
@click.version_option(package_name="intercom-gateway", help="Show the version and exit.")
@click.pass_context
def main(ctx: click.Context, log_level: str | None, debug: bool) -> None:
    """Apartment-intercom panel simulators and the consent-enforcing MQTT gateway.

    Panels publish events to Mosquitto; the gateway validates each one, applies the
    dwelling's consent and the privacy policy's purpose limits, and forwards it to the
    cloud, partner, group, analytics and statistics topics it is entitled to.

    Start with `intercom-gateway demo`, or `intercom-gateway up` for a dev stack that
    the other commands then use; every command explains itself with --help.
    Exit status: 0 done, 1 no (or a user error), 2 usage, 3 broker or gateway
    unreachable, 4 invalid input, 70 internal error (README, "Exit codes").
    """
    retired = retired_setting(os.environ)
    if retired is not None:
        raise click.ClickException(retired)
    try:
        settings = Settings()
    except ValidationError as error:
        raise cli_error(f"bad INTERCOM_* environment: {validation_line(error)}") from error
    if log_level:
        settings = settings.model_copy(update={"log_level": log_level.upper()})
    logs.configure(settings.log_level)
    running, note = running_stack(settings.state_dir)
    if note is not None and ctx.invoked_subcommand not in ("up", "down", "status"):
        click.echo(f"Note: {note}", err=True)
    if running is not None:
        settings = apply_stack(settings, running)
    # --debug is read by common.debugging; "stack" by the commands that must not clash
    # with the dev stack's own gateway (`run`).
    ctx.obj = {"settings": settings, "stack": running}


for module in (stack, gateway, config, resident, web, tokens, qa, security, distribute):
    for command in module.COMMANDS:
        main.add_command(command)
