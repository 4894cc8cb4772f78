"""Part A through the gateway and its store, on both transports: §2(4) lobby calls reach
``app/v1/...`` while the dwelling's handsets are linked and stop with the §7(2) setting,
cloud included; §2(3)① linked-device operation reaches the cloud and a declaring partner,
and that provision is in the ledger (§8). The explain view and the resident's notice of
purposes tell the same."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR
from intercom_gateway.bus import Message
from intercom_gateway.gateway.explain import explain_event
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.resident.purposes import purposes_in_force
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message, settings_message
from tests.helpers import collect, collect_until
from tests.transports import Transport

World = tuple[Gateway, Any, Any]


@pytest.fixture
async def world(tmp_path: Path, transport: Transport) -> AsyncIterator[World]:
    settings = gateway_settings(tmp_path)
    async with (
        open_store(settings) as store,
        transport.bus(GATEWAY) as bus,
        transport.bus(OPERATOR) as observer,
    ):
        gateway = await Gateway.load(settings, store)
        gateway._bus = bus  # handle() is driven directly, without serve()
        await observer.subscribe("#", retain_handling=2)
        yield gateway, bus, observer


def inbound(topic: str, payload: bytes, *, mid: int) -> Message:
    return Message(topic=topic, payload=payload, qos=1, dup=False, mid=mid)


async def test_a_lobby_call_reaches_the_app_until_the_handsets_are_removed(world: World) -> None:
    gateway, bus, observer = world
    call = event_dict("lobby_call", dwelling="d0001")
    await gateway.handle(bus, inbound(*panel_message(call), mid=1))
    await gateway.finish_in_flight()
    first = await collect_until(observer, "app/")
    assert first[-1].topic == "app/v1/b001/d0001/lobby_call"
    assert json.loads(first[-1].payload)["event"]["call_id"] == call["call_id"]
    assert gateway.consent("b001", "d0001").intercom_app_linked  # the generated fleet's seed

    topic, payload = settings_message({"kind": "intercom_app", "linked": False}, dwelling="d0001")
    await gateway.handle(bus, inbound(topic, payload, mid=2))
    later = event_dict("lobby_call", dwelling="d0001", call_id="call-later")
    marker = event_dict("alarm", dwelling="d0001")  # the dwelling's next event, in order
    await gateway.handle(bus, inbound(*panel_message(later), mid=3))
    await gateway.handle(bus, inbound(*panel_message(marker), mid=4))
    await gateway.finish_in_flight()
    after = await collect_until(observer, "cloud/v1/b001/d0001/alarm")
    assert not [m.topic for m in after if m.topic.endswith("/lobby_call")]
    assert not gateway.consent("b001", "d0001").intercom_app_linked
    # §7(2) stops collection: the call is neither forwarded nor stored, as for move-out.
    assert await gateway.store.decision(later["event_id"]) is None
    assert gateway.metrics.withheld["intercom_app_unlinked"] >= 1
    rows = [r.as_dict() for r in await gateway.store.provisions(dwelling_id="d0001")]
    assert not [r for r in rows if r["event_type"] == "lobby_call"]  # own use: no ledger


async def test_device_control_reaches_cloud_and_the_declaring_partner_on_the_ledger(
    world: World,
) -> None:
    gateway, bus, observer = world
    control = event_dict("device_control", dwelling="d0002")
    await gateway.handle(bus, inbound(*panel_message(control), mid=1))
    await gateway.finish_in_flight()
    seen = await collect(observer, 4)  # cloud, group, elder-watch, (statistics held)
    topics_seen = {m.topic for m in seen}
    assert "cloud/v1/b001/d0002/device_control" in topics_seen
    assert "partners/elder-watch/v1/b001/d0002/device_control" in topics_seen
    assert not any(t.startswith("partners/concierge/") for t in topics_seen)
    rows = [r.as_dict() for r in await gateway.store.provisions(dwelling_id="d0002")]
    [row] = [r for r in rows if r["recipient"].startswith("partner:")]
    assert row["recipient"] == "partner:elder-watch"
    assert row["event_id"] == control["event_id"]
    assert "command" in row["items"] and "error" not in row["items"]


async def test_explain_and_the_notice_of_purposes_name_the_app_and_its_clause(
    tmp_path: Path,
) -> None:
    settings = gateway_settings(tmp_path)
    call = json.dumps(event_dict("lobby_call", dwelling="d0001")).encode()
    text = await explain_event(settings, call, None)
    [app_line] = [line for line in text.splitlines() if line.strip().startswith("app ")]
    assert "forwarded" in app_line and "app-lobby-calls (§2(4), §3(2))" in app_line
    unlinked = await explain_event(
        settings,
        call,
        json.dumps(
            {"building_id": "b001", "dwelling_id": "d0001", "registered": True,
             "accepted_policy_version": "2026-04-01"}
        ).encode(),
    )  # fmt: skip
    assert "intercom_app_unlinked (§7(2))" in unlinked

    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        told = purposes_in_force(gateway.consent("b001", "d0001"), router=gateway.router)
    [app] = [d for d in told["destinations"] if d["destination"] == "app"]
    assert app["clause"] == "§2(4), §3(2)" and app["provision"] == "own_use"
    assert [f["event_type"] for f in app["flows"]] == ["lobby_call"]
    assert told["intercom_app_linked"] is True
