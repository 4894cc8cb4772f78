"""``intercom-gateway token``: resident API tokens, one dwelling each (see
``resident/tokens.py``); with ``consent``, ``resident`` and ``api`` the resident's side.

The secret of a token is printed once, when it is issued, and never stored; every issue
and revoke is written to the audit trail with who did it (``cli:<user>``) and when.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from intercom_gateway.cli.common import (
    db_option,
    dwelling_arguments,
    echo_table,
    existing_store,
    group,
    json_option,
    options,
    run,
    settings_of,
)
from intercom_gateway.core.models import utc_now
from intercom_gateway.errors import GatewayError
from intercom_gateway.resident.tokens import (
    IssuedToken,
    TokenBook,
    TokenInfo,
    UnknownToken,
    token_id_of,
)
from intercom_gateway.store import Store

T = TypeVar("T")

MAX_LABEL = 200
MAX_EXPIRES_DAYS = 3_650  # ten years; a token is renewed by issuing a new one


def _actor() -> str:
    """Who is at the command line, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return f"cli:uid-{os.getuid()}"


def _with_book(
    ctx: click.Context, db_path: Path | None, work: Callable[[Store, TokenBook], Awaitable[T]]
) -> T:
    from intercom_gateway.store.opening import open_store, sqlite_path

    settings = settings_of(ctx, db_path=db_path)
    if (path := sqlite_path(settings)) is not None:
        existing_store(path)

    async def go() -> T:
        async with open_store(settings) as store:
            return await work(store, TokenBook(store))

    return run(go)


def _label(_: click.Context, __: click.Parameter, value: str) -> str:
    if len(value) > MAX_LABEL or not value.isprintable():
        raise click.BadParameter(f"one printable line of at most {MAX_LABEL} characters")
    return value


def _dwelling_pair(building: str | None, dwelling: str | None) -> tuple[str | None, str | None]:
    if (building is None) != (dwelling is None):
        raise click.UsageError("give both BUILDING and DWELLING, or neither")
    return building, dwelling


@group()
def token() -> None:
    """Resident API tokens: each reaches one dwelling's routes of the HTTP API only.

    Give one to a resident's app instead of the operator's INTERCOM_API_TOKEN. Every
    issue and revoke is on record (`token audit`).
    """


@token.command("issue")
@dwelling_arguments
@click.option(
    "--label",
    default="",
    callback=_label,
    help="A note for operators: whose app it is for (shown by `token list`; not in the "
    "resident's disclosure).",
)
@click.option(
    "--expires-days",
    type=click.IntRange(1, MAX_EXPIRES_DAYS),
    default=365,
    show_default=True,
    help=f"Days until the token stops working (at most {MAX_EXPIRES_DAYS}).",
)
@json_option
@db_option
@click.pass_context
def issue(
    ctx: click.Context,
    /,
    building: str,
    dwelling: str,
    label: str,
    expires_days: int,
    as_json: bool,
    db_path: Path | None,
) -> None:
    """Issue a token for BUILDING/DWELLING and print it, once: only its hash is kept."""

    async def work(store: Store, book: TokenBook) -> IssuedToken:
        if not await store.dwelling_known(building, dwelling):
            raise GatewayError(f"unknown dwelling {building}/{dwelling}")
        now = utc_now().replace(microsecond=0)
        expires_at = now + timedelta(days=expires_days)
        return await book.issue(
            building, dwelling, label=label, expires_at=expires_at, actor=_actor(), now=now
        )

    issued = _with_book(ctx, db_path, work)
    if as_json:
        click.echo(json.dumps({**issued.info.listed(utc_now()), "token": issued.token}, indent=2))
        return
    info = issued.info
    click.echo(f"token id: {info.token_id}")
    click.echo(f"dwelling: {info.building_id}/{info.dwelling_id}")
    click.echo(f"expires:  {info.expires_at.isoformat() if info.expires_at else 'never'}")
    click.echo(f"token:    {issued.token}")
    click.echo(
        "The token is shown this once (only its hash is stored). Revoke it with "
        f"`intercom-gateway token revoke {info.token_id}`.",
        err=True,
    )


# BUILDING DWELLING, or neither: every dwelling's.
listing_options = options(
    click.argument("building", required=False),
    click.argument("dwelling", required=False),
    json_option,
    db_option,
)
Listed = list[dict[str, Any]]


def _echo_listing(
    ctx: click.Context,
    read: Callable[[TokenBook, str | None, str | None], Awaitable[Listed]],
    *,
    columns: tuple[str, ...],
    moments: tuple[str, ...],
    building: str | None,
    dwelling: str | None,
    as_json: bool,
    db_path: Path | None,
) -> None:
    """The rows ``read`` gives (one dwelling's or all), as JSON or a table of ``columns``."""
    key = _dwelling_pair(building, dwelling)
    rows = _with_book(ctx, db_path, lambda _, book: read(book, *key))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [
        {**row, "dwelling": f"{row['building_id']}/{row['dwelling_id']}"}
        | {k: _short(row[k]) for k in moments}
        for row in rows
    ]
    echo_table(columns, table)


@token.command("list")
@listing_options
@click.pass_context
def list_tokens(ctx: click.Context, /, **listing: Any) -> None:
    """List tokens (of BUILDING DWELLING, or all): id, dwelling, label, dates, state.

    Never the secret: it is not stored.
    """

    async def read(book: TokenBook, building: str | None, dwelling: str | None) -> Listed:
        infos: list[TokenInfo] = await book.tokens(building, dwelling)
        now = utc_now()
        return [info.listed(now) for info in infos]

    columns = ("token_id", "dwelling", "state", "created_at", "expires_at", "revoked_at", "label")
    moments = ("created_at", "expires_at", "revoked_at")
    _echo_listing(ctx, read, columns=columns, moments=moments, **listing)


@token.command("revoke")
@click.argument("token_id")
@db_option
@click.pass_context
def revoke(ctx: click.Context, /, token_id: str, db_path: Path | None) -> None:
    """Revoke a token at once, by its id (or the token itself, if that is what you hold).

    A request already under way finishes; every later one with the token answers 401.
    """
    wanted = token_id_of(token_id)
    if wanted is None:
        raise click.BadParameter(
            "not a token id (16 hex digits) or a token (icrt_...)", param_hint="TOKEN_ID"
        )

    async def work(_: Store, book: TokenBook) -> tuple[TokenInfo, bool]:
        before = await book.get(wanted)
        if before is None:
            raise UnknownToken(wanted)
        after = await book.revoke(wanted, actor=_actor(), now=utc_now())
        return after, before.revoked_at is None

    info, changed = _with_book(ctx, db_path, work)
    assert info.revoked_at is not None
    what = "revoked" if changed else "was already revoked"
    click.echo(
        f"token {info.token_id} of {info.building_id}/{info.dwelling_id} {what}"
        f" at {info.revoked_at.isoformat()}"
    )


@token.command("audit")
@listing_options
@click.pass_context
def audit(ctx: click.Context, /, **listing: Any) -> None:
    """The audit trail of issues and revokes (of BUILDING DWELLING, or all): who, when, what."""

    async def read(book: TokenBook, building: str | None, dwelling: str | None) -> Listed:
        return [entry.listed() for entry in await book.audit(building, dwelling)]

    columns = ("at", "action", "token_id", "dwelling", "actor", "detail")
    _echo_listing(ctx, read, columns=columns, moments=("at",), **listing)


def _short(moment: str | None) -> str:
    return moment[:19].replace("T", " ") + "Z" if moment else "-"


COMMANDS = (token,)
