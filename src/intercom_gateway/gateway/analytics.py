"""Analytics copies: held per window, released together (§5(5); core/analytics.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from intercom_gateway.bus import Bus
from intercom_gateway.core.analytics import AnalyticsWindows, HeldCopy
from intercom_gateway.errors import PublishFailed
from intercom_gateway.gateway.status import Metrics
from intercom_gateway.store import Store

__all__ = ["AnalyticsRelease"]

log = structlog.get_logger("intercom_gateway.gateway.service")


class AnalyticsRelease:
    """Publishes the held copies of every ended window; each leaves the store once the
    broker acknowledged it."""

    def __init__(
        self,
        analytics: AnalyticsWindows,
        *,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], datetime],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.analytics = analytics
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._flush = flush
        self._changed = asyncio.Condition()

    async def loop(self, bus: Bus) -> None:
        while True:
            await self.release(bus)
            wait = (self.analytics.next_release(self.clock()) - self.clock()).total_seconds()
            await asyncio.sleep(max(wait, 0.001))  # until the current window ends

    async def release(self, bus: Bus) -> int:
        """Publish every held copy whose window has ended, back to back, in shuffled
        order; each leaves the store once the broker acknowledged it. How many."""
        now = self.clock()
        if not self.analytics.any_due(now):
            return 0
        # Every copy of an ended window was held by a completion before it ended: once
        # this batch is committed, each is on record before it is published.
        await self._flush()
        due = self.analytics.due(now)
        for index, held in enumerate(due):
            try:
                await bus.publish(
                    held.topic,
                    held.payload,
                    user_properties=held.properties,
                    on_done=functools.partial(self._sent, held),
                )
            except PublishFailed as error:
                # Refused before it left (over the packet size): as if the broker refused it.
                self._sent(held, error)
            except BaseException:
                for unsent in due[index:]:
                    self.analytics.unsent(unsent.copy_id)
                raise
        return len(due)

    def _sent(self, held: HeldCopy, error: BaseException | None) -> None:
        if error is None:
            self.analytics.published(held.copy_id)
            self.store.record_analytics_released(held.copy_id)
        elif isinstance(error, PublishFailed):
            self.metrics.publish_refused += 1
            log.error("analytics copy refused", topic=error.topic, error=str(error))
            self.analytics.abandon(held.copy_id)  # kept in the store: a restart tries again
        else:
            self.analytics.unsent(held.copy_id)  # the next release publishes it
        if not self.analytics.held:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_released(self) -> None:
        """Wait until no analytics copy is held (tests, the demo, the scenario runner)."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self.analytics.held)
