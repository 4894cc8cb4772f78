"""``health``'s verdict from the retained status and metrics: online is not enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from intercom_gateway.core.health import verdict

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ONLINE = {"gateway_id": "gw-1", "state": "online", "since": "2026-11-29T11:00:00Z"}


def metrics(age: float = 1.0, **changes: Any) -> dict[str, Any]:
    return {
        "at": (NOW - timedelta(seconds=age)).isoformat(),
        "interval": 5.0,
        "pending": 0,
        "oldest_pending_s": 0.0,
        **changes,
    }


@pytest.mark.parametrize(
    ("status", "found", "healthy", "says"),
    [
        (ONLINE, metrics(), True, "making progress"),
        (None, None, False, "no gateway status"),
        ({**ONLINE, "state": "offline"}, metrics(), False, "is offline"),
        (ONLINE, None, False, "no metrics"),
        (ONLINE, metrics(age=16.0), False, "published nothing for 16 s"),
        (ONLINE, metrics(age=14.0), True, "making progress"),
        (ONLINE, metrics(pending=40, oldest_pending_s=31.0), False, "40 messages waiting"),
        (ONLINE, metrics(pending=40, oldest_pending_s=29.0), True, "making progress"),
        (ONLINE, metrics(pending=0, oldest_pending_s=0.0), True, "making progress"),
    ],
)
def test_verdict(
    status: dict[str, Any] | None, found: dict[str, Any] | None, healthy: bool, says: str
) -> None:
    result = verdict(status, found, now=NOW, stall_after=30.0)
    assert result.healthy is healthy
    assert says in result.reason


def test_a_short_reporting_interval_still_allows_ten_seconds() -> None:
    fast = metrics(age=9.0, interval=0.5)
    assert verdict(ONLINE, fast, now=NOW, stall_after=30.0).healthy
    assert not verdict(ONLINE, metrics(age=11.0, interval=0.5), now=NOW, stall_after=30.0).healthy
