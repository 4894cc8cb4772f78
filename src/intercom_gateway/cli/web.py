"""The HTTP commands: ``api`` (the resident-request API) and ``console`` (the same app,
pointing at its operator's console): one app, one way to start it (``_serve``).
"""

from __future__ import annotations

from typing import Any

import click

from intercom_gateway.cli.common import broker_options, db_option, require_gateway, settings_of
from intercom_gateway.errors import ConfigError
from intercom_gateway.settings import Settings


@click.command("api")
@click.option("--host", help="Interface to listen on [env INTERCOM_API_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Port [env INTERCOM_API_PORT, default 8080].")
@broker_options
@db_option
@click.pass_context
def api(ctx: click.Context, /, host: str | None, port: int | None, **given: Any) -> None:
    """Serve the resident-request HTTP API (OpenAPI at /docs and /redoc, the operator's
    console at /console/, no internet needed); needs INTERCOM_API_TOKEN and the
    gateway's store (--db).

    The operator's token (INTERCOM_API_TOKEN, a secret you choose) reaches every
    dwelling; a resident token (`token issue`) reaches its own dwelling's routes only.
    The store is the one the gateway writes (`run` makes it); --db or INTERCOM_DB_PATH
    says where it is.
    """
    _serve(ctx, host, port, given, console=False)


@click.command("console")
@click.option("--host", help="Interface to listen on [env INTERCOM_API_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Port [env INTERCOM_API_PORT, default 8080].")
@broker_options
@db_option
@click.pass_context
def console(ctx: click.Context, /, host: str | None, port: int | None, **given: Any) -> None:
    """Serve the operator's web console at /console (the same app as `api`): the live
    flow, each event's decision, dwellings and consent, the ledger, rejected input and
    health; log in with INTERCOM_API_TOKEN or a resident token (its dwelling only).

    Every page and asset is served by the app itself: no internet needed.
    """
    _serve(ctx, host, port, given, console=True)


def _serve(
    ctx: click.Context, host: str | None, port: int | None, given: dict[str, Any], *, console: bool
) -> None:
    try:
        import uvicorn

        from intercom_gateway.resident.api import create_app
    except ImportError as error:
        raise ConfigError(
            f"the API needs the api extra ({error.name} is missing): "
            "pip install 'intercom-gateway[api]'"
        ) from error

    settings = settings_of(ctx, api_host=host, api_port=port, **given)
    _check_api_needs(settings)
    _say_if_no_gateway(settings)
    app = create_app(settings)
    where = f"http://{settings.api_host}:{settings.api_port}"
    from intercom_gateway.store.opening import describe_store

    if console:
        click.echo(f"console on {where}/console/ (log in with INTERCOM_API_TOKEN)", err=True)
    click.echo(
        f"API on {where} (docs: {where}/docs, console: {where}/console/),"
        f" store {describe_store(settings)}",
        err=True,
    )
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info")


def _say_if_no_gateway(settings: Settings) -> None:
    """One line at start if no gateway answers: reads work, changes are refused (503)."""
    from intercom_gateway.errors import BusError

    try:
        require_gateway(settings)
    except BusError as error:
        click.echo(
            f"Note: {error}; until one does, the API serves reads and refuses changes (503)",
            err=True,
        )


def _check_api_needs(settings: Settings) -> None:
    """Everything the API lacks, in one line: the operator's token, the store."""
    from intercom_gateway.resident.api import TOKEN_NEEDED, has_token
    from intercom_gateway.store.opening import sqlite_path

    missing = [] if has_token(settings) else [TOKEN_NEEDED]
    if (path := sqlite_path(settings)) is not None and not path.exists():
        missing.append(
            f"{path}: no store here: has the gateway run? (`run` makes it; "
            "--db or INTERCOM_DB_PATH names another)"
        )
    if missing:
        raise ConfigError("; and ".join(missing))


COMMANDS = (api, console)
