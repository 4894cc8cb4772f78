"""The provision ledger counts a provision once (§8), even if its event is handled twice.

Whatever keeps the rows unique (today the ledger's UNIQUE (event_id, recipient) key),
these tests hold the store to it on a real SQLite file: across batches, within one
batch, and without swallowing an event's first provisions.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from intercom_gateway.store.sqlite import SqliteStore
from tests.factories import ledger_row

ROW = ledger_row()
GROUP = replace(ROW, recipient="group", recipient_kind="group", third_party=False)


async def _pairs(store: SqliteStore) -> list[tuple[str, str]]:
    return sorted((row.event_id, row.recipient) for row in await store.provisions())


async def test_a_completed_events_provisions_are_not_recorded_again(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "store.sqlite") as store:
        store.record_provisions([ROW, GROUP])
        store.record_completed("e1", 1.0)
        await store.flush()
        # The same event handled again (a redelivery whose id the gateway no longer
        # remembers), in a batch with a new event.
        store.record_provisions([ROW, GROUP])
        store.record_completed("e1", 2.0)
        store.record_provisions([replace(ROW, event_id="e2")])
        store.record_completed("e2", 2.0)
        await store.flush()

        assert await _pairs(store) == [
            ("e1", "group"),
            ("e1", "partner:concierge"),
            ("e2", "partner:concierge"),
        ]


async def test_an_event_handled_twice_in_one_batch_is_recorded_once(tmp_path: Path) -> None:
    # A lost connection drops what was in flight but not what waits for the store:
    # the redelivered event can be completed again before the first batch is written.
    async with SqliteStore.open(tmp_path / "store.sqlite") as store:
        for at, decision in ((1.0, "decision-1"), (2.0, "decision-2")):
            store.record_provisions(replace(r, decision_id=decision) for r in (ROW, GROUP))
            store.record_completed("e1", at)
        await store.flush()
        rows = [r.as_dict() for r in await store.provisions()]
        assert await _pairs(store) == [("e1", "group"), ("e1", "partner:concierge")]
        assert {row["decision_id"] for row in rows} == {"decision-1"}  # the first is kept


async def test_provisions_of_an_event_not_yet_completed_are_recorded(tmp_path: Path) -> None:
    # Whatever keeps the rows unique must not swallow an event's first provisions,
    # which commit in the same batch as its completion record.
    async with SqliteStore.open(tmp_path / "store.sqlite") as store:
        store.record_provisions([ROW, GROUP])
        store.record_completed("e1", 1.0)
        await store.flush()
        assert await _pairs(store) == [("e1", "group"), ("e1", "partner:concierge")]
