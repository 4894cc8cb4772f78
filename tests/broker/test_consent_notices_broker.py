"""Consent notices on the real Mosquitto (spec item 11): in a steady stream of events,
each service a dwelling withdraws from receives the notice, on its own account's
``partners/<id>/#``, after everything of the dwelling that came before the change and
before nothing more of it; the ledger's notice rows are exactly the notices received."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, Mosquitto
from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import ConsentNotice
from intercom_gateway.core.notices import NOTICE_EVENT_TYPE
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.testing import (
    RunningGateway,
    collect_until_quiet,
    publish_as_fleet,
    running_gateway,
    sentinel_topic,
)
from tests.factories import event_dict, panel_message, settings_message

SERVICES = ("concierge", "elder-watch", "parcel-unlock")
STREAM_KINDS = ("visitor", "delivery_box", "alarm", "unlock_mode")
# What of the stream each service declared (partners.sample.yaml).
DECLARED = {
    "concierge": {"visitor", "delivery_box"},
    "elder-watch": {"alarm"},
    "parcel-unlock": {"unlock_mode", "delivery_box"},
}


@pytest.fixture
async def running(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(broker, fleet_registry, tmp_path / "gw") as gateway:
        yield gateway


def _dwelling(message: Message) -> tuple[str, str]:
    """(building, dwelling) of a partner message: partners/<id>/v1/<b>/<d>/..."""
    levels = message.topic.split("/")
    return levels[3], levels[4]


async def _received(running: RunningGateway, partners: dict[str, Any]) -> dict[str, list[Message]]:
    sentinel_id = running.broker.address(GATEWAY).client_id("sentinel")
    async with running.client(GATEWAY, client_id=sentinel_id) as gateway_account:
        for pid in partners:
            await gateway_account.publish(sentinel_topic(pid), b"{}")
    return {
        pid: await collect_until_quiet(bus, sentinel_topic=sentinel_topic(pid))
        for pid, bus in partners.items()
    }


async def test_withdrawal_notices_cut_a_steady_stream_per_service_and_dwelling(
    running: RunningGateway, broker: Mosquitto
) -> None:
    """d0001 stops using concierge a third of the way in; d0002 is initialised two
    thirds in (every service it used is told). Events of every dwelling flow all along."""
    stream: list[tuple[str, bytes]] = []
    sent_before: dict[tuple[str, str], set[str]] = {("concierge", "d0001"): set()}
    for s in SERVICES:
        sent_before[(s, "d0002")] = set()
    changes = {
        90: settings_message(
            {"kind": "service_use", "partner_id": "concierge", "used": False}, dwelling="d0001"
        ),
        180: settings_message({"kind": "initialise"}, dwelling="d0002"),
    }
    withdrawn_at: dict[str, int] = {}
    for index in range(270):
        if index in changes:
            stream.append(changes[index])
            withdrawn_at["d0001" if index == 90 else "d0002"] = index
        dwelling = f"d000{1 + index % 4}"
        kind = STREAM_KINDS[index // 4 % len(STREAM_KINDS)]  # every kind of every dwelling
        data = event_dict(kind, building="b001", dwelling=dwelling)
        stream.append(panel_message(data))
        for (service, withdrawing), ids in sent_before.items():
            before = dwelling == withdrawing and withdrawing not in withdrawn_at
            if before and kind in DECLARED[service]:
                ids.add(data["event_id"])

    partners = {pid: running.client(pid) for pid in SERVICES}
    for bus in partners.values():
        await bus.__aenter__()
    try:
        for pid, bus in partners.items():
            await bus.subscribe(topics.partner_filter(pid))
        sent = await publish_as_fleet(broker, stream)
        await running.wait_processed(sent, timeout=30)
        received = await _received(running, partners)
    finally:
        for bus in partners.values():
            await bus.__aexit__(None, None, None)

    notices: dict[str, list[ConsentNotice]] = {}
    for pid, messages in received.items():
        assert all(m.topic.startswith(f"partners/{pid}/v1/") for m in messages)
        positions = {
            _dwelling(m): i for i, m in enumerate(messages) if m.topic.endswith("/consent_notice")
        }
        notices[pid] = [
            ConsentNotice.model_validate_json(m.payload)
            for m in messages
            if m.topic.endswith("/consent_notice")
        ]
        assert len(notices[pid]) == len(positions), f"{pid}: a notice twice"
        for (service, dwelling), entitled_before in sent_before.items():
            if service != pid:
                continue
            cut = positions[("b001", dwelling)]
            events = [
                (i, json.loads(m.payload)["event_id"])
                for i, m in enumerate(messages)
                if _dwelling(m) == ("b001", dwelling) and not m.topic.endswith("/consent_notice")
            ]
            # Nothing of the dwelling after its notice; before it, what it was entitled to.
            assert all(i < cut for i, _ in events), f"{pid} got {dwelling} after its notice"
            assert {e for _, e in events} == entitled_before
            # The stream went on: other dwellings' events still reached the service.
            assert any(i > cut and _dwelling(m)[1] != dwelling for i, m in enumerate(messages))
    assert [(n.dwelling_id, n.change) for n in notices["concierge"]] == [
        ("d0001", "service_stopped"),
        ("d0002", "initialised"),
    ]
    for pid in ("elder-watch", "parcel-unlock"):
        assert [(n.dwelling_id, n.change) for n in notices[pid]] == [("d0002", "initialised")]

    # The ledger: one delivered row per notice received, naming it.
    rows = [
        r for r in await running.gateway.store.provisions() if r.event_type == NOTICE_EVENT_TYPE
    ]
    assert sorted((r.recipient, r.event_id) for r in rows) == sorted(
        (f"partner:{pid}", str(n.notice_id)) for pid, got in notices.items() for n in got
    )
    assert {r.status for r in rows} == {"delivered"}
