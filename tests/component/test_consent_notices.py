"""Consent notices through the gateway (spec item 11, §8, §5(1)②, §7(1)①): published
before the gateway takes its next message, recorded in the ledger once, and published
again by the next gateway when the one that applied the change died first.

Each test once per store (SQLite, PostgreSQL); the first ones on both transports (the
in-memory broker and the session's real Mosquitto, as ``test_gateway_component``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR
from intercom_gateway.bus import BrokerAddress, Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import ConsentNotice, Initialise, ServiceUse
from intercom_gateway.core.notices import NOTICE_EVENT_TYPE
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.errors import ConnectionLost
from intercom_gateway.gateway.notices import republish_notices
from intercom_gateway.gateway.partitioned import Partitioned, UnknownBuildings
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.qa.testing import sentinel_topic
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.resident.desk import ResidentDesk
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.settings import settings_change
from intercom_gateway.store import Store, open_store
from intercom_gateway.store.results import Provision
from tests.factories import event_dict, gateway_settings, panel_message, settings_message
from tests.helpers import collect_until
from tests.transports import Transport

World = tuple[Gateway, Any, Any, Settings]
STOP_CONCIERGE = {"kind": "service_use", "partner_id": "concierge", "used": False}


@pytest.fixture
async def world(tmp_path: Path, transport: Transport, both_stores: str) -> AsyncIterator[World]:
    settings = gateway_settings(tmp_path)
    async with (
        open_store(settings) as store,
        transport.bus(GATEWAY) as bus,
        transport.bus(OPERATOR) as observer,
    ):
        gateway = await Gateway.load(settings, store)
        gateway._bus = bus  # handle() is driven directly, without serve()
        await observer.subscribe(topics.partners_filter(), retain_handling=2)
        yield gateway, bus, observer, settings


def inbound(topic: str, payload: bytes, *, mid: int, dup: bool = False) -> Message:
    return Message(topic=topic, payload=payload, qos=1, dup=dup, mid=mid)


async def _partner_messages(bus: Any, observer: Any) -> list[Message]:
    """What the partners got so far: the gateway's account ends it with a sentinel."""
    sentinel = sentinel_topic("concierge")
    await bus.publish(sentinel, b"{}")
    return [m for m in await collect_until(observer, sentinel) if m.topic != sentinel]


async def _notice_rows(store: Store, dwelling: str) -> list[Provision]:
    rows = await store.provisions(dwelling_id=dwelling)
    return [r for r in rows if r.event_type == NOTICE_EVENT_TYPE]


async def test_a_stopped_service_is_told_before_anything_later_and_gets_nothing_after(
    world: World,
) -> None:
    gateway, bus, observer, _ = world
    before = event_dict("delivery_box", dwelling="d0001")
    await gateway.handle(bus, inbound(*panel_message(before), mid=1))
    topic, payload = settings_message(STOP_CONCIERGE, dwelling="d0001")
    await gateway.handle(bus, inbound(topic, payload, mid=2))
    after = event_dict("delivery_box", dwelling="d0001")
    await gateway.handle(bus, inbound(*panel_message(after), mid=3))
    await gateway.finish_in_flight()
    assert [m.mid for m in bus.acked] == [1, 2, 3]

    concierge = [
        m
        for m in await _partner_messages(bus, observer)
        if m.topic.startswith("partners/concierge/")
    ]
    assert [m.topic.rsplit("/", 1)[1] for m in concierge] == ["delivery_box", "consent_notice"]
    assert json.loads(concierge[0].payload)["event_id"] == before["event_id"]
    notice = ConsentNotice.model_validate_json(concierge[1].payload)
    assert concierge[1].topic == "partners/concierge/v1/b001/d0001/consent_notice"
    assert (notice.dwelling_id, notice.change, notice.partner_id) == (
        "d0001",
        "service_stopped",
        "concierge",
    )
    assert str(notice.change_id) == json.loads(payload)["change_id"]
    assert notice.consent_revision == gateway.consent("b001", "d0001").revision
    # Recorded as a provision, delivered: the ledger row names the notice.
    [row] = await _notice_rows(gateway.store, "d0001")
    assert (row.recipient, row.event_id, row.status) == (
        "partner:concierge",
        str(notice.notice_id),
        "delivered",
    )
    assert row.third_party and row.decision_id == str(notice.change_id)


async def test_a_change_delivered_again_is_not_noticed_twice(world: World) -> None:
    gateway, bus, observer, _ = world
    topic, payload = settings_message(STOP_CONCIERGE, dwelling="d0002")
    await gateway.handle(bus, inbound(topic, payload, mid=1))
    await gateway.handle(bus, inbound(topic, payload, mid=2, dup=True))
    # The same stop made again, as a new change: the service no longer gets anything.
    topic, payload = settings_message(STOP_CONCIERGE, dwelling="d0002")
    await gateway.handle(bus, inbound(topic, payload, mid=3))
    await gateway.finish_in_flight()
    notices = [
        m for m in await _partner_messages(bus, observer) if m.topic.endswith("/consent_notice")
    ]
    assert len(notices) == 1
    assert len(await _notice_rows(gateway.store, "d0002")) == 1


async def test_an_initialised_dwelling_notifies_every_service_it_used(world: World) -> None:
    """§7(1)①: each service the dwelling used, unlock-mode ones too, on its own tree."""
    gateway, bus, observer, _ = world
    used = gateway.consent("b001", "d0003").services_used
    assert used  # the registry's dwellings use every sample service
    topic, payload = settings_message({"kind": "initialise"}, dwelling="d0003")
    await gateway.handle(bus, inbound(topic, payload, mid=1))
    await gateway.finish_in_flight()
    notices = [
        m for m in await _partner_messages(bus, observer) if m.topic.endswith("/consent_notice")
    ]
    assert sorted(m.topic for m in notices) == [
        topics.consent_notice(s, "b001", "d0003") for s in sorted(used)
    ]
    for message in notices:
        notice = ConsentNotice.model_validate_json(message.payload)
        assert notice.change == "initialised" and notice.delete == ("all",)
    rows = await _notice_rows(gateway.store, "d0003")
    assert sorted(r.recipient for r in rows) == [f"partner:{s}" for s in sorted(used)]
    assert {r.status for r in rows} == {"delivered"}


class _DyingBus:
    """The gateway's bus, but the connection goes when a consent notice is published."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus
        self.acked = bus.acked

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if topic.endswith("/consent_notice"):
            raise ConnectionLost("the gateway died here")
        await self._bus.publish(topic, payload, **kwargs)


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_a_notice_lost_with_the_gateway_is_published_by_the_next_one_first(
    world: World,
) -> None:
    """The change is on record with its notice's row; the gateway dies before the
    notice leaves. The next gateway publishes it before it takes a message, the same
    notice, and the settings message delivered again does not make a second one."""
    gateway, bus, observer, settings = world
    dying = _DyingBus(bus)
    topic, payload = settings_message(STOP_CONCIERGE, dwelling="d0001")
    with pytest.raises(ConnectionLost):
        await gateway.handle(dying, inbound(topic, payload, mid=1))
    assert bus.acked == []  # the broker will deliver it again
    [intended] = await _notice_rows(gateway.store, "d0001")
    assert intended.status == "intended"

    restarted = await Gateway.load(settings, gateway.store)  # same store, a new process
    stop = asyncio.Event()
    serving = asyncio.create_task(restarted.serve(bus, stop=stop))
    await asyncio.wait_for(restarted.online.wait(), 5)
    await bus.publish(topic, payload)  # the broker delivers the change again
    await restarted.wait_acked(1)
    stop.set()
    await asyncio.wait_for(serving, 10)

    notices = [
        m for m in await _partner_messages(bus, observer) if m.topic.endswith("/consent_notice")
    ]
    assert len(notices) == 1
    assert str(ConsentNotice.model_validate_json(notices[0].payload).notice_id) == (
        intended.event_id
    )
    assert restarted.metrics.settings["duplicate"] == 1
    [row] = await _notice_rows(gateway.store, "d0001")
    assert row.status == "delivered"


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_a_change_made_while_no_gateway_runs_is_noticed_when_one_starts(
    world: World,
) -> None:
    """``consent``/``resident`` with ``--offline`` write to the store (StoreChannel): the
    notice goes on record with the change, and out with the next gateway's start."""
    gateway, bus, observer, settings = world
    policy = load_policy(settings.policy_path)
    channel = StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    body = {**STOP_CONCIERGE, "request": "stop_provision"}
    change = settings_change("b001", "d0002", ServiceUse.model_validate(body))
    ack = await channel.submit(change, store=gateway.store)
    assert ack.applied

    restarted = await Gateway.load(settings, gateway.store)
    stop = asyncio.Event()
    serving = asyncio.create_task(restarted.serve(bus, stop=stop))
    await asyncio.wait_for(restarted.online.wait(), 5)
    stop.set()
    await asyncio.wait_for(serving, 10)
    [message] = [
        m for m in await _partner_messages(bus, observer) if m.topic.endswith("/consent_notice")
    ]
    notice = ConsentNotice.model_validate_json(message.payload)
    assert (notice.change, notice.change_id) == ("provision_stopped", change.change_id)
    [row] = await _notice_rows(gateway.store, "d0002")
    assert row.status == "delivered"
    # §8: the resident's disclosure and provision records show it as a provision.
    desk = ResidentDesk(
        gateway.store, policy=policy, partners=channel.partners, channel=channel, via="cli"
    )
    records = (await desk.provisions("b001", "d0002", start=None, end=None))["records"]
    assert [(r["recipient"], r["event_type"], r["status"]) for r in records] == [
        ("partner:concierge", NOTICE_EVENT_TYPE, "delivered")
    ]
    ledger = (await desk.disclose("b001", "d0002"))["provision_ledger"]
    assert ledger["rows"] == 1 and ledger["by_recipient"][0]["recipient"] == "partner:concierge"


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_a_gateway_publishes_again_only_the_notices_of_its_own_buildings(
    world: World,
) -> None:
    """Partitioned: the holder of a building's partition owns its notices; another
    partition's gateway (``Gateway.buildings``) leaves them alone."""
    gateway, bus, observer, settings = world
    policy = load_policy(settings.policy_path)
    channel = StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    change = settings_change("b001", "d0003", Initialise())
    await channel.submit(change, store=gateway.store)
    pending = await gateway.store.pending_notices(["b001"])
    assert len(pending) == len(gateway.consent("b001", "d0003").services_used) > 0
    assert await gateway.store.pending_notices(["b002"]) == []
    assert await republish_notices(bus, gateway.store, buildings=["b002"]) == 0
    assert await republish_notices(bus, gateway.store, buildings=()) == 0
    assert await republish_notices(bus, gateway.store, buildings=["b001"]) == len(pending)
    await bus.drain()
    await gateway.store.flush()
    assert await gateway.store.pending_notices() == []
    notices = [
        m for m in await _partner_messages(bus, observer) if m.topic.endswith("/consent_notice")
    ]
    assert sorted(m.topic for m in notices) == sorted(
        topics.consent_notice(r.recipient.removeprefix("partner:"), "b001", "d0003")
        for r in pending
    )


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_a_partition_s_gateway_owns_the_notices_of_its_buildings(world: World) -> None:
    """``run --partitioned``: each partition's gateway publishes again its buildings'
    notices only; the unknown buildings' session none."""
    gateway, _, _, settings = world
    work = Partitioned(
        settings, store=None, leases=None, base=gateway, address=BrokerAddress(), groups={}
    )
    mine = work._gateway_for(gateway.store, ["b001", "b007"], {}, ([], None))
    unknown = work._gateway_for(gateway.store, [], {}, ([], None), kind=UnknownBuildings)
    assert (mine.buildings, unknown.buildings, gateway.buildings) == (("b001", "b007"), (), None)
