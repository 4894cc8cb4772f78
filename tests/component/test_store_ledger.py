"""The provision ledger counts a provision once (§8), even if its event is handled twice.

Whatever keeps the rows unique (today the ledger's UNIQUE (event_id, recipient, part)
key), these tests hold each store to it (a real SQLite file, a real PostgreSQL
database): across batches, within one batch, and without swallowing an event's first
provisions.
"""

from __future__ import annotations

from dataclasses import replace

from intercom_gateway.store import Store
from tests.factories import ledger_row

ROW = ledger_row()
GROUP = replace(ROW, recipient="group", recipient_kind="group", third_party=False)


async def _pairs(store: Store) -> list[tuple[str, str]]:
    return sorted((row.event_id, row.recipient) for row in await store.provisions())


async def test_a_completed_events_provisions_are_not_recorded_again(any_store: Store) -> None:
    store = any_store  # SQLite, then PostgreSQL
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


async def test_an_event_handled_twice_in_one_batch_is_recorded_once(any_store: Store) -> None:
    store = any_store  # SQLite, then PostgreSQL
    # A lost connection drops what was in flight but not what waits for the store:
    # the redelivered event can be completed again before the first batch is written.
    for at, decision in ((1.0, "decision-1"), (2.0, "decision-2")):
        store.record_provisions(replace(r, decision_id=decision) for r in (ROW, GROUP))
        store.record_completed("e1", at)
    await store.flush()
    rows = [r.as_dict() for r in await store.provisions()]
    assert await _pairs(store) == [("e1", "group"), ("e1", "partner:concierge")]
    assert {row["decision_id"] for row in rows} == {"decision-1"}  # the first is kept


async def test_provisions_of_an_event_not_yet_completed_are_recorded(any_store: Store) -> None:
    store = any_store  # SQLite, then PostgreSQL
    # Whatever keeps the rows unique must not swallow an event's first provisions,
    # which commit in the same batch as its completion record.
    store.record_provisions([ROW, GROUP])
    store.record_completed("e1", 1.0)
    await store.flush()
    assert await _pairs(store) == [("e1", "group"), ("e1", "partner:concierge")]
