"""The panel side of the receipt protocol: keep each event until a receipt names it.

A panel publishes an event at QoS 1 and keeps it. The broker's PUBACK is not enough to
forget it: Mosquitto 2.0 acknowledges before it writes its persistence file, so a
broker crash can lose acknowledged events (docs/benchmarks.md, "Broker crashes"). The
gateway publishes a receipt on the panel's own topic
(``intercom/v1/{building}/{device}/receipts``) once the event is settled, its records
committed. Until then the panel sends the event again, identical (same event id, same
bytes), ``timeout`` seconds after the last send, each wait ``backoff`` times the one
before up to ``max_timeout``. The gateway's de-duplication by event id makes a resend
harmless: it forwards nothing twice, only names the event in a receipt again.

At most ``limit`` events are kept. At the bound a new event waits for room (``put``
blocks until a receipt frees a place): nothing kept is dropped, and the wait is
counted, so a panel that cannot reach the gateway stops taking new events rather than
forgetting old ones silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from intercom_gateway.bus import Bus
from intercom_gateway.core.models import Receipt


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    timeout: float = 10.0  # seconds without a receipt before the first resend
    backoff: float = 2.0  # each further wait is this many times the previous one
    max_timeout: float = 120.0  # ...up to this
    limit: int = 10_000  # events kept at once; at the bound a new event waits for room

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.backoff < 1 or self.max_timeout < self.timeout:
            raise ValueError("resend timeout must be positive, backoff >= 1, max >= timeout")
        if self.limit < 1:
            raise ValueError("the outbox limit must be at least 1")


@dataclass(slots=True)
class _Kept:
    topic: str
    payload: bytes
    due: float
    wait: float


class Outbox:
    """Events sent but not yet named by a receipt, with their resend schedule."""

    def __init__(
        self, policy: ResendPolicy | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.policy = policy or ResendPolicy()
        self._clock = clock
        self._kept: dict[str, _Kept] = {}
        # Set whenever an event is kept or forgotten; the resender clears it as it looks.
        self._changed = asyncio.Event()
        self.confirmed = 0  # events a receipt named
        self.resent = 0  # resends made
        self.waited = 0  # times a new event had to wait for room

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._kept

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def put(self, event_id: str, topic: str, payload: bytes) -> None:
        """Keep an event about to be sent; waits while ``limit`` events are kept."""
        if len(self._kept) >= self.policy.limit:
            self.waited += 1
            while len(self._kept) >= self.policy.limit:
                await self._wait_changed()
        timeout = self.policy.timeout
        self._kept[event_id] = _Kept(topic, payload, self.now() + timeout, timeout)
        self._changed.set()

    async def confirm(self, payload: bytes) -> int:
        """Forget the events a receipt names; returns how many were kept here."""
        try:
            receipt = Receipt.model_validate_json(payload)
        except ValidationError:
            return 0
        named = [self._kept.pop(str(i), None) for i in receipt.event_ids]
        count = sum(kept is not None for kept in named)
        self.confirmed += count
        if count:
            self._changed.set()
        return count

    async def _wait_changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def due(self) -> list[tuple[str, bytes]]:
        """The events whose wait is over, each rescheduled with backoff (they are resent)."""
        now, out = self.now(), []
        for kept in self._kept.values():
            if kept.due <= now:
                kept.wait = min(kept.wait * self.policy.backoff, self.policy.max_timeout)
                kept.due = now + kept.wait
                out.append((kept.topic, kept.payload))
        self.resent += len(out)
        return out

    def next_due(self) -> float | None:
        return min((kept.due for kept in self._kept.values()), default=None)

    async def changed(self, timeout: float | None) -> None:
        """Wait until something is kept or confirmed, or ``timeout`` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_changed(), timeout)

    async def wait_empty(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every kept event is confirmed."""

        async def empty() -> None:
            while self._kept:
                await self._wait_changed()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(empty(), timeout)
        return not self._kept


async def listen(bus: Bus, outbox: Outbox) -> None:
    """Feed every receipt the bus receives to the outbox (the bus subscribed to them)."""
    async for message in bus.messages():
        if message.topic.endswith("/receipts"):
            await outbox.confirm(message.payload)


async def resend(bus: Bus, outbox: Outbox) -> None:
    """Send each kept event again, identical, whenever its wait is over."""
    while True:
        for topic, payload in outbox.due():
            # Not awaited: its receipt, not its PUBACK, settles a kept event.
            await bus.publish(topic, payload, qos=1, on_done=lambda _error: None)
        next_due = outbox.next_due()
        await outbox.changed(None if next_due is None else max(0.0, next_due - outbox.now()))


async def keep(bus: Bus, outbox: Outbox) -> None:
    """Take receipts and resend what is due, until cancelled.

    The bus must already be subscribed to the panel's receipts topic(s) (the ``fleet``
    account: ``intercom/v1/+/+/receipts``), before the first event is sent.
    """
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(listen(bus, outbox), name="receipts")
        tasks.create_task(resend(bus, outbox), name="resend")


def event_id_of(payload: bytes) -> str:
    """The event id of a panel event payload (the key receipts name events by)."""
    return str(uuid.UUID(json.loads(payload)["event_id"]))
