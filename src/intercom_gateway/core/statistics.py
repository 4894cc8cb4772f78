"""Statistics per building and time window (§3(2), §5(2)②): counts, never identities.

The gateway adds every event whose statistics outcome was forwarded, when the event is
committed (the store writes the count in the same batch: ``store_statistics``), and
restores the open windows from the store at start. ``flush`` hands back the windows
that have closed; each stays "closing" until the broker acknowledged its aggregate, and
is handed back again if the publish failed. A count below the minimum group size could
point at one dwelling, so it is left out; the aggregate says how many counts were left
out but not how many events they held (that number would give the hidden count back).

A window whose every count was left out is still published, with no counts and no
categories, under the policy rule that counted its events (``statistics-counts``): it
says the window existed and how many counts were hidden, as any other aggregate does,
and its ``rule_id`` is a rule of the policy like every forwarded message's.

An aggregate's id (the envelope's ``decision_id``) is derived from its building and
window, so an aggregate published again after a crash (between the broker's
acknowledgement and the store's record of it) is recognisably the same one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID, uuid5

from intercom_gateway.core import topics
from intercom_gateway.core.models import EventType, Forwarded
from intercom_gateway.core.policy import DestinationKind, Policy

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The namespace of aggregate ids: uuid5 of this and the building and window.
AGGREGATE_NAMESPACE = UUID("6f1d2c3e-8a51-5b7e-9c0d-2b4e6a8f1c35")


class Window(NamedTuple):
    """One building's counting window, ``start`` inclusive, ``end`` exclusive."""

    building_id: str
    start: datetime
    end: datetime


def aggregate_id(window: Window) -> UUID:
    """The same id for the same building and window, in every process."""
    start, end = (_utc_text(m) for m in (window.start, window.end))
    return uuid5(AGGREGATE_NAMESPACE, f"{window.building_id}/{start}/{end}")


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Aggregate:
    building_id: str
    window_start: datetime
    window_end: datetime
    counts: dict[str, int]  # event type → count, only counts >= min_group_size
    suppressed: int  # how many event types were left out for being too small
    min_group_size: int
    counted: tuple[str, ...] = ()  # every event type counted, those left out included

    @property
    def topic(self) -> str:
        return topics.statistics(self.building_id)

    @property
    def window(self) -> Window:
        return Window(self.building_id, self.window_start, self.window_end)

    @property
    def id(self) -> UUID:
        return aggregate_id(self.window)

    def payload(self) -> dict[str, Any]:
        return {
            "building_id": self.building_id,
            "window_start": self.window_start.isoformat().replace("+00:00", "Z"),
            "window_end": self.window_end.isoformat().replace("+00:00", "Z"),
            "counts": dict(sorted(self.counts.items())),
            "suppressed": self.suppressed,
            "min_group_size": self.min_group_size,
        }

    def message(
        self, *, policy: Policy, gateway_id: str, decision_id: UUID, now: datetime
    ) -> Forwarded:
        """The envelope to publish on ``self.topic``, naming the statistics rules applied.

        The rules are those that counted the window's events, shown or left out; the
        categories are those of the counts it shows (none when every one was left out).
        """
        categories = sorted({_category(policy, t) for t in self.counts})
        counted = {_category(policy, t) for t in (*self.counted, *self.counts)}
        rules = [policy.rule_for(DestinationKind.STATISTICS, c) for c in sorted(counted)]
        applied = sorted({r.id: r.clause for r in rules if r is not None}.items())
        if not applied:
            raise ValueError(f"no statistics rule counted the events of {self.window}")
        return Forwarded(
            decision_id=decision_id,
            event_id=None,
            gateway_id=gateway_id,
            forwarded_at=now,
            destination="statistics",
            purposes=("statistics",),
            categories=tuple(categories),
            policy_version=policy.version,
            rule_id="+".join(r for r, _ in applied),
            clause="; ".join(c for _, c in applied),
            event=self.payload(),
        )


def _category(policy: Policy, event_type: str) -> str:
    return policy.event_types[EventType(event_type)].category


class StatisticsAggregator:
    """Counts events per building, window and event type; pure apart from its own state."""

    def __init__(
        self,
        *,
        window: timedelta = timedelta(hours=1),
        min_group_size: int = 5,
        delay: timedelta = timedelta(0),
    ) -> None:
        if window <= timedelta(0):
            raise ValueError("window must be positive")
        if min_group_size < 1:
            raise ValueError("min_group_size must be at least 1")
        if delay < timedelta(0):
            raise ValueError("delay must not be negative")
        self.window = window
        self.delay = delay  # a window closes this long after it ends
        self.min_group_size = min_group_size
        self._counts: dict[Window, dict[str, int]] = {}
        self._closing: dict[Window, Aggregate] = {}  # flushed, not yet acknowledged
        self._sending: set[Window] = set()
        self._closed_before = _EPOCH  # windows starting before this were flushed
        self.late = 0  # events for already flushed windows, dropped

    def window_start(self, moment: datetime) -> datetime:
        periods = (moment - _EPOCH) // self.window
        return _EPOCH + periods * self.window

    @property
    def closed_before(self) -> datetime:
        """Windows that start before this were flushed: they count nothing more."""
        return self._closed_before

    def add(
        self, building_id: str, event_type: EventType | str, occurred_at: datetime
    ) -> Window | None:
        """Count one event; the window it was counted in, or None if that window was
        already flushed (then it is counted as late)."""
        start = self.window_start(occurred_at)
        if start < self._closed_before:
            # Re-opening a published window would publish a second, small count for it.
            self.late += 1
            return None
        window = Window(building_id, start, start + self.window)
        bucket = self._counts.setdefault(window, {})
        key = str(EventType(event_type))
        bucket[key] = bucket.get(key, 0) + 1
        return window

    def restore(
        self, counts: Iterable[tuple[Window, str, int]], *, closed_before: datetime | None
    ) -> None:
        """Take back the open windows a previous process left in the store.

        A restored window keeps its own bounds, even if the window length has changed.
        """
        if closed_before is not None:
            self._closed_before = max(self._closed_before, closed_before)
        for window, event_type, count in counts:
            bucket = self._counts.setdefault(window, {})
            bucket[event_type] = bucket.get(event_type, 0) + count

    def flush(self, now: datetime) -> list[Aggregate]:
        """Aggregates of every window that ended ``delay`` or more before ``now``, oldest
        first.

        Also every earlier one whose publish failed (``unsent``); none that is being
        published now. Each stays closing until ``published`` or ``abandoned``.
        """
        cutoff = now - self.delay
        due = [w for w in self._counts if w.end <= cutoff]
        self._closed_before = max(self._closed_before, self.window_start(cutoff))
        for window in due:
            self._closing[window] = self._aggregate(window, self._counts.pop(window))
        ready = sorted((w for w in self._closing if w not in self._sending), key=_order)
        self._sending.update(ready)
        return [self._closing[w] for w in ready]

    def published(self, window: Window) -> None:
        """The broker acknowledged the window's aggregate."""
        self._closing.pop(window, None)
        self._sending.discard(window)

    def unsent(self, window: Window) -> None:
        """The publish failed (a lost connection): the next ``flush`` hands it back."""
        self._sending.discard(window)

    def abandon(self, window: Window) -> None:
        """The broker refused it; sending it again from this process cannot help."""
        self.published(window)

    @property
    def closing(self) -> int:
        """Windows flushed whose aggregate the broker has not yet acknowledged."""
        return len(self._closing)

    def _aggregate(self, window: Window, counts: dict[str, int]) -> Aggregate:
        kept = {t: n for t, n in counts.items() if n >= self.min_group_size}
        return Aggregate(
            building_id=window.building_id,
            window_start=window.start,
            window_end=window.end,
            counts=kept,
            suppressed=len(counts) - len(kept),
            min_group_size=self.min_group_size,
            counted=tuple(sorted(counts)),
        )

    @property
    def pending(self) -> int:
        """Events counted in windows not yet flushed."""
        return sum(sum(c.values()) for c in self._counts.values())


def _order(window: Window) -> tuple[datetime, str]:
    return window.start, window.building_id
