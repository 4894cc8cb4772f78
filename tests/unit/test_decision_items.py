"""The decision, items 3 to 9 of the spec's "What the gateway must do" (test_decision.py
holds items 1 and 2 and the helpers)."""

from __future__ import annotations

from typing import Any

import pytest

from intercom_gateway.core.models import EventType, ServiceUse
from intercom_gateway.core.outcomes import Outcome, Reason
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
    default_policy,
)
from tests.factories import consent_change

from .conftest import NOW
from .test_decision import (
    DECISION_ID,
    _with_rules,
    consent,
    make_event,
    run,
)

# --- Item 3: images follow §3(3)/(4) only ------------------------------------------


def _image_of(outcome: Outcome) -> Any:
    """The image a destination gets: only ever in its image copy."""
    image = outcome.image_copy
    return None if image is None or image.payload is None else image.payload.get("image")


@pytest.mark.parametrize(
    ("event_type", "service_id", "destination", "gets_image"),
    [
        pytest.param(EventType.VISITOR, "", "cloud", True, id="§3(3)-cloud"),
        pytest.param(EventType.VISITOR, "", "partner:concierge", True, id="§3(3)-partner"),
        pytest.param(EventType.VISITOR, "", "group", False, id="§4-group"),
        pytest.param(EventType.VISITOR, "", "analytics", False, id="§5(5)-analytics"),
        pytest.param(EventType.RETURN_HOME, "", "cloud", True, id="§3(3)-return-cloud"),
        # elder-watch takes return_home but did not ask for the image: minimised away.
        pytest.param(EventType.RETURN_HOME, "", "partner:elder-watch", False, id="undeclared"),
        pytest.param(EventType.UNLOCK_MODE, "parcel-unlock", "cloud", False, id="§3(4)-cloud"),
        pytest.param(EventType.UNLOCK_MODE, "parcel-unlock", "group", False, id="§3(4)-group"),
        pytest.param(
            EventType.UNLOCK_MODE, "parcel-unlock", "partner:parcel-unlock", True, id="§3(4)"
        ),
    ],
)
def test_item3_images_only_where_the_policy_allows(
    event_type: EventType,
    service_id: str,
    destination: str,
    gets_image: bool,
    policy: Policy,
    partners: PartnerRegistry,
) -> None:
    event = make_event(event_type, image=True, service_id=service_id or "parcel-unlock")
    outcome = run(event, consent(policy), policy, partners).outcome(destination)
    assert outcome.forwarded, outcome.detail
    assert (_image_of(outcome) is not None) is gets_image
    # The event's facts never carry the image nor its category (item 2): it travels in a
    # copy of its own, whose fields and categories say so.
    assert outcome.payload is not None and "image" not in outcome.payload
    assert "image" not in outcome.fields
    assert not any(c.endswith("_image") for c in outcome.categories)
    image = outcome.image_copy
    assert (image is not None) is gets_image
    if image is not None:
        assert "image" in image.fields
        assert all(c.endswith("_image") for c in image.categories)
        assert image.topic == f"{outcome.topic}/image"


def test_item3_partner_gets_an_image_only_if_it_declared_the_field(policy: Policy) -> None:
    """§3(3) and item 5: the purpose alone is not enough, the field must be declared."""
    asks = {EventType.VISITOR: ("origin",)}
    service = PartnerService(
        id="viewer", name="Viewer", kind="partner", purposes=_IMAGE_PURPOSES, events=asks
    )
    registry = PartnerRegistry(services=(service,))
    state = consent(policy, services_used=("viewer",))
    outcome = run(make_event(EventType.VISITOR, image=True), state, policy, registry).outcome(
        "partner:viewer"
    )
    assert outcome.forwarded
    assert _image_of(outcome) is None
    assert outcome.image_copy is None
    assert outcome.categories == ("mobile_security_event",)


_IMAGE_PURPOSES = ("partner_provision", "resident_confirmation")


def test_item3_unlock_image_only_to_the_named_service(
    policy: Policy, partners: PartnerRegistry
) -> None:
    event = make_event(EventType.UNLOCK_MODE, image=True, service_id="other-company")
    outcome = run(event, consent(policy), policy, partners).outcome("partner:parcel-unlock")
    assert not outcome.forwarded
    assert outcome.reason is Reason.OTHER_UNLOCK_SERVICE


def test_item3_statistics_never_carry_a_payload(policy: Policy, partners: PartnerRegistry) -> None:
    decision = run(make_event(EventType.VISITOR, image=True), consent(policy), policy, partners)
    outcome = decision.outcome("statistics")
    assert outcome.forwarded and outcome.payload is None
    assert outcome.categories == ("mobile_security_event",)
    with pytest.raises(ValueError, match="nothing to publish"):
        outcome.forwarded_message(decision, NOW)
    assert "statistics" not in [m.destination for _, m in decision.messages(NOW)]


# --- Item 4: partner services never receive unlock mode (§1(8)) ----------------------


def test_item4_partner_kind_never_gets_unlock_mode_even_if_registered_wrongly(
    policy: Policy,
) -> None:
    # model_construct skips the registry's own §1(8) check: the decision must hold alone.
    rogue = PartnerService.model_construct(
        id="rogue",
        name="Rogue",
        kind="partner",
        operator="",
        purposes=("partner_provision",),
        events={EventType.UNLOCK_MODE: ("result", "image")},
    )
    registry = PartnerRegistry.model_construct(services=(rogue,))
    event = make_event(EventType.UNLOCK_MODE, image=True, service_id="rogue")
    outcome = run(event, consent(policy, services_used=("rogue",)), policy, registry).outcome(
        "partner:rogue"
    )
    assert not outcome.forwarded
    assert outcome.reason is Reason.UNLOCK_MODE_EXCLUDED
    assert outcome.clause == "§1(8)"


def test_item4_unlock_services_are_their_own_kind(
    policy: Policy, partners: PartnerRegistry
) -> None:
    decision = run(make_event(EventType.UNLOCK_MODE), consent(policy), policy, partners)
    outcome = decision.outcome("partner:parcel-unlock")
    assert outcome.kind is DestinationKind.UNLOCK_SERVICE
    assert outcome.forwarded
    assert outcome.third_party


# --- Item 5: only while used, only declared kinds and fields (§5(1)②, §8) -----------


@pytest.mark.parametrize(
    ("services_used", "provision_stopped", "reason"),
    [
        pytest.param(("concierge",), (), None, id="§5(1)②-used"),
        pytest.param((), (), Reason.SERVICE_NOT_USED, id="§5(1)②-not-used"),
        pytest.param(("elder-watch",), (), Reason.SERVICE_NOT_USED, id="§5(1)②-other"),
        pytest.param(("concierge",), ("concierge",), Reason.PROVISION_STOPPED, id="§8-stopped"),
    ],
)
def test_item5_partner_only_while_used(
    services_used: tuple[str, ...],
    provision_stopped: tuple[str, ...],
    reason: Reason | None,
    policy: Policy,
    partners: PartnerRegistry,
) -> None:
    state = consent(policy, services_used=services_used, provision_stopped=provision_stopped)
    outcome = run(make_event(EventType.DELIVERY_BOX), state, policy, partners).outcome(
        "partner:concierge"
    )
    assert outcome.forwarded is (reason is None)
    assert outcome.reason is reason


@pytest.mark.parametrize(
    ("event_type", "destination", "declared"),
    [
        pytest.param(
            EventType.DELIVERY_BOX,
            "partner:concierge",
            {"action", "box_number", "carrier"},
            id="concierge",
        ),
        pytest.param(
            EventType.RETURN_HOME, "partner:elder-watch", {"method"}, id="elder-watch-no-nickname"
        ),
        pytest.param(
            EventType.DELIVERY_BOX, "partner:parcel-unlock", {"action", "box_number"}, id="unlock"
        ),
    ],
)
def test_item5_only_declared_fields_plus_base_fields(
    event_type: EventType,
    destination: str,
    declared: set[str],
    policy: Policy,
    partners: PartnerRegistry,
) -> None:
    outcome = run(make_event(event_type, image=True), consent(policy), policy, partners).outcome(
        destination
    )
    assert outcome.payload is not None
    assert set(outcome.payload) == set(BASE_FIELDS) | declared
    assert set(outcome.fields) == set(BASE_FIELDS) | declared


def test_item5_stopping_provision_takes_effect_for_the_next_event(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """Items 5 and 9: the decision uses exactly the consent it is given."""
    state = consent(policy)
    stop = ServiceUse(partner_id="concierge", used=False)
    event = make_event(EventType.VISITOR, image=True)
    assert run(event, state, policy, partners).outcome("partner:concierge").forwarded
    after = consent_change(state, stop, policy, partners, now=NOW).state
    outcome = run(event, after, policy, partners).outcome("partner:concierge")
    assert outcome.reason is Reason.PROVISION_STOPPED


# --- Item 6: analytics de-identified, statistics aggregated (§5(5), §5(2)②) ----------


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        pytest.param(
            EventType.VISITOR,
            {"schema_version", "type", "occurred_at", "device", "origin", "outcome"},
            id="visitor",
        ),
        pytest.param(
            EventType.RETURN_HOME,
            {"schema_version", "type", "occurred_at", "device", "method"},
            id="return-home-no-nickname",
        ),
        pytest.param(
            EventType.ALARM,
            {"schema_version", "type", "occurred_at", "device", "kind", "severity", "cleared"},
            id="alarm-no-zone",
        ),
        pytest.param(
            EventType.DEVICE_FAILURE,
            {"schema_version", "type", "occurred_at", "device", "linked_device", "code"},
            id="failure-no-message",
        ),
    ],
)
def test_item6_analytics_gets_a_de_identified_copy(
    event_type: EventType, expected: set[str], policy: Policy, partners: PartnerRegistry
) -> None:
    decision = run(make_event(event_type, image=True), consent(policy), policy, partners)
    outcome = decision.outcome("analytics")
    assert outcome.payload is not None
    assert set(outcome.payload) == expected
    assert outcome.payload["device"] == {"role": decision_role(event_type)}
    assert outcome.payload["occurred_at"] == "2026-04-02T09:00:00Z"  # coarsened to the hour
    assert outcome.topic == "analytics/v1/" + event_type.value
    message = outcome.forwarded_message(decision, NOW)
    assert message.event_id is None
    assert message.decision_id != DECISION_ID  # not joinable to the identified copies


def decision_role(event_type: EventType) -> str:
    return "lobby_panel" if event_type is EventType.VISITOR else "dwelling_panel"


# --- Item 7: initialisation, return-home off, policy acceptance (§7(1), §10) ----------


@pytest.mark.parametrize(
    ("overrides", "event_type", "reason"),
    [
        pytest.param({"registered": False}, EventType.ALARM, Reason.NOT_REGISTERED, id="§7(1)①"),
        pytest.param(
            {"return_home_enabled": False},
            EventType.RETURN_HOME,
            Reason.RETURN_HOME_OFF,
            id="§7(1)②",
        ),
        pytest.param(
            {"accepted_policy_version": None}, EventType.ALARM, Reason.POLICY_NOT_ACCEPTED, id="§10"
        ),
        pytest.param(
            {"building_id": "bldg-2"}, EventType.ALARM, Reason.CONSENT_MISMATCH, id="mismatch"
        ),
    ],
)
def test_item7_withheld_from_every_destination(
    overrides: dict[str, Any],
    event_type: EventType,
    reason: Reason,
    policy: Policy,
    partners: PartnerRegistry,
) -> None:
    decision = run(make_event(event_type), consent(policy, **overrides), policy, partners)
    assert decision.forwarded == ()
    assert {o.reason for o in decision.outcomes} == {reason}
    assert decision.gate is not None and decision.gate.reason is reason  # not stored either


def test_item7_return_home_off_stops_only_return_home(
    policy: Policy, partners: PartnerRegistry
) -> None:
    state = consent(policy, return_home_enabled=False)
    decision = run(make_event(EventType.ALARM), state, policy, partners)
    assert decision.outcome("cloud").forwarded
    assert decision.gate is None


@pytest.mark.parametrize(
    ("requires", "accepted", "forwarded"),
    [
        pytest.param(False, "2022-06-01", True, id="§10-old-version-still-fine"),
        pytest.param(True, "2022-06-01", False, id="§10-reacceptance-required"),
        pytest.param(True, "2026-04-01", True, id="§10-reaccepted"),
    ],
)
def test_item7_policy_reacceptance(
    requires: bool, accepted: str, forwarded: bool, policy: Policy, partners: PartnerRegistry
) -> None:
    strict = Policy.model_validate(
        {**policy.model_dump(mode="json"), "requires_reacceptance": requires}
    )
    state = consent(strict, accepted_policy_version=accepted)
    decision = run(make_event(EventType.ALARM), state, strict, partners)
    assert bool(decision.forwarded) is forwarded


def test_opted_out_purposes_are_removed(policy: Policy, partners: PartnerRegistry) -> None:
    """§8: the marketing opt-out removes marketing from every outcome."""
    state = consent(policy, opted_out=("marketing", "profiling"))
    decision = run(make_event(EventType.ALARM), state, policy, partners)
    assert decision.outcome("cloud").purposes == (
        "backup",
        "improvement",
        "own_services",
        "support",
    )
    assert decision.outcome("group").purposes == ("improvement", "support")


def test_outcome_left_without_purpose_is_withheld(partners: PartnerRegistry) -> None:
    """§8: a flow that only served opted-out purposes stops."""
    marketing_only = _with_rules(default_policy(), **{"group-joint-use": ["marketing"]})
    state = consent(marketing_only, opted_out=("marketing",))
    outcome = run(make_event(EventType.ALARM), state, marketing_only, partners).outcome("group")
    assert not outcome.forwarded
    assert outcome.reason is Reason.PURPOSES_OPTED_OUT


def test_joint_use_and_third_party_are_marked(policy: Policy, partners: PartnerRegistry) -> None:
    """Item 8's input: the ledger needs to know which flows are provisions."""
    decision = run(make_event(EventType.VISITOR), consent(policy), policy, partners)
    assert decision.outcome("group").joint_use
    assert decision.outcome("partner:concierge").third_party
    assert not decision.outcome("cloud").third_party
    assert not decision.outcome("analytics").third_party


# --- Item 9: decide is a pure function ----------------------------------------------


def test_item9_decide_is_pure(policy: Policy, partners: PartnerRegistry) -> None:
    event = make_event(EventType.VISITOR, image=True)
    state = consent(policy)
    before = (event.model_dump(), state.model_dump())
    first = run(event, state, policy, partners)
    second = run(event, state, policy, partners)
    assert first == second
    assert (event.model_dump(), state.model_dump()) == before
    # Payloads are separate objects: changing one does not change another decision.
    assert first.outcome("cloud").payload is not second.outcome("cloud").payload
    payload = first.outcome("cloud").payload
    assert payload is not None
    payload["device"]["id"] = "tampered"
    assert (
        run(event, state, policy, partners).outcome("cloud").payload
        == second.outcome("cloud").payload
    )


def test_explain_names_every_destination(policy: Policy, partners: PartnerRegistry) -> None:
    decision = run(make_event(EventType.VISITOR), consent(policy), policy, partners)
    text = decision.explain()
    for outcome in decision.outcomes:
        assert outcome.destination in text
    assert "not_declared (§2(5))" in text
