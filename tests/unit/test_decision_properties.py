"""The decision's invariants, over generated events, consents and partner registries."""

from __future__ import annotations

from hypothesis import given

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import (
    Event,
    EventType,
)
from intercom_gateway.core.outcomes import Decision
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IDENTIFYING_FIELDS,
    DestinationKind,
    PartnerRegistry,
)
from intercom_gateway.core.tags import Part

from .conftest import NOW
from .test_decision import (
    _POLICY_FOR_STRATEGIES,
    _PROPERTY,
    IMAGE,
    _flat_strings,
    run,
    scenarios,
)


def _decide(scenario: tuple[Event, ConsentState, PartnerRegistry]) -> Decision:
    event, state, registry = scenario
    return run(event, state, _POLICY_FOR_STRATEGIES, registry)


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
