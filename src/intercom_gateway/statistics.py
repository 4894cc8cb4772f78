"""Statistics per building and time window (§3(2), §5(2)②): counts, never identities.

The gateway adds every event whose statistics outcome was forwarded; ``flush`` hands
back the windows that have closed. A count below the minimum group size could point at
one dwelling, so it is left out; the aggregate says how many counts were left out but
not how many events they held (that number would give the hidden count back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from intercom_gateway import topics
from intercom_gateway.models import EventType, Forwarded
from intercom_gateway.policy import DestinationKind, Policy

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Aggregate:
    building_id: str
    window_start: datetime
    window_end: datetime
    counts: dict[str, int]  # event type → count, only counts >= min_group_size
    suppressed: int  # how many event types were left out for being too small
    min_group_size: int

    @property
    def topic(self) -> str:
        return topics.statistics(self.building_id)

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
        """The envelope to publish on ``self.topic``, naming the statistics rules applied."""
        categories = sorted({policy.event_types[EventType(t)].category for t in self.counts})
        rules = [policy.rule_for(DestinationKind.STATISTICS, c) for c in categories]
        applied = sorted({r.id: r.clause for r in rules if r is not None}.items())
        return Forwarded(
            decision_id=decision_id,
            event_id=None,
            gateway_id=gateway_id,
            forwarded_at=now,
            destination="statistics",
            purposes=("statistics",),
            categories=tuple(categories),
            policy_version=policy.version,
            rule_id="+".join(r for r, _ in applied) or "statistics",
            clause="; ".join(c for _, c in applied) or "§5(2)②",
            event=self.payload(),
        )


class StatisticsAggregator:
    """Counts events per building, window and event type; pure apart from its own state."""

    def __init__(self, *, window: timedelta = timedelta(hours=1), min_group_size: int = 5) -> None:
        if window <= timedelta(0):
            raise ValueError("window must be positive")
        if min_group_size < 1:
            raise ValueError("min_group_size must be at least 1")
        self.window = window
        self.min_group_size = min_group_size
        self._counts: dict[tuple[str, datetime], dict[str, int]] = {}
        self._closed_before = _EPOCH  # windows starting before this were flushed
        self.late = 0  # events for already flushed windows, dropped

    def window_start(self, moment: datetime) -> datetime:
        periods = (moment - _EPOCH) // self.window
        return _EPOCH + periods * self.window

    def add(self, building_id: str, event_type: EventType | str, occurred_at: datetime) -> bool:
        """Count one event; False if its window was already flushed (counted as late)."""
        start = self.window_start(occurred_at)
        if start < self._closed_before:
            # Re-opening a published window would publish a second, small count for it.
            self.late += 1
            return False
        bucket = self._counts.setdefault((building_id, start), {})
        key = str(EventType(event_type))
        bucket[key] = bucket.get(key, 0) + 1
        return True

    def flush(self, now: datetime) -> list[Aggregate]:
        """Aggregates of every window that ended at or before ``now``, oldest first."""
        current = self.window_start(now)
        due = sorted((k for k in self._counts if k[1] < current), key=_order)
        self._closed_before = max(self._closed_before, current)
        return [self._aggregate(key, self._counts.pop(key)) for key in due]

    def _aggregate(self, key: tuple[str, datetime], counts: dict[str, int]) -> Aggregate:
        building_id, start = key
        kept = {t: n for t, n in counts.items() if n >= self.min_group_size}
        return Aggregate(
            building_id=building_id,
            window_start=start,
            window_end=start + self.window,
            counts=kept,
            suppressed=len(counts) - len(kept),
            min_group_size=self.min_group_size,
        )

    @property
    def pending(self) -> int:
        """Events counted in windows not yet flushed."""
        return sum(sum(c.values()) for c in self._counts.values())


def _order(key: tuple[str, datetime]) -> tuple[datetime, str]:
    return key[1], key[0]
