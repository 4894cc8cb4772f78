"""Information distribution through the gateway (§2(1), §3(1), §5(1)①, spec item 10), with
a real store (SQLite, then PostgreSQL), on the in-memory broker and on Mosquitto.

A contractor's notice or survey is checked, stored and delivered to the panels of
addressed, registered dwellings only, and answered; a panel's read receipt or answer is
checked against it and reaches its own contractor, with a ledger row, and no other.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR
from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import RejectReason
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message, settings_message
from tests.helpers import collect_until
from tests.transports import Transport

OWN, OTHER = "kanri-kumiai-b001", "example-kanri"
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
        await observer.subscribe("#", retain_handling=2)
        yield gateway, bus, observer


_mids = iter(range(1, 10_000))


def inbound(topic: str, payload: bytes, *, dup: bool = False) -> Message:
    return Message(topic=topic, payload=payload, qos=1, dup=dup, mid=next(_mids))


def distribution(
    contractor: str = OWN, building: str = "b001", **changes: Any
) -> tuple[str, bytes]:
    data: dict[str, Any] = {
        "distribution_id": "notice-1",
        "kind": "notice",
        "building_id": building,
        "dwellings": ["d0002"],
        "title": "Water outage",
        "body": "Water is off on 12 May, 10:00-12:00.",
        "sent_at": "2026-05-01T08:59:00Z",
        **changes,
    }
    return topics.contractor_distributions(contractor, building), json.dumps(data).encode()


SURVEY: dict[str, Any] = {
    "distribution_id": "survey-1",
    "kind": "survey",
    "dwellings": None,
    "questions": [{"id": "q1", "text": "Bicycle racks?", "choices": [{"id": "yes", "label": "Y"}]}],
}


def usage(event_type: str, dwelling: str, contractor: str, distribution_id: str) -> Message:
    data = event_dict(
        event_type,
        dwelling=dwelling,
        contractor_id=contractor,
        distribution_id=distribution_id,
    )
    return inbound(*panel_message(data))


async def until_all(observer: Any, wanted: set[str]) -> list[Message]:
    """Messages until every topic of ``wanted`` came (copies to a third party wait for
    their ledger intent's commit, so they may come after later events' copies)."""
    seen: list[Message] = []
    while not wanted <= {m.topic for m in seen}:
        seen += await collect_until(observer, "")
    return seen


async def until_ack(observer: Any, contractor: str = OWN) -> tuple[list[Message], dict[str, Any]]:
    seen = await collect_until(observer, topics.contractor_distributions_ack(contractor, "b001"))
    return seen, json.loads(seen[-1].payload)


async def test_a_notice_for_one_dwelling_reaches_only_its_panel_and_is_answered(
    world: World,
) -> None:
    gateway, bus, observer = world
    await gateway.handle(bus, inbound(*distribution()))
    seen, ack = await until_ack(observer)
    panels = [m for m in seen if m.topic.endswith("/distributions")]
    assert [m.topic for m in panels] == [topics.panel_distributions("b001", "panel-b001-d0002")]
    copy = json.loads(panels[0].payload)
    assert (copy["contractor_id"], copy["dwelling_id"], copy["title"]) == (
        OWN,
        "d0002",
        "Water outage",
    )
    assert (ack["accepted"], ack["panels"], ack["distribution_id"]) == (True, 1, "notice-1")
    await gateway.finish_in_flight()
    stored = await gateway.store.distributions()
    assert [(r.contractor_id, r.distribution_id, r.panels) for r in stored] == [
        (OWN, "notice-1", (("d0002", "panel-b001-d0002"),))
    ]


async def test_an_initialised_dwelling_receives_nothing_and_sends_nothing(world: World) -> None:
    """§7(1)①: a survey to the whole building skips the initialised dwelling; its panel's
    answer (it has none to give, but a panel may still send) is not forwarded."""
    gateway, bus, observer = world
    await gateway.handle(bus, inbound(*settings_message({"kind": "initialise"}, dwelling="d0003")))
    await collect_until(observer, topics.settings_ack("b001", "panel-b001-d0003"))
    await gateway.handle(bus, inbound(*distribution(OTHER, **SURVEY)))
    seen, ack = await until_ack(observer, OTHER)
    assert sorted(m.topic for m in seen if m.topic.endswith("/distributions")) == [
        topics.panel_distributions("b001", "panel-b001-d0001"),
        topics.panel_distributions("b001", "panel-b001-d0002"),
    ]
    assert ack["panels"] == 2
    await gateway.handle(bus, usage("survey_answer", "d0003", OTHER, "survey-1"))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {RejectReason.UNKNOWN_DISTRIBUTION.value: 1}
    # Its only provisions are the consent notices initialising it sent to the services it
    # used (spec item 11): nothing of it reached a contractor.
    rows = [r for r in await gateway.store.provisions() if r.dwelling_id == "d0003"]
    assert rows and {r.event_type for r in rows} == {"consent_notice"}
    assert not any(r.recipient.startswith("contractor:") for r in rows)


async def test_usage_reaches_its_own_contractor_with_a_ledger_row(world: World) -> None:
    gateway, bus, observer = world
    await gateway.handle(bus, inbound(*distribution()))
    await gateway.handle(bus, inbound(*distribution(OTHER, **SURVEY)))
    await until_ack(observer, OTHER)
    await gateway.handle(bus, usage("notice_read", "d0002", OWN, "notice-1"))
    await gateway.handle(bus, usage("survey_answer", "d0001", OTHER, "survey-1"))
    await gateway.handle(bus, inbound(*panel_message(event_dict("alarm", dwelling="d0001"))))
    await gateway.finish_in_flight()
    seen = await until_all(
        observer,
        {
            "cloud/v1/b001/d0001/alarm",
            topics.contractor(OTHER, "b001", "d0001", "survey_answer"),
            topics.contractor(OWN, "b001", "d0002", "notice_read"),
        },
    )
    to_contractors = sorted(m.topic for m in seen if m.topic.startswith("contractors/"))
    assert [t for t in to_contractors if not t.endswith("/ack")] == [
        topics.contractor(OTHER, "b001", "d0001", "survey_answer"),
        topics.contractor(OWN, "b001", "d0002", "notice_read"),
    ]
    rows = await gateway.store.provisions()
    by_recipient = sorted(
        (r.recipient, r.event_type) for r in rows if r.recipient_kind == "contractor"
    )
    assert by_recipient == [
        (f"contractor:{OTHER}", "survey_answer"),
        (f"contractor:{OWN}", "notice_read"),
    ]
    assert not [
        r
        for r in rows
        if r.event_type in {"notice_read", "survey_answer"} and r.recipient_kind != "contractor"
    ]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (usage("notice_read", "d0001", OWN, "notice-1"), RejectReason.UNKNOWN_DISTRIBUTION),
        (usage("notice_read", "d0002", OTHER, "notice-1"), RejectReason.UNKNOWN_DISTRIBUTION),
        (usage("survey_answer", "d0002", OWN, "notice-1"), RejectReason.UNKNOWN_DISTRIBUTION),
        (usage("notice_read", "d0002", OWN, "never-sent"), RejectReason.UNKNOWN_DISTRIBUTION),
    ],
    ids=["not-addressed", "other-contractor", "not-a-survey", "never-sent"],
)
async def test_usage_of_no_distribution_of_this_dwelling_is_rejected(
    world: World, message: Message, reason: RejectReason
) -> None:
    gateway, bus, observer = world
    await gateway.handle(bus, inbound(*distribution()))
    await until_ack(observer)
    await gateway.handle(bus, message)
    seen = await collect_until(observer, topics.rejected(reason.value))
    assert not [m for m in seen if m.topic.startswith("contractors/") and "/d000" in m.topic]
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {reason.value: 1}


@pytest.mark.parametrize(
    ("sent", "reason", "answered"),
    [
        (distribution("nobody"), RejectReason.UNKNOWN_CONTRACTOR, False),
        (
            distribution(OWN, "b002", building_id="b002"),
            RejectReason.BUILDING_NOT_ADDRESSABLE,
            True,
        ),
        (distribution(dwellings=["d0099"]), RejectReason.UNKNOWN_DWELLING, True),
        (distribution(kind="survey"), RejectReason.SCHEMA_VIOLATION, True),
    ],
    ids=["unknown-contractor", "not-its-building", "unknown-dwelling", "survey-without-questions"],
)
async def test_a_bad_distribution_is_refused_typed_counted_and_kept(
    world: World, sent: tuple[str, bytes], reason: RejectReason, answered: bool
) -> None:
    gateway, bus, observer = world
    await gateway.handle(bus, inbound(*sent))
    seen = await collect_until(observer, topics.rejected(reason.value))
    acks = [json.loads(m.payload) for m in seen if m.topic.endswith("/distributions/ack")]
    if answered:
        assert [(a["accepted"], a["reason"]) for a in acks] == [(False, reason.value)]
    else:
        assert acks == []  # an unregistered contractor has no account to read it with
    assert not [m for m in seen if m.topic.endswith("/distributions")]
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {reason.value: 1}
    assert [r.reason for r in await gateway.store.rejections()] == [reason.value]
    assert await gateway.store.distributions() == []


async def test_a_resent_distribution_goes_to_the_same_panels_and_a_reused_id_is_refused(
    world: World,
) -> None:
    gateway, bus, observer = world
    topic, payload = distribution()
    await gateway.handle(bus, inbound(topic, payload))
    await until_ack(observer)
    await gateway.handle(bus, inbound(topic, payload, dup=True))
    seen, ack = await until_ack(observer)
    assert [m.topic for m in seen if m.topic.endswith("/distributions")] == [
        topics.panel_distributions("b001", "panel-b001-d0002")
    ]
    assert ack["panels"] == 1
    await gateway.handle(bus, inbound(*distribution(title="Something else")))
    seen, ack = await until_ack(observer)
    assert (ack["accepted"], ack["reason"]) == (False, RejectReason.REPLAYED.value)
    await gateway.finish_in_flight()
    assert len(await gateway.store.distributions()) == 1


async def test_a_new_process_checks_usage_against_what_an_earlier_one_stored(
    world: World,
) -> None:
    gateway, bus, observer = world
    await gateway.handle(bus, inbound(*distribution()))
    await until_ack(observer)
    await gateway.finish_in_flight()
    later = await Gateway.load(gateway.settings, gateway.store)
    later._bus = bus
    await later.handle(bus, usage("notice_read", "d0002", OWN, "notice-1"))
    seen = await collect_until(observer, topics.contractor(OWN, "b001", "d0002", "notice_read"))
    assert seen
    await later.finish_in_flight()
    assert later.metrics.rejected == {}


async def test_a_distribution_another_process_took_since_is_found_in_the_store(
    world: World,
) -> None:
    """Partitioned gateways share a store: the building may have moved to this process
    after another one took the distribution."""
    gateway, bus, observer = world
    other = await Gateway.load(gateway.settings, gateway.store)  # loaded before it came
    other._bus = bus
    await gateway.handle(bus, inbound(*distribution()))
    await until_ack(observer)
    await gateway.finish_in_flight()
    await other.handle(bus, usage("notice_read", "d0002", OWN, "notice-1"))
    await collect_until(observer, topics.contractor(OWN, "b001", "d0002", "notice_read"))
    await other.finish_in_flight()
    assert other.metrics.rejected == {}
