"""An event's image is published on its own (spec item 2): the gateway on the in-memory
bus with a real SQLite file, from the inbound visitor to the two publishes per entitled
destination, their ledger rows, the decision log and ``explain --event-id``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import Forwarded
from intercom_gateway.core.tags import IMAGE_COPY_FIELDS
from intercom_gateway.gateway.explain import render_logged
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from tests.factories import event_dict, gateway_settings, panel_message
from tests.helpers import collect

from .test_ledger_write_ahead import WitnessBus, gateway_on, inbound

# Everything per event the gateway publishes, but receipts.
OUTPUTS = ("cloud/#", "group/#", "partners/#", "analytics/#")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Three dwellings of one building, each using every sample service."""
    return gateway_settings(tmp_path)


def _by_topic(messages: list[Message]) -> dict[str, tuple[Forwarded, Message]]:
    found = {m.topic: (Forwarded.model_validate_json(m.payload), m) for m in messages}
    assert len(found) == len(messages)  # one message per topic
    return found


async def _visitor(gateway: Gateway, bus: WitnessBus, dwelling: str = "d0001") -> dict[str, Any]:
    data = event_dict("visitor", dwelling=dwelling)
    await gateway.handle(bus, inbound(*panel_message(data)))
    await gateway.finish_in_flight()
    return data


async def test_the_facts_and_the_image_are_two_messages_each_under_one_rule(
    settings: Settings,
) -> None:
    async with gateway_on(settings) as (gateway, bus, _):
        observer = bus.broker.client("all-outputs")
        await observer.subscribe(*OUTPUTS)
        data = await _visitor(gateway, bus)
        # cloud 2, group 1, concierge 2 (elder-watch and parcel-unlock take no visitors);
        # the analytics copy is held for its window (test_analytics.py), never with an image
        got = _by_topic(await collect(observer, 5))

    base = "b001/d0001/visitor"
    cloud, cloud_image = got[f"cloud/v1/{base}"], got[f"cloud/v1/{base}/image"]
    facts, image = got[f"partners/concierge/v1/{base}"], got[f"partners/concierge/v1/{base}/image"]
    assert set(got) == {
        f"cloud/v1/{base}",
        f"cloud/v1/{base}/image",
        f"group/v1/{base}",  # joint use: never the image (§4)
        f"partners/concierge/v1/{base}",
        f"partners/concierge/v1/{base}/image",
    }
    for envelope, message in (cloud, facts):
        assert "image" not in envelope.event
        assert "resident_confirmation" not in envelope.purposes
        assert not any(c.endswith("_image") for c in envelope.categories)
        assert message.properties("rule_id") == [envelope.rule_id]
    assert cloud[0].rule_id == "cloud-events" and "marketing" in cloud[0].purposes
    assert (facts[0].rule_id, facts[0].purposes) == ("partner-events", ("partner_provision",))
    for (envelope, message), rule in ((cloud_image, "cloud-images"), (image, "partner-images")):
        # Only the image and what ties it to its event; tagged for §3(3) only.
        assert (envelope.rule_id, envelope.purposes) == (rule, ("resident_confirmation",))
        assert envelope.categories == ("visitor_image",)
        assert tuple(sorted(envelope.event)) == IMAGE_COPY_FIELDS
        assert envelope.event["image"] == data["image"]
        assert str(envelope.event_id) == envelope.event["event_id"] == data["event_id"]
        assert message.properties("purpose") == ["resident_confirmation"]
        assert message.properties("category") == ["visitor_image"]
        assert message.properties("rule_id") == [rule]
        assert message.properties("event_id") == [data["event_id"]]
    # The same decision: the two messages of a destination re-associate by event id.
    assert cloud_image[0].decision_id == cloud[0].decision_id == image[0].decision_id


async def test_each_message_to_a_partner_has_its_own_row_written_ahead(settings: Settings) -> None:
    async with gateway_on(settings) as (gateway, bus, observer):
        data = await _visitor(gateway, bus, "d0002")
        copies = await collect(observer, 3)  # group, concierge's facts, concierge's image
        rows = [r.as_dict() for r in await gateway.store.provisions()]

    concierge = [m for m in copies if m.topic.startswith("partners/concierge/")]
    parts = {"image" if topics.is_image(m.topic) else "event" for m in concierge}
    assert parts == {"event", "image"}
    # Each was published only once its own row was committed ("intended").
    assert {k: v for k, v in bus.seen.items() if k[1] == "partner:concierge"} == {
        (data["event_id"], "partner:concierge", "event"): "intended",
        (data["event_id"], "partner:concierge", "image"): "intended",
    }
    # The ledger equals what the partner received: one row per message, with its items,
    # purposes and rule; both delivered.
    mine = {r["part"]: r for r in rows if r["recipient"] == "partner:concierge"}
    assert mine.keys() == {"event", "image"}
    received = {
        ("image" if topics.is_image(m.topic) else "event"): json.loads(m.payload) for m in concierge
    }
    for part, row in mine.items():
        envelope = received[part]
        assert row["status"] == "delivered"
        assert row["event_id"] == envelope["event_id"]
        assert set(row["items"]) == set(envelope["event"])
        assert (row["rule_id"], row["purposes"]) == (envelope["rule_id"], envelope["purposes"])
        assert row["image"] is ("image" in envelope["event"])
        assert row["third_party"] is True


async def test_the_decision_log_and_explain_show_both_messages(settings: Settings) -> None:
    async with gateway_on(settings) as (gateway, bus, _):
        data = await _visitor(gateway, bus)
        decision = await gateway.store.decision(data["event_id"])
        logged = decision.as_dict() if decision else None

    assert logged is not None
    outcomes = {o["destination"]: o for o in logged["outcomes"]}
    cloud = outcomes["cloud"]
    assert [(m["part"], m["rule_id"]) for m in cloud["messages"]] == [
        ("event", "cloud-events"),
        ("image", "cloud-images"),
    ]
    assert cloud["messages"][1]["purposes"] == ["resident_confirmation"]
    assert "image" not in cloud["messages"][0]["fields"]
    assert cloud["rule_id"] == "cloud-events"  # the facts' rule; never joined with "+"
    assert [m["part"] for m in outcomes["group"]["messages"]] == ["event"]
    assert "messages" not in outcomes["partner:elder-watch"]  # withheld
    text = render_logged(logged)
    assert "+ image    rule cloud-images (§3(3)); purposes resident_confirmation" in text
    assert "+ image    rule partner-images" in text
    assert "+" not in "".join(o["rule_id"] or "" for o in logged["outcomes"])
