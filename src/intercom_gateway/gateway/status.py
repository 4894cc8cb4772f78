"""What the gateway says about itself: its status, its counters and the statistics
windows it closed (retained metrics; aggregates of closed windows, §5(4))."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from intercom_gateway.bus import Bus
from intercom_gateway.core.encoding import user_properties
from intercom_gateway.core.models import GatewayStatus, utc_now
from intercom_gateway.core.policy import Policy
from intercom_gateway.core.statistics import StatisticsAggregator, Window
from intercom_gateway.errors import PublishFailed
from intercom_gateway.gateway.metrics import Timings
from intercom_gateway.store import Store

__all__ = ["Metrics", "StatisticsRelease", "metrics_payload", "status_payload"]

log = structlog.get_logger("intercom_gateway.gateway.service")


@dataclass
class Metrics:
    received: int = 0
    events: int = 0
    duplicates: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)  # per destination kind
    withheld_by: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason)
    rejected: Counter[str] = field(default_factory=Counter)
    settings: Counter[str] = field(default_factory=Counter)
    publish_refused: int = 0
    acked: int = 0
    internal_errors: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    session_takeovers: int = 0  # DISCONNECT 0x8E: another connection took our client id
    sessions_lost: int = 0  # reconnected to no session: what was queued for us is gone
    timings: Timings = field(default_factory=Timings)  # latency histograms (Prometheus)

    @property
    def withheld(self) -> Counter[str]:
        """Withheld destinations per reason (the retained metrics' view)."""
        by_reason: Counter[str] = Counter()
        for (_kind, reason), count in self.withheld_by.items():
            by_reason[reason] += count
        return by_reason

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "events": self.events,
            "duplicates": self.duplicates,
            "forwarded": dict(self.forwarded),
            "withheld": dict(self.withheld),
            "rejected": dict(self.rejected),
            "settings": dict(self.settings),
            "publish_refused": self.publish_refused,
            "acked": self.acked,
            "internal_errors": self.internal_errors,
            "dead_lettered": self.dead_lettered,
            "reconnects": self.reconnects,
            "session_takeovers": self.session_takeovers,
            "sessions_lost": self.sessions_lost,
        }


def status_payload(
    gateway_id: str, state: Literal["online", "offline"], *, revision: int | None = None
) -> bytes:
    """``revision``: the configuration revision in force (§10), if known."""
    status = GatewayStatus(
        gateway_id=gateway_id, state=state, since=utc_now(), config_revision=revision
    )
    return status.model_dump_json().encode()


def metrics_payload(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


class StatisticsRelease:
    """Publishes the aggregates of closed statistics windows; each leaves the store
    once the broker acknowledged it."""

    def __init__(
        self,
        statistics: StatisticsAggregator,
        *,
        store: Store,
        policy: Policy,
        metrics: Metrics,
        gateway_id: str,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.statistics = statistics
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.gateway_id = gateway_id
        self._flush = flush

    async def publish(self, bus: Bus, now: datetime) -> None:
        due = self.statistics.flush(now)
        if not due:
            return
        # Every count of these windows is committed before it is published.
        await self._flush()
        for index, aggregate in enumerate(due):
            try:
                envelope = aggregate.message(
                    policy=self.policy,
                    gateway_id=self.gateway_id,
                    decision_id=aggregate.id,  # the same if it is published again
                    now=now,
                )
            except ValueError as error:
                # No rule of this policy counted them (a window restored under another
                # policy): nothing flows without a rule. Kept in the store.
                log.error("statistics window not published", error=str(error))
                self.statistics.abandon(aggregate.window)
                continue
            try:
                await bus.publish(
                    aggregate.topic,
                    envelope.model_dump_json().encode(),
                    user_properties=user_properties(envelope),
                    on_done=functools.partial(self._sent, aggregate.window),
                )
            except BaseException:
                for unsent in due[index:]:
                    self.statistics.unsent(unsent.window)
                raise

    def _sent(self, window: Window, error: BaseException | None) -> None:
        if error is None:
            # Published: its counts leave the store with the next batch. A crash before
            # that publishes it again after the restart, with the same id.
            self.statistics.published(window)
            self.store.record_window_published(window, closed_before=self.statistics.closed_before)
        elif isinstance(error, PublishFailed):
            self.metrics.publish_refused += 1
            log.error("statistics refused", topic=error.topic, error=str(error))
            self.statistics.abandon(window)  # kept in the store: a restart tries again
        else:
            self.statistics.unsent(window)  # the next report publishes it
