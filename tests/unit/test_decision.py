"""The decision, item by item of the spec's "What the gateway must do", then invariants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercom_gateway.core.consent import ConsentState, apply_change
from intercom_gateway.core.decide import decide
from intercom_gateway.core.encoding import user_properties
from intercom_gateway.core.models import (
    EVENT_MODELS,
    AlarmEvent,
    DeliveryBoxEvent,
    DeviceFailureEvent,
    DeviceRef,
    DeviceRole,
    Event,
    EventType,
    ImageRef,
    LinkedDevice,
    ReturnHomeEvent,
    SecurityEvent,
    ServiceUse,
    SettingsChange,
    UnlockModeEvent,
    VisitorEvent,
)
from intercom_gateway.core.outcomes import Decision, Outcome, Reason
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IDENTIFYING_FIELDS,
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
    default_policy,
)
from intercom_gateway.core.router import Router
from intercom_gateway.core.tags import Part

from .conftest import NOW

BUILDING, DWELLING = "bldg-1", "dw-101"
IMAGE = ImageRef(id="img-1", content_type="image/jpeg", size=1200, sha256="ab" * 32)
DECISION_ID = uuid.UUID(int=1)
ALL_SERVICES = ("concierge", "elder-watch", "parcel-unlock")

# --- Building events ----------------------------------------------------------------


def _envelope(role: DeviceRole, building: str, dwelling: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(),
        "seq": 7,
        "building_id": building,
        "dwelling_id": dwelling,
        "device": DeviceRef(id=f"dev-{role.value.replace('_', '-')}", role=role),
        "occurred_at": at,
    }


def make_event(
    event_type: EventType,
    *,
    image: bool = False,
    service_id: str = "parcel-unlock",
    building: str = BUILDING,
    dwelling: str = DWELLING,
    at: datetime = datetime(2026, 4, 2, 9, 17, 42, tzinfo=UTC),
    text: str | None = "Tanaka's spare key",
) -> Event:
    """A valid event of ``event_type``; free-text fields hold ``text``."""
    pic = IMAGE if image else None
    panel = _envelope(DeviceRole.DWELLING_PANEL, building, dwelling, at)
    lobby = _envelope(DeviceRole.LOBBY_PANEL, building, dwelling, at)
    box = _envelope(DeviceRole.DELIVERY_BOX, building, dwelling, at)
    match event_type:
        case EventType.VISITOR:
            return VisitorEvent(
                **lobby, call_id="call-9", origin="lobby", outcome="answered", image=pic
            )
        case EventType.RETURN_HOME:
            return ReturnHomeEvent(**panel, method="key", key_nickname=text, image=pic)
        case EventType.ALARM:
            return AlarmEvent(**panel, kind="fire", zone="kitchen", severity="critical")
        case EventType.DELIVERY_BOX:
            return DeliveryBoxEvent(**box, action="arrival", box_number=12, carrier="yamato")
        case EventType.UNLOCK_MODE:
            return UnlockModeEvent(
                **lobby, credential_kind="pin", service_id=service_id, result="granted", image=pic
            )
        case EventType.SECURITY:
            return SecurityEvent(**panel, state="armed")
        case EventType.DEVICE_FAILURE:
            return DeviceFailureEvent(
                **panel,
                linked_device=LinkedDevice(kind="air_conditioner", model="CS-X"),
                code="E-12",
                message=text,
            )
    raise AssertionError(event_type)


def consent(policy: Policy, **overrides: Any) -> ConsentState:
    """A registered dwelling using every sample service, unless told otherwise."""
    fields: dict[str, Any] = {
        "building_id": BUILDING,
        "dwelling_id": DWELLING,
        "registered": True,
        "accepted_policy_version": policy.version,
        "services_used": ALL_SERVICES,
        "revision": 3,
        **overrides,
    }
    return ConsentState(**fields)


def run(event: Event, state: ConsentState, policy: Policy, partners: PartnerRegistry) -> Decision:
    return decide(
        event,
        state,
        router=Router.compile(policy, partners),
        gateway_id="gw-1",
        decision_id=DECISION_ID,
        now=NOW,
    )


def _with_rules(policy: Policy, **rule_purposes: list[str]) -> Policy:
    """The policy with some rules' purposes replaced, validated again."""
    data = policy.model_dump(mode="json")
    for rule in data["rules"]:
        if rule["id"] in rule_purposes:
            rule["purposes"] = rule_purposes[rule["id"]]
    return Policy.model_validate(data)


# --- Item 1: default deny, per destination (§2, §3) ---------------------------------


def test_every_destination_gets_an_outcome(policy: Policy, partners: PartnerRegistry) -> None:
    """Item 1: cloud, group, each partner and unlock service, contractor, analytics, stats."""
    decision = run(make_event(EventType.ALARM), consent(policy), policy, partners)
    assert [o.destination for o in decision.outcomes] == [
        "cloud",
        "group",
        "partner:concierge",
        "partner:elder-watch",
        "partner:parcel-unlock",
        "contractor",
        "analytics",
        "statistics",
    ]


@pytest.mark.parametrize(
    ("event_type", "destination", "reason"),
    [
        pytest.param(EventType.ALARM, "contractor", Reason.NO_RULE, id="§5(1)①-contractor"),
        pytest.param(EventType.UNLOCK_MODE, "analytics", Reason.NO_RULE, id="§5(5)-unlock"),
        pytest.param(EventType.VISITOR, "partner:elder-watch", Reason.NOT_DECLARED, id="§2(5)"),
        pytest.param(EventType.SECURITY, "partner:concierge", Reason.NOT_DECLARED, id="§2(5)b"),
        pytest.param(EventType.ALARM, "cloud", None, id="§3(2)-cloud"),
        pytest.param(EventType.UNLOCK_MODE, "group", None, id="§4-group"),
        pytest.param(EventType.DEVICE_FAILURE, "analytics", None, id="§5(5)-analytics"),
    ],
)
def test_item1_default_deny_per_destination(
    event_type: EventType,
    destination: str,
    reason: Reason | None,
    policy: Policy,
    partners: PartnerRegistry,
) -> None:
    outcome = run(make_event(event_type), consent(policy), policy, partners).outcome(destination)
    assert outcome.forwarded is (reason is None)
    assert outcome.reason is reason


def test_item1_a_policy_without_rules_forwards_nothing(
    policy: Policy, partners: PartnerRegistry
) -> None:
    bare = Policy.model_validate({**policy.model_dump(mode="json"), "rules": []})
    for event_type in EventType:
        decision = run(make_event(event_type, image=True), consent(bare), bare, partners)
        assert decision.forwarded == ()
        assert {o.reason for o in decision.outcomes} <= {
            Reason.NO_RULE,
            Reason.UNLOCK_MODE_EXCLUDED,
            Reason.OTHER_UNLOCK_SERVICE,
        }


# --- Item 2: purposes, categories, policy version and rule on every message ----------


@pytest.mark.parametrize(
    ("event_type", "destination", "part", "rule_id", "categories", "purposes"),
    [
        # Item 2: the event's facts and its image never share one message's tags. The
        # cloud copy of a visitor with its image was once one message tagged with both
        # rules' purposes ("cloud-events+cloud-images", marketing on the image).
        pytest.param(
            EventType.VISITOR,
            "cloud",
            Part.EVENT,
            "cloud-events",
            ("mobile_security_event",),
            ("backup", "improvement", "marketing", "own_services", "profiling", "support"),
            id="§3(2)-cloud-facts",
        ),
        pytest.param(
            EventType.VISITOR,
            "cloud",
            Part.IMAGE,
            "cloud-images",
            ("visitor_image",),
            ("resident_confirmation",),
            id="§3(3)-cloud-image",
        ),
        pytest.param(
            EventType.VISITOR,
            "partner:concierge",
            Part.EVENT,
            "partner-events",
            ("mobile_security_event",),
            ("partner_provision",),
            id="§5(1)②-concierge-facts",
        ),
        pytest.param(
            EventType.VISITOR,
            "partner:concierge",
            Part.IMAGE,
            "partner-images",
            ("visitor_image",),
            ("resident_confirmation",),
            id="§3(3)-concierge-image",
        ),
        pytest.param(
            EventType.UNLOCK_MODE,
            "partner:parcel-unlock",
            Part.EVENT,
            "unlock-service-operation",
            ("unlock_mode_operation",),
            ("partner_provision",),
            id="§5(1)②-unlock-facts",
        ),
        pytest.param(
            EventType.UNLOCK_MODE,
            "partner:parcel-unlock",
            Part.IMAGE,
            "unlock-service-images",
            ("unlock_mode_image",),
            ("unlock_service_security", "unlock_visitor_confirmation"),
            id="§3(4)-unlock-image",
        ),
        pytest.param(
            EventType.SECURITY,
            "group",
            Part.EVENT,
            "group-joint-use",
            ("security_arming",),
            ("improvement", "marketing", "support"),
            id="§4-group",
        ),
    ],
)
def test_item2_messages_carry_purposes_categories_version_and_rule(
    event_type: EventType,
    destination: str,
    part: Part,
    rule_id: str,
    categories: tuple[str, ...],
    purposes: tuple[str, ...],
    policy: Policy,
    partners: PartnerRegistry,
) -> None:
    decision = run(make_event(event_type, image=True), consent(policy), policy, partners)
    outcome = decision.outcome(destination)
    (copy,) = [c for c in outcome.copies if c.part is part]
    message = outcome.forwarded_message(decision, NOW, copy)
    assert message.rule_id == rule_id
    assert message.categories == categories
    assert message.purposes == purposes
    assert message.policy_version == "2026-04-01"
    assert message.decision_id == DECISION_ID
    assert message.event_id == decision.event_id  # ties the image to its event
    assert message.clause.startswith("§")
    assert ("image" in message.event) is (part is Part.IMAGE)
    props = user_properties(message)
    assert [v for k, v in props if k == "purpose"] == list(purposes)
    assert ("rule_id", rule_id) in props


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
    change = SettingsChange(
        change_id=uuid.uuid4(),
        building_id=BUILDING,
        dwelling_id=DWELLING,
        requested_at=NOW,
        change=ServiceUse(partner_id="concierge", used=False),
    )
    event = make_event(EventType.VISITOR, image=True)
    assert run(event, state, policy, partners).outcome("partner:concierge").forwarded
    after = apply_change(state, change, policy=policy, partners=partners, now=NOW).state
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


# --- Property-based invariants ------------------------------------------------------

_OPTIONAL_TEXT = st.none() | st.text(max_size=20)
_IDS = st.sampled_from(["concierge", "elder-watch", "parcel-unlock", "svc-a", "svc-b"])


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from(list(EventType)))
    event = make_event(
        event_type,
        image=draw(st.booleans()),
        service_id=draw(_IDS),
        building=draw(st.sampled_from(["bldg-1", "bldg-2"])),
        dwelling=draw(st.sampled_from(["dw-101", "dw-102"])),
        # Any instant the schema accepts (models.EARLIEST_YEAR to LATEST_YEAR).
        at=draw(
            st.datetimes(
                min_value=datetime(1970, 1, 1),
                max_value=datetime(2999, 12, 31),
                timezones=st.just(UTC),
            )
        ),
        text=draw(_OPTIONAL_TEXT),
    )
    return event


_KINDS: tuple[Literal["partner", "unlock_service"], ...] = ("partner", "unlock_service")


@st.composite
def services(draw: st.DrawFn, policy: Policy, service_id: str) -> PartnerService:
    kind: Literal["partner", "unlock_service"] = draw(st.sampled_from(_KINDS))
    # Sometimes a registry that skipped validation: a partner declaring unlock mode
    # (§1(8)); the decision must refuse it on its own.
    rogue = kind == "partner" and draw(st.booleans())
    allowed = [t for t in EventType if kind == "unlock_service" or rogue or t != "unlock_mode"]
    kinds = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=4))
    fields = {t: sorted(EVENT_MODELS[t].model_fields) for t in kinds}
    events_ = {t: tuple(draw(st.lists(st.sampled_from(fields[t]), unique=True))) for t in kinds}
    purposes = tuple(
        draw(st.lists(st.sampled_from(sorted(policy.purposes)), min_size=1, unique=True))
    )
    build = PartnerService.model_construct if rogue else PartnerService
    return build(id=service_id, name=service_id, kind=kind, purposes=purposes, events=events_)


@st.composite
def registries(draw: st.DrawFn, policy: Policy) -> PartnerRegistry:
    ids = draw(st.lists(_IDS, unique=True, max_size=4))
    found = tuple(draw(services(policy, service_id)) for service_id in ids)
    return PartnerRegistry.model_construct(services=found)


@st.composite
def consents(draw: st.DrawFn, policy: Policy, event: Event) -> ConsentState:
    same = draw(st.booleans()) or draw(st.booleans())  # mostly the event's dwelling
    return ConsentState(
        building_id=event.building_id,
        dwelling_id=event.dwelling_id if same else "dw-999",
        registered=draw(st.booleans()),
        return_home_enabled=draw(st.booleans()),
        services_used=draw(st.lists(_IDS, unique=True)),
        provision_stopped=draw(st.lists(_IDS, unique=True, max_size=2)),
        opted_out=draw(st.lists(st.sampled_from(sorted(policy.opt_out_purposes)), unique=True)),
        accepted_policy_version=draw(st.sampled_from([policy.version, "2022-06-01", None])),
    )


@st.composite
def scenarios(draw: st.DrawFn, policy: Policy) -> tuple[Event, ConsentState, PartnerRegistry]:
    event = draw(events())
    return event, draw(consents(policy, event)), draw(registries(policy))


_PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Strategies are built at import time, before fixtures exist; default_policy() is cached,
# so this is the same object the ``policy`` fixture returns.
_POLICY_FOR_STRATEGIES = default_policy()


def _decide(scenario: tuple[Event, ConsentState, PartnerRegistry]) -> Decision:
    event, state, registry = scenario
    return run(event, state, _POLICY_FOR_STRATEGIES, registry)


def _flat_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flat_strings(v)]
    return [value] if isinstance(value, str) else []


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_no_event_reaches_a_partner_the_dwelling_does_not_use(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event, state, registry = scenario
    for outcome in _decide(scenario).forwarded:
        if outcome.kind in {DestinationKind.PARTNER, DestinationKind.UNLOCK_SERVICE}:
            service_id = outcome.destination.removeprefix("partner:")
            assert service_id in state.services_used
            assert service_id not in state.provision_stopped
            service = registry.get(service_id)
            assert service is not None
            declared = service.fields_for(EventType(event.type))
            assert declared is not None
            assert outcome.payload is not None
            allowed = {*BASE_FIELDS, *(f.split(".")[0] for f in declared)}
            for copy in outcome.copies:
                assert copy.payload is not None
                assert set(copy.payload) <= allowed


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_no_unlock_mode_event_reaches_a_partner(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event = scenario[0]
    for outcome in _decide(scenario).forwarded:
        if outcome.kind is DestinationKind.PARTNER:
            assert EventType(event.type) is not EventType.UNLOCK_MODE


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_no_image_reaches_analytics_statistics_or_group(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    for outcome in _decide(scenario).outcomes:
        if outcome.kind in {
            DestinationKind.ANALYTICS,
            DestinationKind.STATISTICS,
            DestinationKind.GROUP,
        }:
            for copy in outcome.copies:
                assert copy.part is Part.EVENT
                assert "image" not in (copy.payload or {})
                assert not any(c.endswith("_image") for c in copy.categories)
                assert IMAGE.sha256 not in _flat_strings(copy.payload or {})


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_no_analytics_payload_identifies_a_dwelling_or_device(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event = scenario[0]
    decision = _decide(scenario)
    outcome = decision.outcome("analytics")
    if not outcome.forwarded:
        return
    assert outcome.payload is not None
    # "device.role" is kept; "device" (whole, with its id) is identifying.
    assert not set(outcome.fields) & IDENTIFYING_FIELDS
    assert "id" not in outcome.payload.get("device", {})
    secrets = {event.building_id, event.dwelling_id, event.device.id, str(event.event_id)}
    assert not secrets & set(_flat_strings(outcome.payload))
    assert outcome.topic is not None and event.dwelling_id not in outcome.topic
    message = outcome.forwarded_message(decision, NOW)
    assert message.event_id is None


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_initialised_dwelling_forwards_nothing(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event, state, registry = scenario
    initialised = state.model_copy(update={"registered": False})
    assert run(event, initialised, _POLICY_FOR_STRATEGIES, registry).forwarded == ()


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_every_forwarded_outcome_has_a_purpose_and_a_rule(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    state = scenario[1]
    rule_ids = {r.id for r in _POLICY_FOR_STRATEGIES.rules}
    for outcome in _decide(scenario).forwarded:
        assert outcome.copies
        for copy in outcome.copies:
            assert copy.purposes
            assert not set(copy.purposes) & set(state.opted_out)
            assert copy.rule_id in rule_ids  # one rule: never several joined
            assert copy.topic is not None
            assert copy.clause
        assert outcome.clause
