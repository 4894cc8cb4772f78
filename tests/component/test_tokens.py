"""Resident API tokens over a real SQLite store: what is stored (a hash, never the
secret), when a token authenticates, the audit trail, and `intercom-gateway token`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from intercom_gateway.cli.main import main
from intercom_gateway.core.models import utc_now
from intercom_gateway.resident.tokens import (
    TOKEN_PATTERN,
    AuditEntry,
    TokenBook,
    TokenRefused,
    UnknownToken,
)
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store
from intercom_gateway.store.sqlite import SqliteStore
from tests.component.test_resident import _populate
from tests.stores import store_args

# Broker options shared with every command that connects (main's own have no help yet).
HELPLESS = {"broker_host", "broker_port", "secrets_dir"}
NOW = utc_now().replace(microsecond=0)
DAY = timedelta(days=1)


@pytest.fixture
def store(any_store: Store) -> Store:
    """SQLite, then PostgreSQL."""
    return any_store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """For a look at the file itself."""
    async with SqliteStore.open(tmp_path / "gateway.sqlite") as store:
        yield store


@pytest.fixture
def book(store: Store) -> TokenBook:
    return TokenBook(store)


async def _issue(book: TokenBook, dwelling: str = "d0001", **kwargs: Any) -> Any:
    options: dict[str, Any] = {"label": "app", "expires_at": NOW + DAY, "actor": "cli:t"}
    return await book.issue("b001", dwelling, **({"now": NOW} | options | kwargs))


# --- the book ---------------------------------------------------------------------------------


async def test_a_token_carries_its_id_and_only_its_hash_is_stored(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    store = sqlite_store
    issued = await _issue(TokenBook(store))
    match = TOKEN_PATTERN.match(issued.token)
    assert match is not None and match["id"] == issued.info.token_id
    assert len(issued.token) == 65
    db = store.connection
    async with db.execute("SELECT * FROM api_tokens") as cursor:
        [row] = [tuple(r) for r in await cursor.fetchall()]
    assert match["secret"] not in json.dumps(row) and issued.token not in json.dumps(row)
    await db.execute("PRAGMA wal_checkpoint(FULL)")
    files = await asyncio.to_thread(lambda: {f.name: f.read_bytes() for f in tmp_path.iterdir()})
    for name, content in files.items():
        assert match["secret"].encode() not in content, name


async def test_tokens_are_random_and_ids_unique(book: TokenBook) -> None:
    issued = [await _issue(book) for _ in range(20)]
    assert len({i.token for i in issued}) == len({i.info.token_id for i in issued}) == 20


async def test_authenticate_accepts_the_token_and_nothing_like_it(book: TokenBook) -> None:
    issued = await _issue(book)
    assert await book.authenticate(issued.token, now=NOW) == issued.info
    other = await _issue(book)
    forged = [
        issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"),  # one character off
        issued.token[:22] + other.token[22:],  # this id, another token's secret
        "icrt_" + "0" * 16 + "_" + "A" * 43,  # well formed, unknown id
        issued.token + "x",
        issued.token.upper(),
        "",
        "Bearer " + issued.token,
    ]
    for token in forged:
        with pytest.raises(TokenRefused, match=r"^not a valid bearer token$"):
            await book.authenticate(token, now=NOW)


async def test_an_expired_or_revoked_token_is_refused_and_says_so_only_to_its_holder(
    book: TokenBook,
) -> None:
    issued = await _issue(book, expires_at=NOW + DAY)
    assert await book.authenticate(issued.token, now=NOW + DAY - timedelta(seconds=1))
    with pytest.raises(TokenRefused, match="is expired"):
        await book.authenticate(issued.token, now=NOW + DAY)
    never = await _issue(book, expires_at=None)
    assert await book.authenticate(never.token, now=NOW + 3_650 * DAY)
    await book.revoke(never.info.token_id, actor="cli:t", now=NOW)
    with pytest.raises(TokenRefused, match=f"token {never.info.token_id} is revoked"):
        await book.authenticate(never.token, now=NOW)
    with pytest.raises(TokenRefused, match="not a valid bearer token"):
        await book.authenticate(never.token[:-2] + "zz", now=NOW)


async def test_issue_and_revoke_are_audited_once_each(book: TokenBook) -> None:
    issued = await _issue(book, label="Ann's phone")
    neighbour = await _issue(book, dwelling="d0002")
    later = NOW + DAY
    revoked = await book.revoke(issued.info.token_id, actor="cli:u", now=later)
    again = await book.revoke(issued.info.token_id, actor="cli:u", now=later + DAY)
    assert revoked.revoked_at == again.revoked_at == later
    entries = [e.listed() for e in await book.audit("b001", "d0001")]
    assert [(e["action"], e["token_id"], e["actor"]) for e in entries] == [
        ("issue", issued.info.token_id, "cli:t"),
        ("revoke", issued.info.token_id, "cli:u"),
    ]
    assert "Ann's phone" in entries[0]["detail"] and entries[1]["at"] == later.isoformat()
    assert len(await book.audit()) == 3
    assert [t.token_id for t in await book.tokens("b001", "d0002")] == [neighbour.info.token_id]
    with pytest.raises(UnknownToken):
        await book.revoke("0" * 16, actor="cli:t", now=NOW)


async def test_the_token_tables_are_made_at_once_and_commit_no_callers_work(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.sqlite"
    async with SqliteStore.open(path) as store:
        TokenBook(store)
    async with SqliteStore.open(path) as store:  # created, though nothing was committed
        db = store.connection
        assert await TokenBook(store).tokens() == []
        row = ("r1", NOW.isoformat(), "b001", "d0001", "purposes", "cli", "{}", "done", "{}")
        await db.execute(
            "INSERT INTO requests (request_id, at, building_id, dwelling_id,"
            " kind, via, params, outcome, detail) VALUES (?,?,?,?,?,?,?,?,?)",
            row,
        )
        await TokenBook(store).tokens()  # again, with the caller's work pending
        await db.rollback()
        assert await store.requests("b001", "d0001") == []


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, both_stores: str) -> Settings:
    return asyncio.run(_populate(tmp_path))


def _run(settings: Settings, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, [*args, *store_args(settings)])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def _issue_cli(settings: Settings, *args: str) -> dict[str, Any]:
    issued: dict[str, Any] = json.loads(_run(settings, "token", "issue", *args, "--json").stdout)
    return issued


def test_cli_issue_prints_the_token_once_and_list_never(settings: Settings) -> None:
    result = _run(settings, "token", "issue", "b001", "d0001", "--label", "Ann's phone")
    token = re.search(r"^token: +(icrt_\S+)$", result.stdout, re.M)
    token_id = re.search(r"^token id: ([0-9a-f]{16})$", result.stdout, re.M)
    assert token is not None and token_id is not None
    assert TOKEN_PATTERN.match(token[1]) and token_id[1] in token[1]
    assert "shown this once" in result.stderr
    listed = _run(settings, "token", "list").stdout
    assert token_id[1] in listed and "Ann's phone" in listed and "active" in listed
    assert "icrt_" not in listed
    [row] = json.loads(_run(settings, "token", "list", "b001", "d0001", "--json").stdout)
    assert set(row) == {
        *("token_id", "building_id", "dwelling_id", "label", "state"),
        *("created_at", "expires_at", "revoked_at"),
    }
    assert row["token_id"] == token_id[1] and row["revoked_at"] is None
    assert json.loads(_run(settings, "token", "list", "b001", "d0002", "--json").stdout) == []


def test_cli_expiry_defaults_to_a_year_and_is_bounded(settings: Settings) -> None:
    issued = _issue_cli(settings, "b001", "d0001")
    from datetime import datetime

    created = datetime.fromisoformat(issued["created_at"])
    assert datetime.fromisoformat(issued["expires_at"]) - created == timedelta(days=365)
    week = _issue_cli(settings, "b001", "d0001", "--expires-days", "7")
    assert week["expires_at"] < issued["expires_at"]
    for days in ("0", "3651", "-1", "many"):
        _run(settings, "token", "issue", "b001", "d0001", "--expires-days", days, code=2)


def test_cli_revoke_by_id_or_by_the_token_and_the_audit_shows_both(settings: Settings) -> None:
    first = _issue_cli(settings, "b001", "d0001", "--label", "tablet")
    second = _issue_cli(settings, "b001", "d0002")
    out = _run(settings, "token", "revoke", first["token_id"]).stdout
    assert out.startswith(f"token {first['token_id']} of b001/d0001 revoked at ")
    again = _run(settings, "token", "revoke", first["token"]).stdout  # the token itself
    assert "was already revoked" in again
    _run(settings, "token", "revoke", second["token"])
    states = {
        r["token_id"]: r["state"]
        for r in json.loads(_run(settings, "token", "list", "--json").stdout)
    }
    assert states == {first["token_id"]: "revoked", second["token_id"]: "revoked"}
    audit = json.loads(_run(settings, "token", "audit", "--json").stdout)
    assert [(e["action"], e["token_id"], e["dwelling_id"]) for e in audit] == [
        ("issue", first["token_id"], "d0001"),
        ("issue", second["token_id"], "d0002"),
        ("revoke", first["token_id"], "d0001"),
        ("revoke", second["token_id"], "d0002"),
    ]
    assert all(e["actor"].startswith("cli:") for e in audit)
    mine = _run(settings, "token", "audit", "b001", "d0001").stdout
    assert first["token_id"] in mine and second["token_id"] not in mine


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("issue", "b001", "d0999"), 1, "Error: unknown dwelling b001/d0999"),
        (("issue", "b001", "d0001", "--label", "two\nlines"), 2, "one printable line"),
        (("issue", "b001", "d0001", "--label", "x" * 201), 2, "at most 200 characters"),
        (("revoke", "0123456789abcdef"), 1, "Error: no resident token with id"),
        (("revoke", "not-an-id"), 2, "not a token id"),
        (("list", "b001"), 2, "give both BUILDING and DWELLING, or neither"),
        (("audit", "b001"), 2, "give both BUILDING and DWELLING, or neither"),
    ],
)
def test_cli_mistakes_are_one_error_line(
    settings: Settings, args: tuple[str, ...], code: int, message: str
) -> None:
    result = _run(settings, "token", *args, code=code)
    [error] = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert message in error


def test_cli_without_a_store_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERCOM_STORE", raising=False)  # the SQLite file's check
    result = CliRunner().invoke(main, ["token", "list", "--db", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {tmp_path / 'none.sqlite'}: no store here: has the gateway run?"
    ]
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize(
    "path",
    [
        ("token",),
        *(("token", c) for c in ("issue", "list", "revoke", "audit")),
        ("resident", "provisions"),
        ("ledger", "purge"),
        ("api",),
    ],
)
def test_every_token_and_date_command_and_option_explains_itself(path: tuple[str, ...]) -> None:
    command: Any = main
    for name in path:
        command = command.commands[name]
    assert command.help and len(command.help) > 20
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in HELPLESS:
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_a_residents_disclosure_lists_the_dwellings_tokens_ids_and_dates_only(
    settings: Settings,
) -> None:
    mine = _issue_cli(settings, "b001", "d0001", "--label", "Ann's phone")
    theirs = _issue_cli(settings, "b001", "d0002")
    _run(settings, "token", "revoke", mine["token_id"])
    disclosure = json.loads(_run(settings, "resident", "disclose", "b001", "d0001").stdout)
    [listed] = disclosure["api_tokens"]
    assert listed["token_id"] == mine["token_id"] and listed["revoked_at"] is not None
    assert set(listed) == {"token_id", "created_at", "expires_at", "revoked_at"}
    text = json.dumps(disclosure)
    assert theirs["token_id"] not in text and "Ann's phone" not in text and "icrt_" not in text


# --- the store's token tables -------------------------------------------------------------


async def test_a_taken_id_saves_nothing(store: Store) -> None:
    issued = await _issue(TokenBook(store))
    taken = dataclasses.replace(issued.info, dwelling_id="d0002", label="other")
    entry = AuditEntry(NOW, "issue", taken.token_id, "b001", "d0002", "cli:t", "")
    assert await store.save_token(taken, sha256="0" * 64, audit=entry) is False
    assert await store.tokens() == [issued.info] and len(await store.token_audit()) == 1
    assert await TokenBook(store).authenticate(issued.token, now=NOW) == issued.info


async def test_a_store_file_of_before_opens_with_its_tokens_or_gains_the_tables(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.sqlite"
    async with SqliteStore.open(path) as store:
        issued = await _issue(TokenBook(store))
    async with SqliteStore.open(path) as store:  # tables and rows as they were
        assert await TokenBook(store).authenticate(issued.token, now=NOW) == issued.info
        db = store.connection
        # A gateway's file from before any token was issued: it had no token tables (nor
        # versioned migrations, which came later still).
        await db.executescript(
            "DROP TABLE api_tokens; DROP TABLE api_token_audit; DROP TABLE schema_migrations;"
        )
    async with SqliteStore.open(path) as store:
        assert await store.tokens() == [] and await store.token_audit() == []
        assert (await _issue(TokenBook(store))).info.building_id == "b001"
