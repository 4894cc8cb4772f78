"""Bad input and our own errors: rejected with a reason, kept, echoed, acknowledged.

A message is rejected with its typed reason (``core.ingress.InputRejected``); an error
of ours becomes an ``internal_error`` rejection naming the error; a message delivered
again more than ``max_attempts`` times without its handling ever finishing (it killed
the gateway each time) is dead-lettered. Each is counted, kept in the store (a reduced
echo, ``core.rejections``), published on its rejection topic, and acknowledged: a bad
message must never stop the events behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from intercom_gateway.bus import Bus, Message
from intercom_gateway.core import topics
from intercom_gateway.core.ingress import DeviceIndex, InputRejected
from intercom_gateway.core.models import RejectReason
from intercom_gateway.core.plan import Publication
from intercom_gateway.core.records import RejectionRow
from intercom_gateway.core.rejections import RejectedInput
from intercom_gateway.errors import BusError
from intercom_gateway.gateway.acks import Inbound
from intercom_gateway.gateway.receipts import rejected_target
from intercom_gateway.gateway.status import Metrics
from intercom_gateway.store import Store

__all__ = ["Rejections", "attempt_key", "describe"]

log = structlog.get_logger("intercom_gateway.gateway.service")

Send = Callable[[Bus, Inbound, Publication], Awaitable[None]]


class Rejections:
    """Rejects one message: counts, records and echoes it, with one log line."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        store: Store,
        devices: DeviceIndex,
        registered: Callable[[str, str], bool],
        gateway_id: str,
        send: Send,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.devices = devices
        self.registered = registered
        self.gateway_id = gateway_id
        self._send = send

    async def reject(
        self,
        bus: Bus,
        inbound: Inbound,
        rejection: InputRejected,
        now: datetime,
        *,
        bare: bool = False,
    ) -> None:
        message = inbound.message
        reason = rejection.reason
        if not bare:  # a bare echo repeats a rejection already counted
            self.metrics.rejected[reason.value] += 1
        record = (
            RejectedInput.bare(message.topic, rejection)
            if bare
            else RejectedInput.of(
                message.topic,
                message.payload,
                rejection,
                devices=self.devices,
                registered=self.registered,
            )
        )
        if inbound.receipt is None:
            inbound.receipt = rejected_target(message.topic, message.payload, reason)
        self.store.record_rejection(
            RejectionRow(now, reason.value, record.detail, record.topic, record.kept)
        )
        inbound.writes = True
        if reason is RejectReason.DEAD_LETTER:
            self.metrics.dead_lettered += 1
            log.error("dead-lettered", topic=record.topic, detail=record.detail)
            destination = topics.DEADLETTER
        else:
            log.warning("rejected", reason=reason.value, topic=record.topic, detail=record.detail)
            destination = topics.rejected(reason.value)
        envelope = record.envelope(received_at=now, gateway_id=self.gateway_id)
        echo = Publication(
            destination, envelope.model_dump_json().encode(), [("reason", reason.value)]
        )
        await self._send(bus, inbound, echo)

    async def internal_error(
        self, bus: Bus, inbound: Inbound, error: Exception, now: datetime
    ) -> None:
        self.metrics.internal_errors += 1
        detail = describe(error)
        log.error("internal error", topic=inbound.message.topic[:256], error=detail)
        rejection = InputRejected(RejectReason.INTERNAL_ERROR, detail)
        try:
            await self.reject(bus, inbound, rejection, now)
        except (asyncio.CancelledError, BusError):
            raise
        except Exception as again:  # not even the reduced echo could be made: a bare one
            log.error("internal error while rejecting", error=describe(again))
            try:
                await self.reject(bus, inbound, rejection, now, bare=True)
            except (asyncio.CancelledError, BusError):
                raise
            except Exception as last:
                log.error("rejection not published", error=describe(last))


def attempt_key(message: Message) -> str:
    """The same message delivered again has the same key, across restarts."""
    digest = hashlib.blake2b(message.topic.encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(message.payload)
    return digest.hexdigest()


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
