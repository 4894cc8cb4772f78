"""The notification of purposes (§8) says exactly what ``decide`` does, event kind by
event kind, for several consents: a resident is told no more and no less."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import EventType, utc_now
from intercom_gateway.core.outcomes import Decision, Reason
from intercom_gateway.core.policy import DestinationKind, default_policy, sample_partners
from intercom_gateway.core.router import Router
from intercom_gateway.resident import channels as resident_channels
from intercom_gateway.resident import desk as resident_desk
from intercom_gateway.resident import purposes as resident_purposes
from intercom_gateway.resident import service as resident_service
from intercom_gateway.resident.purposes import purposes_in_force
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event

from .conftest import NOW
from .test_decision import make_event

BASE = {"building_id": "b001", "dwelling_id": "d0101", "registered": True}
CONSENTS: dict[str, dict[str, Any]] = {
    "all services": {"services_used": SAMPLE_SERVICES},
    "opted out of marketing": {"services_used": SAMPLE_SERVICES, "opted_out": ("marketing",)},
    "return home off": {"services_used": ("elder-watch",), "return_home_enabled": False},
    "intercom app linked": {"services_used": ("elder-watch",), "intercom_app_linked": True},
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
    router = Router.compile(policy, partners)
    consent = ConsentState(**BASE, accepted_policy_version=policy.version, **CONSENTS[name])
    decision = decide(
        event(event_type),
        consent,
        router=router,
        gateway_id="gw",
        decision_id=uuid.uuid4(),
        now=utc_now(),
    )
    forwarded = [o for o in decision.forwarded if o.kind is not DestinationKind.STATISTICS]
    answer = purposes_in_force(consent, router=router)
    # The purposes of the event's facts; an image is told apart with its own purposes,
    # as it travels in a message of its own (spec item 2). Usage information goes to the
    # contractor the event names only (§5(1)①): the answer tells every contractor so.
    told = {
        name: purposes
        for name, purposes in _told(answer, event_type).items()
        if not name.startswith("contractor:") or name == "contractor:kanri-kumiai-b001"
    }
    assert told == {o.destination: o.purposes for o in forwarded}
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
    router = Router.compile(default_policy(), sample_partners())
    answer = purposes_in_force(ConsentState(building_id="b001", dwelling_id="d0101"), router=router)
    assert answer["destinations"] == [] and "§7(1)①" in answer["stopped"]


# --- every consent state, every event type --------------------------------------------

_POLICY = default_policy()
_SERVICES = st.lists(st.sampled_from(SAMPLE_SERVICES), unique=True, max_size=3).map(tuple)
_CONSENTS = st.builds(
    ConsentState,
    building_id=st.just("b001"),
    dwelling_id=st.just("d0101"),
    registered=st.booleans(),
    accepted_policy_version=st.sampled_from(
        [_POLICY.version, *_POLICY.supersedes, "1999-01-01", None]
    ),
    return_home_enabled=st.booleans(),
    intercom_app_linked=st.booleans(),
    services_used=_SERVICES,
    provision_stopped=_SERVICES,
    opted_out=st.lists(st.sampled_from(sorted(_POLICY.opt_out_purposes)), unique=True).map(tuple),
)


def _told_in_full(
    answer: dict[str, Any], et: EventType, service_id: str, contractor_id: str
) -> dict[str, Any]:
    """What the answer says an event of ``et`` (an unlock made with ``service_id``'s
    credentials) brings each destination: rule, purposes, fields, the image's purposes."""
    told: dict[str, Any] = {}
    for d in answer["destinations"]:
        if et.value in d.get("counted", ()):
            told[d["destination"]] = "counted"
        for f in d["flows"]:
            if f["event_type"] != et.value:
                continue
            if "only" in f and d["destination"] not in (
                f"partner:{service_id}",
                f"contractor:{contractor_id}",
            ):
                # §3(4): an unlock goes only to the service whose credentials; §5(1)①:
                # usage information only to the contractor whose distribution.
                continue
            image = tuple(f["image_rule"]["purposes"]) if f["image"] else None
            fields = f["fields"] if isinstance(f["fields"], list) else None
            told[d["destination"]] = (f["rule_id"], tuple(f["purposes"]), fields, image)
    return told


def _forwarded_in_full(decision: Decision, fields_told: dict[str, Any]) -> dict[str, Any]:
    forwarded: dict[str, Any] = {}
    for o in decision.forwarded:
        if o.kind is DestinationKind.STATISTICS:
            forwarded[o.destination] = "counted"
            continue
        image = o.image_copy.purposes if o.image_copy else None
        told = fields_told.get(o.destination)
        fields = list(o.fields) if isinstance(told, tuple) and told[2] is not None else None
        forwarded[o.destination] = (o.rule_id, o.purposes, fields, image)
    return forwarded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(consent=_CONSENTS)
def test_what_a_resident_is_told_flows_is_what_decide_forwards(consent: ConsentState) -> None:
    """For any consent and every event type (with an image where it has one), each
    destination the answer names gets exactly that event's copies from ``decide``, with
    the rule, purposes and fields told, and no other destination gets anything."""
    router = Router.compile(_POLICY, sample_partners())
    answer = purposes_in_force(consent, router=router)
    for et in EventType:
        for service_id, contractor_id in (
            ("parcel-unlock", "kanri-kumiai-b001"),
            ("somebody-else", "example-kanri"),
            ("somebody-else", "nobody-registered"),
        ):
            happened = make_event(
                et,
                image=True,
                service_id=service_id,
                building="b001",
                dwelling="d0101",
                contractor_id=contractor_id,
            )
            decision = decide(
                happened,
                consent,
                router=router,
                gateway_id="gw",
                decision_id=uuid.UUID(int=7),
                now=NOW,
            )
            told = _told_in_full(answer, et, service_id, contractor_id)
            assert told == _forwarded_in_full(decision, told), (et, service_id)
            gate = decision.gate
            one_kind = {Reason.RETURN_HOME_OFF, Reason.INTERCOM_APP_UNLINKED}
            stopped = gate is not None and gate.reason not in one_kind
            assert (answer["stopped"] is not None) == stopped


def test_the_resident_reads_the_decision_and_derives_none_of_it() -> None:
    """One policy engine: the resident's module asks the router, never the rules."""
    for module in (resident_purposes, resident_service, resident_desk, resident_channels):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        called = {
            node.func.attr
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        assert not called & {"rule_for", "known_version", "fields_for", "uses"}, module
