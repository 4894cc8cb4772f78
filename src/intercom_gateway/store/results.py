"""What the store answers to §8 queries, and its resident tokens: frozen values, the
same from every backend.

Moments are ``datetime``s; ``as_dict`` gives the JSON-ready form the resident answers,
the CLI and the API have always shown (moments as ISO text, key order as the columns),
so their output does not depend on the backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One event's entry in the decision log: where it went, and why not elsewhere."""

    event_id: str
    decision_id: str
    building_id: str
    dwelling_id: str
    event_type: str
    decided_at: datetime
    policy_version: str
    consent_revision: int
    outcomes: tuple[dict[str, Any], ...]  # gateway.decision_outcomes, as logged

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "decision_id": self.decision_id,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "event_type": self.event_type,
            "decided_at": self.decided_at.isoformat(),
            "policy_version": self.policy_version,
            "consent_revision": self.consent_revision,
            "outcomes": list(self.outcomes),
        }


@dataclass(frozen=True, slots=True)
class Provision:
    """A provision record (APPI, §8) as stored: a ``LedgerRow`` with its id and status."""

    id: int
    at: datetime
    recipient: str
    recipient_kind: str
    third_party: bool
    building_id: str
    dwelling_id: str
    event_id: str
    event_type: str
    items: tuple[str, ...]
    image: bool
    purposes: tuple[str, ...]
    rule_id: str
    policy_version: str
    decision_id: str
    part: str
    status: str  # schema.LEDGER_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "recipient": self.recipient,
            "recipient_kind": self.recipient_kind,
            "third_party": self.third_party,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "items": list(self.items),
            "image": self.image,
            "purposes": list(self.purposes),
            "rule_id": self.rule_id,
            "policy_version": self.policy_version,
            "decision_id": self.decision_id,
            "part": self.part,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class RecipientSummary:
    """A dwelling's provision records to one recipient: how many, by status, and when."""

    recipient: str
    third_party: bool
    n: int
    first: datetime
    last: datetime
    intended: int
    delivered: int
    unconfirmed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "third_party": self.third_party,
            "n": self.n,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "intended": self.intended,
            "delivered": self.delivered,
            "unconfirmed": self.unconfirmed,
        }


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    rows: int
    by_status: Mapping[str, int]
    by_recipient: tuple[RecipientSummary, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "by_status": dict(self.by_status),
            "by_recipient": [r.as_dict() for r in self.by_recipient],
        }


@dataclass(frozen=True, slots=True)
class EventTypeSummary:
    event_type: str
    n: int
    first: datetime
    last: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "n": self.n,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class DecisionSummary:
    """A dwelling's decision log in short: how many events of each type, and when."""

    events: int
    by_event_type: tuple[EventTypeSummary, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "by_event_type": [t.as_dict() for t in self.by_event_type]}


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """Input the gateway rejected, without its payload (what a resident is shown)."""

    id: int
    at: datetime
    reason: str
    detail: str
    topic: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
        }


@dataclass(frozen=True, slots=True)
class Rejection(RejectedInput):
    """Rejected input as kept, its payload included."""

    payload: str

    def as_dict(self) -> dict[str, Any]:
        return {**RejectedInput.as_dict(self), "payload": self.payload}


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """A resident request on record (§8), as a disclosure shows it."""

    request_id: str
    at: datetime
    kind: str
    via: str
    params: dict[str, Any]
    outcome: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "via": self.via,
            "params": self.params,
            "outcome": self.outcome,
        }


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """One entry of a dwelling's consent history, applied or refused."""

    id: int
    building_id: str
    dwelling_id: str
    change_id: str | None  # None: set by the gateway (initial consent), not a message
    source: str
    change: str
    applied: bool
    detail: str
    revision: int
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "change_id": self.change_id,
            "source": self.source,
            "change": self.change,
            "applied": int(self.applied),  # as always shown: 1 or 0
            "detail": self.detail,
            "revision": self.revision,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TableCounts:
    """How many rows each of the store's main tables holds."""

    decisions: int
    ledger: int
    rejections: int
    completed: int
    consent_history: int

    def as_dict(self) -> dict[str, int]:
        return {
            "decisions": self.decisions,
            "ledger": self.ledger,
            "rejections": self.rejections,
            "completed": self.completed,
            "consent_history": self.consent_history,
        }


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure request deleted: decision log entries and rejected input."""

    decisions: int
    rejections: int

    def as_dict(self) -> dict[str, int]:
        return {"decisions": self.decisions, "rejections": self.rejections}


TokenState = Literal["active", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A resident token as listed: everything but the secret, which is never stored."""

    token_id: str
    building_id: str
    dwelling_id: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def via(self) -> str:
        """How a request made with this token is recorded (``requests.via``)."""
        return f"api:token:{self.token_id}"

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def listed(self, now: datetime) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "label": self.label,
            "state": self.state(now),
            **self.dates(),
        }

    def dates(self) -> dict[str, Any]:
        """Ids and dates only: what a resident's disclosure (§8) shows of the token."""
        return {
            "token_id": self.token_id,
            "created_at": _utc_text(self.created_at),
            "expires_at": _utc_text(self.expires_at),
            "revoked_at": _utc_text(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the resident tokens' audit trail: who issued or revoked which token."""

    at: datetime
    action: Literal["issue", "revoke"]
    token_id: str
    building_id: str
    dwelling_id: str
    actor: str
    detail: str

    def listed(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "action": self.action,
            "token_id": self.token_id,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "actor": self.actor,
            "detail": self.detail,
        }


def _utc_text(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None
