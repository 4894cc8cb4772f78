"""The store's statistics tables: the counts of open windows, durable with their events.

Part of the store (``store.Store`` calls these inside its own transactions; nothing
else speaks this SQL). An event's count is written in the batch that marks the event
completed, so it is counted once, and durably, exactly when the event is committed: a
redelivered event is a duplicate by then, and one that was not committed is counted
when it comes again. The counts of an open window survive any restart.

When the broker has acknowledged a window's aggregate, its rows are deleted and the
start of the oldest window still open for counting is kept ("closed before"), so that
a restart never reopens a published window for late events.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiosqlite

from intercom_gateway.core.statistics import Window

SCHEMA = """
CREATE TABLE IF NOT EXISTS statistics_counts (
    building_id TEXT NOT NULL, window_start TEXT NOT NULL, window_end TEXT NOT NULL,
    event_type TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (building_id, window_start, event_type)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS statistics_state (
    name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

_CLOSED_BEFORE = "closed_before"


@dataclass
class StatisticsBatch:
    """What one store batch changes in the statistics tables."""

    counts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    published: list[tuple[str, str]] = field(default_factory=list)
    closed_before: str | None = None

    def __bool__(self) -> bool:
        return bool(self.counts or self.published)

    def count(self, window: Window, event_type: str) -> None:
        self.counts[(*_window_key(window), event_type)] += 1

    def mark_published(self, window: Window, closed_before: datetime) -> None:
        self.published.append((window.building_id, _text(window.start)))
        moment = _text(closed_before)
        if self.closed_before is None or moment > self.closed_before:
            self.closed_before = moment


async def write(db: aiosqlite.Connection, batch: StatisticsBatch) -> None:
    """Within the caller's transaction: counts first, then what was published."""
    if batch.counts:
        await db.executemany(
            "INSERT INTO statistics_counts VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (building_id, window_start, event_type)"
            " DO UPDATE SET count = count + excluded.count",
            [(*key, n) for key, n in batch.counts.items()],
        )
    if batch.published:
        await db.executemany(
            "DELETE FROM statistics_counts WHERE building_id = ? AND window_start = ?",
            batch.published,
        )
    if batch.closed_before is not None:
        # Text order is time order: every timestamp here is written as UTC ISO text.
        await db.execute(
            "INSERT INTO statistics_state VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            (_CLOSED_BEFORE, batch.closed_before),
        )


async def load(
    db: aiosqlite.Connection,
) -> tuple[list[tuple[Window, str, int]], datetime | None]:
    """The open windows' counts and the "closed before" moment, as the store has them."""
    async with db.execute(
        "SELECT building_id, window_start, window_end, event_type, count"
        " FROM statistics_counts ORDER BY window_start, building_id, event_type"
    ) as cursor:
        rows = list(await cursor.fetchall())
    counts = [
        (Window(b, datetime.fromisoformat(s), datetime.fromisoformat(e)), t, int(n))
        for b, s, e, t, n in rows
    ]
    async with db.execute(
        "SELECT value FROM statistics_state WHERE name = ?", (_CLOSED_BEFORE,)
    ) as cursor:
        row = await cursor.fetchone()
    return counts, (datetime.fromisoformat(row[0]) if row else None)


@functools.lru_cache(maxsize=1_024)
def _window_key(window: Window) -> tuple[str, str, str]:
    # The open windows are few; their text is made once, not once an event.
    return window.building_id, _text(window.start), _text(window.end)


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
