"""Taking turns on the event loop: a step that publishes a batch yields now and then.

One loop serves every panel message in arrival order, and a step of a task runs until
it awaits something that suspends it; a publish with ``on_done`` rarely does. So a step
that publishes a whole batch (the copies of a group commit, ``ledger.WriteAhead``; the
receipts after a store batch, ``receipts.Receipts``) holds up the next panel message for
as long as it takes. At 1,000 events/s those steps are the p99 of the latency the gateway
adds (docs/benchmarks.md, "Issue #18: the gateway's own work"). A ``Turn`` makes such a
step yield once it has run for a slice of time: nothing while batches are small, and a
long batch becomes slices with the loop's other work between them.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["SLICE", "Turn"]

# How long a batch may hold the loop before it lets the next message in (seconds).
SLICE = 0.000_5


class Turn:
    """A task's turn on the loop, started when the batch starts."""

    __slots__ = ("_until", "slice")

    def __init__(self, slice_s: float = SLICE) -> None:
        self.slice = slice_s
        self._until = time.perf_counter() + slice_s

    async def take(self) -> None:
        """Yield to the loop if this turn has run for its slice; then start a new one."""
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self._until = time.perf_counter() + self.slice
