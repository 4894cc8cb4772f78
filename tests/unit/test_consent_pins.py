"""Every settings change's record: applied or refused, its clause, its revision and time.

The acknowledgement a resident reads and the consent history both carry these; mutation
testing (docs/mutation.md) found clauses, timestamps and the on/off wording of the
acknowledgements pinned by no test.
"""

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

BUILDING, DWELLING = "b003", "d0301"
EARLIER = NOW - timedelta(days=3)
CONCIERGE = "Concierge visitor & parcel notices (concierge)"


def _state(policy: Policy, *, registered: bool = True) -> ConsentState:
    return ConsentState(
        building_id=BUILDING,
        dwelling_id=DWELLING,
        registered=registered,
        accepted_policy_version=policy.version if registered else None,
        services_used=("elder-watch",),
        opted_out=("profiling",),
        revision=2,
        updated_at=EARLIER,
    )


@pytest.mark.parametrize(
    ("registered", "body", "detail", "clause"),
    [
        pytest.param(False, Register(policy_version="2026-04-01"),
                     "registered under policy 2026-04-01", "§7(1)①, §10", id="register"),
        pytest.param(True, Initialise(), "initialised: nothing is sent", "§7(1)①", id="initialise"),
        pytest.param(True, ReturnHomeNotification(enabled=False),
                     "return-home notification off", "§7(1)②", id="return-home-off"),
        pytest.param(True, ReturnHomeNotification(enabled=True),
                     "return-home notification on", "§7(1)②", id="return-home-on"),
        pytest.param(True, ServiceUse(partner_id="concierge", used=True),
                     f"now using {CONCIERGE}", "§5(1)②, §8", id="service-used"),
        pytest.param(True, ServiceUse(partner_id="concierge", used=False),
                     f"provision to {CONCIERGE} stopped", "§5(1)②, §8", id="service-stopped"),
        pytest.param(True, PurposeOptOut(purpose="marketing", opted_out=True),
                     "opted out of marketing", "§8", id="opt-out"),
        pytest.param(True, PurposeOptOut(purpose="profiling", opted_out=False),
                     "opted back into profiling", "§8", id="opt-back-in"),
        pytest.param(True, AcceptPolicy(policy_version="2026-04-01"),
                     "accepted policy 2026-04-01", "§10", id="accept"),
    ],
)  # fmt: skip
def test_an_applied_change_says_what_it_did_under_which_clause(
    policy: Policy,
    partners: PartnerRegistry,
    registered: bool,
    body: SettingsChangeBody,
    detail: str,
    clause: str,
) -> None:
    result = _apply(_state(policy, registered=registered), body, policy, partners)
    assert result.applied
    assert (result.detail, result.clause) == (detail, clause)
    assert (result.state.revision, result.state.updated_at) == (3, NOW)


@pytest.mark.parametrize(
    ("registered", "body", "detail_starts", "clause"),
    [
        pytest.param(True, Register(policy_version="2026-04-01"),
                     "already registered", "§7(1)①", id="register-twice"),
        pytest.param(False, Register(policy_version="2022-06-01"),
                     "policy version 2022-06-01 is superseded", "§10", id="register-superseded"),
        pytest.param(False, Register(policy_version="1999-01-01"),
                     "unknown policy version", "§10", id="register-unknown"),
        pytest.param(True, ServiceUse(partner_id="nobody", used=True),
                     "unknown partner service 'nobody'", "§5(1)②", id="unknown-service"),
        pytest.param(True, PurposeOptOut(purpose="gossip", opted_out=True),
                     "unknown purpose 'gossip'", "§3", id="unknown-purpose"),
        pytest.param(True, PurposeOptOut(purpose="support", opted_out=True),
                     "purpose 'support' cannot be opted out of", "§8", id="baseline-purpose"),
    ],
)  # fmt: skip
def test_a_refused_change_leaves_consent_as_it_was(
    policy: Policy,
    partners: PartnerRegistry,
    registered: bool,
    body: SettingsChangeBody,
    detail_starts: str,
    clause: str,
) -> None:
    before = _state(policy, registered=registered)
    result = _apply(before, body, policy, partners)
    assert not result.applied
    assert result.detail.startswith(detail_starts)
    assert result.clause == clause
    assert result.state is before


def test_a_change_for_another_dwelling_is_refused(
    policy: Policy, partners: PartnerRegistry
) -> None:
    before = _state(policy)
    change = settings_change(BUILDING, "d0399", Initialise(), requested_at=NOW)
    result = apply_change(before, change, policy=policy, partners=partners, now=NOW)
    assert not result.applied
    assert result.detail == f"change is for {BUILDING}/d0399, consent is for {BUILDING}/{DWELLING}"
    assert result.state is before


def _apply(
    state: ConsentState, body: SettingsChangeBody, policy: Policy, partners: PartnerRegistry
) -> ChangeResult:
    return consent_change(state, body, policy, partners, now=NOW)


def test_a_refused_opt_out_names_the_purposes_a_resident_may_opt_out_of(
    policy: Policy, partners: PartnerRegistry
) -> None:
    result = _apply(_state(policy), PurposeOptOut(purpose="support", opted_out=True), policy,
                    partners)  # fmt: skip
    allowed = ", ".join(sorted(k for k, p in policy.purposes.items() if p.opt_out))
    assert allowed == "direct_mail, marketing, profiling"
    assert result.detail == f"purpose 'support' cannot be opted out of (only: {allowed})"
