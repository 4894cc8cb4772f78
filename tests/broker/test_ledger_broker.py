"""The provision ledger against a real Mosquitto: the ledger holds exactly what real
subscribers received (spec item 8), joint use is marked, a replay adds nothing, and a
resident's stop of provision reaches the running gateway over MQTT (§8)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.testing import (
    RunningGateway,
    collect_until_quiet,
    publish_as_fleet,
    running_gateway,
)
from intercom_gateway.resident.channels import mqtt_channel
from intercom_gateway.resident.desk import open_desk
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event_dict, panel_message, settings_message

GROUP_SENTINEL = topics.group("zz-sentinel", "zz-sentinel", "sentinel")


def _sentinel(reader: str) -> str:
    if reader == "group":
        return GROUP_SENTINEL
    return topics.partner(reader, "zz-sentinel", "zz-sentinel", "sentinel")


@pytest.fixture
async def running(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(broker, fleet_registry, tmp_path / "gw") as gateway:
        yield gateway


async def _delivered(
    running: RunningGateway, messages: list[tuple[str, bytes]]
) -> dict[str, list[Message]]:
    """Publish ``messages`` and return what each partner and the group reader received."""
    readers: dict[str, MqttBus] = {pid: running.client(pid) for pid in SAMPLE_SERVICES}
    readers["group"] = running.client(OPERATOR)
    for bus in readers.values():
        await bus.__aenter__()
    try:
        for reader, bus in readers.items():
            topic_filter = "group/#" if reader == "group" else topics.partner_filter(reader)
            await bus.subscribe(topic_filter)
        done_before = running.gateway.metrics.acked
        sent = await publish_as_fleet(running.broker, messages)
        await running.wait_processed(done_before + sent)
        # Everything the gateway published before the sentinel arrives before it (one
        # publisher, in order): then each reader has seen all it will see.
        sentinel_id = running.broker.address(GATEWAY).client_id("ledger-sentinel")
        async with running.client(GATEWAY, client_id=sentinel_id) as gateway_account:
            for reader in readers:
                await gateway_account.publish(_sentinel(reader), b"{}")
        return {
            reader: await collect_until_quiet(bus, sentinel_topic=_sentinel(reader))
            for reader, bus in readers.items()
        }
    finally:
        for bus in readers.values():
            await bus.__aexit__(None, None, None)


def _is_notice(message: Message) -> bool:
    return message.topic.endswith(f"/{topics.CONSENT_NOTICE_LEVEL}")


def _part(message: Message) -> str:
    """The ledger's part of a message: an event's image is a provision of its own, and a
    consent notice (spec item 11) is one too."""
    if _is_notice(message):
        return "notice"
    return "image" if topics.is_image(message.topic) else "event"


def _ident(message: Message) -> str:
    body = json.loads(message.payload)
    return str(body["notice_id"] if _is_notice(message) else body["event_id"])


def _pairs(received: dict[str, list[Message]]) -> list[tuple[str, str, str]]:
    pairs = []
    for reader, messages in received.items():
        for message in messages:
            recipient = "group" if reader == "group" else f"partner:{reader}"
            pairs.append((_ident(message), recipient, _part(message)))
    return sorted(pairs)


def _ledger_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((r["event_id"], r["recipient"], r["part"]) for r in rows)


async def test_the_ledger_holds_exactly_the_deliveries_real_subscribers_saw(
    running: RunningGateway,
) -> None:
    stop = settings_message(
        {"kind": "service_use", "partner_id": "concierge", "used": False}, dwelling="d0003"
    )
    events = [
        event_dict(kind, building=building, dwelling=dwelling)
        for building in ("b001", "b002")
        for dwelling in ("d0001", "d0003")
        for kind in ("visitor", "delivery_box", "alarm", "unlock_mode", "security", "return_home")
    ]
    received = await _delivered(running, [stop, *(panel_message(e) for e in events)])
    rows = [r.as_dict() for r in await running.gateway.store.provisions()]

    assert _ledger_pairs(rows) == _pairs(received)  # same pairs, and no pair twice
    assert len(rows) == sum(len(messages) for messages in received.values())
    # An image a partner received is a row of its own, for the image's purposes only.
    images = [r for r in rows if r["part"] == "image"]
    assert {r["recipient"] for r in images} == {"partner:concierge", "partner:parcel-unlock"}
    assert all(r["image"] and "partner_provision" not in r["purposes"] for r in images)
    assert not any(r["image"] for r in rows if r["part"] == "event")
    assert received["concierge"] and received["elder-watch"] and received["parcel-unlock"]
    # §4: joint use is recorded, marked as not a provision to a third party.
    assert {r["third_party"] for r in rows if r["recipient"] == "group"} == {False}
    assert {r["third_party"] for r in rows if r["recipient"] != "group"} == {True}
    # §8: after the stop, nothing of d0003 in b001 went to concierge, nor into its ledger,
    # but the notice of the stop (spec item 11).
    assert [
        r["event_type"]
        for r in rows
        if r["recipient"] == "partner:concierge"
        and r["dwelling_id"] == "d0003"
        and r["building_id"] == "b001"
    ] == ["consent_notice"]
    for row in rows:
        if row["part"] == "notice":
            continue
        message = _message_for(received, row)
        envelope = json.loads(message.payload)
        assert sorted(envelope["purposes"]) == sorted(row["purposes"])
        assert row["image"] == ("image" in envelope["event"])
        assert row["rule_id"] == envelope["rule_id"]
        assert row["decision_id"] == envelope["decision_id"]


def _message_for(received: dict[str, list[Message]], row: dict[str, Any]) -> Message:
    reader = "group" if row["recipient"] == "group" else row["recipient"].split(":", 1)[1]
    return next(
        m for m in received[reader] if _ident(m) == row["event_id"] and _part(m) == row["part"]
    )


async def test_a_replayed_event_adds_no_ledger_row(running: RunningGateway) -> None:
    data = event_dict("delivery_box", dwelling="d0002")
    first = await _delivered(running, [panel_message(data)])
    rows = [r.as_dict() for r in await running.gateway.store.provisions()]
    again = await _delivered(running, [panel_message(data)])
    assert _ledger_pairs(rows) == _pairs(first) and len(rows) == 3  # concierge, parcel, group
    assert all(not messages for messages in again.values())
    assert [r.as_dict() for r in await running.gateway.store.provisions()] == rows
    assert running.gateway.metrics.rejected["replayed"] == 1


async def test_a_resident_stop_of_provision_reaches_the_running_gateway(
    running: RunningGateway,
) -> None:
    """§8 over MQTT: the very next event of the dwelling no longer reaches the partner."""
    settings = running.settings
    async with open_desk(settings, via="cli", channel=mqtt_channel(settings)) as desk:
        answer = await desk.stop_provision("b002", "d0004", "elder-watch")
    assert answer["outcome"] == "done" and answer["changes"][0]["applied"] is True
    assert running.gateway.consent("b002", "d0004").provision_stopped == ("elder-watch",)
    alarm = event_dict("alarm", building="b002", dwelling="d0004")
    received = await _delivered(running, [panel_message(alarm)])
    assert received["elder-watch"] == []
    # The alarm went to the group only; elder-watch was told of the stop (spec item 11).
    rows = await running.gateway.store.provisions()
    assert sorted((r.recipient, r.event_type) for r in rows) == [
        ("group", "alarm"),
        ("partner:elder-watch", "consent_notice"),
    ]
    # The notice is on record as delivered before the change is acknowledged; the alarm's
    # row may still say intended until the flush after its PUBACK.
    assert [r.status for r in rows if r.event_type == "consent_notice"] == ["delivered"]
    history = await running.gateway.store.consent_history("b002", "d0004")
    assert history[-1].change_id == answer["changes"][0]["change_id"]
