"""The notification of purposes (§8) says exactly what ``decide`` does, event kind by
event kind, for several consents: a resident is told no more and no less."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decision import decide
from intercom_gateway.core.models import EventType, utc_now
from intercom_gateway.core.policy import DestinationKind, default_policy, sample_partners
from intercom_gateway.resident.service import purposes_in_force
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event

BASE = {"building_id": "b001", "dwelling_id": "d0101", "registered": True}
CONSENTS: dict[str, dict[str, Any]] = {
    "all services": {"services_used": SAMPLE_SERVICES},
    "opted out of marketing": {"services_used": SAMPLE_SERVICES, "opted_out": ("marketing",)},
    "return home off": {"services_used": ("elder-watch",), "return_home_enabled": False},
    "concierge stopped": {"services_used": ("parcel-unlock",), "provision_stopped": ("concierge",)},
    "no services": {},
}


def _told(answer: dict[str, Any], event_type: str) -> dict[str, tuple[str, ...]]:
    return {
        d["destination"]: tuple(f["purposes"])
        for d in answer["destinations"]
        for f in d["flows"]
        if f["event_type"] == event_type
    }


@pytest.mark.parametrize("name", list(CONSENTS))
@pytest.mark.parametrize("event_type", [t.value for t in EventType])
def test_purposes_in_force_match_the_decision(name: str, event_type: str) -> None:
    policy, partners = default_policy(), sample_partners()
    consent = ConsentState(**BASE, accepted_policy_version=policy.version, **CONSENTS[name])
    decision = decide(
        event(event_type),
        consent,
        policy=policy,
        partners=partners,
        gateway_id="gw",
        decision_id=uuid.uuid4(),
        now=utc_now(),
    )
    forwarded = [o for o in decision.forwarded if o.kind is not DestinationKind.STATISTICS]
    answer = purposes_in_force(consent, policy=policy, partners=partners)
    # The purposes of the event's facts; an image is told apart with its own purposes,
    # as it travels in a message of its own (spec item 2).
    assert _told(answer, event_type) == {o.destination: o.purposes for o in forwarded}
    images = {o.destination: o.image_copy.purposes for o in forwarded if o.image_copy}
    assert _told_images(answer, event_type) == images


def _told_images(answer: dict[str, Any], event_type: str) -> dict[str, tuple[str, ...]]:
    return {
        d["destination"]: tuple(sorted(f["image_rule"]["purposes"]))
        for d in answer["destinations"]
        for f in d["flows"]
        if f["event_type"] == event_type and "image_rule" in f
    }


def test_an_initialised_dwelling_is_told_nothing_flows() -> None:
    policy, partners = default_policy(), sample_partners()
    answer = purposes_in_force(
        ConsentState(building_id="b001", dwelling_id="d0101"), policy=policy, partners=partners
    )
    assert answer["destinations"] == [] and "§7(1)①" in answer["stopped"]
