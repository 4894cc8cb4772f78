"""The decision: for one event and every destination, forwarded or withheld, and why.

``decide`` is a pure function of its arguments (spec item 9 needs the caller to hand it
the consent in force; this module cannot go stale). Everything that depends only on the
policy and the partner registry is compiled once into routes, so a decision is a few
dictionary lookups and one ``model_dump`` of the event.

A forwarded outcome publishes one copy per rule that allowed a part of the event: the
event's facts under the rule for its category, and its image, if the destination may
have it, in a copy of its own under the image rule (spec item 2; ``tags.py``). No copy
is produced whose tags ``tags.untrue_tags`` finds untrue.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic_core import to_json

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import EVENT_MODELS, Event, EventType, Forwarded, random_uuid
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IMAGE_FIELD,
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
    Provision,
    Rule,
)
from intercom_gateway.core.tags import IMAGE_COPY_FIELDS, Copy, Part, Tags, untrue_tags

__all__ = [
    "Copy",
    "Decision",
    "Envelopes",
    "Outcome",
    "Part",
    "Reason",
    "Tags",
    "Withhold",
    "decide",
    "user_properties",
]


class Reason(enum.StrEnum):
    """Why a destination did not get an event."""

    CONSENT_MISMATCH = "consent_mismatch"
    NOT_REGISTERED = "not_registered"
    POLICY_NOT_ACCEPTED = "policy_not_accepted"
    RETURN_HOME_OFF = "return_home_off"
    NO_RULE = "no_rule"
    UNLOCK_MODE_EXCLUDED = "unlock_mode_excluded"
    SERVICE_NOT_USED = "service_not_used"
    PROVISION_STOPPED = "provision_stopped"
    NOT_DECLARED = "not_declared"
    OTHER_UNLOCK_SERVICE = "other_unlock_service"
    PURPOSES_OPTED_OUT = "purposes_opted_out"
    NO_COMMON_PURPOSE = "no_common_purpose"
    # A copy whose tags would not hold for everything in it (tags.untrue_tags): only a
    # policy that skipped the loader's checks can get here, and then nothing is sent.
    UNTRUE_TAGS = "untrue_tags"


@dataclass(frozen=True, slots=True)
class Withhold:
    reason: Reason
    detail: str
    clause: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    destination: str  # "cloud", "group", "partner:<id>", "analytics", ...
    kind: DestinationKind
    provision: Provision  # the ledger records third_party; group is joint_use (§8)
    forwarded: bool
    detail: str
    # Forwarded: what to publish, the event's facts first, then its image when this
    # destination may have it, each a copy under exactly one rule. Empty when withheld.
    copies: tuple[Copy, ...] = ()
    reason: Reason | None = None
    clause: str | None = None  # withheld: the reason's; forwarded: the event copy's rule's
    # Forwarded, but a copy the rules would allow was not produced because its tags
    # would not hold for everything in it (tags.untrue_tags): why. Fail closed.
    untrue: str | None = None

    @property
    def third_party(self) -> bool:
        return self.provision is Provision.THIRD_PARTY

    @property
    def joint_use(self) -> bool:
        return self.provision is Provision.JOINT_USE

    @property
    def event_copy(self) -> Copy | None:
        """The copy of the event's facts (never with the image); None when withheld."""
        return self.copies[0] if self.copies else None

    @property
    def image_copy(self) -> Copy | None:
        """The copy of the event's image alone, when this destination gets one."""
        return self.copies[1] if len(self.copies) > 1 else None

    # The event copy's tags, topic and payload: what the event's facts carry. The image
    # has its own (``image_copy``); nothing here is a union of the two.

    @property
    def topic(self) -> str | None:
        return self.copies[0].topic if self.copies else None

    @property
    def payload(self) -> dict[str, Any] | None:
        return self.copies[0].payload if self.copies else None

    @property
    def rule_id(self) -> str | None:
        return self.copies[0].tags.rule_id if self.copies else None

    @property
    def purposes(self) -> tuple[str, ...]:
        return self.copies[0].tags.purposes if self.copies else ()

    @property
    def categories(self) -> tuple[str, ...]:
        return self.copies[0].tags.categories if self.copies else ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.copies[0].tags.fields if self.copies else ()

    def forwarded_message(
        self, decision: Decision, now: datetime, copy: Copy | None = None
    ) -> Forwarded:
        """The envelope of ``copy`` (default: the event copy) to publish on its topic;
        statistics go via the aggregator."""
        copy = copy or self.event_copy
        if not self.forwarded or copy is None or copy.payload is None:
            raise ValueError(f"{self.destination}: nothing to publish per event")
        tags = copy.tags
        analytics = self.kind is DestinationKind.ANALYTICS
        return Forwarded(
            # §5(5): an analytics copy must not be joinable to the identified copies,
            # so it carries neither the event id nor the shared decision id.
            decision_id=uuid.uuid4() if analytics else decision.decision_id,
            event_id=None if analytics else decision.event_id,
            gateway_id=decision.gateway_id,
            forwarded_at=now,
            destination=self.destination,
            purposes=tags.purposes,
            categories=tags.categories,
            policy_version=decision.policy_version,
            rule_id=tags.rule_id,
            clause=tags.clause,
            event=copy.payload,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: UUID
    gateway_id: str
    decided_at: datetime
    event_id: UUID
    event_type: EventType
    building_id: str
    dwelling_id: str
    policy_version: str
    consent_revision: int
    categories: tuple[str, ...]  # what the event contains, image included
    outcomes: tuple[Outcome, ...]
    # Set when consent itself stops the event (§7(1), §10): then the gateway must not
    # store it either, not just not forward it (spec item 7).
    gate: Withhold | None = None

    @property
    def forwarded(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.forwarded)

    def outcome(self, destination: str) -> Outcome:
        for candidate in self.outcomes:
            if candidate.destination == destination:
                return candidate
        raise KeyError(destination)

    def messages(self, now: datetime) -> list[tuple[str, Forwarded]]:
        """(topic, envelope) for every per-event publication, in destination order."""
        return [
            (c.topic, o.forwarded_message(self, now, c))
            for o in self.outcomes
            if o.forwarded
            for c in o.copies
            if c.payload is not None and c.topic is not None
        ]

    def explain(self) -> str:
        lines = [
            f"event {self.event_id} ({self.event_type.value}) of "
            f"{self.building_id}/{self.dwelling_id}, policy {self.policy_version}, "
            f"consent revision {self.consent_revision}"
        ]
        lines += [line for o in self.outcomes for line in _explain_lines(o)]
        return "\n".join(lines)


def _explain_lines(o: Outcome) -> list[str]:
    """One line per copy of a forwarded outcome (the image's is its own message)."""
    if not o.forwarded:
        reason = o.reason.value if o.reason else "?"
        clause = f" ({o.clause})" if o.clause else ""
        return [f"  {o.destination:<24} withheld   {reason}{clause}: {o.detail}"]
    lines = []
    for c in o.copies:
        head = f"{o.destination:<24} forwarded " if c.part is Part.EVENT else f"{'':<24} + image   "
        why = f"rule {c.rule_id} ({c.clause}); purposes {', '.join(c.purposes)}"
        lines.append(f"  {head} {why}; fields {', '.join(c.fields) or '-'}")
    if o.untrue:
        lines.append(f"  {'':<24} not sent   {o.untrue}")
    return lines


def user_properties(message: Forwarded) -> list[tuple[str, str]]:
    """MQTT 5 user properties of a forwarded message: one per purpose and category."""
    return [
        *(("purpose", p) for p in message.purposes),
        *(("category", c) for c in message.categories),
        ("policy_version", message.policy_version),
        ("rule_id", message.rule_id),
        ("decision_id", str(message.decision_id)),
    ]


# --- Encoded copies -------------------------------------------------------------------


class Envelopes:
    """The bytes and user properties of one decision's per-event copies.

    The same bytes as ``outcome.forwarded_message(decision, now).model_dump_json()``
    and the same properties as ``user_properties`` plus the event id, without a
    ``Forwarded`` model per copy: what the copies of one event share is encoded once,
    and what depends only on the route (destination, purposes, rule...) once per
    process. tests/unit/test_envelopes.py holds the two paths to each other.
    """

    __slots__ = ("_common", "_decision", "_event_id", "_head", "decision_id")

    def __init__(self, decision: Decision, now: datetime) -> None:
        self._decision = decision
        self.decision_id = str(decision.decision_id)
        self._event_id = str(decision.event_id)
        self._head = _head(self.decision_id, f'"{self._event_id}"')
        self._common = b"".join(
            (
                b',"gateway_id":',
                to_json(decision.gateway_id),
                b',"forwarded_at":',
                to_json(now),
                b",",
            )
        )

    def encode(self, outcome: Outcome, copy: Copy) -> tuple[bytes, list[tuple[str, str]]]:
        """(payload, user properties) of ``copy``, one of ``outcome``'s copies."""
        if copy.payload is None or not outcome.forwarded:
            raise ValueError(f"{outcome.destination}: nothing to publish per event")
        tags = copy.tags
        route = _route_part_of(
            outcome.destination,
            tags.purposes,
            tags.categories,
            self._decision.policy_version,
            tags.rule_id,
            tags.clause,
        )
        if outcome.kind is DestinationKind.ANALYTICS:
            # §5(5): an analytics copy carries neither the event id nor the shared
            # decision id, so it cannot be joined to the identified copies; every other
            # copy names its event for de-duplication.
            decision_id = str(random_uuid())
            head = _head(decision_id, "null")
            properties = [*route.properties, ("decision_id", decision_id)]
        else:
            head = self._head
            properties = [
                *route.properties,
                ("decision_id", self.decision_id),
                ("event_id", self._event_id),
            ]
        body = (head, self._common, route.json, b',"event":', to_json(copy.payload), b"}")
        return b"".join(body), properties


def _head(decision_id: str, event_id: str) -> bytes:
    return f'{{"schema_version":1,"decision_id":"{decision_id}","event_id":{event_id}'.encode()


@dataclass(frozen=True, slots=True)
class _RoutePart:
    json: bytes  # "destination":...,"clause":... without braces
    properties: tuple[tuple[str, str], ...]  # all but the decision and event ids


# Bound of the caches of parts that do not depend on the event itself.
_STATIC_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_STATIC_CACHE_SIZE)
def _route_part_of(
    destination: str,
    purposes: tuple[str, ...],
    categories: tuple[str, ...],
    policy_version: str,
    rule_id: str,
    clause: str,
) -> _RoutePart:
    fields = {
        "destination": destination,
        "purposes": purposes,
        "categories": categories,
        "policy_version": policy_version,
        "rule_id": rule_id,
        "clause": clause,
    }
    properties = (
        *(("purpose", p) for p in purposes),
        *(("category", c) for c in categories),
        ("policy_version", policy_version),
        ("rule_id", rule_id),
    )
    return _RoutePart(to_json(fields)[1:-1], properties)


# --- Compiled routes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    destination: str
    kind: DestinationKind
    provision: Provision
    clause: str
    service: PartnerService | None = None


@dataclass(frozen=True, slots=True)
class _Route:
    """What the policy and registry alone say about one event type to one target."""

    withheld: Withhold | None = None
    category: str = ""
    image_category: str | None = None
    base: Rule | None = None
    base_purposes: tuple[str, ...] = ()
    image: Rule | None = None
    image_purposes: tuple[str, ...] = ()
    paths: tuple[tuple[str, str | None], ...] = ()
    field_names: tuple[str, ...] = ()  # paths as dotted names, sorted
    coarsen: bool = False
    aggregate: bool = False


@dataclass(frozen=True, slots=True)
class _Compiled:
    policy: Policy
    partners: PartnerRegistry
    targets: tuple[_Target, ...]
    # Per event type, in target order: the route, and its outcome when the policy and
    # registry alone withhold it (then only a service gate can say otherwise).
    plans: Mapping[EventType, tuple[tuple[_Target, _Route, Outcome | None], ...]]


_EVENT_TYPES = {t.value: t for t in EventType}
_CACHE: dict[tuple[int, int], _Compiled] = {}
_CACHE_SIZE = 16


def _compiled(policy: Policy, partners: PartnerRegistry) -> _Compiled:
    # Keyed by identity: the entry holds both objects, so their ids cannot be reused.
    key = (id(policy), id(partners))
    entry = _CACHE.get(key)
    if entry is None or entry.policy is not policy or entry.partners is not partners:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        entry = _compile(policy, partners)
        _CACHE[key] = entry
    return entry


def _targets(policy: Policy, partners: PartnerRegistry) -> tuple[_Target, ...]:
    def target(name: str, kind: DestinationKind, service: PartnerService | None = None) -> _Target:
        dest = policy.destinations[kind]
        return _Target(name, kind, dest.provision, dest.clause, service)

    services = sorted(partners.services, key=lambda s: (s.kind, s.id))
    return (
        target("cloud", DestinationKind.CLOUD),
        target("group", DestinationKind.GROUP),
        *(target(f"partner:{s.id}", s.destination_kind, s) for s in services),
        target("contractor", DestinationKind.CONTRACTOR),
        target("analytics", DestinationKind.ANALYTICS),
        target("statistics", DestinationKind.STATISTICS),
    )


def _compile(policy: Policy, partners: PartnerRegistry) -> _Compiled:
    targets = _targets(policy, partners)
    plans = {
        et: tuple(_plan(target, _route(target, et, policy)) for target in targets)
        for et in EventType
    }
    return _Compiled(policy, partners, targets, plans)


def _plan(target: _Target, route: _Route) -> tuple[_Target, _Route, Outcome | None]:
    return target, route, _withheld(target, route.withheld) if route.withheld else None


def _route(target: _Target, et: EventType, policy: Policy) -> _Route:
    mapping = policy.event_types[et]
    service = target.service
    if target.kind is DestinationKind.PARTNER and et is EventType.UNLOCK_MODE:
        # Spec item 4 holds even if a policy file were to say otherwise.
        return _static(
            Reason.UNLOCK_MODE_EXCLUDED, "partner services never get unlock mode", "§1(8)"
        )
    base = policy.rule_for(target.kind, mapping.category)
    if base is None:
        detail = f"no rule lets {mapping.category} go to {target.kind.value} (default deny)"
        return _static(Reason.NO_RULE, detail, target.clause)
    declared = service.fields_for(et) if service else None
    if service is not None and declared is None:
        return _static(
            Reason.NOT_DECLARED, f"{service.id} did not declare {et.value} events", "§2(5)"
        )
    base_purposes = _shared(base.purposes, service)
    if not base_purposes:
        detail = f"{target.destination} declared none of the purposes of rule {base.id}"
        return _static(Reason.NO_COMMON_PURPOSE, detail, base.clause)
    image = _image_rule(target, mapping.image_category, declared, policy)
    paths = _paths(base, et, declared)
    return _Route(
        category=mapping.category,
        image_category=mapping.image_category if image else None,
        base=base,
        base_purposes=base_purposes,
        image=image,
        image_purposes=_shared(image.purposes, service) if image else (),
        paths=paths,
        field_names=tuple(sorted(top if sub is None else f"{top}.{sub}" for top, sub in paths)),
        coarsen=base.coarsen_time == "hour",
        aggregate=base.fields == "aggregate",
    )


def _static(reason: Reason, detail: str, clause: str | None) -> _Route:
    return _Route(withheld=Withhold(reason, detail, clause))


def _shared(purposes: tuple[str, ...], service: PartnerService | None) -> tuple[str, ...]:
    """A service gets a purpose only if both the rule and the service name it."""
    kept = purposes if service is None else (p for p in purposes if p in service.purposes)
    return tuple(sorted(kept))


def _image_rule(
    target: _Target, category: str | None, declared: tuple[str, ...] | None, policy: Policy
) -> Rule | None:
    if category is None:
        return None
    if target.service is not None and IMAGE_FIELD not in (declared or ()):
        return None  # §3(3)/(4) and item 5: a partner gets an image only if it asked for it
    return policy.rule_for(target.kind, category)


def _paths(
    rule: Rule, et: EventType, declared: tuple[str, ...] | None
) -> tuple[tuple[str, str | None], ...]:
    known = EVENT_MODELS[et].model_fields
    if rule.fields == "aggregate":
        return ()
    if rule.fields == "all":
        wanted: tuple[str, ...] = tuple(known)
    elif rule.fields == "declared":
        wanted = (*BASE_FIELDS, *(declared or ()))
    else:
        wanted = rule.fields
    pairs = {_split(p) for p in wanted if p.split(".", 1)[0] in known}
    pairs = {(top, sub) for top, sub in pairs if top != IMAGE_FIELD}
    whole = {top for top, sub in pairs if sub is None}
    # A whole field makes its sub-keys redundant; whole fields first, then sub-keys.
    pairs = {(top, sub) for top, sub in pairs if sub is None or top not in whole}
    return tuple(sorted(pairs, key=lambda p: (p[1] is not None, p[0], p[1] or "")))


def _split(path: str) -> tuple[str, str | None]:
    top, _, sub = path.partition(".")
    return top, sub or None


# --- Deciding -----------------------------------------------------------------------


def decide(
    event: Event,
    consent: ConsentState,
    *,
    policy: Policy,
    partners: PartnerRegistry,
    gateway_id: str,
    decision_id: UUID,
    now: datetime,
) -> Decision:
    """Decide, for every destination, whether ``event`` flows there under ``consent``."""
    compiled = _compiled(policy, partners)
    et = _EVENT_TYPES[event.type]
    mapping = policy.event_types[et]
    # Not every event type has an image field; pydantic's __getattr__ miss is slow.
    has_image = event.__dict__.get(IMAGE_FIELD) is not None
    categories: tuple[str, ...] = (mapping.category,)
    if has_image and mapping.image_category:
        categories += (mapping.image_category,)
    gate = _consent_gate(event, et, consent, policy)
    if gate is not None:
        outcomes = tuple(_withheld(t, gate) for t in compiled.targets)
    else:
        ctx = _Context(event, et, consent, event.model_dump(mode="json"), has_image, policy)
        outcomes = tuple(_outcome(t, r, withheld, ctx) for t, r, withheld in compiled.plans[et])
    return Decision(
        decision_id=decision_id,
        gateway_id=gateway_id,
        decided_at=now,
        event_id=event.event_id,
        event_type=et,
        building_id=event.building_id,
        dwelling_id=event.dwelling_id,
        policy_version=policy.version,
        consent_revision=consent.revision,
        categories=tuple(sorted(categories)),
        outcomes=outcomes,
        gate=gate,
    )


def _consent_gate(
    event: Event, et: EventType, consent: ConsentState, policy: Policy
) -> Withhold | None:
    """Reasons that withhold the event from every destination at once."""
    if (consent.building_id, consent.dwelling_id) != (event.building_id, event.dwelling_id):
        return Withhold(Reason.CONSENT_MISMATCH, "consent of another dwelling", None)
    if not consent.registered:
        return Withhold(Reason.NOT_REGISTERED, "dwelling initialised: nothing is sent", "§7(1)①")
    accepted = consent.accepted_policy_version
    if accepted is None or not policy.known_version(accepted):
        return Withhold(Reason.POLICY_NOT_ACCEPTED, f"no known policy accepted ({accepted})", "§10")
    if policy.requires_reacceptance and accepted != policy.version:
        detail = f"policy {policy.version} must be accepted (accepted: {accepted})"
        return Withhold(Reason.POLICY_NOT_ACCEPTED, detail, "§10")
    if et is EventType.RETURN_HOME and not consent.return_home_enabled:
        return Withhold(Reason.RETURN_HOME_OFF, "return-home notification is off", "§7(1)②")
    return None


@dataclass(frozen=True, slots=True)
class _Context:
    event: Event
    event_type: EventType
    consent: ConsentState
    dump: dict[str, Any]
    has_image: bool
    policy: Policy


_Made = TypeVar("_Made")


def _once_per(
    cache: dict[tuple[Any, ...], tuple[object, Any]],
    owner: object,
    key: tuple[Any, ...],
    make: Callable[[], _Made],
) -> _Made:
    """``make()`` for ``owner`` (a compiled target or route) and ``key``, made once.

    Keyed by the owner's id, not its value: hashing a route's fields would cost more
    than what is saved. Ids are reused once an owner is freed, so a hit must be the
    very owner.
    """
    entry = cache.get((id(owner), *key))
    if entry is not None and entry[0] is owner:
        made: _Made = entry[1]
        return made
    if len(cache) >= _STATIC_CACHE_SIZE:
        cache.clear()
    made = make()
    cache[(id(owner), *key)] = (owner, made)
    return made


def _withheld(target: _Target, why: Withhold) -> Outcome:
    # A withheld outcome carries no per-event data: build each one once.
    return _once_per(
        _WITHHELD,
        target,
        (why,),
        lambda: Outcome(
            destination=target.destination,
            kind=target.kind,
            provision=target.provision,
            forwarded=False,
            detail=why.detail,
            reason=why.reason,
            clause=why.clause,
        ),
    )


@dataclass(frozen=True, slots=True)
class _Static:
    """What a forwarded outcome says that does not depend on the event itself."""

    event: Tags
    image: Tags | None  # None: no image for this destination, or none in the event
    detail: str
    untrue: str | None = None  # why an image copy the rules allow is not produced


_WITHHELD: dict[tuple[Any, ...], tuple[object, Any]] = {}
_STATICS: dict[tuple[Any, ...], tuple[object, Any]] = {}


def _static_parts(
    target: _Target, route: _Route, ctx: _Context, opted_out: tuple[str, ...]
) -> _Static | Withhold:
    """The copies' tags of a route for an event with or without image, under these opt-outs."""
    return _once_per(
        _STATICS,
        route,
        (ctx.has_image, opted_out),
        lambda: _tags(target.kind, route, ctx.has_image, opted_out, ctx.policy),
    )


def _tags(
    kind: DestinationKind,
    route: _Route,
    has_image: bool,
    opted_out: tuple[str, ...],
    policy: Policy,
) -> _Static | Withhold:
    """One copy per rule: the event's facts, and the image on its own (spec item 2)."""
    assert route.base is not None  # a route without a withheld reason has a rule
    base_purposes = tuple(p for p in route.base_purposes if p not in opted_out)
    if not base_purposes:
        detail = f"dwelling opted out of every purpose of rule {route.base.id}"
        return Withhold(Reason.PURPOSES_OPTED_OUT, detail, "§8")
    event = Tags(
        Part.EVENT,
        route.base.id,
        route.base.clause,
        base_purposes,
        (route.category,),
        route.field_names,
    )
    untrue = untrue_tags(event, kind=kind, policy=policy)
    if untrue is not None:
        return Withhold(Reason.UNTRUE_TAGS, f"event copy not produced: {untrue}", route.base.clause)
    detail = f"{route.base.id} for {', '.join(base_purposes)}"
    image_purposes = tuple(p for p in route.image_purposes if p not in opted_out)
    if not (has_image and route.image is not None and route.image_category and image_purposes):
        return _Static(event, None, detail)
    image = Tags(
        Part.IMAGE,
        route.image.id,
        route.image.clause,
        image_purposes,
        (route.image_category,),
        IMAGE_COPY_FIELDS,
    )
    untrue = untrue_tags(image, kind=kind, policy=policy)
    if untrue is not None:
        return _Static(event, None, detail, untrue=f"image copy not produced: {untrue}")
    detail += f"; the image on its own: {route.image.id} for {', '.join(image_purposes)}"
    return _Static(event, image, detail)


def _service_gate(service: PartnerService, ctx: _Context) -> Withhold | None:
    if service.id in ctx.consent.provision_stopped:
        return Withhold(
            Reason.PROVISION_STOPPED, f"resident stopped provision to {service.id}", "§8"
        )
    if service.id not in ctx.consent.services_used:
        return Withhold(Reason.SERVICE_NOT_USED, f"dwelling does not use {service.id}", "§5(1)②")
    named = ctx.dump.get("service_id")
    if ctx.event_type is EventType.UNLOCK_MODE and named != service.id:
        # §3(4): an unlock is the business of the service whose credentials were used.
        return Withhold(Reason.OTHER_UNLOCK_SERVICE, f"unlock mode used by {named}", "§3(4)")
    return None


def _outcome(target: _Target, route: _Route, withheld: Outcome | None, ctx: _Context) -> Outcome:
    if target.service is not None:
        why = _service_gate(target.service, ctx)
        if why is not None:
            return _withheld(target, why)
    if withheld is not None:
        return withheld  # the route's own, built when it was compiled
    static = _static_parts(target, route, ctx, ctx.consent.opted_out)
    if isinstance(static, Withhold):
        return _withheld(target, static)
    return _forwarded(target, route, ctx, static)


def _forwarded(target: _Target, route: _Route, ctx: _Context, static: _Static) -> Outcome:
    topic = _topic(target, ctx)
    if route.aggregate:
        copies: tuple[Copy, ...] = (Copy(static.event, topic, None),)
    else:
        copies = (Copy(static.event, topic, _project(ctx.dump, route.paths, route.coarsen)),)
        if static.image is not None:
            copies += (Copy(static.image, topics.image(topic), _image_payload(ctx.dump)),)
    return Outcome(
        destination=target.destination,
        kind=target.kind,
        provision=target.provision,
        forwarded=True,
        detail=static.detail,
        copies=copies,
        clause=static.event.clause,
        untrue=static.untrue,
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


def _topic(target: _Target, ctx: _Context) -> str:
    event, et = ctx.event, ctx.event.type  # the type's value, without the enum lookup
    match target.kind:
        case DestinationKind.CLOUD:
            return topics.cloud(event.building_id, event.dwelling_id, et)
        case DestinationKind.GROUP:
            return topics.group(event.building_id, event.dwelling_id, et)
        case DestinationKind.PARTNER | DestinationKind.UNLOCK_SERVICE:
            assert target.service is not None
            return topics.partner(target.service.id, event.building_id, event.dwelling_id, et)
        case DestinationKind.ANALYTICS:
            return topics.analytics(et)
        case DestinationKind.STATISTICS:
            return topics.statistics(event.building_id)
    raise AssertionError(f"no topic for {target.kind}")  # policy refuses contractor rules
