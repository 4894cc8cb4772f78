"""The decision log's row text: encoded once per distinct outcome, equal to the slow path."""

from __future__ import annotations

import json

from hypothesis import given

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import Event
from intercom_gateway.core.policy import PartnerRegistry
from intercom_gateway.gateway.service import decision_outcomes, logged_outcomes

from .test_decision import _POLICY_FOR_STRATEGIES, _PROPERTY, run, scenarios


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_logged_outcomes_are_the_json_of_decision_outcomes(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event, state, partners = scenario
    decision = run(event, state, _POLICY_FOR_STRATEGIES, partners)
    expected = json.dumps(decision_outcomes(decision), separators=(",", ":"))
    assert logged_outcomes(decision) == expected
    assert logged_outcomes(decision) == expected  # now from the cache
