"""Receipts name exactly the settled events, on each panel's own topic, after the commit.

The gateway runs on the in-memory bus with a real store (SQLite, then PostgreSQL). A
spy around the bus reads the database through a separate connection at the moment each
receipt is sent:
only committed rows are visible there, so a receipt that named an event before its
records were committed would fail the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import Receipt, RejectReason
from intercom_gateway.gateway.receipts import MAX_IDS_PER_RECEIPT, Receipts, rejected_target
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message, settings_message
from tests.stores import committed


@dataclass
class SpyBus:
    """The gateway's bus, noting for each receipt what the database had committed then."""

    bus: MemoryBus
    settings: Settings
    receipts: list[tuple[str, Receipt, set[str]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    async def publish(self, topic: str, payload: bytes, **options: Any) -> None:
        if topic.endswith("/receipts"):
            done = {row[0] for row in committed(self.settings, "SELECT event_id FROM completed")}
            self.receipts.append((topic, Receipt.model_validate_json(payload), done))
        await self.bus.publish(topic, payload, **options)


@pytest.fixture
async def world(tmp_path: Path, both_stores: str) -> AsyncIterator[tuple[Gateway, SpyBus]]:
    settings = gateway_settings(tmp_path)
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        spy = SpyBus(MemoryBroker().client("gateway"), settings)
        gateway._bus = spy  # handle() is driven directly
        yield gateway, spy


_mid = iter(range(1, 10_000))


async def handle(gateway: Gateway, spy: SpyBus, topic: str, payload: bytes, **kw: Any) -> None:
    message = Message(topic=topic, payload=payload, qos=1, mid=next(_mid), **kw)
    await gateway.handle(spy, message)


def named(receipts: Sequence[tuple[str, Receipt, set[str]]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for topic, receipt, _ in receipts:
        out.setdefault(topic, set()).update(str(i) for i in receipt.event_ids)
    return out


def device_topic(data: dict[str, Any]) -> str:
    return topics.receipts(data["building_id"], data["device"]["id"])


async def test_receipts_name_exactly_the_settled_events_after_their_commit(
    world: tuple[Gateway, SpyBus],
) -> None:
    gateway, spy = world
    visitor = event_dict("visitor", dwelling="d0001")
    alarm = event_dict("alarm", dwelling="d0001")
    parcel = event_dict("delivery_box", dwelling="d0002")
    for data in (visitor, alarm, parcel):
        await handle(gateway, spy, *panel_message(data))
    # Handled and published, but nothing committed yet: no receipt may exist.
    assert spy.receipts == []
    await gateway.finish_in_flight()

    assert named(spy.receipts) == {
        device_topic(visitor): {visitor["event_id"], alarm["event_id"]},
        device_topic(parcel): {parcel["event_id"]},
    }
    for _, receipt, done in spy.receipts:
        assert {str(i) for i in receipt.event_ids} <= done  # after the commit
        assert receipt.gateway_id == gateway.settings.gateway_id
    # Each event named once, and one receipt per device per batch: two receipts of one
    # device saw different commits. (How many batches it takes is the store's timing: on
    # PostgreSQL a partner copy held for its ledger intent settles in a later flush.)
    assert sum(len(receipt.event_ids) for _, receipt, _ in spy.receipts) == 3
    batches = [(topic, frozenset(done)) for topic, _, done in spy.receipts]
    assert len(batches) == len(set(batches))


async def test_duplicates_replays_and_consent_withheld_events_are_named_too(
    world: tuple[Gateway, SpyBus],
) -> None:
    gateway, spy = world
    first = event_dict("return_home", dwelling="d0001")
    await handle(gateway, spy, *panel_message(first))
    await gateway.finish_in_flight()
    spy.receipts.clear()

    # The panel resends (no receipt reached it), and the broker redelivers it (dup).
    await handle(gateway, spy, *panel_message(first))
    await handle(gateway, spy, *panel_message(first), dup=True)
    # Return-home notification off: withheld at the consent gate, nothing stored.
    off = settings_message({"kind": "return_home_notification", "enabled": False}, dwelling="d0001")
    await handle(gateway, spy, *off)
    withheld = event_dict("return_home", dwelling="d0001")
    await handle(gateway, spy, *panel_message(withheld))
    await gateway.finish_in_flight()

    assert gateway.metrics.rejected[RejectReason.REPLAYED.value] == 1
    assert gateway.metrics.duplicates == 1
    assert named(spy.receipts) == {device_topic(first): {first["event_id"], withheld["event_id"]}}
    assert await gateway.store.decision(withheld["event_id"]) is None  # §7(1)②: not kept


async def test_a_replay_of_an_event_still_in_flight_waits_for_the_first_copy(
    world: tuple[Gateway, SpyBus],
) -> None:
    gateway, spy = world
    data = event_dict("security", dwelling="d0002")
    await handle(gateway, spy, *panel_message(data))
    await handle(gateway, spy, *panel_message(data))  # resent before the first committed
    await gateway.finish_in_flight()
    (_, receipt, done), *more = spy.receipts
    assert more == []
    assert [str(i) for i in receipt.event_ids] == [data["event_id"]]
    assert data["event_id"] in done


async def test_rejected_events_are_named_when_their_id_can_be_read(
    world: tuple[Gateway, SpyBus],
) -> None:
    gateway, spy = world
    bad = event_dict("alarm", dwelling="d0001", severity="apocalyptic")  # schema violation
    topic, _ = panel_message(bad)
    await handle(gateway, spy, topic, json.dumps(bad).encode())
    await handle(gateway, spy, topic, b"{not json")
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected[RejectReason.SCHEMA_VIOLATION.value] == 1
    assert named(spy.receipts) == {device_topic(bad): {bad["event_id"]}}


async def test_no_receipt_for_what_was_not_settled(world: tuple[Gateway, SpyBus]) -> None:
    gateway, spy = world
    data = event_dict("visitor", dwelling="d0001")
    await handle(gateway, spy, *panel_message(data))
    await gateway.finish_in_flight()
    assert gateway.receipts.pending == 0
    await gateway.finish_in_flight()  # an empty batch publishes no empty receipt
    assert len(spy.receipts) == 1


def test_rejected_target_reads_only_what_it_may() -> None:
    data = event_dict("visitor", dwelling="d0001")
    topic, payload = panel_message(data)
    device = data["device"]["id"]
    assert rejected_target(topic, payload, RejectReason.STALE) == ("b001", device, data["event_id"])
    for reason in (RejectReason.OVERSIZED, RejectReason.MALFORMED_JSON, RejectReason.REPLAYED):
        assert rejected_target(topic, payload, reason) is None
    assert rejected_target("not/a/panel/topic", payload, RejectReason.STALE) is None
    assert rejected_target(topic, b'{"event_id": "no-uuid"}', RejectReason.STALE) is None
    assert rejected_target(topic, b"[1, 2]", RejectReason.SCHEMA_VIOLATION) is None
    assert rejected_target(topic, b"[" * 5000, RejectReason.SCHEMA_VIOLATION) is None


async def test_a_device_that_settled_very_many_events_gets_several_receipts() -> None:
    broker = MemoryBroker()
    observer = broker.client("observer")
    await observer.subscribe(topics.RECEIPTS_FILTER)
    receipts = Receipts("gw-test")
    ids = [event_dict("visitor")["event_id"] for _ in range(MAX_IDS_PER_RECEIPT + 3)]
    for event_id in ids:
        receipts.settle(("b001", "panel-b001-d0001", event_id))
    await receipts.publish(broker.client("gateway"))
    assert receipts.published == 2
    assert receipts.named == len(ids)
