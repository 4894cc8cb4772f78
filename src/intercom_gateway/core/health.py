"""Whether a gateway is alive and making progress, from what it publishes retained.

``gateway/v1/status`` alone cannot tell: a process that hangs keeps its connection (until
keepalive runs out) and its ``online``, and a gateway whose loop is stuck says nothing.
So the verdict also reads the retained metrics: they must be fresh (published every
``interval`` seconds), and no message may have waited longer than ``stall_after``
seconds for its acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STALE_INTERVALS = 3  # metrics older than this many reporting periods: the loop is stuck
MIN_STALE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    reason: str


def verdict(
    status: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
    *,
    now: datetime,
    stall_after: float,
) -> Verdict:
    if not status:
        return Verdict(False, "no gateway status on this broker: is a gateway running here?")
    gateway = status.get("gateway_id", "?")
    if status.get("state") != "online":
        return Verdict(
            False, f"gateway {gateway} is {status.get('state')} since {status.get('since')}"
        )
    if not metrics:
        return Verdict(False, f"gateway {gateway} says online but has published no metrics")
    age = _age(metrics.get("at"), now)
    interval = float(metrics.get("interval") or 5.0)
    limit = max(STALE_INTERVALS * interval, MIN_STALE_SECONDS)
    if age is not None and age > limit:
        return Verdict(
            False, f"gateway {gateway} published nothing for {age:.0f} s: its loop is stuck or dead"
        )
    pending = int(metrics.get("pending") or 0)
    waited = float(metrics.get("oldest_pending_s") or 0.0)
    if pending and waited > stall_after:
        return Verdict(
            False,
            f"gateway {gateway} is not making progress: {pending} messages waiting, "
            f"the oldest for {waited:.0f} s",
        )
    return Verdict(True, f"gateway {gateway} is online and making progress")


def _age(stamp: Any, now: datetime) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return (now - datetime.fromisoformat(stamp)).total_seconds()
    except (ValueError, TypeError):
        return None
