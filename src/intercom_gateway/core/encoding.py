"""The bytes of a decision's per-event copies: envelopes and MQTT 5 user properties.

What the copies of one event share is encoded once, and what depends only on the route
(destination, purposes, rule...) once per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from intercom_gateway.core.models import Forwarded, random_uuid
from intercom_gateway.core.outcomes import Decision, Outcome
from intercom_gateway.core.policy import DestinationKind
from intercom_gateway.core.tags import Copy

__all__ = ["Envelopes", "RoutePart", "route_part", "user_properties"]


def user_properties(message: Forwarded) -> list[tuple[str, str]]:
    """MQTT 5 user properties of a forwarded message: one per purpose and category."""
    return [
        *(("purpose", p) for p in message.purposes),
        *(("category", c) for c in message.categories),
        ("policy_version", message.policy_version),
        ("rule_id", message.rule_id),
        ("decision_id", str(message.decision_id)),
    ]


class Envelopes:
    """The bytes and user properties of one decision's per-event copies.

    The same bytes as ``outcome.forwarded_message(decision, now).model_dump_json()``
    and the same properties as ``user_properties`` plus the event id, without a
    ``Forwarded`` model per copy: what the copies of one event share is encoded once,
    and what depends only on the route (destination, purposes, rule...) once per
    process. tests/unit/test_envelopes.py holds the two paths to each other.
    """

    __slots__ = ("_common", "_decision", "_event_id", "_head", "_ids", "decision_id")

    def __init__(
        self,
        decision: Decision,
        now: datetime,
        *,
        decision_id: str = "",
        event_id: str = "",
        trace: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``decision_id`` and ``event_id``: the decision's ids as text, if the caller
        has them already (a UUID's text is not cached, and costs a microsecond).
        ``trace``: the event's trace context properties (``core.trace``), appended to
        the identified copies' properties (never to an analytics copy's, §5(5))."""
        self._decision = decision
        self.decision_id = decision_id or str(decision.decision_id)
        self._event_id = event_id or str(decision.event_id)
        self._ids = (("decision_id", self.decision_id), ("event_id", self._event_id), *trace)
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
        route = route_part(outcome, copy, self._decision.policy_version)
        if outcome.kind is DestinationKind.ANALYTICS:
            # §5(5): an analytics copy carries neither the event id nor the shared
            # decision id, so it cannot be joined to the identified copies; every other
            # copy names its event for de-duplication.
            decision_id = str(random_uuid())
            body = (_head(decision_id, "null"), self._common, route.json, b',"event":')
            payload = b"".join((*body, to_json(copy.payload), b"}"))
            return payload, [*route.properties, ("decision_id", decision_id)]
        return self.identified(route, copy.payload)

    def identified(
        self, route: RoutePart, payload: dict[str, Any]
    ) -> tuple[bytes, list[tuple[str, str]]]:
        """(payload, user properties) of a copy that names its event: every copy but
        analytics'. ``route`` is ``route_part`` of the copy, which a caller may keep."""
        body = (self._head, self._common, route.json, b',"event":', to_json(payload), b"}")
        return b"".join(body), [*route.properties, *self._ids]


def _head(decision_id: str, event_id: str) -> bytes:
    return f'{{"schema_version":1,"decision_id":"{decision_id}","event_id":{event_id}'.encode()


def route_part(outcome: Outcome, copy: Copy, policy_version: str) -> RoutePart:
    """What a copy's envelope says that depends only on its route."""
    tags = copy.tags
    return _route_part_of(
        outcome.destination,
        tags.purposes,
        tags.categories,
        policy_version,
        tags.rule_id,
        tags.clause,
    )


@dataclass(frozen=True, slots=True)
class RoutePart:
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
) -> RoutePart:
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
    return RoutePart(to_json(fields)[1:-1], properties)
