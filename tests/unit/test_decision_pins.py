"""Pins of privacy behaviours that mutation testing found no test holding (issue 14).

Each table below fails on a mutant of decision.py (since issue #15: router.py, gates.py
and decide.py) that survived every tier before (docs/mutation.md lists them). They read
only ``decide``'s public result (outcomes, reasons, purposes, topics, payloads), so they
hold whatever shape the routing takes inside.
"""

from __future__ import annotations

from typing import Any

import pytest

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import EVENT_MODELS, Event, EventType
from intercom_gateway.core.outcomes import Decision, Outcome, Reason
from intercom_gateway.core.policy import (
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
    Provision,
)
from tests.factories import decided, event

from .conftest import NOW

BUILDING, DWELLING = "b007", "d0703"
SUPERSEDED = "2022-06-01"  # the packaged policy's `supersedes`
NEXT = "2027-01-01"


def _consent(policy: Policy, *, services: tuple[str, ...] = (), **fields: Any) -> ConsentState:
    return ConsentState(
        **{
            "building_id": BUILDING,
            "dwelling_id": DWELLING,
            "registered": True,
            "accepted_policy_version": policy.version,
            "services_used": services,
            **fields,
        }
    )


def _decide(
    happened: Event, state: ConsentState, policy: Policy, partners: PartnerRegistry
) -> Decision:
    return decided(happened, state, policy, partners, now=NOW, gateway_id="gw-pins")


def _event(event_type: EventType, *, image: bool = False, dwelling: str = DWELLING) -> Event:
    """An event of ``event_type`` from the factories, with its image only if asked."""
    drop = {} if image or "image" not in EVENT_MODELS[event_type].model_fields else {"image": None}
    return event(event_type.value, building=BUILDING, dwelling=dwelling, **drop)


def _policy(base: Policy, **changes: Any) -> Policy:
    """``base`` with top-level fields or rules' purposes (``rules={id: [...]}``) replaced."""
    data = base.model_dump(mode="json")
    for rule in data["rules"]:
        rule["purposes"] = changes.get("rules", {}).get(rule["id"], rule["purposes"])
    data.update({k: v for k, v in changes.items() if k != "rules"})
    return Policy.model_validate(data)


def _service(purposes: tuple[str, ...], **events: list[str]) -> PartnerService:
    return PartnerService.model_validate(
        {"id": "svc-pin", "name": "Pinned", "kind": "partner", "purposes": purposes}
        | {"events": events}
    )


def _copies_to(decision: Decision, partner_id: str) -> list[Outcome]:
    """Every forwarded outcome published under the partner's own topic tree."""
    return [
        o
        for o in decision.forwarded
        if o.topic is not None and topics.matches(topics.partner_filter(partner_id), o.topic)
    ]


# --- 1. §10: consent is consent to a known version -----------------------------------


@pytest.mark.parametrize(
    ("accepted", "policy_changes", "passes"),
    [
        pytest.param("current", {}, True, id="current"),
        pytest.param(SUPERSEDED, {}, True, id="superseded-without-reacceptance"),
        pytest.param("1999-01-01", {}, False, id="unknown-version"),
        pytest.param("2026-04-01-draft", {}, False, id="unknown-near-current"),
        pytest.param(None, {}, False, id="none-accepted"),
        pytest.param(
            "2026-04-01",
            {"version": NEXT, "supersedes": ["2026-04-01"], "requires_reacceptance": True},
            False,
            id="superseded-with-reacceptance",
        ),
        pytest.param(
            NEXT,
            {"version": NEXT, "supersedes": ["2026-04-01"], "requires_reacceptance": True},
            True,
            id="reaccepted",
        ),
    ],
)
def test_only_a_known_accepted_policy_version_lets_events_flow(
    policy: Policy,
    partners: PartnerRegistry,
    accepted: str | None,
    policy_changes: dict[str, Any],
    passes: bool,
) -> None:
    in_force = _policy(policy, **policy_changes) if policy_changes else policy
    version = in_force.version if accepted == "current" else accepted
    state = _consent(in_force, accepted_policy_version=version)
    decision = _decide(_event(EventType.ALARM), state, in_force, partners)
    if passes:
        assert decision.gate is None
        assert decision.outcome("cloud").forwarded
        cloud_topic = f"cloud/v1/{BUILDING}/{DWELLING}/alarm"
        assert cloud_topic in [topic for topic, _ in decision.messages(NOW)]
        return
    assert decision.gate is not None
    assert (decision.gate.reason, decision.gate.clause) == (Reason.POLICY_NOT_ACCEPTED, "§10")
    assert decision.forwarded == ()
    assert {o.reason for o in decision.outcomes} == {Reason.POLICY_NOT_ACCEPTED}
    assert decision.messages(NOW) == []


# --- 2. A partner copy carries only purposes both the rule and the partner name ------


@pytest.mark.parametrize(
    ("rule_purposes", "declared", "expected"),
    [
        pytest.param(None, ("partner_provision",), ("partner_provision",), id="same"),
        pytest.param(
            ["partner_provision", "marketing"],
            ("partner_provision",),
            ("partner_provision",),
            id="rule-wider-than-partner",
        ),
        pytest.param(
            ["partner_provision", "marketing"],
            ("marketing", "partner_provision", "resident_confirmation"),
            ("marketing", "partner_provision"),
            id="partner-wider-than-rule",
        ),
        pytest.param(None, ("resident_confirmation",), None, id="no-common-purpose"),
        pytest.param(["partner_provision", "marketing"], ("support",), None, id="disjoint"),
    ],
)
def test_partner_copies_carry_only_purposes_the_partner_declared(
    policy: Policy,
    rule_purposes: list[str] | None,
    declared: tuple[str, ...],
    expected: tuple[str, ...] | None,
) -> None:
    in_force = _policy(policy, rules={"partner-events": rule_purposes}) if rule_purposes else policy
    service = _service(declared, alarm=["kind", "severity"])
    registry = PartnerRegistry(services=(service,))
    state = _consent(in_force, services=(service.id,))
    decision = _decide(_event(EventType.ALARM), state, in_force, registry)
    outcome = decision.outcome(f"partner:{service.id}")
    if expected is None:
        rule_clause = next(r.clause for r in in_force.rules if r.id == "partner-events")
        assert not outcome.forwarded
        assert (outcome.reason, outcome.clause) == (Reason.NO_COMMON_PURPOSE, rule_clause)
        assert _copies_to(decision, service.id) == []
        return
    assert outcome.forwarded
    assert outcome.purposes == expected
    assert all(set(o.purposes) <= set(declared) for o in _copies_to(decision, service.id))


# --- 4. A partner's topic names the dwelling the event is about ----------------------

_TOPIC = {
    "cloud": "cloud/v1/{b}/{d}/{t}",
    "group": "group/v1/{b}/{d}/{t}",
    "partner:concierge": "partners/concierge/v1/{b}/{d}/{t}",
    "partner:elder-watch": "partners/elder-watch/v1/{b}/{d}/{t}",
    "partner:parcel-unlock": "partners/parcel-unlock/v1/{b}/{d}/{t}",
    "contractor:kanri-kumiai-b001": "contractors/kanri-kumiai-b001/v1/{b}/{d}/{t}",
    "analytics": "analytics/v1/{t}",
    "statistics": "statistics/v1/{b}",
    "app": "app/v1/{b}/{d}/{t}",
}


@pytest.mark.parametrize("event_type", list(EventType))
@pytest.mark.parametrize("dwelling", ["d0703", "d0102"])
def test_every_copy_goes_to_the_topic_of_its_destination_and_dwelling(
    policy: Policy, partners: PartnerRegistry, event_type: EventType, dwelling: str
) -> None:
    services = tuple(s.id for s in partners.services)
    state = _consent(policy, services=services, dwelling_id=dwelling, intercom_app_linked=True)
    decision = _decide(_event(event_type, dwelling=dwelling), state, policy, partners)
    published = {o.destination: o.topic for o in decision.forwarded}
    expected = {
        name: _TOPIC[name].format(b=BUILDING, d=dwelling, t=event_type.value) for name in published
    }
    assert "cloud" in published
    assert published == expected


# --- 5. No image travels to a destination that shares none of the image rule's purposes


@pytest.mark.parametrize(
    ("declared", "fields", "gets_image"),
    [
        pytest.param(
            ("partner_provision", "resident_confirmation"), ["origin", "image"], True, id="asked"
        ),
        pytest.param(("partner_provision",), ["origin", "image"], False, id="no-image-purpose"),
        pytest.param(
            ("partner_provision", "resident_confirmation"), ["origin"], False, id="not-declared"
        ),
    ],
)
def test_an_image_goes_only_where_an_image_purpose_is_shared(
    policy: Policy, declared: tuple[str, ...], fields: list[str], gets_image: bool
) -> None:
    service = _service(declared, visitor=fields)
    registry = PartnerRegistry(services=(service,))
    state = _consent(policy, services=(service.id,))
    decision = _decide(_event(EventType.VISITOR, image=True), state, policy, registry)
    outcomes = _copies_to(decision, service.id)
    assert outcomes, "the event itself still goes to the partner"
    # Every message the partner gets: the event's facts, and its image in a copy of its own.
    copies = [copy for o in outcomes for copy in o.copies]
    with_image = [c for c in copies if "image" in (c.payload or {})]
    assert bool(with_image) is gets_image
    for copy in with_image:
        assert "image" in copy.tags.fields
        assert "visitor_image" in copy.tags.categories
        assert "resident_confirmation" in copy.tags.purposes
    for copy in copies:
        if copy not in with_image:
            assert "image" not in copy.tags.fields
            assert "visitor_image" not in copy.tags.categories
            assert "resident_confirmation" not in copy.tags.purposes


@pytest.mark.parametrize("opted_out", [(), ("marketing", "profiling")])
def test_an_image_never_rides_on_a_copy_without_an_image_purpose(
    policy: Policy, partners: PartnerRegistry, opted_out: tuple[str, ...]
) -> None:
    """Across the sample destinations: where the image goes, an image purpose goes too."""
    image_purposes = {k for k, p in policy.purposes.items() if p.images}
    state = _consent(policy, services=tuple(s.id for s in partners.services), opted_out=opted_out)
    for event_type in EventType:
        decision = _decide(_event(event_type, image=True), state, policy, partners)
        for copy in decision.forwarded:
            if "image" in (copy.payload or {}):
                assert image_purposes & set(copy.purposes), (event_type, copy.destination)


# --- §8: an opt-out takes the purpose off every copy, and a copy left with none stays --


@pytest.mark.parametrize(
    ("opted_out", "group_purposes"),
    [
        pytest.param((), ("marketing",), id="none"),
        pytest.param(("profiling",), ("marketing",), id="profiling"),
        pytest.param(("marketing", "profiling"), None, id="every-purpose-of-the-group-rule"),
    ],
)
def test_opted_out_purposes_leave_every_copy(
    policy: Policy,
    partners: PartnerRegistry,
    opted_out: tuple[str, ...],
    group_purposes: tuple[str, ...] | None,
) -> None:
    in_force = _policy(policy, rules={"group-joint-use": ["marketing"]})
    state = _consent(in_force, opted_out=opted_out)
    decision = _decide(_event(EventType.ALARM), state, in_force, partners)
    assert all(not set(opted_out) & set(o.purposes) for o in decision.forwarded)
    assert decision.outcome("cloud").forwarded
    group = decision.outcome("group")
    if group_purposes is None:
        assert not group.forwarded
        assert (group.reason, group.clause) == (Reason.PURPOSES_OPTED_OUT, "§8")
    else:
        assert group.purposes == group_purposes


# --- A partner's own gates, each with its clause ------------------------------------


@pytest.mark.parametrize(
    ("used", "stopped", "service_id", "reason", "clause"),
    [
        pytest.param(("parcel-unlock",), (), "parcel-unlock", None, None, id="its-own-unlock"),
        pytest.param((), ("parcel-unlock",), "parcel-unlock", Reason.PROVISION_STOPPED, "§8",
                     id="provision-stopped"),
        pytest.param((), (), "parcel-unlock", Reason.SERVICE_NOT_USED, "§5(1)②", id="not-used"),
        pytest.param(("parcel-unlock",), (), "other-unlock", Reason.OTHER_UNLOCK_SERVICE, "§3(4)",
                     id="another-services-unlock"),
    ],
)  # fmt: skip
def test_a_service_gets_an_unlock_only_when_used_and_its_own(
    policy: Policy,
    partners: PartnerRegistry,
    used: tuple[str, ...],
    stopped: tuple[str, ...],
    service_id: str,
    reason: Reason | None,
    clause: str | None,
) -> None:
    state = _consent(policy, services=used, provision_stopped=stopped)
    unlock = event("unlock_mode", building=BUILDING, dwelling=DWELLING, service_id=service_id)
    outcome = _decide(unlock, state, policy, partners).outcome("partner:parcel-unlock")
    assert outcome.forwarded is (reason is None)
    assert (outcome.reason, outcome.clause if reason else None) == (reason, clause)


# --- Payloads: exact time where identified, hour-coarse in analytics, nothing shared --


def test_only_the_analytics_copy_is_coarsened_and_no_two_copies_share_an_object(
    policy: Policy, partners: PartnerRegistry
) -> None:
    state = _consent(policy, services=tuple(s.id for s in partners.services))
    alarm = _event(EventType.ALARM)
    decision = _decide(alarm, state, policy, partners)
    exact = alarm.occurred_at.isoformat().replace("+00:00", "Z")
    hour = alarm.occurred_at.strftime("%Y-%m-%dT%H:00:00Z")
    times = {o.destination: (o.payload or {}).get("occurred_at") for o in decision.forwarded}
    assert times == {
        "cloud": exact,
        "group": exact,
        "partner:elder-watch": exact,
        "analytics": hour,
        "statistics": None,  # counted, never forwarded per event
    }
    cloud, group = decision.outcome("cloud").payload, decision.outcome("group").payload
    assert cloud is not None and group is not None
    assert cloud["device"] == group["device"]
    assert cloud["device"] is not group["device"]


# --- The decision's own record, and the clauses of whole-event gates -----------------


@pytest.mark.parametrize("image", [False, True])
def test_a_decision_records_what_it_decided_about(
    policy: Policy, partners: PartnerRegistry, image: bool
) -> None:
    state = _consent(policy, revision=9)
    visitor = _event(EventType.VISITOR, image=image)
    decision = _decide(visitor, state, policy, partners)
    assert (decision.event_id, decision.event_type, decision.decided_at) == (
        visitor.event_id, EventType.VISITOR, NOW,
    )  # fmt: skip
    assert (decision.building_id, decision.dwelling_id) == (BUILDING, DWELLING)
    assert (decision.policy_version, decision.consent_revision) == (policy.version, 9)
    with_image = ("mobile_security_event", "visitor_image")
    assert decision.categories == (with_image if image else ("mobile_security_event",))


@pytest.mark.parametrize(
    ("changes", "reason", "clause"),
    [
        pytest.param({"return_home_enabled": False}, Reason.RETURN_HOME_OFF, "§7(1)②",
                     id="return-home-off"),
        pytest.param({"registered": False}, Reason.NOT_REGISTERED, "§7(1)①", id="initialised"),
        pytest.param({"dwelling_id": "d0799"}, Reason.CONSENT_MISMATCH, None,
                     id="another-dwellings-consent"),
    ],
)  # fmt: skip
def test_a_whole_event_gate_withholds_everything_under_its_clause(
    policy: Policy,
    partners: PartnerRegistry,
    changes: dict[str, Any],
    reason: Reason,
    clause: str | None,
) -> None:
    state = _consent(policy, **changes)
    decision = _decide(_event(EventType.RETURN_HOME), state, policy, partners)
    assert decision.gate is not None
    assert (decision.gate.reason, decision.gate.clause) == (reason, clause)
    outcomes = {(o.forwarded, o.reason, o.clause) for o in decision.outcomes}
    assert outcomes == {(False, reason, clause)}


def test_a_withheld_outcome_keeps_its_destination_kind_provision_and_clause(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """The decision log and `explain` show who did not get the event, and why."""
    decision = _decide(_event(EventType.ALARM), _consent(policy), policy, partners)
    withheld = {o.destination: o for o in decision.outcomes if not o.forwarded}
    contractor = withheld["contractor:kanri-kumiai-b001"]
    assert (contractor.kind, contractor.provision) == (
        DestinationKind.CONTRACTOR, policy.destinations[DestinationKind.CONTRACTOR].provision,
    )  # fmt: skip
    assert contractor.reason is Reason.NO_RULE
    assert contractor.clause == policy.destinations[DestinationKind.CONTRACTOR].clause
    concierge = withheld["partner:concierge"]  # not declared for alarms
    assert (concierge.kind, concierge.provision) == (
        DestinationKind.PARTNER, Provision.THIRD_PARTY,
    )  # fmt: skip


@pytest.mark.parametrize("image", [False, True])
def test_a_copy_names_the_clauses_of_exactly_its_rules(
    policy: Policy, partners: PartnerRegistry, image: bool
) -> None:
    state = _consent(policy, services=tuple(s.id for s in partners.services))
    clauses = {rule.id: rule.clause for rule in policy.rules}
    for event_type in EventType:
        decision = _decide(_event(event_type, image=image), state, policy, partners)
        for copy in decision.forwarded:
            assert copy.rule_id is not None and copy.clause is not None
            rules = copy.rule_id.split("+")
            assert copy.clause.split("; ") == [clauses[r] for r in rules], copy.destination
