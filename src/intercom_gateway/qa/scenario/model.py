"""The scenario file format, as pydantic models (``intercom-gateway scenario schema``).

A scenario has three parts, written so a QA engineer needs none of our code:

- ``setup``: the buildings and dwellings (a generated ``fleet`` or named ``buildings``),
  the partner services (the sample registry, a file, or inline), each dwelling's starting
  consent, and gateway setting overrides;
- ``steps``, run in order (``at_ms`` holds a step until that long after the start): a
  panel ``send``s an event, a resident changes ``settings``, ``bad_input`` of a named class
  or ``raw`` topic and payload, ``wait`` a time, until processed, or until a message;
- ``expect``: a destination ``receives`` / ``not_receives`` a message that ``match``es,
  a ``ledger_row`` exists / ``no_ledger_row`` exists.

Steps are either keys of a one-key mapping (``- send: {...}``); the key picks the kind, so
an error names the kind the author meant rather than every kind it could have been.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from intercom_gateway.core.models import EventType, Ident, RejectReason, SettingsChangeBody
from intercom_gateway.core.policy import PartnerService
from intercom_gateway.qa.scenario.bad_inputs import BAD_INPUT_CLASSES as BAD_INPUT_CLASSES
from intercom_gateway.qa.scenario.bad_inputs import BadInputClass as BadInputClass

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
Scalar = str | int | float | bool | None
# Where the gateway publishes: the fixed destinations, one per partner or unlock-mode
# service, the rejected topic and the settings acknowledgement.
FIXED_DESTINATIONS = ("cloud", "group", "analytics", "statistics", "app", "rejected", "ack")
_DESTINATION = re.compile(
    rf"^({'|'.join(FIXED_DESTINATIONS)}|(partner|contractor):[a-z0-9][a-z0-9_-]{{0,47}})$"
)


def _destination(value: str) -> str:
    if not _DESTINATION.match(value):
        named = ", ".join(FIXED_DESTINATIONS)
        raise ValueError(f"a destination is one of {named}, partner:<id> or contractor:<id>")
    return value


Destination = Annotated[
    str,
    AfterValidator(_destination),
    WithJsonSchema({"type": "string", "pattern": _DESTINATION.pattern}),
]
Offset = Annotated[str, Field(pattern=r"^[+-]\d+(ms|s|m|h|d)$")]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def parse_offset(text: str) -> timedelta:
    """``+2s``, ``-90m``, ``+150ms`` as a signed timedelta."""
    match = re.fullmatch(r"([+-])(\d+)(ms|s|m|h|d)", text)
    if match is None:
        raise ValueError(f"not an offset: {text!r}")
    sign, amount, unit = match.groups()
    unit_name = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    delta = timedelta(**{unit_name[unit]: int(amount)})
    return -delta if sign == "-" else delta


# --- setup ---------------------------------------------------------------------------


class ConsentSpec(Model):
    """Where a dwelling starts; later changes are ``settings`` steps."""

    registered: bool = Field(default=True, description="false: initialised / moved out (§7(1)①)")
    return_home: bool = Field(default=True, description="return-home notification (§7(1)②)")
    services: tuple[Ident, ...] | None = Field(
        default=None, description="partner services the dwelling uses; default: setup.services"
    )
    policy_version: str = "2026-04-01"
    intercom_app: bool = Field(default=False, description="handsets linked to the app (§7(2))")


class FleetSpec(Model):
    """Generated buildings b001.. with dwellings d0001.. (the same in every building)."""

    buildings: int = Field(default=1, ge=1, le=20)
    dwellings: int = Field(default=4, ge=2, le=200)


class BuildingSpec(Model):
    id: Ident
    dwellings: tuple[Ident, ...] = Field(min_length=2)


class PartnersSpec(Model):
    """Partner services: a registry file (relative to the scenario) or inline."""

    file: Path | None = None
    services: tuple[PartnerService, ...] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PartnersSpec:
        if (self.file is None) == (self.services is None):
            raise ValueError("give either `file` or `services`")
        return self


class Setup(Model):
    """Without ``fleet`` or ``buildings``: one building b001 of dwellings d0001-d0004.

    Devices follow one naming: ``lobby-<building>``, ``box-<building>`` and
    ``panel-<building>-<dwelling>``.
    """

    fleet: FleetSpec | None = None
    buildings: tuple[BuildingSpec, ...] | None = None
    partners: Literal["sample"] | PartnersSpec = "sample"
    services: Literal["all"] | tuple[Ident, ...] = Field(
        default="all", description="services every dwelling uses unless its consent says"
    )
    consent: dict[str, ConsentSpec] = Field(
        default_factory=dict,
        description="per dwelling: 'b001/d0001', or 'd0001' for the first building",
    )
    gateway: dict[str, Scalar] = Field(
        default_factory=dict, description="gateway settings overrides (self-contained runs)"
    )

    @model_validator(mode="after")
    def _one_layout(self) -> Setup:
        if self.fleet is not None and self.buildings is not None:
            raise ValueError("give either `fleet` or `buildings`, not both")
        return self


# --- steps ---------------------------------------------------------------------------


class _Step(Model):
    at_ms: int | None = Field(
        default=None, ge=0, description="do not start before this many ms after the start"
    )


class EventSpec(Model):
    """An event from a panel: defaults filled in, then ``fields`` applied on top."""

    type: EventType
    dwelling: Ident
    building: Ident | None = Field(default=None, description="default: the first building")
    device: Ident | None = Field(
        default=None, description="default: the dwelling's panel, the lobby panel or the box"
    )
    fields: dict[str, Any] = Field(default_factory=dict, description="field overrides")
    omit: tuple[str, ...] = Field(default=(), description="default fields to leave out")
    occurred_at: Offset | None = Field(
        default=None, description="relative to the scenario's start, e.g. '+2s'; default: now"
    )
    name: Name | None = Field(default=None, alias="as", description="name to refer to it by")


class SendStep(_Step):
    send: EventSpec


class SettingsSpec(Model):
    dwelling: Ident
    building: Ident | None = None
    change: SettingsChangeBody
    name: Name | None = Field(default=None, alias="as")


class SettingsStep(_Step):
    settings: SettingsSpec


class BadInputSpec(Model):
    """A sample of ``intercom_gateway.simulators.bad_input``: a valid event of the first
    building's first dwelling panel, broken in one way."""

    kind: BadInputClass = Field(alias="class")
    name: Name | None = Field(default=None, alias="as")


class BadInputStep(_Step):
    bad_input: BadInputSpec


class RawSpec(Model):
    topic: str = Field(min_length=1)
    payload: str | None = None
    json_payload: Any = Field(default=None, alias="json")
    name: Name | None = Field(default=None, alias="as")

    @model_validator(mode="after")
    def _one_payload(self) -> RawSpec:
        if (self.payload is None) == (self.json_payload is None):
            raise ValueError("give either `payload` (text) or `json`")
        return self


class RawStep(_Step):
    raw: RawSpec


class Match(Model):
    """What a message must look like. Field paths are dotted (``device.role``) and are
    looked up in the forwarded event, the statistics aggregate, the rejection or the ack."""

    type: EventType | None = None
    event: Name | None = Field(default=None, description="a step's `as` name")
    building: Ident | None = None
    dwelling: Ident | None = None
    reason: RejectReason | None = Field(default=None, description="rejected only")
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    values: dict[str, Scalar] = Field(default_factory=dict)
    patterns: dict[str, str] = Field(
        default_factory=dict, description="field path -> regular expression it must contain"
    )
    purposes: tuple[str, ...] | None = Field(default=None, description="exactly this set")
    purposes_include: tuple[str, ...] = ()
    purposes_exclude: tuple[str, ...] = ()
    categories_include: tuple[str, ...] = ()
    rule: str | None = None
    policy_version: str | None = None


class WaitUntil(Model):
    destination: Destination
    match: Match = Match()


class WaitSpec(Model):
    ms: int | None = Field(default=None, ge=0, le=600_000)
    processed: bool = Field(default=False, description="until the gateway handled every step")
    until: WaitUntil | None = None
    timeout_ms: int = Field(default=5_000, gt=0, le=600_000)

    @model_validator(mode="after")
    def _one_kind(self) -> WaitSpec:
        if sum((self.ms is not None, self.processed, self.until is not None)) != 1:
            raise ValueError("give exactly one of `ms`, `processed: true` or `until`")
        return self


class WaitStep(_Step):
    wait: WaitSpec


def _key_of(kinds: tuple[str, ...]) -> Any:
    """A discriminator that picks the union member by which key the mapping has."""

    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            found = [key for key in kinds if key in value]
        else:
            found = [key for key in kinds if getattr(value, key, None) is not None]
        return found[0] if len(found) == 1 else None

    return pick


STEP_KINDS = ("send", "settings", "bad_input", "raw", "wait")
Step = Annotated[
    Annotated[SendStep, Tag("send")]
    | Annotated[SettingsStep, Tag("settings")]
    | Annotated[BadInputStep, Tag("bad_input")]
    | Annotated[RawStep, Tag("raw")]
    | Annotated[WaitStep, Tag("wait")],
    Discriminator(
        _key_of(STEP_KINDS),
        custom_error_type="step_kind",
        custom_error_message=f"a step needs exactly one of: {', '.join(STEP_KINDS)}",
    ),
]


# --- expectations --------------------------------------------------------------------


class _Expectation(Model):
    why: str = Field(default="", description="shown in the report")


class Receives(_Expectation):
    receives: Destination
    match: Match = Match()
    within_ms: int = Field(
        default=3_000,
        gt=0,
        le=120_000,
        description="after the matched step was sent (or after the last step)",
    )
    count: int | None = Field(default=None, ge=1, description="exactly this many matches")


class NotReceives(_Expectation):
    not_receives: Destination
    match: Match = Match()


class LedgerMatch(Model):
    """A row of the provision ledger (§8): when, to whom, whose dwelling, what, why."""

    event: Name | None = None
    building: Ident | None = None
    dwelling: Ident | None = None
    recipient: str | None = Field(default=None, description="e.g. partner:concierge")
    event_type: EventType | Literal["consent_notice"] | None = Field(
        default=None, description="consent_notice: a notice of withdrawal (spec item 11)"
    )
    items_include: tuple[str, ...] = ()
    items_exclude: tuple[str, ...] = ()
    purposes_include: tuple[str, ...] = ()
    third_party: bool | None = None


class LedgerRowExists(_Expectation):
    ledger_row: LedgerMatch


class NoLedgerRow(_Expectation):
    no_ledger_row: LedgerMatch


EXPECTATION_KINDS = ("receives", "not_receives", "ledger_row", "no_ledger_row")
Expectation = Annotated[
    Annotated[Receives, Tag("receives")]
    | Annotated[NotReceives, Tag("not_receives")]
    | Annotated[LedgerRowExists, Tag("ledger_row")]
    | Annotated[NoLedgerRow, Tag("no_ledger_row")],
    Discriminator(
        _key_of(EXPECTATION_KINDS),
        custom_error_type="expectation_kind",
        custom_error_message=f"an expectation needs exactly one of: {', '.join(EXPECTATION_KINDS)}",
    ),
]


class Scenario(Model):
    name: Name
    description: str = Field(min_length=1, description="what it shows; name the clause")
    setup: Setup = Setup()
    steps: tuple[Step, ...] = Field(min_length=1)
    expect: tuple[Expectation, ...] = Field(min_length=1)


Loc = tuple[str | int, ...]


def references(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Names used by expectations or waits that no step defines, and names defined twice,
    as (location in the file, message)."""
    problems: list[tuple[Loc, str]] = []
    defined: set[str] = set()
    for index, step in enumerate(scenario.steps):
        name = step_name(step)
        if name is not None and name in defined:
            problems.append((("steps", index), f"the name {name!r} is used twice"))
        if name is not None:
            defined.add(name)
        if isinstance(step, WaitStep) and step.wait.until is not None:
            used = step.wait.until.match.event
            if used is not None and used not in defined:
                loc: Loc = ("steps", index, "wait", "until", "match", "event")
                problems.append((loc, f"no earlier step is named {used!r}"))
    for index, expectation in enumerate(scenario.expect):
        used = _used_name(expectation)
        if used is not None and used not in defined:
            kind = next(k for k in EXPECTATION_KINDS if getattr(expectation, k, None) is not None)
            loc = ("expect", index, "match" if kind.endswith("receives") else kind, "event")
            problems.append((loc, f"no step is named {used!r}"))
    return problems


def step_name(step: Step) -> str | None:
    if isinstance(step, SendStep):
        return step.send.name
    if isinstance(step, SettingsStep):
        return step.settings.name
    if isinstance(step, BadInputStep):
        return step.bad_input.name
    if isinstance(step, RawStep):
        return step.raw.name
    return None


def _used_name(expectation: Expectation) -> str | None:
    if isinstance(expectation, Receives | NotReceives):
        return expectation.match.event
    if isinstance(expectation, LedgerRowExists):
        return expectation.ledger_row.event
    return expectation.no_ledger_row.event


def scenario_json_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema(by_alias=True)
    schema["$id"] = "https://intercom-gateway.example/schemas/scenario.json"
    schema["title"] = "intercom-gateway QA scenario"
    return schema
