"""The policy and the partner registry, compiled once into routes: a ``Router``.

Everything a decision needs that depends only on the policy and the registry (the
destinations, and for every event type the rule, purposes, fields and image rule of each
one) is worked out by ``Router.compile``. The router also remembers, bounded, what a
route says under a set of opt-outs (``parts``), the withheld outcomes it has built, and
per route and consent everything of a decision but the event's values (``Template``), so
that ``decide`` then costs one dictionary lookup, one ``model_dump`` of the event and the
projection of its copies' payloads. It is a value its owner holds (the gateway builds one
when it loads the policy), not a module-level cache.

``Router.flows`` reads the same routes and gates for the resident's notification of
purposes (§8): what it says flows is what ``decide`` forwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.gates import (
    consent_gate,
    intercom_app_gate,
    return_home_gate,
    service_gate,
)
from intercom_gateway.core.models import EVENT_MODELS, EventType
from intercom_gateway.core.outcomes import Outcome, Reason, Withhold
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IMAGE_FIELD,
    Contractor,
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
    Provision,
    Rule,
)
from intercom_gateway.core.tags import IMAGE_COPY_FIELDS, Part, Tags, untrue_tags

__all__ = ["Flow", "Forward", "Parts", "Route", "Router", "Target", "Template"]

# Bound of each of a router's memos of what does not depend on the event itself.
MEMO_SIZE = 4096
# Templates are per dwelling (their topics name it): a few per dwelling and event type,
# so their memo is larger (about 2 KB each).
TEMPLATES_PER_MEMO = 4


@dataclass(frozen=True, slots=True)
class Target:
    destination: str  # "cloud", "group", "partner:<id>", "analytics", ...
    kind: DestinationKind
    provision: Provision
    clause: str
    service: PartnerService | None = None
    contractor: Contractor | None = None  # §5(1)①: one target per registered contractor


@dataclass(frozen=True, slots=True)
class Route:
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
class Parts:
    """What a forwarded outcome says that does not depend on the event itself."""

    event: Tags
    image: Tags | None  # None: no image for this destination, or none in the event
    detail: str
    untrue: str | None = None  # why an image copy the rules allow is not produced


@dataclass(frozen=True, slots=True)
class Flow:
    """What of one event type flows to one destination under a consent: the copies
    ``decide`` makes of such an event carrying an image (tags only, no payload)."""

    target: Target
    event_type: EventType
    route: Route
    parts: Parts


@dataclass(frozen=True, slots=True)
class Forward:
    """A forwarded outcome of one route, but for the event's values: its copies' tags
    and topics, and which fields the event copy projects."""

    target: Target
    parts: Parts
    topic: str
    image_topic: str | None  # None: no image copy
    paths: tuple[tuple[str, str | None], ...]
    coarsen: bool


@dataclass(frozen=True, slots=True)
class Template:
    """What every decision of one route under one consent says, whatever the event's
    values: made by ``decide`` on the first such event, remembered by the router.

    Keyed by the consent object's identity (held here, so the id is not reused while
    remembered): a consent change makes a new ``ConsentState``, so the very next event
    finds no template and is decided afresh (spec item 9); a new policy makes a new
    router. ``steps`` is in target order: a finished ``Outcome`` (withheld, or
    statistics, which carry no payload) or a ``Forward`` to fill in with the event.
    """

    consent: ConsentState
    gate: Withhold | None
    categories: tuple[str, ...]
    steps: tuple[Outcome | Forward, ...]
    fills: bool  # some step is a Forward: the event's values are needed


# Per event type, in target order: the route, and its outcome when the policy and
# registry alone withhold it (then only a service gate can say otherwise).
Plan = tuple[tuple[Target, Route, Outcome | None], ...]


class Router:
    """The compiled routes of one policy and one partner registry."""

    __slots__ = (
        "_parts",
        "_templates",
        "_withheld",
        "memo_size",
        "partners",
        "plans",
        "policy",
        "targets",
    )

    def __init__(
        self,
        policy: Policy,
        partners: PartnerRegistry,
        targets: tuple[Target, ...],
        *,
        memo_size: int = MEMO_SIZE,
    ) -> None:
        self.policy = policy
        self.partners = partners
        self.targets = targets
        self.memo_size = memo_size
        # Keyed by the id of a target or route this router holds: hashing their fields
        # would cost more than what is saved, and they live as long as the router.
        self._withheld: dict[tuple[int, Withhold], Outcome] = {}
        self._parts: dict[tuple[int, bool, tuple[str, ...]], Parts | Withhold] = {}
        self._templates: dict[tuple[object, ...], Template] = {}
        self.plans: Mapping[EventType, Plan] = {
            et: tuple(self._plan(t, _route(t, et, policy)) for t in targets) for et in EventType
        }

    @classmethod
    def compile(
        cls, policy: Policy, partners: PartnerRegistry, *, memo_size: int = MEMO_SIZE
    ) -> Router:
        return cls(policy, partners, _targets(policy, partners), memo_size=memo_size)

    def _plan(self, target: Target, route: Route) -> tuple[Target, Route, Outcome | None]:
        return target, route, self.withheld(target, route.withheld) if route.withheld else None

    def withheld(self, target: Target, why: Withhold) -> Outcome:
        """``target``'s outcome withheld for ``why``: it carries no per-event data, so
        each one is built once."""
        key = (id(target), why)
        made = self._withheld.get(key)
        if made is None:
            if len(self._withheld) >= self.memo_size:
                self._withheld.clear()
            made = self._withheld[key] = Outcome(
                destination=target.destination,
                kind=target.kind,
                provision=target.provision,
                forwarded=False,
                detail=why.detail,
                reason=why.reason,
                clause=why.clause,
            )
        return made

    def parts(
        self, target: Target, route: Route, has_image: bool, opted_out: tuple[str, ...]
    ) -> Parts | Withhold:
        """The copies' tags of a route for an event with or without image, under these
        opt-outs."""
        key = (id(route), has_image, opted_out)
        made = self._parts.get(key)
        if made is None:
            if len(self._parts) >= self.memo_size:
                self._parts.clear()
            made = self._parts[key] = _tags(target.kind, route, has_image, opted_out, self.policy)
        return made

    def template(self, key: tuple[object, ...]) -> Template | None:
        """The template remembered under ``key`` (``decide`` makes the keys)."""
        return self._templates.get(key)

    def remember(self, key: tuple[object, ...], template: Template) -> Template:
        if len(self._templates) >= TEMPLATES_PER_MEMO * self.memo_size:
            self._templates.clear()
        self._templates[key] = template
        return template

    def flows(self, consent: ConsentState) -> Withhold | tuple[Flow, ...]:
        """Every (destination, event type) that flows under ``consent``, in target order
        and then event type order; or why nothing of the dwelling flows. Through the gates
        and routes ``decide`` uses; only the §3(4) unlock gate, which depends on the
        event, is left to the reader."""
        gate = consent_gate(consent, self.policy)
        if gate is not None:
            return gate
        types = [
            et
            for et in EventType
            if return_home_gate(et, consent) is None and intercom_app_gate(et, consent) is None
        ]
        flows = []
        for index, target in enumerate(self.targets):
            if target.service is not None and service_gate(target.service, consent):
                continue
            for et in types:
                _, route, withheld = self.plans[et][index]
                parts = None if withheld else self.parts(target, route, True, consent.opted_out)
                if isinstance(parts, Parts):
                    flows.append(Flow(target, et, route, parts))
        return tuple(flows)


def _targets(policy: Policy, partners: PartnerRegistry) -> tuple[Target, ...]:
    def target(name: str, kind: DestinationKind, service: PartnerService | None = None) -> Target:
        dest = policy.destinations[kind]
        return Target(name, kind, dest.provision, dest.clause, service)

    services = sorted(partners.services, key=lambda s: (s.kind, s.id))
    return (
        target("cloud", DestinationKind.CLOUD),
        target("group", DestinationKind.GROUP),
        *(target(f"partner:{s.id}", s.destination_kind, s) for s in services),
        *(_contractor(c, policy) for c in sorted(partners.contractors, key=lambda c: c.id)),
        target("analytics", DestinationKind.ANALYTICS),
        target("statistics", DestinationKind.STATISTICS),
        target("app", DestinationKind.APP),
    )


def _contractor(contractor: Contractor, policy: Policy) -> Target:
    """A contractor's own target, ``contractor:{id}``, as a partner's is ``partner:{id}``."""
    dest = policy.destinations[DestinationKind.CONTRACTOR]
    return Target(
        f"contractor:{contractor.id}",
        DestinationKind.CONTRACTOR,
        dest.provision,
        dest.clause,
        contractor=contractor,
    )


def _route(target: Target, et: EventType, policy: Policy) -> Route:
    mapping = policy.event_types[et]
    service = target.service
    if target.kind is DestinationKind.PARTNER and et is EventType.UNLOCK_MODE:
        # Spec item 4 holds even if a policy file were to say otherwise.
        return _static(
            Reason.UNLOCK_MODE_EXCLUDED, "partner services never get unlock mode", "§1(8)"
        )
    if service is not None and et is EventType.LOBBY_CALL:
        # §2(5) lists no §2(4) information for partners, whatever a policy file says.
        return _static(
            Reason.INTERCOM_APP_EXCLUDED, "partner services never get Intercom-app calls", "§2(5)"
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
    return Route(
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


def _static(reason: Reason, detail: str, clause: str | None) -> Route:
    return Route(withheld=Withhold(reason, detail, clause))


def _shared(purposes: tuple[str, ...], service: PartnerService | None) -> tuple[str, ...]:
    """A service gets a purpose only if both the rule and the service name it."""
    kept = purposes if service is None else (p for p in purposes if p in service.purposes)
    return tuple(sorted(kept))


def _image_rule(
    target: Target, category: str | None, declared: tuple[str, ...] | None, policy: Policy
) -> Rule | None:
    """§3(3)/(4), spec items 3 and 5: the rule an event's image goes to ``target`` under,
    if any: the policy's rule for the image's category, and for a partner only if it
    declared the image among the fields it needs."""
    if category is None:
        return None
    if target.service is not None and IMAGE_FIELD not in (declared or ()):
        return None
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


def _kept(purposes: tuple[str, ...], opted_out: tuple[str, ...]) -> tuple[str, ...]:
    """§8: a purpose the dwelling opted out of is removed, whatever the destination."""
    return tuple(p for p in purposes if p not in opted_out)


def _tags(
    kind: DestinationKind,
    route: Route,
    has_image: bool,
    opted_out: tuple[str, ...],
    policy: Policy,
) -> Parts | Withhold:
    """One copy per rule: the event's facts, and the image on its own (spec item 2)."""
    assert route.base is not None  # a route without a withheld reason has a rule
    base_purposes = _kept(route.base_purposes, opted_out)
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
    image_purposes = _kept(route.image_purposes, opted_out)
    if not (has_image and route.image is not None and route.image_category and image_purposes):
        return Parts(event, None, detail)
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
        return Parts(event, None, detail, untrue=f"image copy not produced: {untrue}")
    detail += f"; the image on its own: {route.image.id} for {', '.join(image_purposes)}"
    return Parts(event, image, detail)
