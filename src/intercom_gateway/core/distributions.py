"""Information distribution (§2(1), §3(1), §5(1)①): a contractor's notices and surveys.

A distribution contractor (``policy.Contractor``) publishes a notice or a survey for a
building, some of its dwellings or one dwelling on
``contractors/{c}/v1/{building}/distributions``. ``check_distribution`` turns it into a
trusted ``Distribution`` or a typed rejection (contractor registered, may address the
building, the dwellings exist); ``recipients`` says which panels get it: only those of
addressed dwellings that are registered (an initialised dwelling receives nothing,
§7(1)①). The panel's read receipts and answers (``notice_read``, ``survey_answer``
events) are checked against the stored distribution by ``check_usage`` before they are
decided: they must name a distribution of the contractor they name that reached this
dwelling (``unknown_distribution``). Pure: no store, no MQTT, the clock a parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, ValidationError, model_validator

from intercom_gateway.core.ingress import DeviceIndex, InputRejected, Limits, check_size
from intercom_gateway.core.models import (
    MAX_CHOICES,
    MAX_SURVEY_QUESTIONS,
    SCHEMA_VERSION,
    DeviceRole,
    Event,
    EventType,
    Ident,
    Model,
    NoticeReadEvent,
    RejectReason,
    ShortText,
    SurveyAnswerEvent,
    Timestamp,
)
from intercom_gateway.core.policy import PartnerRegistry
from intercom_gateway.core.topics import ContractorTopic

__all__ = [
    "USAGE_EVENTS",
    "Delivered",
    "Distribution",
    "DistributionAck",
    "DistributionRow",
    "PanelDistribution",
    "SurveyChoice",
    "SurveyQuestion",
    "check_distribution",
    "check_usage",
    "recipients",
]

# Sent by a panel only in answer to a distribution it received (the distribution
# simulator's, ``simulators.distribution``), never by the fleet on its own.
USAGE_EVENTS = frozenset({EventType.NOTICE_READ, EventType.SURVEY_ANSWER})
MAX_TITLE = 200
MAX_BODY = 4_000
MAX_DWELLINGS = 1_000  # addressed one by one; more is the whole building (``dwellings`` null)

Body = Annotated[str, Field(max_length=MAX_BODY)]


class SurveyChoice(Model):
    id: Ident
    label: ShortText


class SurveyQuestion(Model):
    id: Ident
    text: ShortText
    choices: tuple[SurveyChoice, ...] = Field(default=(), max_length=MAX_CHOICES)
    multiple: bool = False
    free_text: bool = Field(default=False, description="the resident may write an answer")


class Distribution(Model):
    """A notice or a survey, as the contractor sends it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    distribution_id: Ident
    kind: Literal["notice", "survey"]
    building_id: Ident
    dwellings: tuple[Ident, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DWELLINGS,
        description="the addressed dwellings; null: every dwelling of the building",
    )
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]
    body: Body
    questions: tuple[SurveyQuestion, ...] = Field(default=(), max_length=MAX_SURVEY_QUESTIONS)
    sent_at: Timestamp

    @model_validator(mode="after")
    def _questions_for_surveys(self) -> Distribution:
        if (self.kind == "survey") != bool(self.questions):
            raise ValueError("a survey has questions, a notice has none")
        ids = [q.id for q in self.questions]
        if len(set(ids)) < len(ids):
            raise ValueError("question ids repeat")
        return self


class PanelDistribution(Model):
    """What a dwelling panel receives on ``intercom/v1/{building}/{device}/distributions``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    distribution_id: Ident
    contractor_id: Ident
    contractor_name: str
    kind: Literal["notice", "survey"]
    building_id: Ident
    dwelling_id: Ident
    title: str
    body: str
    questions: tuple[SurveyQuestion, ...] = ()
    sent_at: AwareDatetime


class DistributionAck(Model):
    """The gateway's answer to the contractor: accepted, to how many panels, or refused."""

    schema_version: Literal[1] = SCHEMA_VERSION
    distribution_id: str | None = Field(description="null when the payload named none")
    contractor_id: str
    building_id: str
    accepted: bool
    panels: int = Field(ge=0, description="how many dwelling panels it was delivered to")
    reason: RejectReason | None = Field(default=None, description="why it was refused")
    detail: str = ""
    acknowledged_at: AwareDatetime


@dataclass(frozen=True, slots=True)
class DistributionRow:
    """A distribution as the store keeps it (§2(1)): what came, and to which panels it
    went; ``fingerprint`` tells a resend of the same distribution from a reused id."""

    contractor_id: str
    distribution_id: str
    building_id: str
    kind: str
    received_at: datetime
    fingerprint: str
    content: str  # the distribution's JSON, as validated
    panels: tuple[tuple[str, str], ...]  # (dwelling, dwelling panel) it was delivered to

    @property
    def delivered(self) -> Delivered:
        questions = json.loads(self.content).get("questions") or ()
        return Delivered(
            self.distribution_id,
            self.contractor_id,
            self.building_id,
            self.kind,
            frozenset(dwelling for dwelling, _ in self.panels),
            frozenset(str(q["id"]) for q in questions),
        )


@dataclass(frozen=True, slots=True)
class Delivered:
    """A stored distribution, as usage checks read it: whose, and which dwellings got it."""

    distribution_id: str
    contractor_id: str
    building_id: str
    kind: str
    dwellings: frozenset[str]
    questions: frozenset[str] = frozenset()  # a survey's question ids


def check_distribution(
    topic: ContractorTopic,
    payload: bytes,
    *,
    partners: PartnerRegistry,
    devices: DeviceIndex,
    limits: Limits,
) -> Distribution:
    """The distribution, trusted, or ``InputRejected`` with its typed reason."""
    check_size(payload, limits)
    contractor = partners.contractor(topic.contractor)
    if contractor is None:
        raise InputRejected(
            RejectReason.UNKNOWN_CONTRACTOR, f"contractor {topic.contractor} is not registered"
        )
    if not contractor.may_address(topic.building):
        raise InputRejected(
            RejectReason.BUILDING_NOT_ADDRESSABLE,
            f"contractor {contractor.id} may not address building {topic.building}",
        )
    try:
        distribution = Distribution.model_validate_json(payload)
    except ValidationError as error:
        first = error.errors()[0]
        reason = (
            RejectReason.MALFORMED_JSON
            if first["type"] == "json_invalid"
            else RejectReason.SCHEMA_VIOLATION
        )
        where = ".".join(str(part) for part in first["loc"]) or "top"
        raise InputRejected(reason, f"first error at {where}: {first['msg']}") from None
    if distribution.building_id != topic.building:
        raise InputRejected(
            RejectReason.TOPIC_MISMATCH,
            f"payload names building {distribution.building_id}, topic {topic.building}",
        )
    unknown = [
        d for d in distribution.dwellings or () if (topic.building, d) not in devices.dwellings
    ]
    if unknown:
        raise InputRejected(
            RejectReason.UNKNOWN_DWELLING,
            f"{len(unknown)} dwelling(s) not in building {topic.building}, first {unknown[0]}",
        )
    return distribution


def recipients(
    distribution: Distribution,
    *,
    devices: DeviceIndex,
    registered: Callable[[str, str], bool],
) -> dict[str, str]:
    """Dwelling → its dwelling panel, for the addressed dwellings that are ``registered``.

    §7(1)①: an initialised dwelling receives nothing.
    """
    building = distribution.building_id
    addressed = (
        set(distribution.dwellings)
        if distribution.dwellings is not None
        else {d for b, d in devices.dwellings if b == building}
    )
    panels: dict[str, str] = {}
    for device_id, entry in devices.devices.items():
        if entry.building != building or entry.role is not DeviceRole.DWELLING_PANEL:
            continue
        dwelling = entry.dwelling
        if dwelling is None or dwelling not in addressed or dwelling in panels:
            continue
        if registered(building, dwelling):
            panels[dwelling] = device_id
    return dict(sorted(panels.items()))


def for_panel(
    distribution: Distribution, *, contractor_id: str, contractor_name: str, dwelling: str
) -> PanelDistribution:
    return PanelDistribution(
        distribution_id=distribution.distribution_id,
        contractor_id=contractor_id,
        contractor_name=contractor_name,
        kind=distribution.kind,
        building_id=distribution.building_id,
        dwelling_id=dwelling,
        title=distribution.title,
        body=distribution.body,
        questions=distribution.questions,
        sent_at=distribution.sent_at,
    )


def fingerprint(payload: bytes) -> str:
    """The same distribution sent again (a redelivery) has the same fingerprint."""
    return hashlib.sha256(payload).hexdigest()


def check_usage(event: Event, delivered: Delivered | None) -> None:
    """§5(1)①: usage information must name a distribution of the contractor it names that
    reached this dwelling, of the matching kind; else ``unknown_distribution``."""
    if not isinstance(event, NoticeReadEvent | SurveyAnswerEvent):
        return
    problem = _usage_problem(event, delivered)
    if problem is not None:
        raise InputRejected(RejectReason.UNKNOWN_DISTRIBUTION, problem)


def _usage_problem(event: NoticeReadEvent | SurveyAnswerEvent, got: Delivered | None) -> str | None:
    name = event.distribution_id
    if got is None:
        return f"no distribution {name}"
    if got.contractor_id != event.contractor_id:
        return f"distribution {name} is not {event.contractor_id}'s"
    if got.building_id != event.building_id or event.dwelling_id not in got.dwellings:
        return f"distribution {name} was not delivered to {event.building_id}/{event.dwelling_id}"
    if isinstance(event, SurveyAnswerEvent) and got.kind != "survey":
        return f"distribution {name} is a {got.kind}, not a survey"
    if isinstance(event, SurveyAnswerEvent):
        unknown = sorted({a.question_id for a in event.answers} - got.questions)
        if unknown:
            return f"survey {name} has no question {unknown[0]}"
    return None
