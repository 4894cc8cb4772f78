"""The gateway against a real Mosquitto running the project's mosquitto.conf.

Panels publish as their own device accounts, partners read as their own accounts, and
every assertion is about what actually arrived.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.distributions import USAGE_EVENTS
from intercom_gateway.core.models import EventType, RejectReason, utc_now
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.testing import (
    RunningGateway,
    collect_until_quiet,
    publish_as_fleet,
    running_gateway,
    sentinel_topic,
)
from intercom_gateway.simulators.bad_input import all_samples
from tests.factories import event_dict, panel_message, settings_message
from tests.helpers import collect

OUTPUTS = ("cloud/#", "group/#", "partners/#", "analytics/#", "gateway/v1/rejected/#")


@pytest.fixture
async def running(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    """The gateway on its one MQTT transport (paho is checked against it in test_bus.py)."""
    async with running_gateway(broker, fleet_registry, tmp_path / "gw") as gateway:
        yield gateway


async def publish_as_device(running: RunningGateway, data: dict[str, Any]) -> None:
    """Publish an event as its own device account would."""
    async with running.client(data["device"]["id"]) as panel:
        await panel.publish(*panel_message(data))


# Read receipts and answers need a distribution first (test_distribution_broker.py).
@pytest.mark.parametrize("event_type", [t.value for t in EventType if t not in USAGE_EVENTS])
async def test_every_event_kind_reaches_the_cloud_with_its_purposes(
    running: RunningGateway, event_type: str
) -> None:
    data = event_dict(event_type, building="b001", dwelling="d0001")
    async with running.client(OPERATOR) as operator:
        await operator.subscribe(f"cloud/v1/b001/d0001/{event_type}")
        await publish_as_device(running, data)
        [message] = await collect(operator, 1)
    envelope = json.loads(message.payload)
    assert envelope["event"]["event_id"] == data["event_id"]
    assert envelope["event_id"] == data["event_id"]
    assert envelope["gateway_id"] == running.settings.gateway_id
    assert envelope["purposes"] and set(message.properties("purpose")) == set(envelope["purposes"])
    assert message.properties("policy_version") == [envelope["policy_version"]]
    assert message.properties("decision_id") == [envelope["decision_id"]]
    assert message.properties("rule_id") == [envelope["rule_id"]]
    if event_type == "unlock_mode":
        # §3(4): the unlock-mode image goes only to the unlock-mode service.
        assert "image" not in envelope["event"]


async def test_bad_input_is_rejected_with_its_reason_and_valid_events_around_it_arrive(
    running: RunningGateway, broker: Mosquitto, fleet_registry: Registry
) -> None:
    samples = all_samples(fleet_registry, now=utc_now(), seed=7)
    valid = [event_dict("alarm", dwelling=f"d000{1 + i % 4}") for i in range(len(samples) + 1)]
    # valid, bad, valid, bad, ..., valid: every bad message has valid neighbours.
    stream: list[tuple[str, bytes]] = []
    for index, sample in enumerate(samples):
        stream.append(panel_message(valid[index]))
        stream.append((sample.topic, sample.payload))
    stream.append(panel_message(valid[-1]))
    expected_reasons = sorted(s.reason.value for s in samples if s.reason is not None)
    expected_valid = len(valid) + sum(1 for s in samples if s.reason is None)

    async with running.client(OPERATOR) as operator:
        await operator.subscribe(
            "cloud/v1/+/+/alarm", "cloud/v1/+/+/visitor", topics.REJECTED_FILTER
        )
        await publish_as_fleet(broker, stream)
        arrived = await collect(operator, expected_valid + len(expected_reasons))

    rejected = [json.loads(m.payload) for m in arrived if m.topic.startswith("gateway/")]
    assert sorted(r["reason"] for r in rejected) == expected_reasons
    for rejection, message in zip(
        rejected, [m for m in arrived if m.topic.startswith("gateway/")], strict=True
    ):
        assert message.topic == topics.rejected(rejection["reason"])
        assert rejection["detail"] and rejection["topic"].startswith("intercom/v1/")
    cloud_ids = {json.loads(m.payload)["event_id"] for m in arrived if m.topic.startswith("cloud/")}
    assert {v["event_id"] for v in valid} <= cloud_ids
    await running.wait_processed(len(stream))  # rejections are stored before the broker ack
    metrics = running.gateway.metrics
    assert sum(metrics.rejected.values()) == len(expected_reasons)
    kept = [r.as_dict() for r in await running.gateway.store.rejections(limit=100)]
    assert sorted(r["reason"] for r in kept) == expected_reasons


async def test_each_partner_receives_exactly_what_it_is_entitled_to(
    running: RunningGateway, broker: Mosquitto
) -> None:
    # d0002 stops provision to concierge (§8) before its events.
    stop_concierge = settings_message(
        {"kind": "service_use", "partner_id": "concierge", "used": False},
        dwelling="d0002",
    )
    events = {
        "visitor-1": event_dict("visitor", dwelling="d0001"),
        "return-1": event_dict("return_home", dwelling="d0001"),
        "unlock-1": event_dict("unlock_mode", dwelling="d0001"),
        "box-1": event_dict("delivery_box", dwelling="d0001"),
        "alarm-2": event_dict("alarm", dwelling="d0002"),
        "visitor-2": event_dict("visitor", dwelling="d0002"),
        "security-b2": event_dict("security", building="b002", dwelling="d0003"),
    }
    entitled = {
        "concierge": {"visitor-1", "box-1"},
        "elder-watch": {"return-1", "alarm-2", "security-b2"},
        "parcel-unlock": {"unlock-1", "box-1"},
    }
    by_id = {data["event_id"]: name for name, data in events.items()}

    partners = {pid: running.client(pid) for pid in entitled}
    for bus in partners.values():
        await bus.__aenter__()
    try:
        for pid, bus in partners.items():
            await bus.subscribe(topics.partner_filter(pid))
        sent = await publish_as_fleet(
            broker, [stop_concierge, *(panel_message(d) for d in events.values())]
        )
        await running.wait_processed(sent)
        sentinel_id = running.broker.address(GATEWAY).client_id("sentinel")
        async with running.client(GATEWAY, client_id=sentinel_id) as gateway_account:
            for pid in entitled:
                await gateway_account.publish(sentinel_topic(pid), b"{}")
        received = {
            pid: await collect_until_quiet(bus, sentinel_topic=sentinel_topic(pid))
            for pid, bus in partners.items()
        }
    finally:
        for bus in partners.values():
            await bus.__aexit__(None, None, None)

    # Images the partners declared, each in a message of its own (spec item 2).
    images = {"concierge": {"visitor-1"}, "elder-watch": set(), "parcel-unlock": {"unlock-1"}}
    image_purposes = {
        "concierge": ["resident_confirmation"],  # §3(3)
        "parcel-unlock": ["unlock_service_security", "unlock_visitor_confirmation"],  # §3(4)
    }
    # The stop of d0002 is told to concierge alone (spec item 11), before its events.
    notices = {
        pid: [m for m in messages if m.topic.endswith("/consent_notice")]
        for pid, messages in received.items()
    }
    assert [m.topic for m in notices["concierge"]] == [
        topics.consent_notice("concierge", "b001", "d0002")
    ]
    assert notices["elder-watch"] == notices["parcel-unlock"] == []
    notice_ids = {json.loads(m.payload)["notice_id"] for m in notices["concierge"]}
    received = {pid: [m for m in ms if m not in notices[pid]] for pid, ms in received.items()}
    for pid, messages in received.items():
        facts = [m for m in messages if not topics.is_image(m.topic)]
        pictures = [m for m in messages if topics.is_image(m.topic)]
        names = {by_id[json.loads(m.payload)["event_id"]] for m in facts}
        assert names == entitled[pid], pid
        assert len(facts) == len(entitled[pid]), f"{pid} got duplicates"
        assert {by_id[json.loads(m.payload)["event_id"]] for m in pictures} == images[pid]
        assert len(pictures) == len(images[pid]), f"{pid} got duplicate images"
        for message in messages:
            assert message.topic.startswith(f"partners/{pid}/v1/")
        for message in facts:
            # The facts never carry the image, nor a purpose of the image's.
            assert "image" not in json.loads(message.payload)["event"]
            assert message.properties("purpose") == ["partner_provision"]
        for message in pictures:
            assert "image" in json.loads(message.payload)["event"]
            assert sorted(message.properties("purpose")) == image_purposes[pid]
    rows = [r.as_dict() for r in await running.gateway.store.provisions()]
    notice_rows = {r["event_id"] for r in rows if r["event_type"] == "consent_notice"}
    assert notice_rows == notice_ids
    third_party = {
        (r["recipient"], by_id[r["event_id"]], r["part"])
        for r in rows
        if r["third_party"] and r["event_id"] not in notice_ids
    }
    assert third_party == {
        (f"partner:{pid}", name, "event") for pid, names in entitled.items() for name in names
    } | {(f"partner:{pid}", name, "image") for pid, names in images.items() for name in names}


async def test_a_consent_change_on_the_panel_applies_to_the_very_next_event(
    running: RunningGateway,
) -> None:
    off = settings_message({"kind": "return_home_notification", "enabled": False}, dwelling="d0004")
    home = event_dict("return_home", dwelling="d0004")
    marker = event_dict("alarm", dwelling="d0004")
    panel_id = home["device"]["id"]
    async with running.client(OPERATOR) as operator, running.client(panel_id) as panel:
        await operator.subscribe("cloud/v1/b001/d0004/#", topics.settings_ack("b001", panel_id))
        # Back to back, without waiting for the acknowledgement: order alone must do.
        await panel.publish(*off)
        await panel.publish(*panel_message(home))
        await panel.publish(*panel_message(marker))
        await panel.drain()
        arrived = await collect(operator, 2)
    assert [m.topic for m in arrived] == [
        topics.settings_ack("b001", panel_id),
        "cloud/v1/b001/d0004/alarm",
    ]
    assert json.loads(arrived[0].payload)["applied"] is True
    await running.wait_processed(3)  # the decision log is written before the broker ack
    # Spec item 7: stopped at the gateway, so not even its decision is kept.
    assert await running.gateway.store.decision(home["event_id"]) is None
    assert await running.gateway.store.decision(marker["event_id"]) is not None
    assert running.gateway.metrics.withheld["return_home_off"] >= 1


async def test_rejected_topic_gets_unknown_device_even_from_the_fleet_account(
    running: RunningGateway, broker: Mosquitto
) -> None:
    data = event_dict("alarm")
    data["device"]["id"] = "panel-b009-d0001"
    topic = topics.panel_events("b001", "panel-b009-d0001", "alarm")
    async with running.client(OPERATOR) as operator:
        await operator.subscribe(topics.REJECTED_FILTER)
        await publish_as_fleet(broker, [(topic, json.dumps(data).encode())])
        [message] = await collect(operator, 1)
    assert message.topic == topics.rejected(RejectReason.UNKNOWN_DEVICE.value)


def _ids(messages: list[Message]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages]
