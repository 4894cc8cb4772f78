"""Two gateways on one broker leak nothing a dwelling stopped (issue #17, item 1).

With the retired share-group setting, Mosquitto dealt a shared subscription's messages
round robin: the settings change that stopped a partner reached one gateway, the other
kept the old consent, and 20 of 40 visitor events reached the stopped partner. Without
it, every gateway on a broker reads every panel message, the settings change included,
in order: a stopped partner receives nothing from any of them. (They duplicate each
other's copies: running several gateways on one broker is what the partitioned
gateways of the README's "Several gateways" replace.)
"""

from __future__ import annotations

import json
from pathlib import Path

from intercom_gateway.broker.mosquitto import OPERATOR, Mosquitto
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.postgres import own_store
from intercom_gateway.qa.testing import running_gateway
from tests.factories import event_dict, panel_message, settings_message
from tests.helpers import collect

EVENTS = 40


async def test_two_gateways_forward_nothing_to_a_stopped_partner(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> None:
    stop = settings_message(
        {"kind": "service_use", "partner_id": "concierge", "used": False}, dwelling="d0002"
    )
    visitors = [event_dict("visitor", dwelling="d0002") for _ in range(EVENTS)]
    marker = event_dict("visitor", dwelling="d0001")  # d0001 still uses concierge
    panel = visitors[0]["device"]["id"]
    async with (
        own_store("a") as store_a,
        own_store("b") as store_b,  # each gateway its own, as before partitions
        running_gateway(broker, fleet_registry, tmp_path / "a", store=store_a) as first,
        running_gateway(broker, fleet_registry, tmp_path / "b", store=store_b) as second,
        first.client("concierge") as concierge,
        first.client(OPERATOR) as operator,
    ):
        await concierge.subscribe(topics.partner_filter("concierge"))
        await operator.subscribe(topics.settings_ack("b001", panel))
        async with first.client(panel) as dwelling_panel:
            await dwelling_panel.publish(*stop)
            acks = await collect(operator, 2)  # one from each gateway
            for visitor in visitors:
                await dwelling_panel.publish(*panel_message(visitor))
            await dwelling_panel.drain()
        async with first.client(marker["device"]["id"]) as other_panel:
            await other_panel.publish(*panel_message(marker))
            await other_panel.drain()
        # The marker comes after every visitor event in each gateway's order: once both
        # copies of it are here, every copy either gateway would send has been sent.
        # First each gateway's notice of the stop (spec item 11).
        arrived = await collect(concierge, 4)
        for gateway in (first, second):
            await gateway.wait_processed(EVENTS + 2)

    notices = [m for m in arrived if m.topic.endswith("/consent_notice")]
    # Made from the same change, by either gateway the same notice: one id.
    assert len(notices) == 2 and len({json.loads(m.payload)["notice_id"] for m in notices}) == 1
    arrived = [m for m in arrived if m not in notices]
    assert all(json.loads(a.payload)["applied"] is True for a in acks)
    assert {json.loads(m.payload)["event_id"] for m in arrived} == {marker["event_id"]}
    leaked = [m.topic for m in arrived if "/d0002/" in m.topic]
    assert leaked == []
    for gateway in (first, second):  # each withheld every visitor copy for concierge
        assert sum(gateway.gateway.metrics.withheld.values()) >= EVENTS
