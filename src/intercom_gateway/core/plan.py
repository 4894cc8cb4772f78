"""The plan of one decision: what the gateway publishes and records for it.

``plan`` is the pure step between ``decide`` and the gateway's I/O. It turns a decision
into the publications (topic, payload bytes, user properties, QoS, retain, and the
ledger row each one confirms) and the rows to record (the decision log's row, the
ledger's intents), with what the event adds to the statistics and analytics windows.
The gateway only carries the plan out: it writes the rows, sends the publications in
order and acknowledges the message once they all have an outcome.

The bytes of every per-event copy come from one encoder (``Envelopes``); the pydantic
envelope model (``models.Forwarded``) is their test oracle (tests/unit/test_plan.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from intercom_gateway.core.analytics import Draft
from intercom_gateway.core.encoding import Envelopes
from intercom_gateway.core.outcomes import Decision, Outcome
from intercom_gateway.core.policy import DestinationKind, Provision
from intercom_gateway.core.records import DecisionRow, LedgerRow
from intercom_gateway.core.tags import Copy, Tags

__all__ = [
    "LEDGER",
    "Plan",
    "Publication",
    "Statistic",
    "decision_outcomes",
    "decision_row",
    "logged_outcomes",
    "plan",
    "provision_row",
]

# §8 and APPI: provisions to third parties are recorded; joint use (§4) is recorded too,
# marked as not a third-party provision.
LEDGER = frozenset({Provision.THIRD_PARTY, Provision.JOINT_USE})

Statistic = tuple[str, str, datetime]  # building, event type, when the event occurred


class Publication(NamedTuple):
    """One message to publish, and the ledger row it confirms once acknowledged.

    A named tuple rather than a frozen dataclass: a few are made per event, and a
    tuple is made several times faster.
    """

    topic: str
    payload: bytes
    properties: Sequence[tuple[str, str]] = ()
    qos: int = 1
    retain: bool = False
    # Written ahead of the publish as an intent, recorded as delivered on its
    # acknowledgement (gateway.ledger.WriteAhead). None: no provision to record.
    confirms: LedgerRow | None = None


class Plan(NamedTuple):
    """What the gateway does with one decided event."""

    # The decision log's row; None when consent stopped the event at the gateway
    # (§7(1)①②): then it is neither forwarded nor stored, not even as completed.
    decision: DecisionRow | None
    publications: tuple[Publication, ...]  # in destination order, event copy first
    forwarded: tuple[str, ...]  # the kind of every destination that gets it (metrics)
    withheld: tuple[str, ...]  # the reason of every destination that does not
    statistic: Statistic | None = None  # counted when the event is committed
    analytics: Draft | None = None  # §5(5): held when committed, released per window

    @property
    def intents(self) -> tuple[LedgerRow, ...]:
        """The ledger rows written ahead of their publications."""
        return tuple(p.confirms for p in self.publications if p.confirms is not None)


def plan(decision: Decision, *, occurred_at: datetime, now: datetime, gateway_id: str) -> Plan:
    """The publications and rows of ``decision``, decided at ``now``."""
    envelopes = Envelopes(decision, now)
    event_id = str(decision.event_id)
    event_type = decision.event_type.value  # an enum's .value is a Python-level lookup
    publications: list[Publication] = []
    forwarded: list[str] = []
    withheld: list[str] = []
    statistic: Statistic | None = None
    analytics: Draft | None = None
    for outcome in decision.outcomes:
        if not outcome.forwarded:
            withheld.append(outcome.reason.value if outcome.reason else "?")
            continue
        forwarded.append(outcome.kind.value)
        if outcome.kind is DestinationKind.STATISTICS:
            statistic = (decision.building_id, event_type, occurred_at)
        if outcome.payload is None or outcome.topic is None:
            continue
        if outcome.kind is DestinationKind.ANALYTICS:
            analytics = Draft.of(
                outcome,
                policy_version=decision.policy_version,
                gateway_id=gateway_id,
                building_id=decision.building_id,
            )
            continue
        # One publication per copy: the event's facts, and its image in a message of its
        # own (spec item 2). Each copy to a recipient has its own ledger row.
        ledger = outcome.provision in LEDGER
        for copy in outcome.copies:
            if copy.payload is None or copy.topic is None:
                continue
            payload, properties = envelopes.encode(outcome, copy)
            row = (
                provision_row(
                    decision, outcome, copy, now, event_id, envelopes.decision_id, event_type
                )
                if ledger
                else None
            )
            publications.append(Publication(copy.topic, payload, properties, confirms=row))
    return Plan(
        decision=decision_row(decision) if decision.gate is None else None,
        publications=tuple(publications),
        forwarded=tuple(forwarded),
        withheld=tuple(withheld),
        statistic=statistic,
        analytics=analytics,
    )


# --- the decision log -------------------------------------------------------------------


def decision_row(decision: Decision) -> DecisionRow:
    return DecisionRow(
        event_id=str(decision.event_id),
        decision_id=str(decision.decision_id),
        building_id=decision.building_id,
        dwelling_id=decision.dwelling_id,
        event_type=decision.event_type.value,
        decided_at=decision.decided_at,
        policy_version=decision.policy_version,
        consent_revision=decision.consent_revision,
        outcomes=logged_outcomes(decision),
    )


def decision_outcomes(decision: Decision) -> list[dict[str, Any]]:
    """Every destination's outcome as JSON-ready data (the decision log's content)."""
    return [_logged(o) for o in decision.outcomes]


def _logged(o: Outcome) -> dict[str, Any]:
    return _log_entry(_log_key(o))


def _log_key(o: Outcome) -> tuple[Any, ...]:
    return (
        o.destination,
        o.forwarded,
        o.purposes,
        o.fields,
        o.rule_id,
        o.clause,
        o.reason,
        o.detail,
        tuple(c.tags for c in o.copies),
        o.untrue,
    )


def _log_entry(key: tuple[Any, ...]) -> dict[str, Any]:
    destination, forwarded, purposes, fields, rule_id, clause, reason, detail, copies, untrue = key
    entry = {
        "destination": destination,
        "forwarded": forwarded,
        # The event copy's tags; every message the destination got is in "messages".
        "purposes": list(purposes),
        "fields": list(fields),
        "rule_id": rule_id,
        "clause": clause,
        "reason": reason.value if reason else None,
        "detail": detail,
    }
    if forwarded:
        entry["messages"] = [
            {
                "part": tags.part.value,
                "rule_id": tags.rule_id,
                "clause": tags.clause,
                "purposes": list(tags.purposes),
                "categories": list(tags.categories),
                "fields": list(tags.fields),
            }
            for tags in copies
        ]
    if untrue:
        entry["untrue"] = untrue  # a copy not produced: its tags would not hold
    return entry


@functools.lru_cache(maxsize=4_096)
def _log_text(key: tuple[Any, ...]) -> str:
    return json.dumps(_log_entry(key), separators=(",", ":"))


def logged_outcomes(decision: Decision) -> str:
    """``decision_outcomes`` as the decision log stores it: compact JSON text.

    A log entry has no payload or topic, so entries repeat from event to event: each
    distinct one is encoded once, and a row is their join, the same text as
    ``json.dumps`` of the whole list (tests/unit/test_decision_log.py).
    """
    return f"[{','.join([_log_text_of(o) for o in decision.outcomes])}]"


# An outcome's log entry, by its scalars and the identity of its copies' tags. The tags
# are the router's, made once per route (router.parts): comparing them by identity is
# what makes the lookup cheap (hashing a Tags hashes all its tuples, every event). Each
# entry holds its tags, so no id in a key can be reused while the entry lives.
_LOG_TEXTS: dict[tuple[Any, ...], tuple[tuple[Tags, ...], str]] = {}
_LOG_TEXTS_SIZE = 4_096


def _log_text_of(o: Outcome) -> str:
    tags = tuple([c.tags for c in o.copies])
    key = (o.destination, o.forwarded, o.reason, o.detail, o.clause, o.untrue, *map(id, tags))
    made = _LOG_TEXTS.get(key)
    if made is None:
        if len(_LOG_TEXTS) >= _LOG_TEXTS_SIZE:
            _LOG_TEXTS.clear()
        made = _LOG_TEXTS[key] = (tags, _log_text(_log_key(o)))
    return made[1]


# --- the provision ledger ---------------------------------------------------------------


def provision_row(
    decision: Decision,
    outcome: Outcome,
    copy: Copy,
    now: datetime,
    event_id: str,
    decision_id: str,
    event_type: str | None = None,
) -> LedgerRow:
    """The ledger row of one copy to a recipient: its own items, purposes and rule."""
    tags = copy.tags
    return LedgerRow(
        at=now,
        recipient=outcome.destination,
        recipient_kind=outcome.kind.value,
        third_party=outcome.third_party,
        building_id=decision.building_id,
        dwelling_id=decision.dwelling_id,
        event_id=event_id,
        event_type=decision.event_type.value if event_type is None else event_type,
        items=tags.fields,
        image="image" in tags.fields,
        purposes=tags.purposes,
        rule_id=tags.rule_id,
        policy_version=decision.policy_version,
        decision_id=decision_id,
        part=tags.part.value,
    )
