"""Store helpers for tests: fresh PostgreSQL databases on the session's own server
(tests/conftest.py), a look at either store's tables from outside, and the records the
store tests start from (``save_dwelling``, ``record_decisions``, ``save_request``).

Each test that wants one gets a database of its own (``CREATE DATABASE t_<uuid>``
through an admin connection, dropped after), copied from a template the store's
migrations were applied to once, so a test opens a current store at the price of a file
copy. The admin work is synchronous (a thread with its own event loop): fixtures and
``tests.factories.gateway_settings`` call it from inside and outside a running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import asyncpg

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.records import DecisionRow, RequestRow
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.qa.postgres import PostgresServer
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store, sqlite_path
from intercom_gateway.store.postgres import PostgresStore

T = TypeVar("T")
TEMPLATE = "t_template"

# The moment and dwelling the store tests' records are about; JST for a moment given in
# another zone than the one it is kept in.
AT = datetime(2026, 4, 2, 9, 30, 0, 250, tzinfo=UTC)
KEY = ("b001", "d0001")
JST = timezone(timedelta(hours=9))


def _in_thread(work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` to completion on a loop of its own, whether or not one runs here."""
    result: list[T] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(work()))  # type: ignore[arg-type]
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class Databases:
    """Databases made and dropped on ``server``; ``dsn(name)`` connects to one."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._template_ready = False

    def dsn(self, name: str) -> str:
        return f"postgresql://{self.server.user}@127.0.0.1:{self.server.port}/{name}"

    def create(self) -> str:
        """A new database with the store's tables; its DSN."""
        if not self._template_ready:
            _in_thread(self._make_template)
            self._template_ready = True
        name = f"t_{uuid.uuid4().hex}"
        _in_thread(lambda: self._admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        return self.dsn(name)

    def create_empty(self) -> str:
        """A new database without tables (the store's migrations not applied); its DSN."""
        name = f"t_{uuid.uuid4().hex}"
        _in_thread(lambda: self._admin(f"CREATE DATABASE {name}"))
        return self.dsn(name)

    def drop(self, dsn: str) -> None:
        """Drop the database of ``dsn``, whoever is still connected to it."""
        name = dsn.rsplit("/", 1)[-1]
        _in_thread(lambda: self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    async def _make_template(self) -> None:
        await self._admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await self._admin(f"CREATE DATABASE {TEMPLATE}")
        async with PostgresStore.open(self.dsn(TEMPLATE)):
            pass

    async def _admin(self, statement: str) -> Any:
        connection = await asyncpg.connect(self.server.dsn)
        try:
            return await connection.execute(statement)
        finally:
            await connection.close()


async def count_rows(store: Any, table: str) -> int:
    """How many rows ``table`` of an open store has, on either backend (a test's look
    at a table the ``Store`` interface does not show)."""
    from intercom_gateway.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        async with store.connection.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
    assert isinstance(store, PostgresStore)
    async with store.pool.acquire() as connection:
        return int(await connection.fetchval(f"SELECT COUNT(*) FROM {table}"))


def committed(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """The rows ``sql`` (plain SQL both stores accept, no parameters) reads from the
    settings' store through a connection of its own: only what is committed."""
    path = sqlite_path(settings)
    if path is not None:
        # Read-only: a look from outside, while the gateway may be writing.
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return [tuple(row) for row in db.execute(sql)]

    async def read() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(settings.store)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return _in_thread(read)


def copy_database(dsn: str) -> str:
    """A new database on the same server with what ``dsn``'s holds (nothing may be
    connected to it); its DSN. Left for the session's server to take with it."""
    base, name = dsn.rsplit("/", 1)
    copy = f"t_{uuid.uuid4().hex}"

    async def create() -> None:
        connection = await asyncpg.connect(f"{base}/postgres")
        try:
            await connection.execute(f"CREATE DATABASE {copy} TEMPLATE {name}")
        finally:
            await connection.close()

    _in_thread(create)
    return f"{base}/{copy}"


def store_args(settings: Settings) -> list[str]:
    """The command-line options that name the settings' store, whatever INTERCOM_STORE
    says (``--store`` wins over the environment)."""
    store = settings.store or f"sqlite:///{settings.db_path.resolve()}"
    return ["--db", str(settings.db_path), "--store", store]


# --- records the store tests start from ---------------------------------------------------


async def save_dwelling(store: Store) -> None:
    """A registry of one building of two dwellings, ``KEY``'s initial consent, and a
    change to it that was refused (``c-1``, given in JST)."""
    await store.save_registry(generate_registry(buildings=1, dwellings=2))
    state = ConsentState.initial(*KEY)
    await store.save_initial_consents([(state, "{}")], source="registry", detail="", at=AT)
    await store.save_consent(
        state.model_copy(update={"revision": 2}),
        change='{"kind": "x"}',
        change_id="c-1",
        source="panel:panel-b001-d0001",
        applied=False,
        detail="refused",
        at=AT.astimezone(JST),
    )


def record_decisions(store: Store, outcomes: Callable[[str], str] = lambda _: "[]") -> None:
    """Decisions on a visitor (``e1``) and two alarms (``e2``, ``e3``) of ``KEY``, each
    with the outcomes (JSON) ``outcomes(event_id)`` gives; committed by the next flush."""
    for event_id, event_type in (("e1", "visitor"), ("e2", "alarm"), ("e3", "alarm")):
        store.record_decision(
            DecisionRow(
                event_id, f"d-{event_id}", *KEY, event_type, AT, "2026-04-01", 1, outcomes(event_id)
            )
        )


async def save_request(store: Store) -> None:
    """One answered §8 request of ``KEY`` (``r-1``, its provisions)."""
    params = {"from": AT, "third_party_only": True}
    await store.save_request(
        RequestRow("r-1", AT, *KEY, "provisions", "cli", params, "done", {"rows": 1})
    )
