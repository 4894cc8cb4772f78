"""Analytics copies, held per window and released as one shuffled batch (§5(5), issue 14).

An analytics copy names no dwelling, device or event, but published the moment its
event arrives it could still be joined to the identified copies by arrival time: the
cloud copy that arrived in the same millisecond is the one. So the gateway holds each
copy and releases the copies of a window together once the window has ended, in an
order drawn from the operating system's CSPRNG, with nothing in them finer than the
window:

- ``forwarded_at`` is the start of the window the copy was held in;
- ``occurred_at`` is truncated to the window or the hour, whichever is longer;
- ``decision_id`` is random, drawn when the copy is held (not when it is published): it
  ties to nothing, and a copy published again after a crash is the very same bytes, so
  a consumer can drop the second one by that id;
- no event id, in the envelope or the user properties.

The gateway holds a copy in the store batch that completes its event
(``store_analytics``), so a held copy is on record before the inbound event is
acknowledged; it restores the held copies at start, and a copy leaves the store only
once the broker acknowledged it. Pure apart from its own state, like ``statistics``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_json

from intercom_gateway.core.models import SCHEMA_VERSION, random_uuid
from intercom_gateway.core.outcomes import Outcome

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Draft:
    """What the decision says of one analytics copy, before the copy has a window."""

    topic: str
    destination: str
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    rule_id: str
    clause: str
    policy_version: str
    gateway_id: str
    event: dict[str, Any]
    building_id: str = ""  # whose partition holds the copy; never published

    @property
    def properties(self) -> tuple[tuple[str, str], ...]:
        """The MQTT user properties of the copy, but its decision id."""
        return (
            *(("purpose", p) for p in self.purposes),
            *(("category", c) for c in self.categories),
            ("policy_version", self.policy_version),
            ("rule_id", self.rule_id),
        )

    @classmethod
    def of(
        cls, outcome: Outcome, *, policy_version: str, gateway_id: str, building_id: str = ""
    ) -> Draft:
        if outcome.topic is None or outcome.payload is None or outcome.rule_id is None:
            raise ValueError(f"{outcome.destination}: no per-event copy to hold")
        return cls(
            topic=outcome.topic,
            destination=outcome.destination,
            purposes=outcome.purposes,
            categories=outcome.categories,
            rule_id=outcome.rule_id,
            clause=outcome.clause or "",
            policy_version=policy_version,
            gateway_id=gateway_id,
            event=outcome.payload,
            building_id=building_id,
        )


@dataclass(frozen=True, slots=True)
class HeldCopy:
    """One analytics copy as it will be published, and the window it waits for."""

    copy_id: str  # also the envelope's decision_id
    window_start: datetime
    window_end: datetime
    topic: str
    payload: bytes
    properties: tuple[tuple[str, str], ...]
    # The building of the event, kept in the store (not in the copy) so that the next
    # holder of its partition takes the copy up (gateway/partitioned.py); "" on copies
    # held before it was kept, which a single gateway's start takes up.
    building_id: str = ""


def floor_to(moment: datetime, period: timedelta) -> datetime:
    """The start of the ``period``-long interval, counted from the epoch, holding ``moment``."""
    return _EPOCH + ((moment - _EPOCH) // period) * period


def coarse_occurred_at(text: str, window: timedelta) -> str:
    """``occurred_at`` truncated to the window or the hour, whichever is longer."""
    moment = datetime.fromisoformat(text).astimezone(UTC)
    return _utc_text(floor_to(moment, max(window, _HOUR)))


# The policy has already truncated occurred_at to the hour: the values repeat.
_coarse_occurred_at = functools.lru_cache(maxsize=1_024)(coarse_occurred_at)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AnalyticsWindows:
    """The held copies by window; which are due, and what became of each publish."""

    def __init__(self, *, window: timedelta, rng: random.Random | None = None) -> None:
        if window <= timedelta(0):
            raise ValueError("window must be positive")
        self.window = window
        # The order of a batch must say nothing about the order of the events.
        self._rng = rng or random.SystemRandom()
        self._held: dict[str, HeldCopy] = {}
        self._sending: set[str] = set()
        self.released = 0  # acknowledged by the broker, by this process

    def window_start(self, moment: datetime) -> datetime:
        return floor_to(moment, self.window)

    def hold(self, draft: Draft, now: datetime) -> HeldCopy:
        """The copy of ``draft``, held in the window that holds ``now``.

        Encoded here, once: a copy published again is the same bytes. The same bytes
        and properties as a ``Forwarded`` envelope and ``decision.user_properties``
        (tests/unit/test_analytics.py holds them together), without a model per copy:
        this runs for most events, on the path that completes them.
        """
        start = self.window_start(now)
        copy_id = str(random_uuid())
        event = draft.event
        occurred = event.get("occurred_at")
        if isinstance(occurred, str):
            event = {**event, "occurred_at": _coarse_occurred_at(occurred, self.window)}
        envelope = {
            "schema_version": SCHEMA_VERSION,
            "decision_id": copy_id,
            "event_id": None,
            "gateway_id": draft.gateway_id,
            "forwarded_at": start,
            "destination": draft.destination,
            "purposes": draft.purposes,
            "categories": draft.categories,
            "policy_version": draft.policy_version,
            "rule_id": draft.rule_id,
            "clause": draft.clause,
            "event": event,
        }
        held = HeldCopy(
            copy_id=copy_id,
            window_start=start,
            window_end=start + self.window,
            topic=draft.topic,
            payload=to_json(envelope),
            properties=(*draft.properties, ("decision_id", copy_id)),
            building_id=draft.building_id,
        )
        self._held[copy_id] = held
        return held

    def restore(self, copies: Iterable[HeldCopy]) -> None:
        """Take back what a previous process held; each keeps its own window."""
        for held in copies:
            self._held[held.copy_id] = held

    def any_due(self, now: datetime) -> bool:
        return any(
            c.window_end <= now and c.copy_id not in self._sending for c in self._held.values()
        )

    def due(self, now: datetime) -> list[HeldCopy]:
        """Every held copy whose window has ended by ``now`` and that is not being
        published, in shuffled order; each stays held until ``published``."""
        ready = [c for c in self._held.values() if c.window_end <= now]
        ready = [c for c in ready if c.copy_id not in self._sending]
        self._rng.shuffle(ready)
        self._sending.update(c.copy_id for c in ready)
        return ready

    def next_release(self, now: datetime) -> datetime:
        """When the window that holds ``now`` ends: the next time a copy can be due."""
        return self.window_start(now) + self.window

    def published(self, copy_id: str) -> None:
        """The broker acknowledged the copy."""
        if self._held.pop(copy_id, None) is not None:
            self.released += 1
        self._sending.discard(copy_id)

    def unsent(self, copy_id: str) -> None:
        """The publish failed (a lost connection): the next ``due`` hands it back."""
        self._sending.discard(copy_id)

    def abandon(self, copy_id: str) -> None:
        """The broker refused it; sending it again from this process cannot help. It
        stays in the store, so a restart tries again."""
        self._held.pop(copy_id, None)
        self._sending.discard(copy_id)

    @property
    def held(self) -> int:
        """Copies held, released but not yet acknowledged included."""
        return len(self._held)
