"""The Router: the policy compiled once, held by its owner, its memos bounded (issue #15).

``decide`` with one long-lived router must say what it says with a router compiled for
each call: the memos only save work. They stay within the router's bound however many
distinct consents pass, and two routers share nothing.
"""

from __future__ import annotations

import itertools
import uuid

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.gates import consent_gate
from intercom_gateway.core.models import Event, EventType
from intercom_gateway.core.outcomes import Decision, Reason
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.router import TEMPLATES_PER_MEMO, Router

from .conftest import NOW
from .test_decision import consent, make_event

OPT_OUTS = ("direct_mail", "marketing", "profiling")


def _decide(happened: Event, state: ConsentState, router: Router) -> Decision:
    return decide(
        happened,
        state,
        router=router,
        gateway_id="gw-router",
        decision_id=uuid.UUID(int=5),
        now=NOW,
    )


def _consents(policy: Policy) -> list[ConsentState]:
    """Many distinct consents: every opt-out set, service set and accepted version."""
    services = ("concierge", "elder-watch", "parcel-unlock")
    states = []
    for size in range(len(OPT_OUTS) + 1):
        for opted_out in itertools.combinations(OPT_OUTS, size):
            for used in (services, services[:1], ()):
                for accepted in (policy.version, None, "1999-01-01"):
                    states.append(
                        consent(
                            policy,
                            opted_out=opted_out,
                            services_used=used,
                            accepted_policy_version=accepted,
                        )
                    )
    return states


def test_a_held_router_with_tiny_memos_decides_as_a_fresh_one(
    policy: Policy, partners: PartnerRegistry
) -> None:
    held = Router.compile(policy, partners, memo_size=3)
    for state in _consents(policy):
        for et in EventType:
            happened = make_event(et, image=True)
            fresh = _decide(happened, state, Router.compile(policy, partners))
            # The second decision of a route comes from the held router's template.
            assert _decide(happened, state, held) == fresh
            assert _decide(happened, state, held) == fresh
            assert len(held._withheld) <= 3 and len(held._parts) <= 3
            assert len(held._templates) <= TEMPLATES_PER_MEMO * 3


def test_a_router_remembers_what_it_built_and_shares_it_with_no_other(
    policy: Policy, partners: PartnerRegistry
) -> None:
    one, other = Router.compile(policy, partners), Router.compile(policy, partners)
    happened, state = make_event(EventType.VISITOR, image=True), consent(policy)
    first, again = _decide(happened, state, one), _decide(happened, state, one)
    # Withheld outcomes carry nothing of the event: built once per router.
    withheld = [o for o in first.outcomes if not o.forwarded]
    assert withheld and all(
        a is b
        for a, b in zip(withheld, [o for o in again.outcomes if not o.forwarded], strict=True)
    )
    elsewhere = [o for o in _decide(happened, state, other).outcomes if not o.forwarded]
    assert elsewhere == withheld and all(
        a is not b for a, b in zip(elsewhere, withheld, strict=True)
    )


def test_the_consent_gate_is_the_one_decide_and_the_flows_use(
    policy: Policy, partners: PartnerRegistry
) -> None:
    router = Router.compile(policy, partners)
    for state in _consents(policy):
        gate = consent_gate(state, policy)
        decided = _decide(make_event(EventType.ALARM), state, router).gate
        assert decided == gate
        flows = router.flows(state)
        if gate is None:
            assert isinstance(flows, tuple) and flows
        else:
            assert flows == gate and gate.reason is Reason.POLICY_NOT_ACCEPTED


def test_a_consent_change_applies_from_the_very_next_decision_of_a_held_router(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """Spec item 9: a template is the consent object's, so a new consent (every change
    makes one) is never decided from the old one's template, and back again."""
    router = Router.compile(policy, partners)
    happened = make_event(EventType.VISITOR, image=True)
    before = consent(policy)
    after = before.model_copy(update={"services_used": (), "revision": 4})
    for state in (before, after, before, after):
        for _ in range(2):
            assert _decide(happened, state, router) == _decide(
                happened, state, Router.compile(policy, partners)
            )
    forwarded = {o.destination for o in _decide(happened, after, router).forwarded}
    assert not any(d.startswith("partner:") for d in forwarded)
    assert any(
        o.destination.startswith("partner:") for o in _decide(happened, before, router).forwarded
    )


def test_a_template_holds_no_event_values(policy: Policy, partners: PartnerRegistry) -> None:
    """Events of one route share a template, but each decision carries its own event's
    values, and an unlock names its own service (§3(4))."""
    router, state = Router.compile(policy, partners), consent(policy)
    events = [
        make_event(EventType.RETURN_HOME, text="first"),
        make_event(EventType.RETURN_HOME, text="second", at=NOW),
        make_event(EventType.UNLOCK_MODE, service_id="parcel-unlock"),
        make_event(EventType.UNLOCK_MODE, service_id="elder-watch"),
        make_event(EventType.UNLOCK_MODE, service_id="parcel-unlock", image=True),
    ]
    decisions = [_decide(e, state, router) for e in events]
    for happened, decision in zip(events, decisions, strict=True):
        assert decision == _decide(happened, state, Router.compile(policy, partners))
    assert decisions[0].template is decisions[1].template
    assert decisions[0].outcome("cloud").payload != decisions[1].outcome("cloud").payload
    assert decisions[2].template is not decisions[3].template
