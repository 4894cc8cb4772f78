"""§10: accepting a policy version, the change no test applied (issue 14, mutation testing).

A dwelling registered under one version accepts the next one; only then, under a policy
that requires re-acceptance, do its events flow again.
"""

from __future__ import annotations

from typing import Any

import pytest

from intercom_gateway.core.consent import ChangeResult, ConsentState
from intercom_gateway.core.models import AcceptPolicy, Register
from intercom_gateway.core.outcomes import Reason
from intercom_gateway.core.policy import PartnerRegistry, Policy
from tests.factories import consent_change, decided, event

from .conftest import NOW

BUILDING, DWELLING = "b002", "d0204"
NEXT = "2027-01-01"


def _next(policy: Policy) -> Policy:
    """The packaged policy's successor, which every dwelling must accept again."""
    data = policy.model_dump(mode="json") | {
        "version": NEXT,
        "supersedes": [policy.version, *policy.supersedes],
        "requires_reacceptance": True,
    }
    return Policy.model_validate(data)


def _accept(
    state: ConsentState, version: str, policy: Policy, partners: PartnerRegistry
) -> ChangeResult:
    return consent_change(state, AcceptPolicy(policy_version=version), policy, partners, now=NOW)


def _registered(version: str, **fields: Any) -> ConsentState:
    return ConsentState(
        building_id=BUILDING,
        dwelling_id=DWELLING,
        registered=True,
        accepted_policy_version=version,
        services_used=("concierge", "elder-watch"),
        provision_stopped=("parcel-unlock",),
        opted_out=("marketing",),
        return_home_enabled=False,
        revision=4,
        **fields,
    )


def test_accepting_the_version_in_force_records_it(
    policy: Policy, partners: PartnerRegistry
) -> None:
    in_force = _next(policy)
    before = _registered(policy.version)
    result = _accept(before, NEXT, in_force, partners)
    assert result.applied
    assert (result.detail, result.clause) == (f"accepted policy {NEXT}", "§10")
    assert result.state.accepted_policy_version == NEXT
    assert (result.state.revision, result.state.updated_at) == (5, NOW)
    # Nothing else of the dwelling's consent changes.
    unchanged = before.model_copy(
        update={"accepted_policy_version": NEXT, "revision": 5, "updated_at": NOW}
    )
    assert result.state == unchanged


@pytest.mark.parametrize(
    ("registered", "version", "detail_starts", "clause"),
    [
        pytest.param(False, NEXT, "not registered", "§7(1)①", id="not-registered"),
        pytest.param(True, "2026-04-01", "policy version 2026-04-01 is superseded by", "§10"),
        pytest.param(True, "2030-01-01", "unknown policy version", "§10", id="unknown"),
    ],
)
def test_an_acceptance_that_cannot_hold_is_refused(
    policy: Policy,
    partners: PartnerRegistry,
    registered: bool,
    version: str,
    detail_starts: str,
    clause: str,
) -> None:
    before = _registered(policy.version).model_copy(update={"registered": registered})
    result = _accept(before, version, _next(policy), partners)
    assert not result.applied
    assert result.detail.startswith(detail_starts)
    assert result.clause == clause
    assert result.state is before


def test_events_flow_again_once_the_new_version_is_accepted(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """Register under one version, the policy changes, accept: §10 end to end."""
    old = ConsentState.initial(BUILDING, DWELLING)
    register = Register(policy_version=policy.version)
    state = consent_change(old, register, policy, partners, now=NOW).state
    in_force = _next(policy)
    alarm = event("alarm", building=BUILDING, dwelling=DWELLING)

    def cloud_gets_it(consent: ConsentState) -> bool:
        decision = decided(alarm, consent, in_force, partners, now=NOW, gateway_id="gw-accept")
        if decision.gate is not None:
            assert decision.gate.reason is Reason.POLICY_NOT_ACCEPTED
        return decision.outcome("cloud").forwarded

    assert not cloud_gets_it(state)
    accepted = _accept(state, NEXT, in_force, partners)
    assert accepted.applied
    assert cloud_gets_it(accepted.state)
