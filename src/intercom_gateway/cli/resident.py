"""``intercom-gateway resident``, ``ledger`` and ``api``: a resident's §8 requests, the
provision ledger's retention, and the HTTP API that serves the same requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from intercom_gateway.core.models import utc_now
from intercom_gateway.errors import GatewayError
from intercom_gateway.settings import Settings

T = TypeVar("T")


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    base: Settings = ctx.obj["settings"]
    given = {key: value for key, value in overrides.items() if value is not None}
    return base.model_copy(update=given) if given else base


def _run(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except GatewayError as error:
        raise click.ClickException(str(error)) from error


def _echo(answer: dict[str, Any]) -> None:
    click.echo(json.dumps(answer, indent=2, default=str))


def _ask(
    ctx: click.Context,
    db_path: Path | None,
    request: Callable[[Any], Awaitable[dict[str, Any]]],
    *,
    channel: Any = None,
) -> dict[str, Any]:
    from intercom_gateway.resident.service import open_desk

    settings = _settings(ctx, db_path=db_path)

    async def go() -> dict[str, Any]:
        async with open_desk(settings, via="cli", channel=channel) as desk:
            return await request(desk)

    return _run(go)


db_option = click.option(
    "--db", "db_path", type=click.Path(path_type=Path), help="SQLite store file."
)


def change_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--offline",
                is_flag=True,
                help="Write the change to the store instead of sending it to the gateway. "
                "Only while no gateway runs on this store: a running one keeps consent in "
                "memory and would not see it.",
            ),
            click.option("--broker-host"),
            click.option("--broker-port", type=int),
            click.option("--secrets-dir", type=click.Path(path_type=Path)),
            click.option("--timeout", type=float, default=10.0, show_default=True),
        ]
    ):
        func = option(func)
    return func


def _channel(ctx: click.Context, offline: bool, timeout: float, **broker: Any) -> Any:
    from intercom_gateway.resident.service import mqtt_channel

    # None: open_desk writes to the store (StoreChannel).
    return None if offline else mqtt_channel(_settings(ctx, **broker), timeout=timeout)


def _finish_change(answer: dict[str, Any]) -> None:
    _echo(answer)
    if answer["outcome"] != "done":
        raise SystemExit(1)


@click.group()
def resident() -> None:
    """A resident's requests (§8) for one dwelling; each is recorded with its outcome."""


@resident.command("purposes")
@click.argument("building")
@click.argument("dwelling")
@db_option
@click.pass_context
def purposes(ctx: click.Context, building: str, dwelling: str, db_path: Path | None) -> None:
    """Notification of purposes: which destination gets which events, for what."""
    _echo(_ask(ctx, db_path, lambda desk: desk.purposes(building, dwelling)))


@resident.command("disclose")
@click.argument("building")
@click.argument("dwelling")
@db_option
@click.pass_context
def disclose(ctx: click.Context, building: str, dwelling: str, db_path: Path | None) -> None:
    """Disclosure of what is held about the dwelling."""
    _echo(_ask(ctx, db_path, lambda desk: desk.disclose(building, dwelling)))


class DateError(click.ClickException):
    """A date bound out of range: one line, and click's exit status for a usage error."""

    exit_code = 2


def _bound(_: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    from intercom_gateway.core.dates import DateBoundError, parse_bound

    if value is None:
        return None
    try:
        return parse_bound(value, name=param.opts[0])
    except DateBoundError as error:
        raise DateError(str(error)) from None


_BOUNDS_HELP = "Years 2000..2999, offset within ±14:00."


@resident.command("provisions")
@click.argument("building")
@click.argument("dwelling")
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
        raise DateError(f"--from/--to: {error}") from None
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
        _echo(answer)


@resident.command("stop-provision")
@click.argument("building")
@click.argument("dwelling")
@click.argument("partner")
@change_options
@db_option
@click.pass_context
def stop_provision(
    ctx: click.Context,
    /,
    building: str,
    dwelling: str,
    partner: str,
    offline: bool,
    timeout: float,
    db_path: Path | None,
    **broker: Any,
) -> None:
    """Stop provision to one partner service (§8), from the very next event."""
    channel = _channel(ctx, offline, timeout, **broker)
    _finish_change(
        _ask(
            ctx,
            db_path,
            lambda desk: desk.stop_provision(building, dwelling, partner),
            channel=channel,
        )
    )


@resident.command("stop-use")
@click.argument("building")
@click.argument("dwelling")
@change_options
@db_option
@click.pass_context
def stop_use(
    ctx: click.Context,
    /,
    building: str,
    dwelling: str,
    offline: bool,
    timeout: float,
    db_path: Path | None,
    **broker: Any,
) -> None:
    """Suspend use (§8): every optional purpose and every partner service."""
    channel = _channel(ctx, offline, timeout, **broker)
    _finish_change(
        _ask(ctx, db_path, lambda desk: desk.stop_use(building, dwelling), channel=channel)
    )


@resident.command("erase")
@click.argument("building")
@click.argument("dwelling")
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
    _echo(_ask(ctx, db_path, lambda desk: desk.erase(building, dwelling)))


# A century: longer than any retention a law asks for, and far from the end of the
# calendar, so "now minus the retention" can always be computed.
MAX_RETENTION_DAYS = 36_525


@click.group()
def ledger() -> None:
    """The provision ledger (§8, APPI): retention."""


@ledger.command("purge")
@click.option(
    "--older-than-days",
    type=click.IntRange(1, MAX_RETENTION_DAYS),
    help="Retention in days [env INTERCOM_LEDGER_RETENTION_DAYS, default 1096: three years].",
)
@db_option
@click.pass_context
def purge(ctx: click.Context, older_than_days: int | None, db_path: Path | None) -> None:
    """Delete ledger rows older than the retention period, and only those."""
    from intercom_gateway.store.sqlite import SqliteStore

    settings = _settings(ctx, db_path=db_path, ledger_retention_days=older_than_days)
    if settings.ledger_retention_days > MAX_RETENTION_DAYS:  # from the environment
        raise DateError(
            f"INTERCOM_LEDGER_RETENTION_DAYS={settings.ledger_retention_days}"
            f" is more than {MAX_RETENTION_DAYS} days (100 years)"
        )
    if not settings.db_path.exists():
        raise click.ClickException(f"no store at {settings.db_path}")
    before = utc_now() - timedelta(days=settings.ledger_retention_days)

    async def go() -> int:
        async with SqliteStore.open(settings.db_path) as store:
            return await store.purge_ledger(before=before)

    deleted = _run(go)
    _echo(
        {"deleted": deleted, "before": before.isoformat(), "days": settings.ledger_retention_days}
    )


@click.command("api")
@click.option("--host", help="Interface to listen on [env INTERCOM_API_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Port [env INTERCOM_API_PORT, default 8080].")
@click.option("--broker-host")
@click.option("--broker-port", type=int)
@click.option("--secrets-dir", type=click.Path(path_type=Path))
@db_option
@click.pass_context
def api(ctx: click.Context, /, host: str | None, port: int | None, **options: Any) -> None:
    """Serve the resident-request HTTP API (OpenAPI at /docs); needs INTERCOM_API_TOKEN.

    The operator's token reaches every dwelling; a resident token (`token issue`)
    reaches its own dwelling's routes only.
    """
    import uvicorn

    from intercom_gateway.resident.api import create_app

    settings = _settings(ctx, api_host=host, api_port=port, **options)
    try:
        app = create_app(settings)
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info")
