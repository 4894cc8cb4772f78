"""``plan``: every planned payload is what the envelope model says of the decision.

The bytes come from one encoder (``Envelopes``); ``models.Forwarded`` is the oracle.
Each publication decodes with the model to the decision's own envelope for that copy
(``Outcome.forwarded_message``), carries its user properties, and confirms exactly the
ledger row of its copy when the destination's provision is recorded (§8).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.encoding import user_properties
from intercom_gateway.core.models import Event, EventType, Forwarded
from intercom_gateway.core.outcomes import Decision
from intercom_gateway.core.plan import (
    LEDGER,
    decision_row,
    plan,
    provision_row,
)
from intercom_gateway.core.policy import DestinationKind, PartnerRegistry, Policy
from tests.factories import decided

from .conftest import NOW
from .test_decision import _POLICY_FOR_STRATEGIES, _PROPERTY, consent, make_event, scenarios

_MOMENTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
) | st.just(datetime(2026, 4, 2, 9, 30, tzinfo=timezone(timedelta(hours=9))))


def _decide(
    event: Event, state: ConsentState, partners: PartnerRegistry, policy: Policy, now: datetime
) -> Decision:
    return decided(event, state, policy, partners, now=now)


def _assert_planned(decision: Decision, event: Event, now: datetime) -> int:
    planned = plan(decision, occurred_at=event.occurred_at, now=now, gateway_id="gw-1")
    event_id = str(decision.event_id)
    expected = [
        (outcome, copy)
        for outcome in decision.outcomes
        if outcome.forwarded
        and outcome.kind is not DestinationKind.ANALYTICS
        and outcome.payload is not None
        for copy in outcome.copies
        if copy.payload is not None and copy.topic is not None
    ]
    assert len(planned.publications) == len(expected)
    for publication, (outcome, copy) in zip(planned.publications, expected, strict=True):
        decoded = Forwarded.model_validate_json(publication.payload)
        oracle = outcome.forwarded_message(decision, now, copy)
        assert decoded == oracle
        assert publication.topic == copy.topic
        assert list(publication.properties) == [
            *user_properties(oracle),
            ("event_id", event_id),
        ]
        assert (publication.qos, publication.retain) == (1, False)
        row = (
            provision_row(decision, outcome, copy, now, event_id, str(decision.decision_id))
            if outcome.provision in LEDGER
            else None
        )
        assert publication.confirms == row
    assert planned.intents == tuple(p.confirms for p in planned.publications if p.confirms)
    # Spec item 7: an event stopped at the consent gate is not stored at all.
    assert planned.decision == (decision_row(decision) if decision.gate is None else None)
    forwarded = [o for o in decision.outcomes if o.forwarded]
    assert planned.forwarded == tuple(o.kind.value for o in forwarded)
    assert len(planned.withheld) == len(decision.outcomes) - len(forwarded)
    counted = any(o.kind is DestinationKind.STATISTICS for o in forwarded)
    assert planned.statistic == (
        (decision.building_id, decision.event_type.value, event.occurred_at) if counted else None
    )
    held = [o for o in forwarded if o.kind is DestinationKind.ANALYTICS and o.payload]
    assert (planned.analytics is not None) == bool(held)
    if planned.analytics is not None:
        assert planned.analytics.event == held[0].payload
        assert planned.analytics.policy_version == decision.policy_version
    return len(planned.publications)


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES), _MOMENTS)
def test_every_planned_payload_decodes_to_the_decisions_envelope(
    scenario: tuple[Event, ConsentState, PartnerRegistry], now: datetime
) -> None:
    event, state, partners = scenario
    _assert_planned(_decide(event, state, partners, _POLICY_FOR_STRATEGIES, now), event, now)


@pytest.mark.parametrize("image", [False, True])
@pytest.mark.parametrize("event_type", list(EventType))
def test_every_sample_route_is_planned_as_the_model_says(
    event_type: EventType, image: bool, policy: Policy, partners: PartnerRegistry
) -> None:
    event = make_event(event_type, image=image, text='鍵 \u2028 "quoted" \\ é')
    decision = _decide(event, consent(policy), partners, policy, NOW)
    assert _assert_planned(decision, event, NOW) >= 1


def test_an_event_stopped_at_the_gate_is_planned_with_nothing_to_store(
    policy: Policy, partners: PartnerRegistry
) -> None:
    event = make_event(EventType.VISITOR)
    state = consent(policy, registered=False)
    decision = _decide(event, state, partners, policy, NOW)
    planned = plan(decision, occurred_at=event.occurred_at, now=NOW, gateway_id="gw-1")
    assert decision.gate is not None
    assert planned.decision is None
    assert planned.publications == () and planned.intents == ()


def test_a_decision_changed_by_hand_is_planned_from_its_own_outcomes(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """``plan`` works out what a template's decisions share once per template; a
    decision changed by hand carries no template, so nothing of its original is reused."""
    event = make_event(EventType.VISITOR, image=True)
    decision = _decide(event, consent(policy), partners, policy, NOW)
    assert decision.template is not None
    _assert_planned(decision, event, NOW)
    fewer = replace(decision, outcomes=decision.outcomes[1:])
    assert fewer.template is None
    assert 1 <= _assert_planned(fewer, event, NOW) < _assert_planned(decision, event, NOW)
