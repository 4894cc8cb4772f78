"""The gateway's fast encodings against the slow, obvious ones they replace.

``Envelopes`` builds the bytes of every per-event copy without a ``Forwarded`` model:
they must parse back through that model and equal, byte for byte, what
``forwarded_message(...).model_dump_json()`` gives, with the same user properties.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.encoding import Envelopes, user_properties
from intercom_gateway.core.models import Event, EventType, Forwarded
from intercom_gateway.core.outcomes import Decision, Outcome
from intercom_gateway.core.policy import DestinationKind, PartnerRegistry, Policy
from intercom_gateway.core.tags import Copy, Part
from tests.factories import decided

from .conftest import NOW
from .test_decision import (
    _POLICY_FOR_STRATEGIES,
    _PROPERTY,
    consent,
    make_event,
    scenarios,
)

_GATEWAY_IDS = st.sampled_from(["gw-1", "ゲートウェイ-東", 'quote"back\\slash'])
_MOMENTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
) | st.just(datetime(2026, 4, 2, 9, 30, tzinfo=timezone(timedelta(hours=9))))


_Slow = dict[tuple[str, Part], tuple[Forwarded, list[tuple[str, str]]]]


def _slow(decision: Decision, now: datetime) -> _Slow:
    """Per destination and part: the envelope model and the properties, the obvious way."""
    copies = {}
    for outcome in decision.outcomes:
        if not outcome.forwarded:
            continue
        for copy in outcome.copies:
            if copy.payload is None:
                continue
            message = outcome.forwarded_message(decision, now, copy)
            properties = user_properties(message)
            if message.event_id is not None:
                properties.append(("event_id", str(message.event_id)))
            copies[outcome.destination, copy.part] = (message, properties)
    return copies


def _assert_same(decision: Decision, now: datetime) -> int:
    for outcome in decision.outcomes:  # the event copy's rule: one rule, never joined
        assert outcome.rule_id == (outcome.copies[0].rule_id if outcome.copies else None)
    slow = _slow(decision, now)
    envelopes = Envelopes(decision, now)
    for outcome in decision.outcomes:
        for copy in outcome.copies:
            if (outcome.destination, copy.part) in slow:
                _assert_copy_same(envelopes, outcome, copy, slow[outcome.destination, copy.part])
    return len(slow)


def _assert_copy_same(
    envelopes: Envelopes,
    outcome: Outcome,
    copy: Copy,
    slow: tuple[Forwarded, list[tuple[str, str]]],
) -> None:
    payload, properties = envelopes.encode(outcome, copy)
    fast = Forwarded.model_validate_json(payload)  # valid per the model (strict)
    message, expected = slow
    if outcome.kind is DestinationKind.ANALYTICS:
        # A fresh decision id per analytics copy, on both paths (§5(5)).
        assert fast.decision_id != message.decision_id
        assert str(fast.decision_id) != envelopes.decision_id
        message = message.model_copy(update={"decision_id": fast.decision_id})
        expected = [(k, str(fast.decision_id) if k == "decision_id" else v) for k, v in expected]
    assert fast == message
    assert payload == message.model_dump_json().encode()
    assert properties == expected


def _decide(
    event: Event,
    state: ConsentState,
    partners: PartnerRegistry,
    *,
    policy: Policy = _POLICY_FOR_STRATEGIES,
    gateway_id: str = "gw-1",
    now: datetime = NOW,
) -> Decision:
    return decided(event, state, policy, partners, now=now, gateway_id=gateway_id)


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES), _GATEWAY_IDS, _MOMENTS)
def test_fast_envelopes_equal_the_model_path(
    scenario: tuple[Event, ConsentState, PartnerRegistry], gateway_id: str, now: datetime
) -> None:
    event, state, partners = scenario
    _assert_same(_decide(event, state, partners, gateway_id=gateway_id, now=now), now)


@pytest.mark.parametrize("image", [False, True])
@pytest.mark.parametrize("event_type", list(EventType))
def test_every_sample_route_encodes_as_the_model_does(
    event_type: EventType, image: bool, policy: Policy, partners: PartnerRegistry
) -> None:
    event = make_event(event_type, image=image, text='鍵 \u2028 "quoted" \\ é')
    decision = _decide(event, consent(policy), partners, policy=policy)
    assert _assert_same(decision, NOW) >= 1


def test_a_withheld_outcome_has_no_envelope(policy: Policy, partners: PartnerRegistry) -> None:
    decision = _decide(make_event(EventType.VISITOR), consent(policy), partners, policy=policy)
    envelopes = Envelopes(decision, NOW)
    idle = [o for o in decision.outcomes if not o.forwarded or o.payload is None]
    assert idle
    for outcome in idle:
        for copy in outcome.copies or decision.outcome("cloud").copies:
            with pytest.raises(ValueError, match="nothing to publish"):
                envelopes.encode(outcome, copy)
