"""The decision: items 1 and 2 of the spec's "What the gateway must do", and the helpers
and strategies the other decision tests share (test_decision_items.py: items 3 to 9;
test_decision_properties.py: the invariants)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.encoding import user_properties
from intercom_gateway.core.models import (
    EVENT_MODELS,
    AlarmEvent,
    DeliveryBoxEvent,
    DeviceControlEvent,
    DeviceFailureEvent,
    DeviceRef,
    DeviceRole,
    DeviceStateEvent,
    Event,
    EventType,
    Handset,
    ImageRef,
    LinkedDevice,
    LobbyCallEvent,
    NoticeReadEvent,
    ReturnHomeEvent,
    SceneEvent,
    SecurityEvent,
    SurveyAnswer,
    SurveyAnswerEvent,
    UnlockModeEvent,
    VisitorEvent,
)
from intercom_gateway.core.outcomes import Decision, Reason
from intercom_gateway.core.policy import (
    PartnerRegistry,
    PartnerService,
    Policy,
    default_policy,
)
from intercom_gateway.core.tags import Part
from tests.factories import decided

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
    contractor_id: str = "kanri-kumiai-b001",
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
        case EventType.NOTICE_READ:
            return NoticeReadEvent(**panel, distribution_id="notice-1", contractor_id=contractor_id)
        case EventType.SURVEY_ANSWER:
            answer = SurveyAnswer(question_id="q1", choice_ids=("yes",), text=text)
            return SurveyAnswerEvent(
                **panel, distribution_id="survey-1", contractor_id=contractor_id, answers=(answer,)
            )
    return _linked(event_type, panel, lobby, text)


HANDSET = Handset(model="Pixel 8", os="android", app_version="3.2.1", uuid=uuid.UUID(int=0xFEED))


def _linked(
    event_type: EventType, panel: dict[str, Any], lobby: dict[str, Any], text: str | None
) -> Event:
    """Part A's kinds: §2(3)① linked devices and scenes, §2(4) lobby calls."""
    aircon = LinkedDevice(kind="air_conditioner", model="CS-X")
    match event_type:
        case EventType.DEVICE_CONTROL:
            return DeviceControlEvent(
                **panel,
                instruction_id="ins-3",
                linked_device=aircon,
                command="set_temperature",
                parameters={"celsius": 26, "mode": "cool"},
                result="failed",
                origin="app",
                error=text,
            )
        case EventType.SCENE:
            return SceneEvent(
                **panel, scene_id="night", name=text, action="run", devices_affected=3
            )
        case EventType.DEVICE_STATE:
            return DeviceStateEvent(**panel, linked_device=aircon, values={"power": True})
        case EventType.LOBBY_CALL:
            return LobbyCallEvent(**lobby, call_id="call-3", outcome="answered", handset=HANDSET)
    raise AssertionError(event_type)


def consent(policy: Policy, **overrides: Any) -> ConsentState:
    """A registered dwelling using every sample service, unless told otherwise."""
    fields: dict[str, Any] = {
        "building_id": BUILDING,
        "dwelling_id": DWELLING,
        "registered": True,
        "accepted_policy_version": policy.version,
        "services_used": ALL_SERVICES,
        "intercom_app_linked": True,
        "revision": 3,
        **overrides,
    }
    return ConsentState(**fields)


def run(event: Event, state: ConsentState, policy: Policy, partners: PartnerRegistry) -> Decision:
    return decided(event, state, policy, partners, now=NOW, decision_id=DECISION_ID)


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
        "contractor:example-kanri",
        "contractor:kanri-kumiai-b001",
        "analytics",
        "statistics",
        "app",
    ]


@pytest.mark.parametrize(
    ("event_type", "destination", "reason"),
    [
        pytest.param(
            EventType.ALARM, "contractor:kanri-kumiai-b001", Reason.NO_RULE, id="§5(1)①-contractor"
        ),
        pytest.param(EventType.NOTICE_READ, "contractor:kanri-kumiai-b001", None, id="§5(1)①-own"),
        pytest.param(
            EventType.SURVEY_ANSWER,
            "contractor:example-kanri",
            Reason.OTHER_CONTRACTOR,
            id="§5(1)①-other",
        ),
        pytest.param(EventType.SURVEY_ANSWER, "cloud", None, id="§3(1)-cloud"),
        pytest.param(EventType.NOTICE_READ, "group", Reason.NO_RULE, id="§4-distribution"),
        pytest.param(EventType.SURVEY_ANSWER, "analytics", Reason.NO_RULE, id="§5(5)-survey"),
        pytest.param(
            EventType.NOTICE_READ, "partner:concierge", Reason.NO_RULE, id="§2(5)-distribution"
        ),
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
            Reason.INTERCOM_APP_EXCLUDED,
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
    # Or any service declaring §2(4) lobby calls, which §2(5) does not list for partners.
    rogue = draw(st.booleans())
    allowed = [
        t
        for t in EventType
        if rogue or (t != "lobby_call" and (kind == "unlock_service" or t != "unlock_mode"))
    ]
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


def _flat_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flat_strings(v)]
    return [value] if isinstance(value, str) else []
