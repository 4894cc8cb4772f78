"""The privacy policy as data, and the registry of partner services.

A policy file (``data/policy-2026-04-01.yaml``) names the data categories of §2, the
purposes of §3, the destination kinds and the rules that let a category flow to a
destination kind for some purposes. Nothing flows without a rule (default deny). The
loader checks the file against the guarantees the spec makes unconditional, so a
careless edit cannot, say, send images to analytics: such a file is refused.

The partner registry (``data/partners.sample.yaml``) declares each partner service, the
event kinds and fields it needs and the purposes it uses them for.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from intercom_gateway.core.models import EVENT_MODELS, EventType, Ident
from intercom_gateway.errors import ConfigError

DEFAULT_POLICY_FILE = "policy-2026-04-01.yaml"
SAMPLE_PARTNERS_FILE = "partners.sample.yaml"

# Fields every event a destination receives keeps, whatever a partner declared
# (spec item 5): without them the message cannot be attributed or deduplicated.
BASE_FIELDS: tuple[str, ...] = (
    "schema_version",
    "event_id",
    "type",
    "building_id",
    "dwelling_id",
    "occurred_at",
)
IMAGE_FIELD = "image"

Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
FieldPath = Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)?$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DestinationKind(enum.StrEnum):
    CLOUD = "cloud"  # §1(4): the operator's server and its own services (§1(7))
    GROUP = "group"  # §4: joint use within the group
    PARTNER = "partner"  # §1(8): partner services, never unlock mode
    UNLOCK_SERVICE = "unlock_service"  # §1(8)/§3(4): services that use unlock mode
    CONTRACTOR = "contractor"  # §5(1)①: distribution contractors, distribution info only
    ANALYTICS = "analytics"  # §5(5): de-identified operation history
    STATISTICS = "statistics"  # §5(2)②: aggregates only
    APP = "app"  # §2(4): the Intercom app, an own service; lobby calls while linked (§7(2))


class Provision(enum.StrEnum):
    """How a destination stands under APPI; the ledger records ``third_party`` ones (§8)."""

    OWN_USE = "own_use"
    JOINT_USE = "joint_use"
    THIRD_PARTY = "third_party"
    DE_IDENTIFIED = "de_identified"
    AGGREGATE = "aggregate"


# Spec item 3: images never reach these kinds, whatever a policy file says.
NO_IMAGE_KINDS = frozenset(
    {
        DestinationKind.GROUP,
        DestinationKind.CONTRACTOR,
        DestinationKind.ANALYTICS,
        DestinationKind.STATISTICS,
        DestinationKind.APP,  # §3(3) names LiFIT and partner services for images, not the app
    }
)
SERVICE_KINDS = frozenset({DestinationKind.PARTNER, DestinationKind.UNLOCK_SERVICE})
# §2(1), §3(1), §4, §5(1)①: distribution information goes to the operator's server, to
# the contractor whose distribution it is, and into statistics as aggregates; never to
# partners, unlock-mode services, group joint use or analytics, whatever a file says.
DISTRIBUTION_KINDS = frozenset(
    {DestinationKind.CLOUD, DestinationKind.CONTRACTOR, DestinationKind.STATISTICS}
)

# Spec item 6: what identifies a dwelling, a person or a handset, or is free text.
IDENTIFYING_FIELDS = frozenset(
    {
        "event_id",
        "seq",
        "building_id",
        "dwelling_id",
        "device",
        "device.id",
        "call_id",
        "zone",
        "image",
        "key_nickname",
        "message",
        "service_id",
        "box_number",
        # part A: §2(3)① ids, free text and open-ended key/value maps, §2(4) the
        # handset's identity (§5(5))
        "instruction_id",
        "scene_id",
        "name",
        "error",
        "parameters",
        "values",
        "linked_device",
        "linked_device.model",
        "handset",
        "handset.uuid",
        "handset.app_version",
    }
)

FieldSelection = Literal["all", "declared", "aggregate"] | tuple[FieldPath, ...]


class Category(_Frozen):
    """A data category of §2."""

    clause: str
    description: str
    image: bool = False
    # §2(1): distribution information, kept apart from §3(2) (``DISTRIBUTION_KINDS``).
    distribution: bool = False


class Purpose(_Frozen):
    """A purpose of use of §3."""

    clause: str
    description: str
    # §8: the resident may suspend these uses beyond the baseline.
    opt_out: bool = False
    # §3(3)/(4): purposes that exist only for images; §3(2) purposes exclude images.
    images: bool = False
    # §3(1): the purposes of distribution information, and the only ones it may serve.
    distribution: bool = False


class EventMapping(_Frozen):
    category: Key
    image_category: Key | None = None


class Destination(_Frozen):
    provision: Provision
    clause: str
    description: str


class Rule(_Frozen):
    """Lets ``categories`` flow to ``destination`` for ``purposes``, keeping ``fields``.

    ``fields``: ``all`` (every field but the image), ``declared`` (base fields plus what
    the partner declared), ``aggregate`` (counted, never forwarded per event), or a list
    of field paths (``device.role`` keeps one key of a nested object).
    """

    id: RuleId
    clause: str
    destination: DestinationKind
    categories: tuple[Key, ...] = Field(min_length=1)
    purposes: tuple[Key, ...] = Field(min_length=1)
    fields: FieldSelection = "all"
    coarsen_time: Literal["hour"] | None = None
    description: str = ""


class Policy(_Frozen):
    version: str = Field(min_length=1)
    effective: str
    supersedes: tuple[str, ...] = ()
    # §10: when true, a dwelling that accepted an older version gets nothing forwarded.
    requires_reacceptance: bool = False
    categories: dict[Key, Category]
    purposes: dict[Key, Purpose]
    event_types: dict[EventType, EventMapping]
    destinations: dict[DestinationKind, Destination]
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        problems = [*_reference_problems(self), *_guarantee_problems(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # No cached indexes on the model: ``model_copy(update=...)`` would carry a stale one.
    # The hot path (router.py) compiles its own index once per policy object.
    def rule_for(self, kind: DestinationKind, category: str) -> Rule | None:
        """The one rule that covers (destination kind, category), or None: default deny."""
        for rule in self.rules:
            if rule.destination is kind and category in rule.categories:
                return rule
        return None

    @property
    def opt_out_purposes(self) -> frozenset[str]:
        return frozenset(k for k, p in self.purposes.items() if p.opt_out)

    def known_version(self, version: str) -> bool:
        return version == self.version or version in self.supersedes


def _reference_problems(policy: Policy) -> Iterator[str]:
    missing_types = set(EventType) - set(policy.event_types)
    if missing_types:
        yield f"event types without a category: {sorted(missing_types)}"
    missing_kinds = set(DestinationKind) - set(policy.destinations)
    if missing_kinds:
        yield f"destination kinds not described: {sorted(missing_kinds)}"
    for et, mapping in policy.event_types.items():
        for cat in filter(None, (mapping.category, mapping.image_category)):
            if cat not in policy.categories:
                yield f"event type {et.value}: unknown category {cat!r}"
        if mapping.image_category and not policy.categories[mapping.image_category].image:
            yield f"event type {et.value}: {mapping.image_category!r} is not an image category"
    seen_ids: set[str] = set()
    seen_pairs: set[tuple[DestinationKind, str]] = set()
    for rule in policy.rules:
        if rule.id in seen_ids:
            yield f"duplicate rule id {rule.id!r}"
        seen_ids.add(rule.id)
        for cat in rule.categories:
            if (rule.destination, cat) in seen_pairs:
                yield f"rule {rule.id}: another rule already covers {cat} to {rule.destination}"
            seen_pairs.add((rule.destination, cat))
        yield from _unknown(rule, "category", rule.categories, policy.categories)
        yield from _unknown(rule, "purpose", rule.purposes, policy.purposes)


def _unknown(
    rule: Rule, what: str, names: tuple[str, ...], known: Mapping[str, Any]
) -> Iterator[str]:
    for name in names:
        if name not in known:
            yield f"rule {rule.id}: unknown {what} {name!r}"


def _guarantee_problems(policy: Policy) -> Iterator[str]:
    """The spec's unconditional guarantees, checked so a policy file cannot break them."""
    unlock_category = policy.event_types[EventType.UNLOCK_MODE].category
    app_category = policy.event_types[EventType.LOBBY_CALL].category
    for rule in policy.rules:
        cats = [policy.categories[c] for c in rule.categories if c in policy.categories]
        purposes = [policy.purposes[p] for p in rule.purposes if p in policy.purposes]
        has_image = any(c.image for c in cats)
        if has_image and not all(c.image for c in cats):
            yield f"rule {rule.id}: mixes image and non-image categories"
        if has_image and rule.destination in NO_IMAGE_KINDS:
            yield f"rule {rule.id}: images may not go to {rule.destination} (§3(3)/(4))"
        if has_image and (rule.fields != (IMAGE_FIELD,) or not all(p.images for p in purposes)):
            yield f"rule {rule.id}: an image rule keeps fields [image] for image purposes only"
        if not has_image and any(p.images for p in purposes):
            yield f"rule {rule.id}: image-only purposes (§3(3)/(4)) on a non-image rule"
        if not has_image and isinstance(rule.fields, tuple) and IMAGE_FIELD in rule.fields:
            yield f"rule {rule.id}: only an image rule may keep the image field"
        if rule.destination is DestinationKind.PARTNER and unlock_category in rule.categories:
            yield f"rule {rule.id}: partner services never receive unlock mode (§1(8))"
        if rule.destination in SERVICE_KINDS and app_category in rule.categories:
            yield f"rule {rule.id}: §2(5) does not list §2(4) Intercom-app calls for partners"
        yield from _distribution_problems(rule, policy)
        yield from _field_mode_problems(rule)


def _distribution_problems(rule: Rule, policy: Policy) -> Iterator[str]:
    """§2(1), §3(1), §4, §5(1)①: distribution information serves §3(1) purposes only, goes
    to ``DISTRIBUTION_KINDS`` only, and is all a contractor gets."""
    kinds = [c.distribution for n in rule.categories if (c := policy.categories.get(n))]
    distribution = any(kinds)
    if distribution and not all(kinds):
        yield f"rule {rule.id}: mixes distribution and other categories (§2(1))"
    known = {n: p for n in rule.purposes if (p := policy.purposes.get(n))}
    others = sorted(n for n, p in known.items() if not p.distribution)
    if distribution and others:
        yield f"rule {rule.id}: distribution information serves §3(1) purposes only, not {others}"
    if distribution and rule.destination not in DISTRIBUTION_KINDS:
        yield f"rule {rule.id}: distribution information may not go to {rule.destination} (§4)"
    if not distribution and len(others) < len(known):
        yield f"rule {rule.id}: §3(1) purposes serve distribution information only"
    if not distribution and rule.destination is DestinationKind.CONTRACTOR:
        yield f"rule {rule.id}: a contractor gets distribution information only (§5(1)①)"


def _field_mode_problems(rule: Rule) -> Iterator[str]:
    is_stats = rule.destination is DestinationKind.STATISTICS
    if is_stats != (rule.fields == "aggregate"):
        yield f"rule {rule.id}: statistics, and only statistics, keep fields 'aggregate'"
    if rule.fields == "declared" and rule.destination not in SERVICE_KINDS:
        yield f"rule {rule.id}: only partner and unlock-service rules keep 'declared' fields"
    if rule.destination is DestinationKind.ANALYTICS and not isinstance(rule.fields, tuple):
        # §5(5): de-identification needs an explicit allow-list, never "all".
        yield f"rule {rule.id}: analytics rules list the fields they keep"
    if rule.destination is DestinationKind.ANALYTICS and isinstance(rule.fields, tuple):
        identifying = set(rule.fields) & IDENTIFYING_FIELDS
        if identifying:
            yield f"rule {rule.id}: analytics may not keep {sorted(identifying)} (§5(5))"


# --- Partner registry --------------------------------------------------------------


class PartnerService(_Frozen):
    """A partner or unlock-mode service (§1(8)) and what it needs (§2(5))."""

    id: Ident
    name: str
    kind: Literal["partner", "unlock_service"]
    operator: str = ""
    purposes: tuple[Key, ...] = Field(min_length=1)
    # Event kind → the fields it needs, beyond the base fields it always gets.
    events: dict[EventType, tuple[FieldPath, ...]]

    @model_validator(mode="after")
    def _declared_fields_exist(self) -> PartnerService:
        if self.kind == "partner" and EventType.UNLOCK_MODE in self.events:
            raise ValueError(
                f"partner {self.id!r} is of kind 'partner' but declares unlock_mode events; "
                "§1(8) excludes unlock-mode services from partner services: "
                "declare it with kind 'unlock_service'"
            )
        if EventType.LOBBY_CALL in self.events:
            raise ValueError(
                f"partner {self.id!r} declares lobby_call events; §2(5) does not list the "
                "§2(4) Intercom-app information among what partner services receive"
            )
        for event_type, fields in self.events.items():
            known = EVENT_MODELS[event_type].model_fields
            unknown = [f for f in fields if f.split(".", 1)[0] not in known]
            if unknown:
                raise ValueError(
                    f"partner {self.id!r}: {event_type.value} events have no field {unknown}"
                )
        return self

    @property
    def destination_kind(self) -> DestinationKind:
        return DestinationKind(self.kind)

    def fields_for(self, event_type: EventType) -> tuple[str, ...] | None:
        """Declared fields of ``event_type``, or None if the service does not take it."""
        return self.events.get(event_type)


class Contractor(_Frozen):
    """§5(1)①: a distribution contractor, which sends notices and surveys to the panels
    of the buildings it may address and gets the usage information of its own."""

    id: Ident
    name: str
    kind: Literal["management_association", "management_company", "api_user"]
    operator: str = ""
    buildings: tuple[Ident, ...] = Field(min_length=1)

    def may_address(self, building_id: str) -> bool:
        return building_id in self.buildings


class PartnerRegistry(_Frozen):
    services: tuple[PartnerService, ...] = ()
    contractors: tuple[Contractor, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> PartnerRegistry:
        # One broker account each, named by its id: a contractor's id is no service's.
        ids = [s.id for s in self.services] + [c.id for c in self.contractors]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate partner ids: {duplicates}")
        return self

    def get(self, partner_id: str) -> PartnerService | None:
        return next((s for s in self.services if s.id == partner_id), None)

    def contractor(self, contractor_id: str) -> Contractor | None:
        return next((c for c in self.contractors if c.id == contractor_id), None)

    def check_against(self, policy: Policy) -> list[str]:
        """Declared purposes the policy does not know; empty when the registry fits."""
        return [
            f"partner {s.id!r}: unknown purpose {p!r}"
            for s in self.services
            for p in s.purposes
            if p not in policy.purposes
        ]


# --- Loading ------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(path)) from exc


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        return Policy.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"invalid policy: {exc}", path=str(path)) from exc


def load_partners(path: str | Path, *, policy: Policy | None = None) -> PartnerRegistry:
    """Load a partner registry; with ``policy``, also refuse purposes it does not know."""
    path = Path(path)
    try:
        registry = PartnerRegistry.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"invalid partner registry: {exc}", path=str(path)) from exc
    problems = registry.check_against(policy) if policy is not None else []
    if problems:
        raise ConfigError("; ".join(problems), path=str(path))
    return registry


def data_path(name: str) -> Path:
    """A file shipped in the package's ``data`` directory."""
    return Path(str(resources.files("intercom_gateway").joinpath("data", name)))


@cache
def default_policy() -> Policy:
    """The packaged policy; cached so every caller shares one object (and its indexes)."""
    return load_policy(data_path(DEFAULT_POLICY_FILE))


def sample_partners() -> PartnerRegistry:
    return load_partners(data_path(SAMPLE_PARTNERS_FILE), policy=default_policy())
