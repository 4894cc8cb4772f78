"""What the console reads that the ``Store`` protocol has no method for: the decision log
and rejected input *in the order they were written*, from a position on, for the live
flow; and the list of dwellings.

``Feed`` is that small interface; ``open_feed`` gives the one for the settings' store.
``SqliteFeed`` (here) has its own read-only connection to the SQLite file the gateways
write (WAL: readers never block the writer, and see each flush once it commits), so a
slow page never holds the desk's connection. The gateways flush in batches, so each poll
finds whatever the last flushes committed; one writer at a time commits, so the rowid
is a safe cursor. ``PgFeed`` (``pg_feed``) reads a PostgreSQL store, whose concurrent
writers need another cursor: its docstring says which and why.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite

from intercom_gateway.store.opening import sqlite_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from intercom_gateway.settings import Settings

BATCH = 500  # rows per poll at most: a backlog arrives over several polls, never at once
RECENT_COMPLETIONS = 20_000  # completed rows searched for a latency: a few seconds at full rate


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream has read to: the last decision's number and the last rejection's id.

    On PostgreSQL each number comes with its writer's transaction id (``*_xid``, the
    first key of the order: ``pg_feed``); on SQLite those are 0 and the text is as it
    always was."""

    decision: int
    rejection: int
    decision_xid: int = 0
    rejection_xid: int = 0

    def text(self) -> str:
        if not (self.decision_xid or self.rejection_xid):
            return f"{self.decision}-{self.rejection}"
        return f"{self.decision_xid}.{self.decision}-{self.rejection_xid}.{self.rejection}"

    def after(self, item: Mapping[str, Any]) -> Position:
        """The position just after ``item``: what a reconnecting browser resumes from."""
        xid = int(item.get("xid", 0))
        if item["kind"] == "decision":
            return Position(item["position"], self.rejection, xid, self.rejection_xid)
        return Position(self.decision, item["id"], self.decision_xid, xid)

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        try:
            decision, rejection = (text or "").split("-")
            d_xid, _, d = decision.rpartition(".")
            r_xid, _, r = rejection.rpartition(".")
            return cls(int(d), int(r), int(d_xid or 0), int(r_xid or 0))
        except ValueError:
            return None


class Feed(Protocol):
    """The console's reads of the log, whichever store the gateways write."""

    async def position(self, *, back: int = 0) -> Position:
        """The current end of the log, less ``back`` decisions (a page opens with some)."""

    async def since(self, at: Position) -> tuple[list[dict[str, Any]], Position]:
        """Decisions and rejections written after ``at``, in order, and the new position."""

    async def completions(self, event_ids: list[str]) -> dict[str, float]:
        """When each of these events completed (Unix seconds), for those that have lately."""

    async def dwellings(self) -> list[tuple[str, str]]:
        """Every dwelling the store knows, by building then dwelling."""


@asynccontextmanager
async def open_feed(settings: Settings) -> AsyncIterator[Feed]:
    """The feed over the settings' store: its own read-only connection(s), for as long
    as the console runs."""
    path = sqlite_path(settings)
    if path is not None:
        async with SqliteFeed.open(path) as feed:
            yield feed
        return
    from intercom_gateway.console.pg_feed import PgFeed

    async with PgFeed.open(settings.store or "") as pg:
        yield pg


class SqliteFeed:
    """The console's reads of a SQLite store over one read-only connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[SqliteFeed]:
        """The feed over the file at ``path`` (the desk, opened first, has checked that
        it exists)."""
        async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.row_factory = aiosqlite.Row
            yield cls(db)

    async def position(self, *, back: int = 0) -> Position:
        """The current end of the log, less ``back`` decisions (a page opens with some)."""
        async with self._db.execute(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM decisions),"
            " (SELECT COALESCE(MAX(id), 0) FROM rejections)"
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return Position(max(0, int(row[0]) - back), int(row[1]))

    async def since(self, at: Position) -> tuple[list[dict[str, Any]], Position]:
        """Decisions and rejections written after ``at``, oldest first, and the new position.

        Each decision carries ``latency_ms``: from its decision to the event's completion
        (every copy acknowledged), when it has completed by now, else None (the gateway
        flushes the decision before its copies are acknowledged: ``completions`` tells
        later)."""
        async with self._db.execute(
            "SELECT d.rowid AS position, d.event_id, d.building_id, d.dwelling_id,"
            " d.event_type, d.decided_at, s.outcomes"
            " FROM decisions AS d JOIN outcome_sets AS s ON s.id = d.outcome_set"
            " WHERE d.rowid > ? ORDER BY d.rowid LIMIT ?",
            (at.decision, BATCH),
        ) as cursor:
            rows = await cursor.fetchall()
        done = await self.completions([row["event_id"] for row in rows]) if rows else {}
        decisions = [decision_item(row, done.get(row["event_id"])) for row in rows]
        async with self._db.execute(
            "SELECT id, at, reason, detail, topic FROM rejections WHERE id > ? ORDER BY id LIMIT ?",
            (at.rejection, BATCH),
        ) as cursor:
            rejections = [rejection_item(row) for row in await cursor.fetchall()]
        moved = Position(
            decisions[-1]["position"] if decisions else at.decision,
            rejections[-1]["id"] if rejections else at.rejection,
        )
        return decisions + rejections, moved

    async def completions(self, event_ids: list[str]) -> dict[str, float]:
        """When each of these events completed (Unix seconds), for those that have lately.

        ``completed`` has no key on the event id (an append-only table, migration 3: a key
        on random ids made every write touch a random page), so only its newest
        ``RECENT_COMPLETIONS`` rows are searched, a range of rowids: the stream asks about
        events it has just shown, and an event older than that shows no latency."""
        marks = ", ".join("?" * len(event_ids))
        async with self._db.execute(
            "SELECT event_id, at FROM completed"
            " WHERE rowid > (SELECT COALESCE(MAX(rowid), 0) FROM completed) - ?"
            f" AND event_id IN ({marks})",
            (RECENT_COMPLETIONS, *event_ids),
        ) as cursor:
            return {row[0]: float(row[1]) for row in await cursor.fetchall()}

    async def dwellings(self) -> list[tuple[str, str]]:
        async with self._db.execute(
            "SELECT building_id, dwelling_id FROM dwellings ORDER BY building_id, dwelling_id"
        ) as cursor:
            return [(row[0], row[1]) for row in await cursor.fetchall()]


def decision_item(row: Any, completed: float | None) -> dict[str, Any]:
    """What the stream sends of a decision row (by column name: a ``sqlite3.Row`` or, from
    PostgreSQL, a dict with the moment as ISO text)."""
    decided = datetime.fromisoformat(row["decided_at"])
    latency = None if completed is None else round((completed - decided.timestamp()) * 1000, 1)
    return {
        "kind": "decision",
        "position": row["position"],
        "event_id": row["event_id"],
        "at": row["decided_at"],
        "building_id": row["building_id"],
        "dwelling_id": row["dwelling_id"],
        "event_type": row["event_type"],
        "decided": decided.timestamp(),
        "latency_ms": latency if latency is None or latency >= 0 else None,
        "outcomes": _outcomes(row["outcomes"]),
    }


@functools.lru_cache(maxsize=1_024)
def _outcomes(text: str) -> list[dict[str, Any]]:
    """An outcome set's summary, read once: the same few sets repeat event after event
    (the decision log stores each once), so a busy flow parses each of them once, not
    once a row. Shared between rows: never changed, only serialised."""
    return [_outcome(o) for o in json.loads(text)]


def _outcome(o: dict[str, Any]) -> dict[str, Any]:
    """What the live flow shows of one destination; the event page shows it all."""
    messages = o.get("messages") or []
    rules = [m["rule_id"] for m in messages] or [o.get("rule_id")]
    purposes = sorted({p for m in messages for p in m["purposes"]} or set(o.get("purposes", [])))
    return {
        "destination": o["destination"],
        "result": "forwarded" if o["forwarded"] else "withheld",
        "purposes": purposes,
        "rules": [r for r in rules if r],
        "reason": o.get("reason"),
        "clause": o.get("clause"),
    }


def rejection_item(row: Any) -> dict[str, Any]:
    """What the stream sends of a rejection row (by column name, as ``decision_item``)."""
    return {
        "kind": "rejection",
        "id": row["id"],
        "at": row["at"],
        "reason": row["reason"],
        "detail": row["detail"],
        "topic": row["topic"],
    }


@dataclass(frozen=True, slots=True)
class Filter:
    """The live flow's filters, applied on the server: empty fields match everything."""

    building: str = ""
    dwelling: str = ""
    event_type: str = ""
    destination: str = ""  # a destination ("cloud") or its kind's prefix ("partner")
    partner: str = ""

    def keeps(self, item: dict[str, Any]) -> bool:
        if item["kind"] == "rejection":
            # Rejected input names no trusted dwelling: shown only with no dwelling filter.
            return not (self.building or self.dwelling or self.event_type)
        if self.building and item["building_id"] != self.building:
            return False
        if self.dwelling and item["dwelling_id"] != self.dwelling:
            return False
        if self.event_type and item["event_type"] != self.event_type:
            return False
        destinations = [o["destination"] for o in item["outcomes"]]
        if self.destination and not any(
            d == self.destination or d.startswith(f"{self.destination}:") for d in destinations
        ):
            return False
        return not self.partner or f"partner:{self.partner}" in destinations
