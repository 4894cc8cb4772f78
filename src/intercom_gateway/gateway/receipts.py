"""Receipts: the gateway's word to a panel that it may forget an event.

The end-to-end argument: neither the broker's PUBACK nor its persistence file can
promise a panel that its event will be handled (Mosquitto 2.0 acknowledges before it
saves, and a SIGKILL loses what it accepted since its last save; docs/benchmarks.md,
"Broker crashes"). Only the gateway can, once the event's records are committed. So a
panel keeps each event until a receipt on its own topic
(``intercom/v1/{building}/{device}/receipts``) names it, and sends it again, identical,
after a timeout; the gateway's de-duplication by event id makes the resend harmless.

An event is named once it is settled: decided and its records committed; withheld at
the consent gate (nothing to record); a redelivered or resent copy of an event already
committed; or rejected with an event id that can be read (it would be rejected again,
so resending is pointless). The gateway calls ``settle`` as it acknowledges each
inbound message, which for recorded events is only after the store batch that holds
their records has committed, and ``publish`` after each batch: receipts never precede
the commit, and the inbound acknowledgement never waits for a receipt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

import structlog

from intercom_gateway.bus import Bus
from intercom_gateway.core import topics
from intercom_gateway.core.models import RejectReason, utc_now
from intercom_gateway.errors import PublishFailed
from intercom_gateway.gateway.turns import Turn

log = structlog.get_logger("intercom_gateway.gateway.receipts")

# One receipt stays far below the broker's 64 KiB packet limit: an id is ~40 bytes of JSON.
MAX_IDS_PER_RECEIPT = 500
# Reasons whose payload must not be parsed (size, depth, not JSON) or has no panel topic;
# a replay is named only when its first copy is committed (``Gateway._handle_event``).
_UNREADABLE = frozenset(
    {
        RejectReason.OVERSIZED,
        RejectReason.TOO_DEEP,
        RejectReason.MALFORMED_JSON,
        RejectReason.BAD_TOPIC,
        RejectReason.REPLAYED,
    }
)
_PARSE_LIMIT = 65_536  # the broker's max_packet_size: nothing larger can have arrived

Target = tuple[str, str, str]  # building, device, event id


def rejected_target(topic: str, payload: bytes, reason: RejectReason) -> Target | None:
    """Whom to tell that a rejected event is settled, if its topic and event id can be read."""
    if reason in _UNREADABLE or len(payload) > _PARSE_LIMIT or len(topic) > topics.MAX_TOPIC_LENGTH:
        return None
    panel = topics.parse_panel_topic(topic)
    if panel is None or panel.is_settings:
        return None
    try:
        event_id = json.loads(payload).get("event_id")
        return (panel.building, panel.device, str(uuid.UUID(event_id)))
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None


class Receipts:
    """Settled event ids per device, published as receipts after each store commit."""

    def __init__(self, gateway_id: str, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.gateway_id = gateway_id
        self.clock = clock
        self.published = 0  # receipt messages sent
        self.named = 0  # event ids named in them
        self.undelivered = 0  # receipt publishes refused or cut off by a lost connection
        self._pending: dict[tuple[str, str], dict[str, None]] = {}

    def settle(self, target: Target) -> None:
        building, device, event_id = target
        self._pending.setdefault((building, device), {})[event_id] = None

    @property
    def pending(self) -> int:
        return sum(len(ids) for ids in self._pending.values())

    async def publish(self, bus: Bus) -> None:
        """One receipt per device (more if it settled very many), QoS 1, not awaited."""
        pending, self._pending = self._pending, {}
        at = self.clock().isoformat()
        turn = Turn()
        for (building, device), ids in pending.items():
            event_ids = list(ids)
            for start in range(0, len(event_ids), MAX_IDS_PER_RECEIPT):
                chunk = event_ids[start : start + MAX_IDS_PER_RECEIPT]
                await turn.take()  # many devices' receipts: let the next message in
                await bus.publish(
                    topics.receipts(building, device),
                    self._encode(chunk, at),
                    qos=1,
                    on_done=self._done,
                )
                self.published += 1
                self.named += len(chunk)

    def _encode(self, event_ids: list[str], at: str) -> bytes:
        """A ``models.Receipt`` as JSON, made directly: about one per event at high rates,
        and the ids are canonical UUID text already (tests/component/test_receipts.py
        validates what this makes against the model)."""
        body = {"schema_version": 1, "gateway_id": self.gateway_id, "event_ids": event_ids}
        return json.dumps({**body, "at": at}, separators=(",", ":")).encode()

    def _done(self, error: BaseException | None) -> None:
        # A receipt that never arrives costs a resend, which is harmless; nothing to retry.
        if error is not None:
            self.undelivered += 1
            if isinstance(error, PublishFailed):
                log.warning("receipt refused", error=str(error))
