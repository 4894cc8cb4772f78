"""Both stores give the same answers, and open the same way.

The same records go into a SQLite file and a PostgreSQL database; every query of
``Store`` then answers the same typed values on both (moments compare as instants:
PostgreSQL keeps them in UTC, SQLite as written). Then the versioned migrations of each
backend, ``open_store`` choosing between them, and the CLI's ``--store``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from intercom_gateway.cli.main import main
from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.records import RejectionRow
from intercom_gateway.core.statistics import Window
from intercom_gateway.errors import ConfigError, StoreUnreachable
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store, open_store, sqlite_path
from intercom_gateway.store import schema as sqlite_schema
from intercom_gateway.store.postgres import PostgresStore
from intercom_gateway.store.postgres import schema as postgres_schema
from intercom_gateway.store.results import AuditEntry, TokenInfo
from intercom_gateway.store.sqlite import SqliteStore
from tests.factories import ledger_row
from tests.stores import AT, KEY, Databases, record_decisions, save_dwelling, save_request

PANEL = "intercom/v1/b001/panel-b001-d0001/events/alarm"


async def _fill(store: Store) -> None:
    """One of every record a store keeps."""
    await save_dwelling(store)
    row = ledger_row(at=AT)
    await store.save_intents([replace(row, event_id="e-intended")])
    await store.save_intents([replace(row, event_id="e-lost")])
    store.record_unconfirmed([replace(row, event_id="e-lost")])
    store.record_provisions([row, replace(row, recipient="group", third_party=False)])
    store.record_provisions([replace(row, event_id="e2", at=AT + timedelta(days=1))])
    store.record_provisions([replace(row, event_id="e-old", at=AT - timedelta(days=4_000))])
    record_decisions(
        store,
        lambda event_id: json.dumps([{"destination": "cloud", "forwarded": event_id != "e3"}]),
    )
    store.record_rejection(RejectionRow(AT, "malformed_json", "bad", PANEL, "{"))
    named = json.dumps({"building_id": "b001", "dwelling_id": "d0001"})
    store.record_rejection(RejectionRow(AT, "schema_violation", "bad", "t", named))
    store.record_rejection(RejectionRow(AT, "schema_violation", "other", "t", "[1, 2]"))
    for n, event_id in enumerate(("e1", "e2", "e3")):
        store.record_completed(event_id, 1.0 + n)
    window = Window("b001", AT, AT + timedelta(hours=1))
    store.record_statistic(window, "visitor")
    store.record_statistic(window, "visitor")
    store.record_statistic(window._replace(building_id="b002"), "alarm")
    store.record_window_published(window._replace(building_id="b002"), closed_before=AT)
    for copy_id, building in (("c1", "b001"), ("c2", "b001"), ("c3", "b002")):
        store.record_analytics_held(
            HeldCopy(copy_id, AT, AT + timedelta(hours=1), "analytics/x", b"\x00{}", (), building)
        )
    store.record_analytics_released("c2")
    await store.flush()
    await save_request(store)
    info = TokenInfo("0123456789abcdef", *KEY, "app", AT, AT + timedelta(days=1), None)
    issue = AuditEntry(AT, "issue", info.token_id, *KEY, "cli:t", "")
    assert await store.save_token(info, sha256="f" * 64, audit=issue)
    assert not await store.save_token(info, sha256="0" * 64, audit=issue)
    revoke = replace(issue, at=AT + timedelta(hours=2), action="revoke")
    await store.save_revocation(revoke)


Question = Callable[[Store], Awaitable[Any]]
QUESTIONS: dict[str, Question] = {
    "consents": lambda s: s.consents(),
    "consent": lambda s: s.consent(*KEY),
    "no consent": lambda s: s.consent("b001", "d0009"),
    "change seen": lambda s: s.consent_change_seen("c-1"),
    "change unseen": lambda s: s.consent_change_seen("c-2"),
    "history": lambda s: s.consent_history(*KEY),
    "known": lambda s: s.dwelling_known(*KEY),
    "unknown": lambda s: s.dwelling_known("b009", "d0001"),
    "panel": lambda s: s.dwelling_panel(*KEY),
    "decision": lambda s: s.decision("e1"),
    "no decision": lambda s: s.decision("nope"),
    "provisions": lambda s: s.provisions(),
    "a dwelling's provisions in a range": lambda s: s.provisions(
        building_id="b001", dwelling_id="d0001", start=AT, end=AT + timedelta(days=1), limit=5
    ),
    "rejections": lambda s: s.rejections(limit=2),
    "counts": lambda s: s.counts(),
    "ledger summary": lambda s: s.ledger_summary(*KEY),
    "decision summary": lambda s: s.decision_summary(*KEY),
    "dwelling rejections": lambda s: s.dwelling_rejections(*KEY),
    "requests": lambda s: s.requests(*KEY),
    "recent completed": lambda s: s.recent_completed(2),
    "statistics windows": lambda s: s.statistics_windows(),
    "analytics held": lambda s: s.analytics_held(),
    "analytics held of a building": lambda s: s.analytics_held(["b002", "b009"]),
    "analytics held of no building": lambda s: s.analytics_held([]),
    "token": lambda s: s.token("0123456789abcdef"),
    "hashed token": lambda s: s.hashed_token("0123456789abcdef"),
    "tokens": lambda s: s.tokens(),
    "a dwelling's tokens": lambda s: s.tokens(*KEY),
    "audit": lambda s: s.token_audit(),
}
CHANGES: dict[str, Question] = {
    "attempt": lambda s: s.save_attempt("m-1"),
    "attempt again": lambda s: s.save_attempt("m-1"),
    "unconfirmed of another building": lambda s: s.save_unconfirmed(["b009"]),
    "unconfirmed of its building": lambda s: s.save_unconfirmed(["b001", "b009"]),
    "unconfirmed at start": lambda s: s.save_unconfirmed(),
    "purge": lambda s: s.purge_ledger(before=AT - timedelta(days=1), chunk=1),
    "erase": lambda s: s.erase_dwelling(*KEY),
    "after": lambda s: s.counts(),
}


@pytest.fixture
async def answers(tmp_path: Path, postgres_dsn: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    opened: dict[str, Callable[[], Any]] = {
        "sqlite": lambda: SqliteStore.open(tmp_path / "store.sqlite"),
        "postgres": lambda: PostgresStore.open(postgres_dsn),
    }
    for name, open_it in opened.items():
        async with open_it() as store:
            await _fill(store)
        async with open_it() as store:  # what was committed, read by the next process
            found[name] = {q: await ask(store) for q, ask in QUESTIONS.items()}
            found[name] |= {q: await ask(store) for q, ask in CHANGES.items()}
    return found


@pytest.mark.parametrize("question", [*QUESTIONS, *CHANGES])
def test_both_stores_answer_alike(answers: dict[str, dict[str, Any]], question: str) -> None:
    assert answers["postgres"][question] == answers["sqlite"][question]


def test_the_answers_are_not_empty(answers: dict[str, dict[str, Any]]) -> None:
    sqlite = answers["sqlite"]
    assert sqlite["counts"].as_dict() == {
        "decisions": 3,
        "ledger": 6,
        "rejections": 3,
        "completed": 3,
        "consent_history": 2,
    }
    assert [r.reason for r in sqlite["dwelling rejections"]] == ["malformed_json"] * 1 + [
        "schema_violation"
    ]
    assert {p.status for p in sqlite["provisions"]} == {"intended", "unconfirmed", "delivered"}
    assert [c.copy_id for c in sqlite["analytics held"]] == ["c1", "c3"]
    assert [c.building_id for c in sqlite["analytics held of a building"]] == ["b002"]
    assert sqlite["analytics held of no building"] == []
    # A partition taken over marks its own buildings' intents only.
    assert sqlite["unconfirmed of another building"] == 0
    assert sqlite["unconfirmed of its building"] == 1
    assert sqlite["unconfirmed at start"] == 0
    assert sqlite["statistics windows"][1] == AT
    assert (sqlite["attempt"], sqlite["attempt again"]) == (1, 2)
    assert sqlite["purge"] == 1 and sqlite["erase"].as_dict() == {"decisions": 3, "rejections": 2}
    assert sqlite["tokens"][0].revoked_at == AT + timedelta(hours=2)


# --- versioned migrations ------------------------------------------------------------------


async def test_sqlite_records_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    async with SqliteStore.open(path):
        pass
    async with SqliteStore.open(path):  # a second open applies nothing
        pass
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert [version for version, _ in rows] == list(range(1, len(sqlite_schema.MIGRATIONS) + 1))


async def test_sqlite_opened_by_two_processes_at_once_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"

    async def open_and_count() -> int:
        async with SqliteStore.open(path) as store:
            return (await store.counts()).ledger

    assert await asyncio.gather(*(open_and_count() for _ in range(4))) == [0] * 4
    with closing(sqlite3.connect(path)) as db:
        versions = db.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(v,) for v in range(1, len(sqlite_schema.MIGRATIONS) + 1)]


async def test_gateways_opening_a_new_database_at_once_migrate_it_once(
    pg_databases: Databases,
) -> None:
    dsn = pg_databases.create_empty()
    try:

        async def open_and_count() -> int:
            async with PostgresStore.open(dsn) as store:
                return (await store.counts()).ledger

        # Several gateways starting together: one migrates under the advisory lock, the
        # others wait for it and find the version applied.
        assert await asyncio.gather(*(open_and_count() for _ in range(5))) == [0] * 5
        connection = await asyncpg.connect(dsn)
        try:
            versions = await connection.fetch("SELECT version FROM schema_migrations")
        finally:
            await connection.close()
        assert [row["version"] for row in versions] == list(
            range(1, len(postgres_schema.MIGRATIONS) + 1)
        )
    finally:
        pg_databases.drop(dsn)


# --- choosing the store ----------------------------------------------------------------------


def test_the_settings_name_the_store(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    assert sqlite_path(Settings(db_path=db, store=None)) == db
    assert sqlite_path(Settings(db_path=db, store="sqlite:////srv/x.sqlite")) == Path(
        "/srv/x.sqlite"
    )
    assert sqlite_path(Settings(db_path=db, store="sqlite:///var/x.sqlite")) == Path("var/x.sqlite")
    assert sqlite_path(Settings(db_path=db, store="postgresql://u@h/d")) is None
    assert sqlite_path(Settings(db_path=db, store="postgres://u@h/d")) is None
    with pytest.raises(ConfigError, match="not a store URL"):
        sqlite_path(Settings(db_path=db, store="mysql://u@h/d"))


async def test_open_store_opens_the_backend_the_settings_name(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with open_store(Settings(db_path=tmp_path / "g.sqlite", store=None)) as store:
        assert isinstance(store, SqliteStore)
    assert (tmp_path / "g.sqlite").exists()
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    async with open_store(Settings(store=url)) as store:
        assert isinstance(store, SqliteStore)
    assert (tmp_path / "other.sqlite").exists()
    async with open_store(Settings(store=postgres_dsn)) as store:
        assert isinstance(store, PostgresStore)


async def test_a_database_that_does_not_answer_is_unreachable_without_its_password() -> None:
    settings = Settings(store="postgresql://gw:s3cret@127.0.0.1:1/intercom")
    with pytest.raises(StoreUnreachable, match=r"postgresql://gw:\*\*\*@127.0.0.1:1/intercom"):
        async with open_store(settings):
            pass


def test_the_cli_says_one_line_and_exits_3_for_an_unreachable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTERCOM_STORE", raising=False)
    dsn = "postgresql://gw:s3cret@127.0.0.1:1/intercom"
    result = CliRunner().invoke(main, ["token", "list", "--store", dsn])
    assert result.exit_code == 3, result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: cannot reach the store at postgresql://gw:***@127.0.0.1:1/")
    assert "s3cret" not in result.output


def test_the_cli_reads_a_postgresql_store_given_by_store_alone(
    tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No SQLite file needed (nor made) when --store names PostgreSQL."""
    monkeypatch.delenv("INTERCOM_STORE", raising=False)
    db = tmp_path / "none.sqlite"
    result = CliRunner().invoke(main, ["token", "list", "--json", "--db", str(db)])
    assert result.exit_code == 1 and "no store here" in result.output
    result = CliRunner().invoke(
        main, ["token", "list", "--json", "--db", str(db), "--store", postgres_dsn]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [] and not db.exists()
