"""``intercom-gateway consent``: a dwelling's consent, shown from the store or changed
over MQTT exactly as the resident changes it on the dwelling panel."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import click

from intercom_gateway.core.models import SETTINGS_ADAPTER, utc_now
from intercom_gateway.errors import GatewayError
from intercom_gateway.resident.service import send_as_panel
from intercom_gateway.settings import Settings


@click.group()
def consent() -> None:
    """Show or change one dwelling's consent."""


@consent.command("show")
@click.argument("building")
@click.argument("dwelling")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="SQLite store file.")
@click.option("--history/--no-history", default=True, show_default=True)
@click.pass_context
def show(
    ctx: click.Context, building: str, dwelling: str, db_path: Path | None, history: bool
) -> None:
    """Print the dwelling's current consent and the history of changes to it."""
    from intercom_gateway.store.sqlite import SqliteStore

    settings: Settings = ctx.obj["settings"]
    path = db_path or settings.db_path
    if not path.exists():
        raise click.ClickException(f"no store at {path}: has the gateway run here?")

    async def read() -> dict[str, Any]:
        async with SqliteStore.open(path) as store:
            state = (await store.consents()).get((building, dwelling))
            stored = await store.consent_history(building, dwelling) if history else []
        changes = [c.as_dict() for c in stored]
        return {"current": state.model_dump(mode="json") if state else None, "history": changes}

    click.echo(json.dumps(asyncio.run(read()), indent=2, default=str))


def _change_body(
    register: str | None,
    initialise: bool,
    return_home: bool | None,
    use: str | None,
    stop: str | None,
    opt_out: str | None,
    opt_in: str | None,
    accept: str | None,
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
    ]
    chosen = [body for body in bodies if body is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one change (see --help)")
    return chosen[0]


@consent.command("set")
@click.argument("building")
@click.argument("dwelling")
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
@click.option("--broker-host")
@click.option("--broker-port", type=int)
@click.option("--secrets-dir", type=click.Path(path_type=Path))
@click.option("--timeout", type=float, default=10.0, show_default=True)
@click.pass_context
def set_(
    ctx: click.Context,
    /,
    building: str,
    dwelling: str,
    return_home: str | None,
    broker_host: str | None,
    broker_port: int | None,
    secrets_dir: Path | None,
    timeout: float,
    **changes: Any,
) -> None:
    """Change one setting, sent on the dwelling panel's settings topic as the panel.

    The gateway applies it before the next message it takes, stores it in the
    dwelling's history, and acknowledges; this command waits for and prints that
    acknowledgement.
    """
    settings: Settings = ctx.obj["settings"]
    body = _change_body(return_home=None if return_home is None else return_home == "on", **changes)
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
    device = _dwelling_panel(settings, building, dwelling)
    try:
        ack = asyncio.run(
            send_as_panel(
                change,
                device=device,
                host=broker_host or settings.broker_host,
                port=broker_port or settings.broker_port,
                secrets_dir=secrets_dir or settings.secrets_dir,
                timeout=timeout,
            )
        )
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    click.echo(ack.model_dump_json(indent=2))
    if not ack.applied:
        raise SystemExit(1)


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
    raise click.ClickException(f"no dwelling panel for {building}/{dwelling} in the registry")
