"""Part A, clause by clause: §2(3)① linked devices and scenes, §2(4) lobby calls to the
Intercom app, §7(2) the app's linking, §2(5) (no §2(4) to partners) and §5(5) (no handset
identity, ids or free text to analytics)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import (
    EventType,
    Initialise,
    IntercomApp,
    PurposeOptOut,
    parse_event,
)
from intercom_gateway.core.outcomes import Decision, Reason
from intercom_gateway.core.policy import (
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
)
from intercom_gateway.core.registry import generate_registry, load_registry, sample_registry_path
from intercom_gateway.gateway.consents import consent_from_registry
from tests.factories import consent_change, decided, event, event_dict

from .conftest import NOW

LINKED_KINDS = ("device_control", "scene", "device_state")


def _consent(policy: Policy, **fields: Any) -> ConsentState:
    return ConsentState(
        **{
            "building_id": "b001",
            "dwelling_id": "d0101",
            "registered": True,
            "accepted_policy_version": policy.version,
            "services_used": ("concierge", "elder-watch", "parcel-unlock"),
            "intercom_app_linked": True,
            **fields,
        }
    )


def _by_destination(decision: Decision) -> dict[str, Any]:
    return {o.destination: o for o in decision.outcomes}


def _parse(kind: str, **fields: Any) -> Any:
    return parse_event(json.dumps(event_dict(kind, **fields)))


# --- schemas -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        pytest.param("device_state", {"values": {"note": "back at 6, Hana"}}, id="free-text"),
        pytest.param("device_state", {"values": {f"k{i}": i for i in range(17)}}, id="17-values"),
        pytest.param("device_state", {"values": {"celsius": 10**7}}, id="unbounded-int"),
        pytest.param("device_control", {"parameters": {"Celsius": 26}}, id="key-not-an-ident"),
        pytest.param("device_control", {"command": "self_destruct"}, id="unknown-command"),
        pytest.param("device_control", {"origin": "partner"}, id="unknown-origin"),
        pytest.param("scene", {"action": "delete"}, id="scene-action"),
        pytest.param("lobby_call", {"outcome": "rejected"}, id="visitor-outcome"),
        pytest.param("lobby_call", {"handset": {"model": "X", "os": "ios"}}, id="handset-partial"),
    ],
)
def test_linked_device_and_lobby_call_schemas_are_strict(kind: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _parse(kind, **fields)


def test_a_state_value_that_is_not_finite_is_refused() -> None:
    text = json.dumps(event_dict("device_state")).replace("42.5", "Infinity")
    with pytest.raises(ValidationError):
        parse_event(text)


@pytest.mark.parametrize(
    ("kind", "role"),
    [
        ("device_control", "lobby_panel"),
        ("scene", "delivery_box"),
        ("device_state", "lobby_panel"),
        ("lobby_call", "dwelling_panel"),
    ],
)
def test_only_the_right_device_emits_each_kind(kind: str, role: str) -> None:
    data = event_dict(kind)
    data["device"] = {"id": data["device"]["id"], "role": role}
    with pytest.raises(ValidationError, match="does not emit"):
        parse_event(json.dumps(data))


# --- §2(3)① linked devices and scenes -----------------------------------------------


@pytest.mark.parametrize("kind", LINKED_KINDS)
def test_linked_device_operation_reaches_cloud_and_group_for_section_3_2_purposes(
    policy: Policy, partners: PartnerRegistry, kind: str
) -> None:
    outcomes = _by_destination(decided(event(kind), _consent(policy), policy, partners, now=NOW))
    cloud, group = outcomes["cloud"], outcomes["group"]
    assert cloud.forwarded and cloud.rule_id == "cloud-events"
    assert set(cloud.purposes) == {
        "backup",
        "support",
        "own_services",
        "improvement",
        "marketing",
        "profiling",
    }
    assert group.forwarded and group.kind is DestinationKind.GROUP  # §4
    assert cloud.copies[0].categories == ("linked_device_operation",)
    assert not outcomes["app"].forwarded  # the app gets lobby calls only


def test_a_partner_gets_the_linked_device_kinds_it_declared_only_while_used(
    policy: Policy, partners: PartnerRegistry
) -> None:
    state = event("device_state")
    used = _by_destination(decided(state, _consent(policy), policy, partners, now=NOW))
    watch = used["partner:elder-watch"]
    assert watch.forwarded and watch.purposes == ("partner_provision",)
    payload = watch.copies[0].payload
    assert payload["linked_device"] == {"kind": "water_heater"} and payload["values"]
    assert used["partner:concierge"].reason is Reason.NOT_DECLARED
    scene = _by_destination(decided(event("scene"), _consent(policy), policy, partners, now=NOW))
    assert scene["partner:elder-watch"].reason is Reason.NOT_DECLARED
    stopped = _consent(policy, services_used=("concierge",))
    unused = _by_destination(decided(state, stopped, policy, partners, now=NOW))
    assert unused["partner:elder-watch"].reason is Reason.SERVICE_NOT_USED


@pytest.mark.parametrize("kind", LINKED_KINDS)
def test_analytics_gets_linked_device_operation_without_ids_text_or_values(
    policy: Policy, partners: PartnerRegistry, kind: str
) -> None:
    happened = event(kind)
    analytics = _by_destination(decided(happened, _consent(policy), policy, partners, now=NOW))[
        "analytics"
    ]
    assert analytics.forwarded and analytics.rule_id == "analytics-linked-devices"
    payload = analytics.copies[0].payload
    forbidden = {"instruction_id", "scene_id", "name", "error", "parameters", "values"}
    assert not forbidden & set(payload)
    assert not {"event_id", "dwelling_id", "building_id", "seq"} & set(payload)
    assert payload.get("linked_device", {"kind": "x"}).keys() == {"kind"}
    assert payload["occurred_at"].endswith(":00:00Z")


# --- §2(4) lobby calls, §7(2) the app's linking ----------------------------------------


def test_a_lobby_call_goes_to_the_app_and_the_cloud_while_the_handsets_are_linked(
    policy: Policy, partners: PartnerRegistry
) -> None:
    call = event("lobby_call", dwelling="d0101")
    outcomes = _by_destination(decided(call, _consent(policy), policy, partners, now=NOW))
    app, cloud = outcomes["app"], outcomes["cloud"]
    assert app.forwarded and app.copies[0].topic == "app/v1/b001/d0101/lobby_call"
    assert (app.rule_id, app.purposes, app.clause) == (
        "app-lobby-calls",
        ("own_services",),
        "§2(4), §3(2)",
    )
    assert app.copies[0].payload["handset"]["uuid"]  # the resident's own app
    assert cloud.forwarded and cloud.rule_id == "cloud-lobby-calls"
    assert cloud.purposes == ("backup", "support")  # not marketing or profiling
    assert not outcomes["group"].forwarded  # no joint use of §2(4): default deny
    assert outcomes["statistics"].forwarded  # counted, as an aggregate


def test_unlinked_handsets_stop_lobby_calls_everywhere_and_nothing_else(
    policy: Policy, partners: PartnerRegistry
) -> None:
    unlinked = _consent(policy, intercom_app_linked=False)
    call = decided(event("lobby_call"), unlinked, policy, partners, now=NOW)
    assert call.forwarded == ()
    assert call.gate is not None and call.gate.reason is Reason.INTERCOM_APP_UNLINKED
    assert call.gate.clause == "§7(2)"
    visitor = decided(event("visitor"), unlinked, policy, partners, now=NOW)
    assert {o.destination for o in visitor.forwarded} >= {"cloud", "group", "analytics"}


def test_the_intercom_app_setting_links_and_unlinks_and_initialising_forgets_it(
    policy: Policy, partners: PartnerRegistry
) -> None:
    fresh = ConsentState.initial("b001", "d0101")
    assert fresh.intercom_app_linked is False  # fail closed until the panel says so
    linked = consent_change(fresh, IntercomApp(linked=True), policy, partners, now=NOW)
    assert linked.applied and linked.state.intercom_app_linked and linked.clause == "§7(2)"
    assert linked.state.revision == fresh.revision + 1
    removed = consent_change(linked.state, IntercomApp(linked=False), policy, partners, now=NOW)
    assert removed.applied and not removed.state.intercom_app_linked
    moved_out = consent_change(linked.state, Initialise(), policy, partners, now=NOW)
    assert not moved_out.state.intercom_app_linked  # the next residents link their own
    other = consent_change(linked.state, PurposeOptOut(purpose="marketing", opted_out=True),
                           policy, partners, now=NOW)  # fmt: skip
    assert other.state.intercom_app_linked  # other settings leave it alone


def test_the_registry_seeds_the_app_link_and_defaults_to_unlinked() -> None:
    registry = load_registry(sample_registry_path())
    linked = {
        d.id: consent_from_registry(b.id, d, now=NOW).intercom_app_linked
        for b, d in registry.dwellings()
    }
    assert linked["d0101"] and linked["d0201"]
    assert not linked["d0104"] and not linked["d0203"]
    generated = generate_registry(buildings=1, dwellings=2, intercom_app=False)
    assert not any(
        consent_from_registry(b.id, d, now=NOW).intercom_app_linked
        for b, d in generated.dwellings()
    )


def test_analytics_gets_the_handset_model_and_os_never_its_uuid(
    policy: Policy, partners: PartnerRegistry
) -> None:
    call = event("lobby_call")
    analytics = _by_destination(decided(call, _consent(policy), policy, partners, now=NOW))[
        "analytics"
    ]
    payload = analytics.copies[0].payload
    assert payload["handset"] == {"model": "Pixel 8", "os": "android"}
    assert not {"call_id", "dwelling_id", "event_id"} & set(payload)


@given(
    uuid_=st.uuids(),
    model=st.text(min_size=1, max_size=20),
    answered=st.booleans(),
    linked=st.booleans(),
    services=st.lists(st.sampled_from(["concierge", "elder-watch", "parcel-unlock"])),
)
def test_no_lobby_call_reaches_a_partner_and_no_uuid_reaches_analytics(
    policy: Policy,
    partners: PartnerRegistry,
    uuid_: uuid.UUID,
    model: str,
    answered: bool,
    linked: bool,
    services: list[str],
) -> None:
    handset = {"model": model, "os": "ios", "app_version": "3.2", "uuid": str(uuid_)}
    call = event("lobby_call", handset=handset if answered else None)
    state = _consent(policy, intercom_app_linked=linked, services_used=tuple(services))
    decision = decided(call, state, policy, partners, now=NOW)
    for outcome in decision.outcomes:
        if outcome.kind in {DestinationKind.PARTNER, DestinationKind.UNLOCK_SERVICE}:
            assert not outcome.forwarded
        if outcome.kind is DestinationKind.ANALYTICS:
            assert str(uuid_) not in json.dumps([c.payload for c in outcome.copies])
    assert bool(decision.forwarded) is linked


# --- the loader and the registry refuse §2(4) to partners (§2(5)) ------------------


def _with_rule(policy: Policy, rule: dict[str, Any]) -> dict[str, Any]:
    data = policy.model_dump(mode="json")
    data["rules"].append(rule)
    return data


@pytest.mark.parametrize(
    ("rule", "refusal"),
    [
        pytest.param(
            {"destination": "partner", "categories": ["intercom_app_call"],
             "purposes": ["partner_provision"], "fields": "declared"},
            "§2(5) does not list §2(4)",
            id="partner",
        ),
        pytest.param(
            {"destination": "unlock_service", "categories": ["intercom_app_call"],
             "purposes": ["partner_provision"], "fields": "declared"},
            "§2(5) does not list §2(4)",
            id="unlock-service",
        ),
        pytest.param(
            {"destination": "analytics", "categories": ["security_arming"],
             "purposes": ["support"], "fields": ["type", "handset.uuid"]},
            "analytics may not keep ['handset.uuid']",
            id="analytics-uuid",
        ),
        pytest.param(
            {"destination": "analytics", "categories": ["security_arming"],
             "purposes": ["support"], "fields": ["type", "handset"]},
            "analytics may not keep ['handset']",
            id="analytics-whole-handset",
        ),
        pytest.param(
            {"destination": "app", "categories": ["visitor_image"],
             "purposes": ["resident_confirmation"], "fields": ["image"]},
            "images may not go to app",
            id="app-images",
        ),
    ],
)  # fmt: skip
def test_the_loader_refuses_a_rule_that_breaks_part_a_guarantees(
    policy: Policy, rule: dict[str, Any], refusal: str
) -> None:
    data = _with_rule(policy, {"id": "rogue", "clause": "none", **rule})
    with pytest.raises(ValidationError, match=re.escape(refusal)):
        Policy.model_validate(data)


@pytest.mark.parametrize("kind", ["partner", "unlock_service"])
def test_the_partner_registry_refuses_a_service_declaring_lobby_calls(kind: str) -> None:
    with pytest.raises(ValidationError, match="lobby_call"):
        PartnerService(
            id="snoop",
            name="Snoop",
            kind=kind,
            purposes=("partner_provision",),
            events={EventType.LOBBY_CALL: ("outcome",)},
        )


def test_a_service_that_skipped_validation_still_gets_no_lobby_call(
    policy: Policy, partners: PartnerRegistry
) -> None:
    rogue = PartnerService.model_construct(
        id="snoop",
        name="Snoop",
        kind="partner",
        operator="",
        purposes=("partner_provision",),
        events={EventType.LOBBY_CALL: ("outcome", "handset")},
    )
    registry = PartnerRegistry.model_construct(services=(*partners.services, rogue))
    state = _consent(policy, services_used=("snoop",))
    outcome = _by_destination(decided(event("lobby_call"), state, policy, registry, now=NOW))[
        "partner:snoop"
    ]
    assert not outcome.forwarded and outcome.reason is Reason.INTERCOM_APP_EXCLUDED


def test_the_consent_command_sends_the_intercom_app_setting() -> None:
    from intercom_gateway.cli.resident import _change_body

    none = (None, False, None, None, None, None, None, None)
    assert _change_body(*none, intercom_app=False) == {"kind": "intercom_app", "linked": False}
    assert _change_body(*none, intercom_app=True)["linked"] is True
