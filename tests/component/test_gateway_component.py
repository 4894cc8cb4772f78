"""The gateway with a real store (SQLite, then PostgreSQL): acknowledgement,
de-duplication, replay and initialisation semantics, message by message.

Written once, run on both transports (``transport`` fixture): the in-memory broker and
the session's real Mosquitto, where the gateway publishes through ``MqttBus`` as its
generated account and an operator account observes. The inbound messages are made
here (their packet ids and DUP flags are the point of several tests), so the gateway's
acknowledgements are recorded, not sent. The shutdown test is memory-only: it needs a
bus that never completes a publish, which no broker can be asked to be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR
from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import RejectReason
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.store import open_store
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event_dict, gateway_settings, panel_message, settings_message
from tests.helpers import collect, collect_until
from tests.transports import Transport

# The gateway, its bus (with ``acked``) and an observer subscribed to everything.
World = tuple[Gateway, Any, Any]


@pytest.fixture
async def world(tmp_path: Path, transport: Transport, both_stores: str) -> AsyncIterator[World]:
    settings = gateway_settings(tmp_path)
    async with (
        open_store(settings) as store,
        transport.bus(GATEWAY) as bus,
        transport.bus(OPERATOR) as observer,
    ):
        gateway = await Gateway.load(settings, store)
        gateway._bus = bus  # handle() is driven directly below, without serve()
        # Retain handling 2: on the shared Mosquitto, no other test's retained messages.
        await observer.subscribe("#", retain_handling=2)
        yield gateway, bus, observer


def inbound(topic: str, payload: bytes, *, mid: int = 1, dup: bool = False) -> Message:
    return Message(topic=topic, payload=payload, qos=1, dup=dup, mid=mid)


async def test_an_event_is_acknowledged_only_after_its_records_are_committed(
    world: World,
) -> None:
    gateway, bus, _ = world
    data = event_dict("visitor", dwelling="d0001")
    await gateway.handle(bus, inbound(*panel_message(data)))
    # The batch is not committed (on memory every publish is done already).
    assert bus.acked == []
    assert await gateway.store.decision(data["event_id"]) is None
    await gateway.finish_in_flight()
    assert [m.mid for m in bus.acked] == [1]
    assert await gateway.store.decision(data["event_id"]) is not None
    assert {r.recipient for r in await gateway.store.provisions()} >= {"partner:concierge"}


async def test_acknowledgements_keep_arrival_order(
    world: World,
) -> None:
    gateway, bus, _ = world
    for mid in range(1, 6):
        data = event_dict("alarm", dwelling="d0002")
        await gateway.handle(bus, inbound(*panel_message(data), mid=mid))
    await gateway.finish_in_flight()
    assert [m.mid for m in bus.acked] == [1, 2, 3, 4, 5]


async def test_a_redelivered_completed_event_is_acknowledged_without_forwarding_again(
    world: World,
) -> None:
    gateway, bus, observer = world
    data = event_dict("delivery_box", dwelling="d0001")
    await gateway.handle(bus, inbound(*panel_message(data), mid=1))
    await gateway.finish_in_flight()
    first = await collect(observer, 1)  # at least the cloud copy is there
    del first
    forwarded_before = sum(gateway.metrics.forwarded.values())
    await gateway.handle(bus, inbound(*panel_message(data), mid=2, dup=True))
    await gateway.finish_in_flight()
    assert sum(gateway.metrics.forwarded.values()) == forwarded_before
    assert gateway.metrics.duplicates == 1
    assert [m.mid for m in bus.acked] == [1, 2]
    rows = [r.as_dict() for r in await gateway.store.provisions()]
    assert len(rows) == len({(r["event_id"], r["recipient"]) for r in rows})


async def test_a_replay_without_the_dup_flag_is_rejected(
    world: World,
) -> None:
    gateway, bus, _ = world
    data = event_dict("security", dwelling="d0003")
    await gateway.handle(bus, inbound(*panel_message(data), mid=1))
    await gateway.handle(bus, inbound(*panel_message(data), mid=2))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {RejectReason.REPLAYED.value: 1}
    assert [m.mid for m in bus.acked] == [1, 2]


async def test_an_initialised_dwelling_is_neither_forwarded_nor_stored(
    world: World,
) -> None:
    """§7(1)①: after the move-out setting nothing of the dwelling flows or is kept."""
    gateway, bus, observer = world
    topic, payload = settings_message({"kind": "initialise"}, dwelling="d0003")
    await gateway.handle(bus, inbound(topic, payload, mid=1))
    # After the consent notices to the services it used (spec item 11), the ack.
    ack = await collect_until(observer, topics.settings_ack("b001", "panel-b001-d0003"))
    assert json.loads(ack[-1].payload)["applied"] is True
    data = event_dict("visitor", dwelling="d0003")
    await gateway.handle(bus, inbound(*panel_message(data), mid=2))
    await gateway.finish_in_flight()
    assert await gateway.store.decision(data["event_id"]) is None
    assert data["event_id"] not in await gateway.store.recent_completed(100)
    # Its only provisions: the consent notices to the services it used (spec item 11).
    provisions = await gateway.store.provisions(dwelling_id="d0003")
    assert {r.event_type for r in provisions} == {"consent_notice"}
    assert len(provisions) == len(SAMPLE_SERVICES)
    assert sum(gateway.metrics.forwarded.values()) == 0
    history = [c.as_dict() for c in await gateway.store.consent_history("b001", "d0003")]
    assert history[-1]["applied"] == 1 and "initialise" in history[-1]["change"]


async def test_a_settings_change_is_recorded_once_even_if_delivered_twice(
    world: World,
) -> None:
    gateway, bus, _ = world
    topic, payload = settings_message(
        {"kind": "purpose_opt_out", "purpose": "marketing", "opted_out": True}, dwelling="d0001"
    )
    await gateway.handle(bus, inbound(topic, payload, mid=1))
    await gateway.handle(bus, inbound(topic, payload, mid=2, dup=True))
    await gateway.finish_in_flight()
    history = [c.as_dict() for c in await gateway.store.consent_history("b001", "d0001")]
    assert sum(1 for row in history if row["source"].startswith("panel:")) == 1
    assert gateway.consent("b001", "d0001").opted_out == ("marketing",)


async def test_an_analytics_copy_cannot_be_joined_to_the_identified_copies(
    world: World,
) -> None:
    """§5(5): no event id, no shared decision id, no dwelling in the analytics copy, and
    no time finer than its window: it is held, and released once the window has ended."""
    gateway, bus, observer = world
    data = event_dict("alarm", dwelling="d0002")
    await gateway.handle(bus, inbound(*panel_message(data)))
    await gateway.finish_in_flight()
    assert gateway.analytics.held == 1
    assert await gateway.release_analytics(bus) == 0  # its window is still open
    window_end = gateway.analytics.next_release(gateway.clock())
    gateway.clock = lambda: window_end
    assert await gateway.release_analytics(bus) == 1
    messages = await collect_until(observer, "analytics/")  # published last
    analytics = [m for m in messages if m.topic.startswith("analytics/")]
    cloud = [m for m in messages if m.topic.startswith("cloud/")]
    assert len(analytics) == 1 and len(cloud) == 1
    assert analytics[0].properties("event_id") == []
    assert cloud[0].properties("event_id") == [data["event_id"]]
    assert analytics[0].properties("decision_id") != cloud[0].properties("decision_id")
    assert data["event_id"] not in analytics[0].payload.decode()
    assert "d0002" not in analytics[0].payload.decode()
    copy, identified = json.loads(analytics[0].payload), json.loads(cloud[0].payload)
    assert copy["forwarded_at"] != identified["forwarded_at"]
    start = window_end - gateway.analytics.window
    assert datetime.fromisoformat(copy["forwarded_at"]) == start


class _StallingBus(MemoryBus):
    """Accepts the first ``accept`` publishes, then stalls as a full publish window would.

    Only the cloud copy is published from within the handling of an event now (the
    ledger's copies go out from its own task, and the analytics copy, which used to be
    the second, is held for its window): the handling is caught in its first publish.
    """

    def __init__(self, broker: MemoryBroker, *, accept: int = 0) -> None:
        super().__init__(broker, "stalling")
        self.stalled = asyncio.Event()
        self.accept = accept
        self.sent = 0

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if self.sent >= self.accept:
            self.stalled.set()
            await asyncio.Event().wait()  # never returns: cancelled by the shutdown
        self.sent += 1
        await super().publish(topic, payload, **kwargs)


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_shutdown_mid_message_finishes_and_leaves_that_message_unacknowledged(
    world: World,
) -> None:
    gateway, _, _ = world
    bus = _StallingBus(MemoryBroker())
    gateway._bus = bus
    handling = asyncio.create_task(
        gateway.handle(bus, inbound(*panel_message(event_dict("visitor", dwelling="d0001"))))
    )
    await asyncio.wait_for(bus.stalled.wait(), 5)
    handling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handling
    await asyncio.wait_for(gateway.finish_in_flight(), 5)  # must not hang
    assert bus.acked == []  # half-forwarded: the broker must deliver it again
    assert gateway.metrics.acked == 0
