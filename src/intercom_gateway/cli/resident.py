"""A resident's commands: their dwelling's consent (``consent``) and their §8 requests
(``resident``); the HTTP API that serves the same requests, and the operator's console,
are ``web``'s.

A consent change goes over MQTT exactly as the resident makes it on the dwelling panel;
the requests are recorded with their outcome, whichever way they come in.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from intercom_gateway.cli.common import (
    EXIT_NO,
    broker_options,
    db_option,
    dwelling_arguments,
    echo_json,
    existing_store,
    group,
    options,
    require_gateway,
    run,
    settings_of,
    usage_error,
)
from intercom_gateway.errors import ConfigError
from intercom_gateway.settings import Settings

timeout_option = click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the gateway's acknowledgement.",
)


# --- consent ---------------------------------------------------------------------------


@group()
def consent() -> None:
    """Show or change one dwelling's consent."""


@consent.command("show")
@dwelling_arguments
@db_option
@click.option(
    "--history/--no-history",
    default=True,
    show_default=True,
    help="Also print every change to the consent, oldest first.",
)
@click.pass_context
def show(
    ctx: click.Context, building: str, dwelling: str, db_path: Path | None, history: bool
) -> None:
    """Print the dwelling's current consent and the history of changes to it."""
    from intercom_gateway.store.opening import open_store, sqlite_path

    settings = settings_of(ctx, db_path=db_path)
    if (path := sqlite_path(settings)) is not None:
        existing_store(path)

    async def read() -> dict[str, Any]:
        async with open_store(settings) as store:
            state = (await store.consents()).get((building, dwelling))
            stored = await store.consent_history(building, dwelling) if history else []
        changes = [change.as_dict() for change in stored]
        return {"current": state.model_dump(mode="json") if state else None, "history": changes}

    echo_json(run(read))


def _change_body(
    register: str | None,
    initialise: bool,
    return_home: bool | None,
    use: str | None,
    stop: str | None,
    opt_out: str | None,
    opt_in: str | None,
    accept: str | None,
    intercom_app: bool | None = None,
) -> dict[str, Any]:
    bodies = [
        {"kind": "register", "policy_version": register} if register else None,
        {"kind": "initialise"} if initialise else None,
        {"kind": "return_home_notification", "enabled": return_home}
        if return_home is not None
        else None,
        {"kind": "service_use", "partner_id": use, "used": True} if use else None,
        {"kind": "service_use", "partner_id": stop, "used": False} if stop else None,
        {"kind": "purpose_opt_out", "purpose": opt_out, "opted_out": True} if opt_out else None,
        {"kind": "purpose_opt_out", "purpose": opt_in, "opted_out": False} if opt_in else None,
        {"kind": "accept_policy", "policy_version": accept} if accept else None,
        {"kind": "intercom_app", "linked": intercom_app} if intercom_app is not None else None,
    ]
    chosen = [body for body in bodies if body is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one change (see --help)")
    return chosen[0]


@consent.command("set")
@dwelling_arguments
@click.option("--register", metavar="VERSION", help="Move-in: register under a policy version.")
@click.option("--initialise", is_flag=True, help="Move-out (§7(1)①): stop all collection.")
@click.option(
    "--return-home",
    type=click.Choice(["on", "off"]),
    help="Return-home notification (§7(1)②).",
)
@click.option("--use", metavar="SERVICE", help="Start using a partner or unlock-mode service.")
@click.option("--stop", metavar="SERVICE", help="Stop provision to a service (§8).")
@click.option("--opt-out", metavar="PURPOSE", help="Suspend an opt-out-able purpose (§8).")
@click.option("--opt-in", metavar="PURPOSE", help="Resume a purpose opted out of.")
@click.option("--accept", metavar="VERSION", help="Accept a new policy version (§10).")
@click.option(
    "--intercom-app",
    type=click.Choice(["on", "off"]),
    help="Handsets linked to the Intercom app (§7(2)): lobby calls (§2(4)) reach it.",
)
@broker_options
@timeout_option
@click.pass_context
def set_(
    ctx: click.Context,
    /,
    building: str,
    dwelling: str,
    return_home: str | None,
    intercom_app: str | None,
    broker_host: str | None,
    broker_port: int | None,
    secrets_dir: Path | None,
    timeout: float,
    **changes: Any,
) -> None:
    """Change one setting, sent on the dwelling panel's settings topic as the panel.

    The gateway applies it before the next message it takes, stores it in the
    dwelling's history, and acknowledges; this command waits for and prints that
    acknowledgement (exit 1 if the gateway refused the change, 3 if it did not answer).
    """
    from intercom_gateway.core.models import SETTINGS_ADAPTER, utc_now
    from intercom_gateway.resident.channels import send_as_panel

    body = _change_body(
        return_home=None if return_home is None else return_home == "on",
        intercom_app=None if intercom_app is None else intercom_app == "on",
        **changes,
    )
    change = SETTINGS_ADAPTER.validate_json(
        json.dumps(
            {
                "change_id": str(uuid.uuid4()),
                "building_id": building,
                "dwelling_id": dwelling,
                "requested_at": utc_now().isoformat(),
                "change": body,
            }
        )
    )
    settings = settings_of(
        ctx, broker_host=broker_host, broker_port=broker_port, secrets_dir=secrets_dir
    )
    device = _dwelling_panel(settings, building, dwelling)
    require_gateway(settings)
    ack = run(
        lambda: send_as_panel(
            change,
            device=device,
            host=settings.broker_host,
            port=settings.broker_port,
            secrets_dir=settings.secrets_dir,
            timeout=timeout,
        )
    )
    click.echo(ack.model_dump_json(indent=2))
    if not ack.applied:
        raise SystemExit(EXIT_NO)


def _dwelling_panel(settings: Settings, building: str, dwelling: str) -> str:
    from intercom_gateway.core.models import DeviceRole
    from intercom_gateway.core.registry import load_registry

    for b, device in load_registry(settings.registry_path).devices():
        if (
            b.id == building
            and device.role is DeviceRole.DWELLING_PANEL
            and device.dwelling == dwelling
        ):
            return device.id
    raise ConfigError(f"no dwelling panel for {building}/{dwelling} in the registry")


# --- resident requests (§8) --------------------------------------------------------------


def _ask(
    ctx: click.Context,
    db_path: Path | None,
    request: Callable[[Any], Awaitable[dict[str, Any]]],
    *,
    channel: Any = None,
) -> dict[str, Any]:
    from intercom_gateway.resident.desk import open_desk

    settings = settings_of(ctx, db_path=db_path)

    async def go() -> dict[str, Any]:
        async with open_desk(settings, via="cli", channel=channel) as desk:
            return await request(desk)

    return run(go)


change_options = options(
    click.option(
        "--offline",
        is_flag=True,
        help="Write the change to the store instead of sending it to the gateway. "
        "Only while no gateway runs on this store: a running one keeps consent in "
        "memory and would not see it.",
    ),
    broker_options,
    timeout_option,
    db_option,
)


def _change(
    ctx: click.Context,
    request: Callable[[Any], Awaitable[dict[str, Any]]],
    *,
    offline: bool,
    timeout: float,
    db_path: Path | None,
    **broker: Any,
) -> None:
    """Make one change (the options of ``change_options``), print it; exit 1 unless done."""
    from intercom_gateway.resident.channels import mqtt_channel

    # None: open_desk writes to the store (StoreChannel). The MQTT channel refuses
    # (`NoGateway`, exit 3) unless our gateway is online on the broker.
    channel = None if offline else mqtt_channel(settings_of(ctx, **broker), timeout=timeout)
    answer = _ask(ctx, db_path, request, channel=channel)
    echo_json(answer)
    if answer["outcome"] != "done":
        raise SystemExit(EXIT_NO)


@group()
def resident() -> None:
    """A resident's requests (§8) for one dwelling; each is recorded with its outcome."""


@resident.command("purposes")
@dwelling_arguments
@db_option
@click.pass_context
def purposes(ctx: click.Context, building: str, dwelling: str, db_path: Path | None) -> None:
    """Notification of purposes: which destination gets which events, for what."""
    echo_json(_ask(ctx, db_path, lambda desk: desk.purposes(building, dwelling)))


@resident.command("disclose")
@dwelling_arguments
@db_option
@click.pass_context
def disclose(ctx: click.Context, building: str, dwelling: str, db_path: Path | None) -> None:
    """Disclosure of what is held about the dwelling."""
    echo_json(_ask(ctx, db_path, lambda desk: desk.disclose(building, dwelling)))


def _bound(_: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    from intercom_gateway.core.dates import DateBoundError, parse_bound

    if value is None:
        return None
    try:
        return parse_bound(value, name=param.opts[0])
    except DateBoundError as error:
        raise usage_error(str(error)) from None


_BOUNDS_HELP = "Years 2000..2999, offset within ±14:00."


@resident.command("provisions")
@dwelling_arguments
@click.option(
    "--from",
    "start",
    callback=_bound,
    help=f"ISO date or date-time, inclusive (UTC if no zone). {_BOUNDS_HELP}",
)
@click.option(
    "--to",
    "end",
    callback=_bound,
    help=f"ISO date or date-time, exclusive (UTC if no zone); not before --from. {_BOUNDS_HELP}",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="JSON with the request on record, or the records alone as CSV.",
)
@click.option("--third-party-only", is_flag=True, help="Leave out joint use within the group.")
@db_option
@click.pass_context
def provisions(
    ctx: click.Context,
    /,
    building: str,
    dwelling: str,
    start: datetime | None,
    end: datetime | None,
    fmt: str,
    third_party_only: bool,
    db_path: Path | None,
) -> None:
    """Disclosure of the records of provision (APPI): when, to whom, which items, why."""
    from intercom_gateway.core.dates import DateBoundError, check_order
    from intercom_gateway.resident.service import provisions_csv

    try:
        check_order(start, end)
    except DateBoundError as error:
        raise usage_error(f"--from/--to: {error}") from None
    answer = _ask(
        ctx,
        db_path,
        lambda desk: desk.provisions(
            building, dwelling, start=start, end=end, third_party_only=third_party_only
        ),
    )
    if fmt == "csv":
        click.echo(provisions_csv(answer["records"]), nl=False)
    else:
        echo_json(answer)


@resident.command("stop-provision")
@dwelling_arguments
@click.argument("partner")
@change_options
@click.pass_context
def stop_provision(
    ctx: click.Context, /, building: str, dwelling: str, partner: str, **change: Any
) -> None:
    """Stop provision to one partner service (§8), from the very next event."""
    _change(ctx, lambda desk: desk.stop_provision(building, dwelling, partner), **change)


@resident.command("stop-use")
@dwelling_arguments
@change_options
@click.pass_context
def stop_use(ctx: click.Context, /, building: str, dwelling: str, **change: Any) -> None:
    """Suspend use (§8): every optional purpose and every partner service."""
    _change(ctx, lambda desk: desk.stop_use(building, dwelling), **change)


@resident.command("erase")
@dwelling_arguments
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
@click.pass_context
def erase(
    ctx: click.Context, building: str, dwelling: str, yes: bool, db_path: Path | None
) -> None:
    """Erase what may be erased (decision log, rejected input); says what is kept and why."""
    if not yes:
        click.confirm(
            f"Erase the decision log and rejected input of {building}/{dwelling}?", abort=True
        )
    echo_json(_ask(ctx, db_path, lambda desk: desk.erase(building, dwelling)))


COMMANDS = (consent, resident)
