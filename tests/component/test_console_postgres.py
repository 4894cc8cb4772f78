"""The console's live flow on a PostgreSQL store (issue #19, ``console.pg_feed``), on the
real throwaway server: concurrent writers whose numbers commit out of order, each row
read once and none skipped; migration 4 upgrading a store that already has rows; and
the stream of the console's own app over PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from intercom_gateway.console import live
from intercom_gateway.console.pg_feed import PgFeed
from intercom_gateway.console.queries import Feed, Filter, Position
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.records import DecisionRow, RejectionRow
from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.settings import Settings
from intercom_gateway.store.postgres import PostgresStore
from intercom_gateway.store.postgres import schema as postgres_schema
from tests.component.test_api_scopes import _copy
from tests.component.test_console import populated
from tests.factories import decision_row
from tests.stores import Databases

__all__ = ["populated"]  # the fixture, reused

OUTCOMES = json.dumps([{"destination": "cloud", "forwarded": True, "purposes": ["p1"]}])
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _row(event_id: str) -> DecisionRow:
    return decision_row(event_id, decided_at=NOW, outcomes=OUTCOMES)


async def _insert(db: Any, event_id: str) -> None:
    """A decision as a gateway's flush writes it, in the caller's transaction."""
    await db.execute(
        "INSERT INTO decisions VALUES ($1, $2, 'b001', 'd0001', 'visitor', $3, 'v', 1, 's')",
        event_id,
        f"decision-{event_id}",
        NOW,
    )


async def _drain(feed: Feed, at: Position) -> tuple[list[str], Position]:
    """Every decision the feed has now after ``at``, in its order, and where it ends."""
    seen: list[str] = []
    while True:
        items, at = await feed.since(at)
        if not items:
            return seen, at
        seen += [i["event_id"] for i in items if i["kind"] == "decision"]


async def test_concurrent_writers_are_read_once_each_and_none_skipped(
    postgres_dsn: str,
) -> None:
    a = await asyncpg.connect(postgres_dsn)
    b = await asyncpg.connect(postgres_dsn)
    try:
        await a.execute("INSERT INTO outcome_sets VALUES ('s', $1)", OUTCOMES)
        async with PgFeed.open(postgres_dsn) as feed:
            at = await feed.position()
            # The later-numbered commits first: nothing is read until the earlier one ends.
            first = a.transaction()
            await first.start()
            await _insert(a, "e1")
            async with b.transaction():
                await _insert(b, "e2")
            seen, at = await _drain(feed, at)
            assert seen == []
            await first.commit()
            seen, at = await _drain(feed, at)
            assert seen == ["e1", "e2"]

            # An older transaction (its id taken by an earlier write) takes a higher number
            # than a younger one still running, and commits first: read at once, and the
            # younger one's lower number is still read when it commits. A cursor on the
            # number alone would have moved past it.
            older = a.transaction()
            await older.start()
            await a.execute("INSERT INTO dwellings VALUES ('b001', 'd0009')")
            younger = b.transaction()
            await younger.start()
            await _insert(b, "e3")
            await _insert(a, "e4")
            await older.commit()
            seen, at = await _drain(feed, at)
            assert seen == ["e4"]
            # A browser reconnecting from the id it was sent resumes there.
            resumed = Position.parse(at.text())
            assert resumed == at
            await younger.commit()
            seen, at = await _drain(feed, at)
            assert seen == ["e3"]
            # A transaction that rolls back leaves nothing, and holds nothing up after.
            rolled = b.transaction()
            await rolled.start()
            await _insert(b, "gone")
            await rolled.rollback()
            await _insert(a, "e5")
            seen, _ = await _drain(feed, at)
            assert seen == ["e5"]
    finally:
        await a.close()
        await b.close()


async def test_many_rows_of_one_transaction_arrive_over_several_polls_in_order(
    postgres_dsn: str,
) -> None:
    async with PostgresStore.open(postgres_dsn) as store, PgFeed.open(postgres_dsn) as feed:
        at = await feed.position()
        ids = [f"e{n:04d}" for n in range(1_200)]
        for event_id in ids:
            store.record_decision(_row(event_id))
        await store.flush()
        first, at = await feed.since(at)
        assert len(first) == 500
        seen, _ = await _drain(feed, at)
    assert [i["event_id"] for i in first] + seen == ids


async def test_migration_4_upgrades_a_store_that_has_rows(pg_databases: Databases) -> None:
    dsn = pg_databases.create_empty()
    try:
        connection = await asyncpg.connect(dsn)
        try:
            # A database of migrations 1 to 3, with a decision and a rejection.
            await connection.execute(postgres_schema.MIGRATIONS_TABLE)
            for version, script in enumerate(postgres_schema.MIGRATIONS[:3], start=1):
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO schema_migrations VALUES ($1, now())", version
                )
            await connection.execute("INSERT INTO outcome_sets VALUES ('s', $1)", OUTCOMES)
            await _insert(connection, "old")
            await connection.execute(
                "INSERT INTO rejections (at, reason, detail, topic, payload)"
                " VALUES (now(), 'schema', 'bad', 't', '\\x7b'::bytea)"
            )
        finally:
            await connection.close()

        async with PostgresStore.open(dsn) as store, PgFeed.open(dsn) as feed:
            items, at = await feed.since(Position(0, 0))
            store.record_decision(_row("new"))
            store.record_rejection(RejectionRow(NOW, "schema", "worse", "t", "{"))
            await store.flush()
            later, _ = await feed.since(at)
            async with store.pool.acquire() as db:
                versions = await db.fetch("SELECT version FROM schema_migrations ORDER BY 1")
    finally:
        pg_databases.drop(dsn)

    assert [(i["kind"], i.get("event_id", i.get("detail"))) for i in items] == [
        ("decision", "old"),
        ("rejection", "bad"),
    ]
    assert [(i["kind"], i.get("event_id", i.get("detail"))) for i in later] == [
        ("decision", "new"),
        ("rejection", "worse"),
    ]
    assert [row["version"] for row in versions] == list(
        range(1, len(postgres_schema.MIGRATIONS) + 1)
    )


@pytest.fixture
async def pg_app(
    populated: Settings, tmp_path: Path, postgres_dsn: str
) -> AsyncIterator[tuple[Any, Settings]]:
    settings = _copy(populated, tmp_path).model_copy(update={"store": postgres_dsn})
    policy = load_policy(settings.policy_path)
    app = create_app(
        settings, channel=StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://console"),
    ):
        yield app, settings


async def test_the_stream_reads_a_postgresql_store(pg_app: tuple[Any, Settings]) -> None:
    app, settings = pg_app

    class OnePoll:
        polls = 0

        async def is_disconnected(self) -> bool:
            self.polls += 1
            return self.polls > 1

    feed = app.state.console.feed
    assert isinstance(feed, PgFeed)
    async with PostgresStore.open(settings.store or "") as store:
        store.record_decision(_row("e1"))
        store.record_completed("e1", NOW.timestamp() + 0.25)
        await store.flush()
    start = await feed.position(back=live.BACKLOG)
    chosen = Filter(dwelling="d0001")
    text = "".join([m async for m in live._messages(OnePoll(), feed, chosen, start)])  # type: ignore[arg-type]
    [message] = [m for m in text.split("\n\n") if m.startswith("id: ")]
    head, kind, data = message.split("\n")
    item = json.loads(data.removeprefix("data: "))
    assert kind == "event: decision" and item["event_id"] == "e1"
    assert item["outcomes"][0]["result"] == "forwarded"
    last = Position.parse(head.removeprefix("id: "))
    assert last is not None and last.decision_xid > 0
    assert (await feed.since(last))[0] == []
