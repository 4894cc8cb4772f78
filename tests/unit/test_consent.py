"""Consent per dwelling: how each resident setting changes it, clause by clause."""

from __future__ import annotations

from datetime import timedelta

import pytest

from intercom_gateway.core.consent import ChangeResult, ConsentState, apply_change
from intercom_gateway.core.models import (
    AcceptPolicy,
    Initialise,
    PurposeOptOut,
    Register,
    ReturnHomeNotification,
    ServiceUse,
    SettingsChangeBody,
)
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.simulators.settings import settings_change
from tests.factories import consent_change

from .conftest import NOW

BUILDING, DWELLING = "b1", "d101"


def _apply(
    state: ConsentState, body: SettingsChangeBody, policy: Policy, partners: PartnerRegistry
) -> ChangeResult:
    return consent_change(state, body, policy, partners, now=NOW)


def _registered(policy: Policy, partners: PartnerRegistry) -> ConsentState:
    initial = ConsentState.initial(BUILDING, DWELLING)
    return _apply(initial, Register(policy_version=policy.version), policy, partners).state


def test_initial_state_is_not_registered() -> None:
    """§7(1)①: fail closed, a dwelling we know nothing of sends nothing."""
    state = ConsentState.initial(BUILDING, DWELLING)
    assert not state.registered
    assert state.services_used == ()
    assert state.revision == 0


def test_register_under_the_current_policy(policy: Policy, partners: PartnerRegistry) -> None:
    state = _registered(policy, partners)
    assert state.registered
    assert state.accepted_policy_version == "2026-04-01"
    assert state.revision == 1
    assert state.updated_at == NOW


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(Register(policy_version="2022-06-01"), "superseded", id="§10-old"),
        pytest.param(Register(policy_version="1999-01-01"), "unknown policy", id="§10-unknown"),
        pytest.param(AcceptPolicy(policy_version="2026-04-01"), "not registered", id="accept"),
    ],
)
def test_refused_on_an_unregistered_dwelling(
    body: SettingsChangeBody, detail: str, policy: Policy, partners: PartnerRegistry
) -> None:
    initial = ConsentState.initial(BUILDING, DWELLING)
    result = _apply(initial, body, policy, partners)
    assert not result.applied
    assert detail in result.detail
    assert result.state == initial


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(Register(policy_version="2026-04-01"), "already registered", id="twice"),
        pytest.param(ServiceUse(partner_id="nobody", used=True), "unknown partner", id="§5"),
        pytest.param(PurposeOptOut(purpose="backup", opted_out=True), "cannot", id="§8-base"),
        pytest.param(PurposeOptOut(purpose="spying", opted_out=True), "unknown", id="purpose"),
        pytest.param(AcceptPolicy(policy_version="2031-01-01"), "unknown", id="§10-unknown"),
        pytest.param(AcceptPolicy(policy_version="2022-06-01"), "superseded", id="§10-old"),
    ],
)
def test_refused_changes_leave_the_state_alone(
    body: SettingsChangeBody, detail: str, policy: Policy, partners: PartnerRegistry
) -> None:
    state = _registered(policy, partners)
    result = _apply(state, body, policy, partners)
    assert not result.applied
    assert detail in result.detail
    assert result.state == state


def test_change_for_another_dwelling_is_refused(policy: Policy, partners: PartnerRegistry) -> None:
    state = _registered(policy, partners)
    change = settings_change(BUILDING, "d999", Initialise(), requested_at=NOW)
    result = apply_change(state, change, policy=policy, partners=partners, now=NOW)
    assert not result.applied
    assert result.state.registered


def test_return_home_off_and_on(policy: Policy, partners: PartnerRegistry) -> None:
    """§7(1)②."""
    state = _registered(policy, partners)
    off = _apply(state, ReturnHomeNotification(enabled=False), policy, partners)
    assert off.applied and not off.state.return_home_enabled
    on = _apply(off.state, ReturnHomeNotification(enabled=True), policy, partners)
    assert on.state.return_home_enabled
    assert on.state.revision == state.revision + 2


def test_using_and_stopping_a_service(policy: Policy, partners: PartnerRegistry) -> None:
    """§5(1)②: provision while used; §8: stopping provision is remembered."""
    state = _registered(policy, partners)
    used = _apply(state, ServiceUse(partner_id="concierge", used=True), policy, partners).state
    assert used.services_used == ("concierge",)
    assert used.uses("concierge")
    stopped = _apply(used, ServiceUse(partner_id="concierge", used=False), policy, partners)
    assert stopped.applied
    assert stopped.state.services_used == ()
    assert stopped.state.provision_stopped == ("concierge",)
    assert not stopped.state.uses("concierge")
    again = _apply(stopped.state, ServiceUse(partner_id="concierge", used=True), policy, partners)
    assert again.state.uses("concierge")
    assert again.state.provision_stopped == ()


def test_opting_out_and_back_in(policy: Policy, partners: PartnerRegistry) -> None:
    state = _registered(policy, partners)
    out = _apply(state, PurposeOptOut(purpose="marketing", opted_out=True), policy, partners)
    assert out.applied and out.state.opted_out == ("marketing",)
    back = _apply(out.state, PurposeOptOut(purpose="marketing", opted_out=False), policy, partners)
    assert back.state.opted_out == ()


def test_initialise_forgets_the_previous_residents_choices(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """§7(1)①: move-out stops everything; the next residents start from nothing."""
    state = _registered(policy, partners)
    for body in (
        ServiceUse(partner_id="elder-watch", used=True),
        PurposeOptOut(purpose="profiling", opted_out=True),
    ):
        state = _apply(state, body, policy, partners).state
    result = _apply(state, Initialise(), policy, partners)
    assert result.applied
    assert not result.state.registered
    assert result.state.services_used == ()
    assert result.state.accepted_policy_version is None
    assert result.state.revision == state.revision + 1
    assert result.clause == "§7(1)①"


def test_state_lists_are_sorted_and_unique() -> None:
    state = ConsentState(building_id=BUILDING, dwelling_id=DWELLING, services_used=("b", "a", "b"))
    assert state.services_used == ("a", "b")


def test_ack_carries_the_outcome(policy: Policy, partners: PartnerRegistry) -> None:
    change = settings_change(
        BUILDING, DWELLING, ServiceUse(partner_id="nobody", used=True), requested_at=NOW
    )
    state = _registered(policy, partners)
    result = apply_change(state, change, policy=policy, partners=partners, now=NOW)
    ack = result.ack(change, now=NOW + timedelta(seconds=1))
    assert ack.change_id == change.change_id
    assert not ack.applied
    assert "unknown partner" in ack.detail
