"""Information distribution (§2(1), §3(1), §5(1)①, spec item 10), pure: the contractor
registry, the policy's hard guarantees, the checks of a distribution and of its usage
information, and who gets a read receipt or an answer (decide and plan)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.distributions import (
    Delivered,
    check_distribution,
    check_usage,
    recipients,
)
from intercom_gateway.core.ingress import DeviceIndex, InputRejected, Limits
from intercom_gateway.core.models import EventType, RejectReason
from intercom_gateway.core.outcomes import Reason
from intercom_gateway.core.plan import plan
from intercom_gateway.core.policy import (
    DEFAULT_POLICY_FILE,
    DestinationKind,
    PartnerRegistry,
    Policy,
    data_path,
    default_policy,
    load_partners,
    load_policy,
    sample_partners,
)
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.core.router import Router
from intercom_gateway.core.tags import Part, Tags, untrue_tags
from intercom_gateway.errors import ConfigError

from .test_decision import make_event

OWN, OTHER = "kanri-kumiai-b001", "example-kanri"
NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
REGISTRY = generate_registry(buildings=2, dwellings=3)
DEVICES = DeviceIndex.from_registry(REGISTRY)
USAGE = (EventType.NOTICE_READ, EventType.SURVEY_ANSWER)


def _distribution(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "distribution_id": "notice-2026-05",
        "kind": "notice",
        "building_id": "b001",
        "dwellings": ["d0002"],
        "title": "Water outage",
        "body": "Water is off on 12 May, 10:00-12:00.",
        "sent_at": "2026-05-01T08:59:00Z",
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


# --- the registry ---------------------------------------------------------------------


def test_the_sample_registry_has_two_contractors_sharing_building_b001() -> None:
    contractors = sample_partners().contractors
    assert {c.id for c in contractors} == {OWN, OTHER}
    assert all(c.may_address("b001") for c in contractors)
    assert {c.kind for c in contractors} == {"management_association", "management_company"}


def test_a_contractor_with_a_partners_id_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(data_path("partners.sample.yaml").read_text(encoding="utf-8"))
    data["contractors"][0]["id"] = "concierge"  # one broker account per id
    path = tmp_path / "partners.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate partner ids: \\['concierge'\\]"):
        load_partners(path)


# --- the policy's hard guarantees (§2(1), §3(1), §4, §5(1)①) ----------------------------


def _rule(**rule: Any) -> dict[str, Any]:
    return {"id": "careless", "clause": "§2(1)", "fields": "all", **rule}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        pytest.param(
            _rule(
                destination="partner",
                categories=["distribution_usage"],
                purposes=["distribution_service"],
            ),
            "may not go to partner",
            id="to-partner",
        ),
        pytest.param(
            _rule(
                destination="group",
                categories=["distribution_usage"],
                purposes=["distribution_service"],
            ),
            "may not go to group",
            id="to-group",
        ),
        pytest.param(
            _rule(
                destination="analytics",
                categories=["distribution_usage"],
                purposes=["distribution_statistics"],
                fields=["type"],
            ),
            "may not go to analytics",
            id="to-analytics",
        ),
        pytest.param(
            _rule(
                destination="unlock_service",
                categories=["distribution_usage"],
                purposes=["distribution_service"],
                fields="declared",
            ),
            "may not go to unlock_service",
            id="to-unlock-service",
        ),
        pytest.param(
            _rule(
                id="cloud-distribution-usage",
                destination="cloud",
                categories=["distribution_usage"],
                purposes=["distribution_backup", "marketing"],
            ),
            "§3(1) purposes only, not ['marketing']",
            id="marketing",
        ),
        pytest.param(
            _rule(
                destination="cloud",
                categories=["mobile_security_event"],
                purposes=["distribution_service"],
            ),
            "§3(1) purposes serve distribution information only",
            id="§3(1)-on-events",
        ),
        pytest.param(
            _rule(
                destination="contractor", categories=["mobile_security_event"], purposes=["support"]
            ),
            "a contractor gets distribution information only",
            id="events-to-contractor",
        ),
    ],
)
def test_a_policy_file_letting_distribution_information_out_is_refused(
    tmp_path: Path, rule: dict[str, Any], message: str
) -> None:
    data = yaml.safe_load(data_path(DEFAULT_POLICY_FILE).read_text(encoding="utf-8"))
    data["rules"] = [r for r in data["rules"] if r["id"] != rule["id"]] + [rule]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_policy(path)


@pytest.mark.parametrize(
    ("kind", "purposes", "categories", "message"),
    [
        (DestinationKind.CONTRACTOR, ("marketing",), ("distribution_usage",), "may not be used"),
        (DestinationKind.GROUP, ("distribution_service",), ("distribution_usage",), "group"),
        (DestinationKind.CONTRACTOR, ("support",), ("mobile_security_event",), "only"),
    ],
)
def test_tags_that_would_mix_distribution_information_are_untrue(
    kind: DestinationKind, purposes: tuple[str, ...], categories: tuple[str, ...], message: str
) -> None:
    """Decide-time guard, for a policy that skipped the loader (``model_construct``)."""
    policy = default_policy()
    rule = policy.rules[0].model_copy(
        update={"id": "x", "destination": kind, "categories": categories, "purposes": purposes}
    )
    unchecked = Policy.model_construct(**{**dict(policy), "rules": (*policy.rules, rule)})
    tags = Tags(Part.EVENT, "x", "§2(1)", purposes, categories, ("type",))
    untrue = untrue_tags(tags, kind=kind, policy=unchecked)
    assert untrue is not None and message in untrue


# --- a distribution, checked ----------------------------------------------------------


@pytest.mark.parametrize(
    ("contractor", "building", "payload", "reason"),
    [
        ("nobody", "b001", _distribution(), RejectReason.UNKNOWN_CONTRACTOR),
        (OWN, "b002", _distribution(building_id="b002"), RejectReason.BUILDING_NOT_ADDRESSABLE),
        (OWN, "b001", _distribution(dwellings=["d0099"]), RejectReason.UNKNOWN_DWELLING),
        (OWN, "b001", _distribution(building_id="b002"), RejectReason.TOPIC_MISMATCH),
        (OWN, "b001", _distribution(kind="survey"), RejectReason.SCHEMA_VIOLATION),
        (OWN, "b001", _distribution(title="x" * 201), RejectReason.SCHEMA_VIOLATION),
        (OWN, "b001", _distribution(dwellings=[]), RejectReason.SCHEMA_VIOLATION),
        (OWN, "b001", b'{"distribution_id": ', RejectReason.MALFORMED_JSON),
        (OWN, "b001", _distribution(body="x" * 20_000), RejectReason.OVERSIZED),
    ],
)
def test_a_bad_distribution_gets_its_typed_reason(
    contractor: str, building: str, payload: bytes, reason: RejectReason
) -> None:
    topic = topics.ContractorTopic(contractor, building)
    with pytest.raises(InputRejected) as refused:
        check_distribution(
            topic, payload, partners=sample_partners(), devices=DEVICES, limits=Limits()
        )
    assert refused.value.reason is reason, refused.value.detail


def test_a_notice_for_one_dwelling_goes_to_its_panel_only() -> None:
    topic = topics.ContractorTopic(OWN, "b001")
    notice = check_distribution(
        topic, _distribution(), partners=sample_partners(), devices=DEVICES, limits=Limits()
    )
    assert recipients(notice, devices=DEVICES, registered=lambda b, d: True) == {
        "d0002": "panel-b001-d0002"
    }


def test_a_whole_building_reaches_its_registered_dwellings_only() -> None:
    """§7(1)①: an initialised dwelling receives nothing."""
    topic = topics.ContractorTopic(OTHER, "b002")
    survey = check_distribution(
        topic,
        _distribution(
            building_id="b002",
            dwellings=None,
            kind="survey",
            questions=[
                {"id": "q1", "text": "Bicycle racks?", "choices": [{"id": "yes", "label": "Yes"}]}
            ],
        ),
        partners=sample_partners(),
        devices=DEVICES,
        limits=Limits(),
    )
    got = recipients(survey, devices=DEVICES, registered=lambda b, d: d != "d0001")
    assert got == {"d0002": "panel-b002-d0002", "d0003": "panel-b002-d0003"}


def test_contractor_topics_parse_and_stay_apart() -> None:
    topic = topics.contractor_distributions(OWN, "b001")
    assert topics.parse_contractor_distributions(topic) == topics.ContractorTopic(OWN, "b001")
    for other in (
        topics.contractor_distributions_ack(OWN, "b001"),
        topics.contractor(OWN, "b001", "d0001", "notice_read"),
        topics.panel_distributions("b001", "panel-b001-d0001"),
    ):
        assert topics.parse_contractor_distributions(other) is None
        assert not topics.matches(topics.CONTRACTOR_DISTRIBUTIONS_FILTER, other)
    assert topics.matches(
        topics.contractor_filter(OWN), topics.contractor_distributions_ack(OWN, "b1")
    )
    assert not topics.matches(
        topics.contractor_filter(OWN), topics.contractor(OTHER, "b", "d", "t")
    )


# --- usage information, checked -------------------------------------------------------

_SENT = Delivered("notice-1", OWN, "bldg-1", "notice", frozenset({"dw-101"}))
_SURVEY = Delivered("survey-1", OWN, "bldg-1", "survey", frozenset({"dw-101"}), frozenset({"q1"}))
_OTHER_SURVEY = Delivered(
    "survey-1", OWN, "bldg-1", "survey", frozenset({"dw-101"}), frozenset({"q2"})
)


@pytest.mark.parametrize(
    ("event_type", "contractor", "delivered", "problem"),
    [
        (EventType.NOTICE_READ, OWN, _SENT, None),
        (EventType.NOTICE_READ, OWN, None, "no distribution"),
        (EventType.NOTICE_READ, OTHER, _SENT, "is not example-kanri's"),
        (
            EventType.NOTICE_READ,
            OWN,
            Delivered("notice-1", OWN, "bldg-1", "notice", frozenset()),
            "not delivered",
        ),
        (EventType.SURVEY_ANSWER, OWN, _SENT, "not a survey"),
        (EventType.SURVEY_ANSWER, OWN, _SURVEY, None),
        (EventType.SURVEY_ANSWER, OWN, _OTHER_SURVEY, "has no question q1"),
    ],
)
def test_usage_must_name_a_distribution_delivered_to_this_dwelling(
    event_type: EventType, contractor: str, delivered: Delivered | None, problem: str | None
) -> None:
    event = make_event(event_type, contractor_id=contractor)
    if problem is None:
        check_usage(event, delivered)
        return
    with pytest.raises(InputRejected) as refused:
        check_usage(event, delivered)
    assert refused.value.reason is RejectReason.UNKNOWN_DISTRIBUTION
    assert problem in refused.value.detail


def test_other_events_are_not_usage() -> None:
    check_usage(make_event(EventType.ALARM), None)  # nothing to check, nothing raised


# --- who gets usage information: property-based -----------------------------------------

_POLICY = default_policy()
_PARTNERS: PartnerRegistry = sample_partners()
_ROUTER = Router.compile(_POLICY, _PARTNERS)
_NEVER = {
    DestinationKind.PARTNER,
    DestinationKind.UNLOCK_SERVICE,
    DestinationKind.GROUP,
    DestinationKind.ANALYTICS,
}
_SECTION_3_2 = {n for n, p in _POLICY.purposes.items() if not p.distribution}
_SERVICES = st.lists(st.sampled_from([s.id for s in _PARTNERS.services]), unique=True).map(tuple)
_CONSENTS = st.builds(
    ConsentState,
    building_id=st.just("bldg-1"),
    dwelling_id=st.just("dw-101"),
    registered=st.booleans(),
    accepted_policy_version=st.sampled_from([_POLICY.version, "2022-06-01", None]),
    return_home_enabled=st.booleans(),
    services_used=_SERVICES,
    provision_stopped=_SERVICES,
    opted_out=st.lists(st.sampled_from(sorted(_POLICY.opt_out_purposes)), unique=True).map(tuple),
)
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    consent=_CONSENTS,
    event_type=st.sampled_from(USAGE),
    contractor=st.sampled_from([OWN, OTHER, "unregistered"]),
    text=_TEXT,
)
def test_usage_information_reaches_its_own_contractor_and_never_a_section_3_2_use(
    consent: ConsentState, event_type: EventType, contractor: str, text: str
) -> None:
    """Spec item 10 and §3(1)/§4/§5(1)①: whatever the consent, a read receipt or an answer
    goes to the cloud for §3(1) purposes, to the contractor it names and to no other, and
    never to a partner, unlock-mode service, group or analytics, nor under a §3(2) purpose
    (marketing, direct mail, profiling...). Every provision to a contractor is a ledger row,
    and every ledger row is one. An initialised dwelling sends nothing."""
    marker = f"secret-answer-{text}"
    event = make_event(event_type, contractor_id=contractor, text=marker)
    decision = decide(
        event, consent, router=_ROUTER, gateway_id="gw", decision_id=uuid.UUID(int=3), now=NOW
    )
    for outcome in decision.forwarded:
        assert outcome.kind not in _NEVER, outcome.destination
        assert not set(outcome.purposes) & _SECTION_3_2, outcome
    contractors = {
        o.destination for o in decision.forwarded if o.kind is DestinationKind.CONTRACTOR
    }
    assert contractors <= {f"contractor:{contractor}"}
    for outcome in decision.outcomes:
        if (
            outcome.kind is DestinationKind.CONTRACTOR
            and outcome.destination != f"contractor:{contractor}"
        ):
            assert not outcome.forwarded
    if not consent.registered:
        assert decision.forwarded == ()
    planned = plan(decision, occurred_at=event.occurred_at, now=NOW, gateway_id="gw")
    ledger = [p.confirms for p in planned.publications if p.confirms is not None]
    to_contractors = [p for p in planned.publications if p.topic.startswith("contractors/")]
    assert sorted(r.recipient for r in ledger) == sorted(contractors)
    assert len(ledger) == len(to_contractors)
    for publication in planned.publications:
        where = publication.topic.split("/", 1)[0]
        if where in {"partners", "group", "analytics"}:
            raise AssertionError(f"distribution data on {publication.topic}")
        if marker in publication.payload.decode():
            assert where in {"cloud", "contractors"}, publication.topic


def test_the_named_contractor_gets_the_receipt_with_its_own_purpose_only() -> None:
    consent = ConsentState(
        building_id="bldg-1",
        dwelling_id="dw-101",
        registered=True,
        accepted_policy_version=_POLICY.version,
    )
    event = make_event(EventType.SURVEY_ANSWER, contractor_id=OWN)
    decision = decide(
        event, consent, router=_ROUTER, gateway_id="gw", decision_id=uuid.UUID(int=4), now=NOW
    )
    own = decision.outcome(f"contractor:{OWN}")
    assert own.forwarded and own.purposes == ("distribution_usage_provision",)
    assert own.topic == topics.contractor(OWN, "bldg-1", "dw-101", "survey_answer")
    other = decision.outcome(f"contractor:{OTHER}")
    assert (other.forwarded, other.reason, other.clause) == (
        False,
        Reason.OTHER_CONTRACTOR,
        "§5(1)①",
    )
    assert not decision.outcome("group").forwarded
    # Not yet counted: an aggregate carries one rule's purpose, §3(2)'s "statistics".
    assert decision.outcome("statistics").reason is Reason.NO_RULE
