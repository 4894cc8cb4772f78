"""The decision log stores each distinct outcome set once, and reads back as before,
on both stores (SQLite, PostgreSQL).

Also (SQLite only): a store made with the first layout (the outcomes text in every decision row) is
moved to outcome sets when it is opened, and reads back the same.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from intercom_gateway.store.results import LoggedDecision
from intercom_gateway.store.schema import outcome_set_id
from intercom_gateway.store.sqlite import DecisionRow, SqliteStore
from tests.conftest import StoreFactory
from tests.factories import decision_row
from tests.stores import count_rows
from tests.unit.conftest import NOW

FORWARDED = json.dumps([{"destination": "cloud", "forwarded": True, "purposes": ["p1"]}])
WITHHELD = json.dumps([{"destination": "cloud", "forwarded": False, "reason": "x"}])


def _row(event_id: str, outcomes: str, *, decided_at: datetime = NOW) -> DecisionRow:
    return decision_row(event_id, outcomes=outcomes, decided_at=decided_at, consent_revision=3)


def _logged(decision: LoggedDecision | None) -> dict[str, Any] | None:
    return decision.as_dict() if decision else None


async def test_each_outcome_set_is_stored_once_and_every_decision_reads_back(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        store.record_decision(_row("e1", FORWARDED))
        store.record_decision(_row("e2", WITHHELD))
        await store.flush()
        store.record_decision(_row("e3", FORWARDED))  # a set already stored
        await store.flush()
        e1, e2, e3 = [_logged(await store.decision(e)) for e in ("e1", "e2", "e3")]
        sets = await count_rows(store, "outcome_sets")

    assert sets == 2
    assert e1 is not None and e2 is not None and e3 is not None
    assert e1["outcomes"] == e3["outcomes"] == json.loads(FORWARDED)
    assert e2["outcomes"] == json.loads(WITHHELD)
    assert e1 == {
        "event_id": "e1",
        "decision_id": "decision-e1",
        "building_id": "b001",
        "dwelling_id": "d0001",
        "event_type": "visitor",
        "decided_at": NOW.isoformat(),
        "policy_version": "2026-04-01",
        "consent_revision": 3,
        "outcomes": json.loads(FORWARDED),
    }


async def test_a_set_is_recorded_again_after_another_process_starts(
    store_factory: StoreFactory,
) -> None:
    # The set's key is its text's hash, so a second store (another run, or another
    # gateway on a shared store) records the same key and stores nothing twice.
    for event_id in ("e1", "e2"):
        async with store_factory() as store:
            store.record_decision(_row(event_id, FORWARDED))
    async with store_factory() as store:
        assert await count_rows(store, "outcome_sets") == 1
        assert await count_rows(store, "decisions") == 2


FIRST_LAYOUT = """
CREATE TABLE decisions (
    event_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, building_id TEXT NOT NULL,
    dwelling_id TEXT NOT NULL, event_type TEXT NOT NULL, decided_at TEXT NOT NULL,
    policy_version TEXT NOT NULL, consent_revision INTEGER NOT NULL,
    outcomes TEXT NOT NULL);
CREATE INDEX decisions_dwelling ON decisions (building_id, dwelling_id, decided_at);
"""


async def test_a_decision_log_of_the_first_layout_is_moved_to_sets(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_LAYOUT)
        db.executemany(
            "INSERT INTO decisions"
            " VALUES (?, ?, 'b001', 'd0001', 'visitor', ?, '2026-04-01', 3, ?)",
            [
                ("e1", "decision-e1", NOW.isoformat(), FORWARDED),
                ("e2", "decision-e2", NOW.isoformat(), WITHHELD),
                ("e3", "decision-e3", NOW.isoformat(), FORWARDED),
            ],
        )
    db.close()

    async with SqliteStore.open(path) as store:
        moved = {e: _logged(await store.decision(e)) for e in ("e1", "e2", "e3")}
        store.record_decision(_row("e4", FORWARDED))  # and the log goes on
    async with SqliteStore.open(path) as store:  # opening again changes nothing
        e4 = _logged(await store.decision("e4"))

    assert {e: row["outcomes"] for e, row in moved.items() if row} == {
        "e1": json.loads(FORWARDED),
        "e2": json.loads(WITHHELD),
        "e3": json.loads(FORWARDED),
    }
    assert e4 is not None and e4["outcomes"] == json.loads(FORWARDED)
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
        indexes = {row[1] for row in db.execute("PRAGMA index_list(decisions)")}
        sets = dict(db.execute("SELECT id, outcomes FROM outcome_sets").fetchall())
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "outcomes" not in columns and "outcome_set" in columns
    assert "decisions_dwelling" in indexes
    assert sets == {outcome_set_id(FORWARDED): FORWARDED, outcome_set_id(WITHHELD): WITHHELD}
    assert "decisions_first_layout" not in tables
