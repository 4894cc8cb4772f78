"""Part A on a real Mosquitto: §2(4) lobby calls reach the Intercom app's topic only while
the dwelling's handsets are linked (§7(2)); §2(3)① device control reaches the cloud, a
partner that declared it (only its declared fields) and analytics without ids or free
text (§5(5)). Every assertion is about what arrived, read by the accounts that would
read it in production (the ``app`` account, the partner's own account)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.accounts import APP
from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Building, Dwelling, Registry
from intercom_gateway.qa.testing import (
    RunningGateway,
    collect_until_quiet,
    publish_as_fleet,
    running_gateway,
    sentinel_topic,
)
from tests.factories import event_dict, panel_message, settings_message
from tests.helpers import collect, collect_until

NEVER_LINKED = "d0002"  # b001/d0002: its registry consent leaves the Intercom app unlinked
APP_SENTINEL = topics.app("zz-sentinel", "zz-sentinel", "sentinel")


def _never_linked(registry: Registry) -> Registry:
    def dwelling(d: Dwelling) -> Dwelling:
        if d.id != NEVER_LINKED or d.consent is None:
            return d
        return d.model_copy(
            update={"consent": d.consent.model_copy(update={"intercom_app": False})}
        )

    def building(b: Building) -> Building:
        if b.id != "b001":
            return b
        return b.model_copy(update={"dwellings": tuple(dwelling(d) for d in b.dwellings)})

    return Registry(buildings=tuple(building(b) for b in registry.buildings))


@pytest.fixture
async def running(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    registry = _never_linked(fleet_registry)
    async with running_gateway(broker, registry, tmp_path / "gw", analytics_window=0.5) as gw:
        yield gw


def _envelope(message: Message) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(message.payload)
    return found


async def _sentinel(running: RunningGateway, topic: str) -> None:
    """A message no dwelling can cause, published after everything else is processed."""
    client_id = running.broker.address(GATEWAY).client_id("sentinel")
    async with running.client(GATEWAY, client_id=client_id) as gateway_account:
        await gateway_account.publish(topic, b"{}")


async def test_a_lobby_call_reaches_the_app_of_a_linked_dwelling_and_not_after_unlinking(
    running: RunningGateway, broker: Mosquitto
) -> None:
    call = event_dict("lobby_call", dwelling="d0001")
    never = event_dict("lobby_call", dwelling=NEVER_LINKED, call_id="call-never")
    later = event_dict("lobby_call", dwelling="d0001", call_id="call-later")
    unlink = settings_message({"kind": "intercom_app", "linked": False}, dwelling="d0001")
    # From the same lobby panel for the same dwelling, after the call: once its cloud copy
    # is in, the call before it has been decided (a dwelling's events go in order).
    after = event_dict("visitor", dwelling="d0001", origin="lobby")
    async with running.client(APP) as app, running.client(OPERATOR) as operator:
        await app.subscribe(topics.app_filter())
        await operator.subscribe(
            topics.cloud("+", "+", "lobby_call"),
            topics.cloud("+", "+", "visitor"),
            topics.settings_ack("+", "+"),
        )
        sent = await publish_as_fleet(broker, [panel_message(call), panel_message(never)])
        [first] = await collect(app, 1)
        sent += await publish_as_fleet(broker, [unlink])
        acked = await collect_until(operator, "intercom/")  # the settings acknowledgement
        sent += await publish_as_fleet(broker, [panel_message(later), panel_message(after)])
        acked += await collect_until(operator, topics.cloud("b001", "d0001", "visitor"))
        await running.wait_processed(sent)
        await _sentinel(running, APP_SENTINEL)
        app_after = await collect_until_quiet(app, sentinel_topic=APP_SENTINEL)

    assert first.topic == "app/v1/b001/d0001/lobby_call"
    envelope = _envelope(first)
    assert envelope["event_id"] == call["event_id"]
    assert (envelope["rule_id"], envelope["purposes"]) == ("app-lobby-calls", ["own_services"])
    assert envelope["clause"] == "§2(4), §3(2)"
    assert envelope["event"]["handset"]["uuid"] == call["handset"]["uuid"]  # the resident's own
    assert app_after == []  # neither the never-linked dwelling's call nor the one after unlinking
    [ack] = [_envelope(m) for m in acked if m.topic.endswith("/settings/ack")]
    assert ack["applied"] is True
    cloud_calls = [_envelope(m) for m in acked if m.topic.endswith("/lobby_call")]
    assert [c["event_id"] for c in cloud_calls] == [call["event_id"]]  # §7(2): cloud too
    assert cloud_calls[0]["purposes"] == ["backup", "support"]


async def test_device_control_reaches_cloud_a_declaring_partner_and_analytics_without_ids(
    running: RunningGateway, broker: Mosquitto
) -> None:
    control = event_dict("device_control", dwelling="d0001")
    call = event_dict("lobby_call", dwelling="d0001")
    async with (
        running.client(OPERATOR) as operator,
        running.client("elder-watch") as partner,
        running.client("concierge") as other,
    ):
        await operator.subscribe(
            topics.cloud("+", "+", "device_control"), topics.analytics_filter()
        )
        await partner.subscribe(topics.partner_filter("elder-watch"))
        await other.subscribe(topics.partner_filter("concierge"))
        sent = await publish_as_fleet(broker, [panel_message(control), panel_message(call)])
        arrived = await collect(operator, 3)  # the cloud copy, two analytics copies
        [declared] = await collect(partner, 1)
        await running.wait_processed(sent)
        await _sentinel(running, sentinel_topic("concierge"))
        undeclared = await collect_until_quiet(other, sentinel_topic=sentinel_topic("concierge"))

    [cloud] = [_envelope(m) for m in arrived if m.topic.startswith("cloud/")]
    for field in ("instruction_id", "parameters", "error", "origin", "linked_device"):
        assert cloud["event"][field] == control[field]  # fields: all (§3(2) own services)
    assert cloud["rule_id"] == "cloud-events" and "own_services" in cloud["purposes"]

    assert declared.topic == "partners/elder-watch/v1/b001/d0001/device_control"
    shared = _envelope(declared)["event"]
    assert shared["linked_device"] == {"kind": control["linked_device"]["kind"]}
    assert (shared["command"], shared["result"]) == (control["command"], control["result"])
    assert not {"instruction_id", "parameters", "error", "origin", "device"} & set(shared)
    assert undeclared == []  # concierge declared neither kind; no partner gets a lobby call

    analytics = {
        m.topic: _envelope(m)["event"] for m in arrived if m.topic.startswith("analytics/")
    }
    copy = analytics["analytics/v1/device_control"]
    assert copy["linked_device"] == {"kind": "air_conditioner"}
    assert not {"instruction_id", "parameters", "error", "event_id", "dwelling_id"} & set(copy)
    assert copy["occurred_at"].endswith(":00:00Z")
    handset = analytics["analytics/v1/lobby_call"]["handset"]
    assert handset == {"model": call["handset"]["model"], "os": call["handset"]["os"]}  # §5(5)
    text = " ".join(m.payload.decode() for m in arrived if m.topic.startswith("analytics/"))
    for secret in (call["handset"]["uuid"], control["error"], control["instruction_id"]):
        assert secret not in text
