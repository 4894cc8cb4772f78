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
from intercom_gateway.core.encoding import Envelopes, RoutePart, route_part
from intercom_gateway.core.outcomes import Decision, Outcome
from intercom_gateway.core.policy import DestinationKind, Provision
from intercom_gateway.core.records import DecisionRow, LedgerRow
from intercom_gateway.core.router import MEMO_SIZE, TEMPLATES_PER_MEMO
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
    # The kind and reason of every destination that does not (metrics).
    withheld: tuple[tuple[str, str], ...]
    statistic: Statistic | None = None  # counted when the event is committed
    analytics: Draft | None = None  # §5(5): held when committed, released per window

    @property
    def intents(self) -> tuple[LedgerRow, ...]:
        """The ledger rows written ahead of their publications."""
        return tuple(p.confirms for p in self.publications if p.confirms is not None)


def plan(
    decision: Decision,
    *,
    occurred_at: datetime,
    now: datetime,
    gateway_id: str,
    trace: tuple[tuple[str, str], ...] = (),
) -> Plan:
    """The publications and rows of ``decision``, decided at ``now``; ``trace``: the
    event's trace context properties, on every identified copy (``core.trace``).

    What the plan of a decision says but for the event's ids, time and payloads (which
    copies are published, their route's envelope part and properties, their ledger rows'
    other fields, the decision log's text) is its ``_Shape``: the same for every decision
    of one router template, so worked out once per template (``decide``'s); a decision
    made by hand, without one, gets its shape worked out on the spot.
    """
    shape = _shape_of(decision)
    event_id = str(decision.event_id)
    decision_id = str(decision.decision_id)
    envelopes = Envelopes(decision, now, decision_id=decision_id, event_id=event_id, trace=trace)
    outcomes = decision.outcomes
    publications: list[Publication] = []
    for send in shape.sends:
        copy = outcomes[send.outcome].copies[send.copy]
        assert copy.payload is not None and copy.topic is not None  # as its shape says
        payload, properties = envelopes.identified(send.route, copy.payload)
        ledger = send.ledger
        row = None if ledger is None else ledger.row(now, event_id, decision_id)
        publications.append(Publication(copy.topic, payload, properties, confirms=row))
    analytics = None
    if shape.analytics is not None:
        analytics = Draft.of(
            outcomes[shape.analytics],
            policy_version=decision.policy_version,
            gateway_id=gateway_id,
            building_id=decision.building_id,
        )
    statistic = None
    if shape.statistic:
        statistic = (decision.building_id, decision.event_type.value, occurred_at)
    return Plan(
        decision=None if shape.log is None else _row(decision, event_id, decision_id, shape.log),
        publications=tuple(publications),
        forwarded=shape.forwarded,
        withheld=shape.withheld,
        statistic=statistic,
        analytics=analytics,
    )


class _LedgerPart(NamedTuple):
    """A ledger row's fields that every decision of one template shares."""

    recipient: str
    recipient_kind: str
    third_party: bool
    building_id: str
    dwelling_id: str
    event_type: str
    items: tuple[str, ...]
    image: bool
    purposes: tuple[str, ...]
    rule_id: str
    policy_version: str
    part: str

    def row(self, at: datetime, event_id: str, decision_id: str) -> LedgerRow:
        return LedgerRow(
            at=at,
            recipient=self.recipient,
            recipient_kind=self.recipient_kind,
            third_party=self.third_party,
            building_id=self.building_id,
            dwelling_id=self.dwelling_id,
            event_id=event_id,
            event_type=self.event_type,
            items=self.items,
            image=self.image,
            purposes=self.purposes,
            rule_id=self.rule_id,
            policy_version=self.policy_version,
            decision_id=decision_id,
            part=self.part,
        )


class _Send(NamedTuple):
    """One publication of a decision: which copy, its route's part of the envelope, and
    its ledger row's shared fields when its provision is recorded."""

    outcome: int  # index in the decision's outcomes
    copy: int  # index in that outcome's copies
    route: RoutePart
    ledger: _LedgerPart | None


class _Shape(NamedTuple):
    sends: tuple[_Send, ...]  # in destination order, event copy first
    forwarded: tuple[str, ...]
    withheld: tuple[tuple[str, str], ...]
    statistic: bool  # counted in the statistics
    analytics: int | None  # the outcome whose copy is held for analytics (§5(5))
    log: str | None  # the decision log's outcomes; None: not stored (the consent gate)


def _shape(decision: Decision) -> _Shape:
    sends: list[_Send] = []
    forwarded: list[str] = []
    withheld: list[tuple[str, str]] = []
    statistic = False
    analytics: int | None = None
    for index, outcome in enumerate(decision.outcomes):
        if not outcome.forwarded:
            withheld.append((outcome.kind.value, outcome.reason.value if outcome.reason else "?"))
            continue
        forwarded.append(outcome.kind.value)
        if outcome.kind is DestinationKind.STATISTICS:
            statistic = True
        if outcome.payload is None or outcome.topic is None:
            continue
        if outcome.kind is DestinationKind.ANALYTICS:
            analytics = index
            continue
        # One publication per copy: the event's facts, and its image in a message of its
        # own (spec item 2). Each copy to a recipient has its own ledger row.
        ledger = outcome.provision in LEDGER
        for number, copy in enumerate(outcome.copies):
            if copy.payload is None or copy.topic is None:
                continue
            route = route_part(outcome, copy, decision.policy_version)
            part = _ledger_part(decision, outcome, copy) if ledger else None
            sends.append(_Send(index, number, route, part))
    return _Shape(
        sends=tuple(sends),
        forwarded=tuple(forwarded),
        withheld=tuple(withheld),
        statistic=statistic,
        analytics=analytics,
        log=logged_outcomes(decision) if decision.gate is None else None,
    )


# Shapes by the identity of their template, which each entry holds (so no id in a key is
# reused while it lives). Bounded as the router's templates are.
_SHAPES: dict[int, tuple[object, _Shape]] = {}
_SHAPES_SIZE = TEMPLATES_PER_MEMO * MEMO_SIZE


def _shape_of(decision: Decision) -> _Shape:
    template = decision.template
    if template is None:
        return _shape(decision)
    made = _SHAPES.get(id(template))
    if made is None or made[0] is not template:
        if len(_SHAPES) >= _SHAPES_SIZE:
            _SHAPES.clear()
        made = _SHAPES[id(template)] = (template, _shape(decision))
    return made[1]


# --- the decision log -------------------------------------------------------------------


def decision_row(decision: Decision) -> DecisionRow:
    return _row(
        decision, str(decision.event_id), str(decision.decision_id), logged_outcomes(decision)
    )


def _row(decision: Decision, event_id: str, decision_id: str, outcomes: str) -> DecisionRow:
    return DecisionRow(
        event_id=event_id,
        decision_id=decision_id,
        building_id=decision.building_id,
        dwelling_id=decision.dwelling_id,
        event_type=decision.event_type.value,
        decided_at=decision.decided_at,
        policy_version=decision.policy_version,
        consent_revision=decision.consent_revision,
        outcomes=outcomes,
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
    decision: Decision, outcome: Outcome, copy: Copy, now: datetime, event_id: str, decision_id: str
) -> LedgerRow:
    """The ledger row of one copy to a recipient: its own items, purposes and rule."""
    return _ledger_part(decision, outcome, copy).row(now, event_id, decision_id)


def _ledger_part(decision: Decision, outcome: Outcome, copy: Copy) -> _LedgerPart:
    tags = copy.tags
    return _LedgerPart(
        recipient=outcome.destination,
        recipient_kind=outcome.kind.value,
        third_party=outcome.third_party,
        building_id=decision.building_id,
        dwelling_id=decision.dwelling_id,
        event_type=decision.event_type.value,
        items=tags.fields,
        image="image" in tags.fields,
        purposes=tags.purposes,
        rule_id=tags.rule_id,
        policy_version=decision.policy_version,
        part=tags.part.value,
    )
