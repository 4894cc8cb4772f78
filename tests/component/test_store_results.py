"""The store's typed §8 answers show, through ``as_dict``, exactly what the dict answers
did: the same keys in the same order, the same values, the same JSON text.

Each "before" reader below is the query and conversion the store used when its answers
were dicts (read here with the standard library, on the same file).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.store.sqlite import RejectionRow, SqliteStore
from tests.factories import ledger_row
from tests.stores import AT, JST, KEY, record_decisions, save_dwelling, save_request


@contextmanager
def _raw(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        yield db


def _before(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with _raw(path) as db:
        return [dict(row) for row in db.execute(sql, params)]


def _text(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


@pytest.fixture
async def path(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    row = ledger_row(at=AT)
    async with SqliteStore.open(path) as store:
        await save_dwelling(store)
        await store.save_intents([replace(row, event_id="e-intended")])
        store.record_provisions(
            [row, replace(row, recipient="group", third_party=False, at=AT.astimezone(JST))]
        )
        store.record_provisions([replace(row, event_id="e2", at=AT + timedelta(days=1))])
        record_decisions(store)
        store.record_rejection(
            RejectionRow(AT, "malformed_json", "bad", "intercom/v1/b001/panel-b001-d0001/x", "{")
        )
        payload = json.dumps({"building_id": "b001", "dwelling_id": "d0001"})
        store.record_rejection(RejectionRow(AT, "schema_violation", "bad", "t", payload))
        store.record_completed("e1", 1.0)
        await store.flush()
        await save_request(store)
    return path


async def test_provisions_read_as_before(path: Path) -> None:
    before = _before(path, "SELECT * FROM ledger ORDER BY at, id")
    for row in before:
        row["items"], row["purposes"] = json.loads(row["items"]), json.loads(row["purposes"])
        row["third_party"], row["image"] = bool(row["third_party"]), bool(row["image"])
    async with SqliteStore.open(path) as store:
        rows = await store.provisions()
    assert len(rows) == 4 and {r.status for r in rows} == {"intended", "delivered"}
    assert _text([r.as_dict() for r in rows]) == _text(before)
    assert rows[0].at.tzinfo is not None and isinstance(rows[0].items, tuple)


async def test_the_decision_log_reads_as_before(path: Path) -> None:
    async with SqliteStore.open(path) as store:
        logged = await store.decision("e1")
        summary = await store.decision_summary(*KEY)
    assert logged is not None and logged.decided_at == AT
    assert logged.as_dict() == {
        "event_id": "e1",
        "decision_id": "d-e1",
        "building_id": "b001",
        "dwelling_id": "d0001",
        "event_type": "visitor",
        "decided_at": AT.isoformat(),
        "policy_version": "2026-04-01",
        "consent_revision": 1,
        "outcomes": [],
    }
    by_type = _before(
        path,
        "SELECT event_type, COUNT(*) AS n, MIN(decided_at) AS first, MAX(decided_at) AS last"
        " FROM decisions WHERE building_id = ? AND dwelling_id = ?"
        " GROUP BY event_type ORDER BY event_type",
        KEY,
    )
    assert _text(summary.as_dict()) == _text({"events": 3, "by_event_type": by_type})


async def test_the_ledger_summary_reads_as_before(path: Path) -> None:
    by_status = ", ".join(
        f"SUM(status = '{s}') AS {s}" for s in ("intended", "delivered", "unconfirmed")
    )
    rows = _before(
        path,
        "SELECT recipient, third_party, COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last,"
        f" {by_status} FROM ledger WHERE building_id = ? AND dwelling_id = ?"
        " GROUP BY recipient, third_party ORDER BY recipient",
        KEY,
    )
    before = {
        "rows": sum(r["n"] for r in rows),
        "by_status": {s: sum(r[s] for r in rows) for s in ("intended", "delivered", "unconfirmed")},
        "by_recipient": [{**r, "third_party": bool(r["third_party"])} for r in rows],
    }
    async with SqliteStore.open(path) as store:
        summary = await store.ledger_summary(*KEY)
    assert summary.rows == 4 and summary.by_status["intended"] == 1
    assert _text(summary.as_dict()) == _text(before)


async def test_consent_history_rejections_and_requests_read_as_before(path: Path) -> None:
    history = _before(path, "SELECT * FROM consent_history ORDER BY id")
    kept = _before(path, "SELECT * FROM rejections ORDER BY id DESC LIMIT 100")
    requests = _before(path, "SELECT request_id, at, kind, via, params, outcome FROM requests")
    for request in requests:
        request["params"] = json.loads(request["params"])
    async with SqliteStore.open(path) as store:
        changes = await store.consent_history(*KEY)
        rejections = await store.rejections()
        dwelling = await store.dwelling_rejections(*KEY)
        logged = await store.requests(*KEY)
    assert [c.applied for c in changes] == [True, False] and changes[1].change_id == "c-1"
    assert _text([c.as_dict() for c in changes]) == _text(history)
    assert _text([r.as_dict() for r in rejections]) == _text(kept)
    # A resident is shown the dwelling's rejected input without its payload.
    shown = [{k: v for k, v in r.items() if k != "payload"} for r in reversed(kept)]
    assert _text([r.as_dict() for r in dwelling]) == _text(shown)
    assert _text([r.as_dict() for r in logged]) == _text(requests)


async def test_counts_and_an_erasure_answer_as_before(path: Path) -> None:
    async with SqliteStore.open(path) as store:
        counts = await store.counts()
        erased = await store.erase_dwelling(*KEY)
        after = await store.counts()
    assert counts.as_dict() == {
        "decisions": 3,
        "ledger": 4,
        "rejections": 2,
        "completed": 1,
        "consent_history": 2,
    }
    assert erased.as_dict() == {"decisions": 3, "rejections": 2}
    assert (after.decisions, after.rejections, after.ledger) == (0, 0, 4)
