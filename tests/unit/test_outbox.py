"""The panel side of the receipt protocol: keep until a receipt, resend identical, bounded."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import Receipt, utc_now
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.simulators.fleet import run_fleet
from intercom_gateway.simulators.outbox import Outbox, ResendPolicy, event_id_of

START = datetime(2026, 4, 1, 9, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def receipt(*event_ids: str) -> bytes:
    ids = tuple(uuid.UUID(i) for i in event_ids)
    return Receipt(gateway_id="gw", event_ids=ids, at=utc_now()).model_dump_json().encode()


def new_id() -> str:
    return str(uuid.uuid4())


async def test_an_unconfirmed_event_is_due_after_the_timeout_then_with_backoff() -> None:
    clock = Clock()
    outbox = Outbox(ResendPolicy(timeout=10, backoff=2, max_timeout=30), clock=clock)
    event_id = new_id()
    await outbox.put(event_id, "t", b"payload")
    clock.t = 9.9
    assert outbox.due() == []
    resends = []
    for t in (10.0, 29.9, 30.0, 59.9, 60.0, 89.9, 90.0):
        clock.t = t
        resends.append((t, outbox.due()))
    # Waits of 10, then 20, then 30 (capped), 30: the same bytes each time.
    assert [t for t, due in resends if due] == [10.0, 30.0, 60.0, 90.0]
    assert all(due == [("t", b"payload")] for _, due in resends if due)
    assert outbox.resent == 4


async def test_a_receipt_forgets_exactly_the_events_it_names() -> None:
    outbox = Outbox(clock=Clock())
    kept = [new_id() for _ in range(3)]
    for event_id in kept:
        await outbox.put(event_id, "t", event_id.encode())
    stranger = new_id()
    assert await outbox.confirm(receipt(kept[0], kept[2], stranger)) == 2
    assert kept[1] in outbox and len(outbox) == 1
    assert await outbox.confirm(b"not a receipt") == 0
    assert await outbox.confirm(receipt(kept[0])) == 0  # named twice: nothing more to forget
    assert outbox.confirmed == 2


async def test_at_the_bound_a_new_event_waits_for_a_receipt() -> None:
    outbox = Outbox(ResendPolicy(limit=2), clock=Clock())
    first, second, third = new_id(), new_id(), new_id()
    await outbox.put(first, "t", b"1")
    await outbox.put(second, "t", b"2")
    waiting = asyncio.create_task(outbox.put(third, "t", b"3"))
    await asyncio.sleep(0)  # let it reach the wait
    assert not waiting.done() and third not in outbox and outbox.waited == 1
    await outbox.confirm(receipt(first))
    await asyncio.wait_for(waiting, 1)
    assert third in outbox and first not in outbox and len(outbox) == 2


def test_a_resend_policy_refuses_nonsense() -> None:
    for bad in ({"timeout": 0}, {"backoff": 0.5}, {"timeout": 10, "max_timeout": 5}, {"limit": 0}):
        with pytest.raises(ValueError):
            ResendPolicy(**bad)


async def test_the_fleet_resends_identical_events_until_receipts_name_them() -> None:
    """A stand-in gateway that ignores every event the first time it sees it."""
    broker = MemoryBroker()
    gateway = broker.client("gateway")
    await gateway.subscribe(topics.PANEL_EVENTS_FILTER)
    seen: dict[str, list[Message]] = {}

    async def answer_the_second_copy(bus: MemoryBus) -> None:
        async for message in bus.messages():
            copies = seen.setdefault(event_id_of(message.payload), [])
            copies.append(message)
            if len(copies) == 2:
                panel = topics.parse_panel_topic(message.topic)
                assert panel is not None
                topic = topics.receipts(panel.building, panel.device)
                await bus.publish(topic, receipt(event_id_of(message.payload)))

    answering = asyncio.create_task(answer_the_second_copy(gateway))
    outbox = Outbox(ResendPolicy(timeout=0.05, max_timeout=0.05))
    summary = await run_fleet(
        broker.client("fleet"),
        generate_registry(buildings=1, dwellings=4),
        seed=3,
        acceleration=float("inf"),
        max_events=20,
        start=START,
        outbox=outbox,
        settle=5,
    )
    answering.cancel()

    assert summary.published == 20
    assert (summary.confirmed, summary.resent, summary.unconfirmed) == (20, 20, 0)
    assert len(seen) == 20
    for copies in seen.values():
        assert len(copies) == 2
        assert copies[0].topic == copies[1].topic and copies[0].payload == copies[1].payload
    assert "20 confirmed, 20 resends, 0 still unconfirmed" in summary.render()
    assert json.loads(next(iter(seen.values()))[0].payload)["event_id"] in seen
