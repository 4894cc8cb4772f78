"""Statistics of the relay benchmark: pure functions of numbers, no I/O, no clock.

Kept apart from the processes that produce the numbers so that what a reported
figure means (which percentile, which part of a run counts as steady, when a run is
failed) is pinned down by unit tests.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated between closest ranks.

    The same definition as numpy's default, so figures can be checked by anyone.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of one run's end-to-end latencies, in milliseconds."""
    return {
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms),
        "count": float(len(latencies_ms)),
    }


@dataclass(frozen=True, slots=True)
class Spread:
    """Median of repeated measurements and how far the repetitions strayed from it."""

    median: float
    low: float
    high: float
    count: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: the honest width of the repetitions."""
        if self.median == 0:
            return 0.0
        return 100 * (self.high - self.low) / abs(self.median)

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "spread_pct": self.spread_pct,
            "n": float(self.count),
        }


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("spread of no values")
    return Spread(statistics.median(values), min(values), max(values), len(values))


def steady_rate(arrivals_ns: Sequence[int], *, low: float = 0.1, high: float = 0.9) -> float:
    """Deliveries per second between the ``low`` and ``high`` fractions of arrivals.

    Ramp-up (connections warming, the first batch) and the tail (the last events
    draining with nothing behind them) are left out: what remains is the rate the
    chain sustains while it is saturated.
    """
    if len(arrivals_ns) < 2:
        raise ValueError("a rate needs at least two arrivals")
    ordered = sorted(arrivals_ns)
    first = int((len(ordered) - 1) * low)
    last = int((len(ordered) - 1) * high)
    if last <= first:
        first, last = 0, len(ordered) - 1
    elapsed = (ordered[last] - ordered[first]) / 1e9
    if elapsed <= 0:
        return math.inf
    return (last - first) / elapsed


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one run delivered against what it should have; a loss fails the run."""

    expected_events: int
    delivered_events: int
    expected_copies: int
    delivered_copies: int
    duplicates: int = 0

    @property
    def lost_events(self) -> int:
        return max(0, self.expected_events - self.delivered_events)

    @property
    def lost_copies(self) -> int:
        return max(0, self.expected_copies - self.delivered_copies)

    @property
    def failed(self) -> bool:
        # Duplicates are allowed at QoS 1 (at least once); anything missing is not.
        return self.lost_events > 0 or self.lost_copies > 0

    @property
    def reason(self) -> str | None:
        if not self.failed:
            return None
        return (
            f"lost {self.lost_events} of {self.expected_events} events and "
            f"{self.lost_copies} of {self.expected_copies} copies"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected_events": self.expected_events,
            "delivered_events": self.delivered_events,
            "expected_copies": self.expected_copies,
            "delivered_copies": self.delivered_copies,
            "duplicates": self.duplicates,
            "lost_events": self.lost_events,
            "lost_copies": self.lost_copies,
            "failed": self.failed,
            "reason": self.reason,
        }


def cpu_per_10k(cpu_seconds: Mapping[str, float], events: int) -> dict[str, float]:
    """CPU seconds each process spent per 10,000 delivered events."""
    if events <= 0:
        raise ValueError("no events delivered")
    return {name: seconds * 10_000 / events for name, seconds in cpu_seconds.items()}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either side has no valid figure."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
