"""The provision ledger's write-ahead: no copy reaches a recipient before its record.

A copy that makes a ledger row (a provision to a partner or unlock-mode service, §8 and
APPI's record of provision; joint use within the group, §4) is not published when its
event is handled. Its row is committed as "intended" first, and the publish is released
when that commit is done; the row becomes "delivered" on the broker's acknowledgement,
in the batch that completes the event (``Store.record_provisions``). So no crash of the
gateway or the broker can leave a delivered copy without its row.

Commits are grouped: one starts as soon as an intent is waiting and the previous commit
has finished (a task of its own, started on demand, so the gateway's loop never waits
for the store). Under load one commit carries the intents of many events; an idle gateway
commits a lone intent at once, without waiting for the store's batch timer. Copies
without a ledger row (cloud, analytics, rejections, acknowledgements) never wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from intercom_gateway.bus import Bus
from intercom_gateway.core.plan import Publication
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.errors import BusError, ConnectionLost
from intercom_gateway.gateway.metrics import Histogram
from intercom_gateway.gateway.turns import Turn
from intercom_gateway.store import Store

__all__ = ["WriteAhead"]

log = structlog.get_logger("intercom_gateway.gateway.ledger")

DoneCallback = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class _Publish:
    """A copy waiting for its ledger row to be committed."""

    row: LedgerRow
    publication: Publication
    bus: Bus
    on_done: DoneCallback


class WriteAhead:
    """Group commit of the ledger's intents, then the publishes they guard."""

    def __init__(self, store: Store, *, timing: Histogram | None = None) -> None:
        """``timing``: where each group commit's duration is observed (metrics)."""
        self._store = store
        self._timing = timing
        self._waiting: list[_Publish] = []
        self._committer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.commits = 0  # how many group commits, for the metrics
        self.intents = 0  # how many intents they carried

    def submit(self, publication: Publication, bus: Bus, on_done: DoneCallback) -> None:
        """Publish ``publication`` once the ledger row it confirms is committed;
        ``on_done`` as for ``Bus.send``."""
        if publication.confirms is None:
            raise ValueError(f"{publication.topic}: no ledger row to write ahead")
        self._waiting.append(_Publish(publication.confirms, publication, bus, on_done))
        if self._committer is None:
            self._idle.clear()
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_waiting(), name="ledger-write-ahead"
            )

    @property
    def pending(self) -> int:
        """Copies whose intent is not yet committed."""
        return len(self._waiting)

    async def drain(self) -> None:
        """Wait until every copy submitted so far has been handed to its bus."""
        await self._idle.wait()

    async def _commit_waiting(self) -> None:
        # One commit at a time; what arrives during a commit goes in the next one.
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._commit_and_publish(batch)
        finally:
            self._committer = None
            self._idle.set()

    async def _commit_and_publish(self, batch: list[_Publish]) -> None:
        started = time.monotonic()
        try:
            await self._store.save_intents([p.row for p in batch])
        except asyncio.CancelledError:
            _fail(batch, ConnectionLost("stopped before the publish"))
            raise
        except Exception as error:
            # Without its record a copy is not published: its message stays
            # unacknowledged, and the broker delivers it again.
            log.error("ledger intents not committed; copies withheld", error=repr(error))
            _fail(batch, error)
            return
        self.commits += 1
        self.intents += len(batch)
        if self._timing is not None:
            self._timing.observe(time.monotonic() - started)
        turn = Turn()
        for index, publish in enumerate(batch):
            message = publish.publication
            try:
                await turn.take()  # a long batch lets the loop's next message in
                await publish.bus.publish(
                    message.topic,
                    message.payload,
                    qos=message.qos,
                    retain=message.retain,
                    user_properties=message.properties,
                    on_done=publish.on_done,
                )
            except BusError as error:
                # Refused before it left (too large) or the connection is gone: the
                # intent stays on record and the copy's owner hears of the failure.
                publish.on_done(error)
            except asyncio.CancelledError:
                _fail(batch[index:], ConnectionLost("stopped before the publish"))
                raise


def _fail(batch: Sequence[_Publish], error: BaseException) -> None:
    for publish in batch:
        publish.on_done(error)
