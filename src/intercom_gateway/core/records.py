"""The rows the gateway hands to the store: plain values, no SQL.

The decision log's rows, the provision ledger's, rejected input's and resident
requests'. They are made by the pure core (``core.plan``) and the services, and
written by ``store.sqlite``; nothing here knows how.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["DecisionRow", "LedgerRow", "RejectionRow", "RequestRow", "outcome_set_id"]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One provision of a dwelling's data to a recipient (APPI record, policy §8)."""

    at: datetime
    recipient: str
    recipient_kind: str
    third_party: bool  # False: joint use within the group (§4), logged but not a provision
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
    part: str = "event"  # "image": the event's image, a message of its own (tags.Part)

    def as_params(self) -> tuple[Any, ...]:
        return (
            self.at.isoformat(),
            self.recipient,
            self.recipient_kind,
            int(self.third_party),
            self.building_id,
            self.dwelling_id,
            self.event_id,
            self.event_type,
            _json_list(self.items),
            int(self.image),
            _json_list(self.purposes),
            self.rule_id,
            self.policy_version,
            self.decision_id,
            self.part,
        )


@functools.lru_cache(maxsize=4_096)
def _json_list(values: tuple[str, ...]) -> str:
    # A ledger row's items and purposes are a route's, repeated row after row.
    return json.dumps(values)


@dataclass(frozen=True, slots=True)
class DecisionRow:
    event_id: str
    decision_id: str
    building_id: str
    dwelling_id: str
    event_type: str
    decided_at: datetime
    policy_version: str
    consent_revision: int
    outcomes: str  # JSON text of gateway.decision_outcomes, as stored


@dataclass(frozen=True, slots=True)
class RejectionRow:
    at: datetime
    reason: str
    detail: str
    topic: str
    payload: str


@dataclass(frozen=True, slots=True)
class RequestRow:
    """A resident request (§8) and its outcome."""

    request_id: str
    at: datetime
    building_id: str
    dwelling_id: str
    kind: str
    via: str  # "cli" or "api": who carried the request to us
    params: dict[str, Any]
    outcome: str  # "done", "refused" or "failed"
    detail: dict[str, Any]


def outcome_set_id(outcomes: str) -> str:
    """The key of an outcome set: a hash of its text, the same in every process."""
    return hashlib.blake2b(outcomes.encode(), digest_size=12).hexdigest()
