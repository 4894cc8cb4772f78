"""The decision: for one event and every destination, forwarded or withheld, and why.

``decide`` is a pure function of its arguments (spec item 9 needs the caller to hand it
the consent in force; this module cannot go stale). What depends only on the policy and
the partner registry is compiled once into a ``Router`` (``router.py``), which the caller
builds when it loads them and holds.

A forwarded outcome publishes one copy per rule that allowed a part of the event: the
event's facts under the rule for its category, and its image, if the destination may
have it, in a copy of its own under the image rule (spec item 2; ``tags.py``). No copy
is produced whose tags ``tags.untrue_tags`` finds untrue.

Where each clause is enforced: one function each, which ``Router.flows`` (the resident's
notification of purposes) calls too. README.md ("Where each clause is enforced") holds
the same table; tests/unit/test_clause_index.py keeps the two alike.

===============================  ==========================================
clause                           function
===============================  ==========================================
consent of the event's dwelling  ``decide._gate``
§7(1)①, item 7 initialised       ``gates.consent_gate``
§10 accepted policy version      ``gates.consent_gate``
§7(1)② return home off           ``gates.return_home_gate``
§8 provision stopped             ``gates.service_gate``
§5(1)②, item 5 service used      ``gates.service_gate``
§3(4) unlock: named service      ``gates.unlock_gate``
§7(2) Intercom app unlinked      ``gates.intercom_app_gate``
§2(5) no §2(4) to partners       ``router._route``
§5(1)① own distribution only     ``gates.contractor_gate``
§2(1), §3(1) kept apart          ``router._tags`` (``tags.untrue_tags``)
item 4 (§1(8)) no unlock         ``router._route``
item 1 default deny              ``router._route`` (``Policy.rule_for``)
§2(5), item 5 declared types     ``router._route``
§2(5), item 5 declared fields    ``router._paths``
§5(1)② declared purposes         ``router._shared``
§3(3)/(4), items 3, 5 images     ``router._image_rule``
§8 purpose opt-outs              ``router._kept``
item 2 one copy per rule         ``router._tags`` (``tags.untrue_tags``)
item 2 the image copy's fields   ``decide._image_payload``
item 6 coarsened timestamps      ``decide._hour``
item 6 statistics aggregated     ``decide._step``
§5(5) analytics unlinkable       ``encoding.Envelopes.encode``
===============================  ==========================================
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.gates import (
    consent_gate,
    contractor_gate,
    intercom_app_gate,
    return_home_gate,
    service_gate,
    unlock_gate,
)
from intercom_gateway.core.models import Event, EventType
from intercom_gateway.core.outcomes import Decision, Outcome, Reason, Withhold
from intercom_gateway.core.policy import BASE_FIELDS, IMAGE_FIELD, DestinationKind
from intercom_gateway.core.router import Forward, Parts, Route, Router, Target, Template
from intercom_gateway.core.tags import Copy

__all__ = ["decide"]

_EVENT_TYPES = {t.value: t for t in EventType}
_UNLOCK_NAMED = "service_id"  # §3(4): the field naming the service an unlock was for
_CONTRACTOR_NAMED = "contractor_id"  # §5(1)①: the contractor whose distribution it was


def decide(
    event: Event,
    consent: ConsentState,
    *,
    router: Router,
    gateway_id: str,
    decision_id: UUID,
    now: datetime,
) -> Decision:
    """Decide, for every destination, whether ``event`` flows there under ``consent``.

    Everything but the copies' payloads depends only on the route (the event's type,
    dwelling, whether it has an image, the service an unlock names), the consent and the
    policy: that is the router's ``Template``, made on the first such event. Per event
    only the payloads are projected from the event's values.
    """
    fields = event.__dict__  # pydantic's __getattr__ miss is slow: not every type has these
    has_image = fields.get(IMAGE_FIELD) is not None
    # No event type has both: an unlock names its service, usage its contractor.
    named = fields.get(_UNLOCK_NAMED, fields.get(_CONTRACTOR_NAMED))
    key = (id(consent), event.building_id, event.dwelling_id, event.type, has_image, named)
    template = router.template(key)
    if template is None or template.consent is not consent:
        template = _template(event, consent, has_image, named, router)
        if template.gate is None:
            # A gated decision is cheap to make again; remembering it would let a flood
            # of events from unknown dwellings (a fresh consent each) evict the rest.
            router.remember(key, template)
    dump = event.model_dump(mode="json") if template.fills else {}
    outcomes = tuple(
        step if isinstance(step, Outcome) else _forwarded(step, dump) for step in template.steps
    )
    decision = Decision(
        decision_id=decision_id,
        gateway_id=gateway_id,
        decided_at=now,
        event_id=event.event_id,
        event_type=_EVENT_TYPES[event.type],
        building_id=event.building_id,
        dwelling_id=event.dwelling_id,
        policy_version=router.policy.version,
        consent_revision=consent.revision,
        categories=template.categories,
        outcomes=outcomes,
        gate=template.gate,
    )
    object.__setattr__(decision, "template", template)  # the one place that sets it
    return decision


def _template(
    event: Event, consent: ConsentState, has_image: bool, named: object, router: Router
) -> Template:
    """What ``event``'s decision says but for its payloads: gates, routes and tags."""
    et = _EVENT_TYPES[event.type]
    mapping = router.policy.event_types[et]
    categories: tuple[str, ...] = (mapping.category,)
    if has_image and mapping.image_category:
        categories += (mapping.image_category,)
    gate = _gate(event, et, consent, router)
    if gate is not None:
        steps: tuple[Outcome | Forward, ...] = tuple(
            router.withheld(t, gate) for t in router.targets
        )
    else:
        steps = tuple(
            _step(t, r, withheld, event, et, consent, has_image, named, router)
            for t, r, withheld in router.plans[et]
        )
    return Template(
        consent=consent,
        gate=gate,
        categories=tuple(sorted(categories)),
        steps=steps,
        fills=any(isinstance(step, Forward) for step in steps),
    )


def _gate(event: Event, et: EventType, consent: ConsentState, router: Router) -> Withhold | None:
    """Reasons that withhold the event from every destination at once."""
    if (consent.building_id, consent.dwelling_id) != (event.building_id, event.dwelling_id):
        return Withhold(Reason.CONSENT_MISMATCH, "consent of another dwelling", None)
    return (
        consent_gate(consent, router.policy)
        or return_home_gate(et, consent)
        or intercom_app_gate(et, consent)
    )


def _step(
    target: Target,
    route: Route,
    withheld: Outcome | None,
    event: Event,
    et: EventType,
    consent: ConsentState,
    has_image: bool,
    named: object,
    router: Router,
) -> Outcome | Forward:
    service = target.service
    if service is not None:
        why = service_gate(service, consent) or unlock_gate(service, et, named)
        if why is not None:
            return router.withheld(target, why)
    if withheld is not None:
        return withheld  # the route's own, built when it was compiled
    if target.contractor is not None:
        why = contractor_gate(target.contractor, named)
        if why is not None:
            return router.withheld(target, why)
    parts = router.parts(target, route, has_image, consent.opted_out)
    if isinstance(parts, Withhold):
        return router.withheld(target, parts)
    topic = _topic(target, event)
    if route.aggregate:  # statistics: counted, never published per event
        return _outcome(target, parts, (Copy(parts.event, topic, None),))
    image_topic = topics.image(topic) if parts.image is not None else None
    return Forward(target, parts, topic, image_topic, route.paths, route.coarsen)


def _forwarded(step: Forward, dump: dict[str, Any]) -> Outcome:
    parts = step.parts
    copies: tuple[Copy, ...] = (
        Copy(parts.event, step.topic, _project(dump, step.paths, step.coarsen)),
    )
    if step.image_topic is not None and parts.image is not None:
        copies += (Copy(parts.image, step.image_topic, _image_payload(dump)),)
    return _outcome(step.target, parts, copies)


def _outcome(target: Target, parts: Parts, copies: tuple[Copy, ...]) -> Outcome:
    return Outcome(
        destination=target.destination,
        kind=target.kind,
        provision=target.provision,
        forwarded=True,
        detail=parts.detail,
        copies=copies,
        clause=parts.event.clause,
        untrue=parts.untrue,
    )


def _project(
    dump: dict[str, Any], paths: tuple[tuple[str, str | None], ...], coarsen: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for top, sub in paths:
        value = dump[top]
        if sub is None:
            # Copy nested objects so no two payloads share a mutable dict.
            out[top] = dict(value) if isinstance(value, dict) else value
        elif isinstance(value, dict):
            out.setdefault(top, {})[sub] = value.get(sub)
    if coarsen and "occurred_at" in out:
        out["occurred_at"] = _hour(out["occurred_at"])
    return out


def _image_payload(dump: dict[str, Any]) -> dict[str, Any]:
    """The image and the base fields that tie it to its event: nothing of the facts."""
    out = {name: dump[name] for name in BASE_FIELDS}
    out[IMAGE_FIELD] = dict(dump[IMAGE_FIELD])
    return out


def _hour(timestamp: str) -> str:
    # Models store occurred_at in UTC, so the JSON form is "YYYY-MM-DDTHH:MM:SS[.f]Z".
    return f"{timestamp[:13]}:00:00Z"


def _topic(target: Target, event: Event) -> str:
    et = event.type  # the type's value
    match target.kind:
        case DestinationKind.CLOUD:
            return topics.cloud(event.building_id, event.dwelling_id, et)
        case DestinationKind.GROUP:
            return topics.group(event.building_id, event.dwelling_id, et)
        case DestinationKind.PARTNER | DestinationKind.UNLOCK_SERVICE:
            assert target.service is not None
            return topics.partner(target.service.id, event.building_id, event.dwelling_id, et)
        case DestinationKind.CONTRACTOR:
            assert target.contractor is not None
            return topics.contractor(target.contractor.id, event.building_id, event.dwelling_id, et)
        case DestinationKind.ANALYTICS:
            return topics.analytics(et)
        case DestinationKind.STATISTICS:
            return topics.statistics(event.building_id)
        case DestinationKind.APP:
            return topics.app(event.building_id, event.dwelling_id, et)
    raise AssertionError(f"no topic for {target.kind}")
