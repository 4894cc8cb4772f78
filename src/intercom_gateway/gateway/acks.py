"""The acknowledgement queue: inbound messages in arrival order, each acknowledged
only when it is safe, and never before an earlier one.

A subscriber acknowledges in the order the broker delivered (MQTT 5 §4.6: PUBACKs in
the order of the PUBLISH packets received), and the gateway relies on it: an
acknowledged message is gone from the broker, so every message before it must be done
too. A message moves through the stages of ``Stage``:

    HANDLING ──handled()──▶ SENDING ──last publish done──▶ SETTLED ──recorded()──▶ RECORDED
                                                     └── nothing to record ───────────┘

and leaves the queue, acknowledged, once it is RECORDED and at the head. A message
marked ``failed`` (handling stopped half-way, or a publish lost with the connection) is
never acknowledged, so the broker delivers it again; it leaves the queue without an
acknowledgement as soon as it reaches the head. Failure is a verdict, not a stage: a
failed message still goes on to SETTLED, since the ledger must learn what became of
every publish it made.

No asyncio, bus or store here: the gateway says what happened, and hears back through
two callbacks, ``settle`` (every publish of a message has an outcome) and ``release``
(a message leaves the queue, in arrival order). ``Inbound`` is the gateway's entry: a
``Pending`` with what the message's completion will record.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from intercom_gateway.bus import Message
from intercom_gateway.core.analytics import Draft
from intercom_gateway.core.plan import Statistic
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.gateway.receipts import Target

if TYPE_CHECKING:
    from intercom_gateway.gateway.otel import OpenSpan

__all__ = ["AckQueue", "Inbound", "Pending", "Stage"]


class Stage(enum.Enum):
    HANDLING = "handling"  # being checked and decided: more publishes may come
    SENDING = "sending"  # handled: some publishes wait for the broker's acknowledgement
    SETTLED = "settled"  # every publish has an outcome: its records wait for the commit
    RECORDED = "recorded"  # committed, or nothing to commit: may be acknowledged in turn


@dataclass(eq=False, slots=True)
class Pending:
    """One inbound message on its way to its acknowledgement."""

    stage: Stage = Stage.HANDLING
    publishes: int = 0  # publishes issued for it whose outcome is not known yet
    failed: bool = False  # never to be acknowledged: the broker delivers it again

    @property
    def settled(self) -> bool:
        return self.stage is not Stage.HANDLING and self.stage is not Stage.SENDING


P = TypeVar("P", bound=Pending)


@dataclass(eq=False)
class AckQueue(Generic[P]):
    """The messages taken and not yet released, oldest first.

    ``settle(entry)`` is called once per message, when it is handled and every publish
    it made has an outcome; it returns whether the message has records that must be
    committed before it is acknowledged (then ``recorded`` follows the commit).
    ``release(entry)`` is called for each message leaving the queue, in arrival order;
    ``entry.failed`` says whether to acknowledge it.
    """

    settle: Callable[[P], bool]
    release: Callable[[P], None]
    _entries: deque[P] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[P]:
        return iter(self._entries)

    @property
    def oldest(self) -> P | None:
        return self._entries[0] if self._entries else None

    def add(self, entry: P) -> P:
        """A message is taken: it is acknowledged after every one taken before it."""
        self._entries.append(entry)
        return entry

    def publishing(self, entry: P) -> None:
        """One more publish for ``entry``, whose outcome ``published`` reports."""
        if entry.stage is not Stage.HANDLING:
            raise ValueError(f"a publish for a message already {entry.stage.value}")
        entry.publishes += 1

    def published(self, entry: P, *, failed: bool = False) -> None:
        """One publish of ``entry`` has its outcome; ``failed``: it was lost (not refused)."""
        entry.publishes -= 1
        if failed:
            entry.failed = True
        self._advance(entry)

    def handled(self, entry: P, *, failed: bool = False) -> None:
        """The gateway has issued every publish of ``entry``; ``failed``: it stopped
        half-way, and some destination may lack the message."""
        if failed:
            entry.failed = True
        entry.stage = Stage.SENDING
        self._advance(entry)

    def recorded(self, entry: P) -> None:
        """The records of a SETTLED ``entry`` are committed."""
        if entry.stage is Stage.SETTLED:
            entry.stage = Stage.RECORDED

    def release_ready(self) -> None:
        """Release, in arrival order, every message that may leave the queue now."""
        entries = self._entries
        while entries:
            entry = entries[0]
            if entry.stage is not Stage.RECORDED and not entry.failed:
                break
            entries.popleft()
            self.release(entry)

    def clear(self) -> None:
        """The connection is gone: what was not acknowledged will be delivered again."""
        self._entries.clear()

    def _advance(self, entry: P) -> None:
        if entry.stage is Stage.SENDING and entry.publishes == 0:
            entry.stage = Stage.SETTLED
            if not self.settle(entry):
                entry.stage = Stage.RECORDED


@dataclass(eq=False, slots=True, kw_only=True)
class Inbound(Pending):
    """A message the gateway took, and what its completion records."""

    message: Message
    received: float = field(default_factory=time.monotonic)
    validated: float = 0.0  # monotonic times, for the metrics: a valid event's check done,
    planned: float = 0.0  # and its publications planned (0: not a decided event)
    writes: bool = False  # has rows in the store's next batch: acknowledged after the commit
    event_id: str | None = None
    intents: list[LedgerRow] = field(default_factory=list)  # ledger rows written ahead
    provisions: list[LedgerRow] = field(default_factory=list)  # ...and acknowledged
    statistic: Statistic | None = None  # counted when the event is committed
    analytics: Draft | None = None  # held at completion, released with its window
    receipt: Target | None = None  # the panel's event this message settles (receipts.py)
    span: OpenSpan | None = None  # its span, exported when settled (gateway/otel.py)
