"""No unrecorded provision (§8; issue 13): the ledger row is committed before the copy
leaves, completed on the broker's acknowledgement, and a provision that may or may not
have happened is kept as "unconfirmed", never dropped, never recorded twice.

The gateway on the in-memory bus with a real SQLite file; the bus below reads the file
through a second connection at the instant each copy is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import topics
from intercom_gateway.errors import ConnectionLost, PublishFailed
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.resident.service import provisions_csv
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store, open_store, sqlite_path
from intercom_gateway.store.sqlite import SqliteStore
from tests.factories import event_dict, gateway_settings, ledger_row, panel_message
from tests.helpers import collect

LEDGER_PREFIXES = ("partners/", "group/")


def _recipient(topic: str) -> str:
    return "group" if topic.startswith("group/") else f"partner:{topic.split('/')[1]}"


def _part(topic: str) -> str:
    """The ledger's part of a copy: an image travels, and is recorded, on its own."""
    return "image" if topics.is_image(topic) else "event"


Key = tuple[str, str, str]  # (event, recipient, part): the ledger's key


class WitnessBus(MemoryBus):
    """Records what the ledger file holds for each ledger copy as it is published, and
    can make chosen copies fail: ``fail(topic)`` returns the error to report, if any,
    and whether the copy still reached the broker first."""

    def __init__(self, broker: MemoryBroker, settings: Settings) -> None:
        super().__init__(broker, "gateway")
        self.settings = settings
        self.seen: dict[Key, str | None] = {}
        self.fail: Callable[[str], tuple[BaseException, bool] | None] = lambda topic: None

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if topic.startswith(LEDGER_PREFIXES):
            key = (json.loads(payload)["event_id"], _recipient(topic), _part(topic))
            self.seen[key] = await _status(self.settings, *key)
        failure = self.fail(topic)
        if failure is None:
            await super().publish(topic, payload, **kwargs)
            return
        error, reached = failure
        if reached:  # the broker took it; its acknowledgement never came
            await super().publish(topic, payload, qos=1)
        kwargs["on_done"](error)


async def _status(settings: Settings, event_id: str, recipient: str, part: str) -> str | None:
    """The row's status as another connection to the store sees it (committed only)."""
    path = sqlite_path(settings)
    if path is None:
        connection = await asyncpg.connect(settings.store)
        try:
            found = await connection.fetchval(
                "SELECT status FROM ledger WHERE event_id = $1 AND recipient = $2 AND part = $3",
                event_id,
                recipient,
                part,
            )
        finally:
            await connection.close()
        return None if found is None else str(found)
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute(
            "SELECT status FROM ledger WHERE event_id = ? AND recipient = ? AND part = ?",
            (event_id, recipient, part),
        ).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def settings(tmp_path: Path, both_stores: str) -> Settings:
    return gateway_settings(tmp_path)


@contextlib.asynccontextmanager
async def gateway_on(settings: Settings) -> AsyncIterator[tuple[Gateway, WitnessBus, MemoryBus]]:
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = WitnessBus(broker, settings)
        broker.buses.append(bus)
        gateway._bus = bus  # handle() is driven directly, without serve()
        observer = broker.client("observer")
        await observer.subscribe("partners/#", "group/#")
        yield gateway, bus, observer


def inbound(topic: str, payload: bytes, *, mid: int = 1, dup: bool = False) -> Message:
    return Message(topic=topic, payload=payload, qos=1, dup=dup, mid=mid)


async def _rows(gateway: Gateway) -> dict[Key, dict[str, Any]]:
    rows = [r.as_dict() for r in await gateway.store.provisions()]
    keyed = {(r["event_id"], r["recipient"], r["part"]): r for r in rows}
    assert len(keyed) == len(rows)  # never two rows for one provision
    return keyed


async def test_a_provision_is_on_record_before_its_copy_is_published(settings: Settings) -> None:
    async with gateway_on(settings) as (gateway, bus, observer):
        data = event_dict("delivery_box", dwelling="d0001")
        await gateway.handle(bus, inbound(*panel_message(data)))
        await gateway.finish_in_flight()
        copies = await collect(observer, 3)  # group, concierge and parcel-unlock
        rows = await _rows(gateway)

    keys = {(data["event_id"], _recipient(m.topic), _part(m.topic)) for m in copies}
    assert len(keys) == 3
    assert bus.seen == dict.fromkeys(keys, "intended")  # committed before it left
    assert {k: r["status"] for k, r in rows.items()} == dict.fromkeys(keys, "delivered")
    assert [m.mid for m in bus.acked] == [1]


async def test_a_copy_whose_acknowledgement_was_lost_stays_on_record_until_redelivered(
    settings: Settings,
) -> None:
    """The case of issue 13: the partner got the copy, the gateway never heard back."""
    data = event_dict("visitor", dwelling="d0002")
    async with gateway_on(settings) as (gateway, bus, observer):
        bus.fail = lambda topic: (
            (ConnectionLost("lost"), True) if topic.startswith("partners/concierge/") else None
        )
        await gateway.handle(bus, inbound(*panel_message(data), mid=1))
        await gateway.finish_in_flight()
        # group, and concierge's two messages: the visitor's facts and its image
        received = {(_recipient(m.topic), _part(m.topic)) for m in await collect(observer, 3)}
        after_loss = await _rows(gateway)
        assert bus.acked == []  # not acknowledged: the broker delivers it again

        bus.fail = lambda topic: None
        await gateway.handle(bus, inbound(*panel_message(data), mid=2, dup=True))
        await gateway.finish_in_flight()
        after_redelivery = await _rows(gateway)

    concierge = [(data["event_id"], "partner:concierge", part) for part in ("event", "image")]
    assert {("partner:concierge", "event"), ("partner:concierge", "image")} <= received
    for key in concierge:
        assert after_loss[key]["status"] == "unconfirmed"
    # The copies the broker did acknowledge are on record as delivered already.
    assert {k: r["status"] for k, r in after_loss.items() if k not in concierge} == {
        (data["event_id"], "group", "event"): "delivered"
    }
    assert after_redelivery.keys() == after_loss.keys()  # upgraded, not added
    for key in concierge:
        assert after_redelivery[key]["status"] == "delivered"
        assert after_redelivery[key]["id"] == after_loss[key]["id"]
    assert [m.mid for m in bus.acked] == [2]


async def test_a_refused_copy_is_unconfirmed_and_its_event_still_completes(
    settings: Settings,
) -> None:
    data = event_dict("alarm", dwelling="d0003")
    async with gateway_on(settings) as (gateway, bus, _):
        refusal = PublishFailed("not authorised", topic="partners/elder-watch", reason_code=0x87)
        bus.fail = lambda topic: (
            (refusal, False) if topic.startswith("partners/elder-watch/") else None
        )
        await gateway.handle(bus, inbound(*panel_message(data)))
        await gateway.finish_in_flight()
        rows = await _rows(gateway)
        completed = await gateway.store.recent_completed(10)

    assert rows[(data["event_id"], "partner:elder-watch", "event")]["status"] == "unconfirmed"
    assert {r["status"] for k, r in rows.items() if k[1] != "partner:elder-watch"} == {"delivered"}
    assert gateway.metrics.publish_refused == 1
    assert data["event_id"] in completed and [m.mid for m in bus.acked] == [1]


async def test_intents_a_stopped_gateway_left_are_unconfirmed_then_upgraded_by_redelivery(
    settings: Settings,
) -> None:
    data = event_dict("visitor", dwelling="d0001")
    intent = ledger_row(event_id=data["event_id"], dwelling_id="d0001", decision_id="first")
    async with open_store(settings) as store:
        await store.save_intents([intent])  # ...and the process died before the PUBACK

    async with gateway_on(settings) as (gateway, bus, _):
        at_start = await _rows(gateway)
        await gateway.handle(bus, inbound(*panel_message(data), dup=True))
        await gateway.finish_in_flight()
        after = await _rows(gateway)

    key = (data["event_id"], "partner:concierge", "event")
    image = (data["event_id"], "partner:concierge", "image")
    assert {k: r["status"] for k, r in at_start.items()} == {key: "unconfirmed"}
    assert after[key]["status"] == "delivered"
    assert after[key]["decision_id"] == "first"  # the first record, completed
    # The image, a provision of its own that the first process never intended, is new.
    assert after[image]["status"] == "delivered" and after[image]["rule_id"] == "partner-images"
    assert after.keys() == {key, image, (data["event_id"], "group", "event")}


async def test_a_delivered_row_is_never_marked_unconfirmed(any_store: Store) -> None:
    row, store = ledger_row(), any_store
    await store.save_intents([row])
    store.record_provisions([row])
    await store.flush()
    store.record_unconfirmed([row])  # a later, failed handling of the same event
    await store.save_intents([row])
    await store.flush()
    assert await store.save_unconfirmed() == 0
    [stored] = [r.as_dict() for r in await store.provisions()]
    assert stored["status"] == "delivered"


async def test_a_ledger_of_the_first_layout_gains_a_status_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(FIRST_LAYOUT)
        db.execute(
            "INSERT INTO ledger (at, recipient, recipient_kind, third_party, building_id,"
            " dwelling_id, event_id, event_type, items, image, purposes, rule_id,"
            " policy_version, decision_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ledger_row(event_id="old").as_params()[:14],  # the first layout has no part
        )
        db.commit()
    async with SqliteStore.open(path) as store:
        await store.save_intents([ledger_row(event_id="new")])
        rows = {r.event_id: r.as_dict() for r in await store.provisions()}
        summary = (await store.ledger_summary("b001", "d0001")).as_dict()

    assert rows["old"]["status"] == "delivered"  # written after its PUBACK, as all were
    assert rows["old"]["part"] == "event"
    assert rows["new"]["status"] == "intended"
    assert summary["by_status"] == {"intended": 1, "delivered": 1, "unconfirmed": 0}
    assert summary["by_recipient"][0]["unconfirmed"] == 0
    csv_lines = provisions_csv(list(rows.values())).splitlines()
    assert csv_lines[0].endswith(",status")
    assert csv_lines[1].endswith(",delivered") and csv_lines[2].endswith(",intended")


FIRST_LAYOUT = """
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, recipient TEXT NOT NULL,
    recipient_kind TEXT NOT NULL, third_party INTEGER NOT NULL,
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, items TEXT NOT NULL, image INTEGER NOT NULL,
    purposes TEXT NOT NULL, rule_id TEXT NOT NULL, policy_version TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    UNIQUE (event_id, recipient));
"""


async def test_no_copy_waits_for_the_batch_timer_and_intents_share_commits(
    settings: Settings,
) -> None:
    """With a batch timer of an hour, partner copies still go out at once: their intents
    are committed on their own, many to a commit under a burst."""
    slow = settings.model_copy(update={"flush_interval": 3_600.0})
    broker = MemoryBroker()
    events = [event_dict("visitor", dwelling=f"d000{1 + i % 3}") for i in range(60)]
    async with open_store(slow) as store:
        gateway = await Gateway.load(slow, store)
        observer = broker.client("observer")
        await observer.subscribe("partners/concierge/#")
        stop = asyncio.Event()
        async with broker.client("gateway") as bus:
            serving = asyncio.create_task(gateway.serve(bus, stop=stop))
            await asyncio.wait_for(gateway.online.wait(), 5)
            panel = broker.client("panel")
            for data in events:
                await panel.publish(*panel_message(data))
            # Concierge gets each visitor's facts and, in a message of its own, its image.
            copies = await collect(observer, 2 * len(events), timeout=10)
            stop.set()
            await asyncio.wait_for(serving, 10)
    facts = [m for m in copies if not topics.is_image(m.topic)]
    assert {json.loads(m.payload)["event_id"] for m in facts} == {e["event_id"] for e in events}
    assert len(facts) == len(events)
    # Group, concierge's facts, concierge's image: each copy its own intent.
    assert gateway.ledger.intents == 3 * len(events)
    assert gateway.ledger.commits < gateway.ledger.intents


async def test_a_ledger_keyed_by_event_and_recipient_is_rekeyed_by_part(tmp_path: Path) -> None:
    """A store from before images were messages of their own: its rows keep their ids and
    statuses as "event" rows, and the same event's image to the same recipient, a
    provision of its own now, gets a row of its own."""
    path = tmp_path / "second.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(FIRST_LAYOUT + "ALTER TABLE ledger ADD COLUMN status TEXT NOT NULL;")
        combined = replace(
            ledger_row(event_id="old"),
            items=("event_id", "image", "origin"),
            image=True,
            purposes=("partner_provision", "resident_confirmation"),
            rule_id="partner-events+partner-images",
        )
        db.execute(
            "INSERT INTO ledger (id, at, recipient, recipient_kind, third_party, building_id,"
            " dwelling_id, event_id, event_type, items, image, purposes, rule_id,"
            " policy_version, decision_id, status)"
            " VALUES (7, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'unconfirmed')",
            combined.as_params()[:14],
        )
        db.commit()
    image = replace(ledger_row(event_id="old"), part="image", rule_id="partner-images")
    async with SqliteStore.open(path) as store:
        await store.save_intents([image])
        rows = {(r.event_id, r.part): r.as_dict() for r in await store.provisions()}
    with contextlib.closing(sqlite3.connect(path)) as db:
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    old = rows["old", "event"]
    # What was recorded stays as it was recorded: one message, the image inside it.
    assert (old["id"], old["status"], old["rule_id"]) == (
        7,
        "unconfirmed",
        "partner-events+partner-images",
    )
    assert old["image"] and old["items"] == ["event_id", "image", "origin"]
    assert rows["old", "image"]["status"] == "intended"
    assert {"ledger_dwelling", "ledger_at", "ledger_intended"} <= indexes
    assert "ledger_before_parts" not in tables
