"""What the gateway says and keeps about input it refuses, within the dwelling's consent.

A rejection is echoed on ``gateway/v1/rejected/{reason}`` (readable by the cloud
account) and kept in the store. Both obey consent and purpose limits:

- Of a dwelling that is not registered (initialised or moved out, §7(1)①; or not known)
  nothing is echoed or kept beyond the reason, the topic and the device: no payload,
  no detail. A device's message names the dwelling of a dwelling panel and the
  ``dwelling_id`` in its payload; if any of them is not registered, the payload goes.
- The echo never carries an image reference or free text (§3(3), spec item 6): it is
  the payload's JSON with only the fields the event and settings schemas define,
  ``image`` and the free text (``REMOVED_FIELDS``) removed, strings cut to 64 characters. A
  payload that is not a JSON object, or too large or deep to parse safely, is not
  echoed at all. The store keeps the payload as it came (4 KiB at most) for the
  operator, where consent allows.
- Every part of an echo is bounded, so it always fits the broker's packet limit: a
  32 KB topic level once made the echo larger than that, and the refused publish sent
  the gateway into a reconnect loop.

Pure functions of their arguments; the gateway owns the consent they read.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from intercom_gateway.core.ingress import DeviceIndex, InputRejected
from intercom_gateway.core.models import (
    EVENT_ADAPTER,
    SETTINGS_ADAPTER,
    DeviceRole,
    Rejection,
    RejectReason,
)
from intercom_gateway.core.topics import MAX_TOPIC_LENGTH, parse_panel_topic

KEPT_PAYLOAD_LIMIT = 4_096  # bytes of a rejected payload kept in the store
DETAIL_LIMIT = 512  # characters of the reason's detail
ECHO_STRING_LIMIT = 64  # characters of any string value echoed
_PARSE_LIMIT = 16_384  # a payload larger than this is not parsed for the echo
_LIST_LIMIT = 16
# The image and free text: key nicknames, failure messages, part A's device-control
# errors and the names residents give their scenes, and survey answers' text.
REMOVED_FIELDS = frozenset({"image", "key_nickname", "message", "error", "name", "text"})
WITHHELD_DETAIL = "withheld: the dwelling is not registered (§7(1)①)"

Consent = Callable[[str, str], bool]  # (building, dwelling) -> registered?


@functools.cache
def known_fields() -> frozenset[str]:
    """Every property name the event and settings schemas define, at any depth."""
    names: set[str] = set()
    for schema in (EVENT_ADAPTER.json_schema(), SETTINGS_ADAPTER.json_schema()):
        names.update(_property_names(schema))
    return frozenset(names - REMOVED_FIELDS)


def _property_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            yield from properties
        for value in node.values():
            yield from _property_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _property_names(item)


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """One refused message, reduced to what may be echoed and kept."""

    reason: RejectReason
    detail: str
    topic: str  # cut to MAX_TOPIC_LENGTH characters
    device: str | None
    echo: str | None  # the payload as it may be echoed, or None
    kept: str  # the payload as it may be kept ("" when withheld)
    truncated: bool
    redacted: bool

    @classmethod
    def of(
        cls,
        topic: str,
        payload: bytes,
        rejection: InputRejected,
        *,
        devices: DeviceIndex,
        registered: Consent,
    ) -> RejectedInput:
        parsed = _parse(payload, rejection.reason)
        panel = parse_panel_topic(topic) if len(topic) <= MAX_TOPIC_LENGTH else None
        device = panel.device if panel is not None else None
        withheld = any(
            not registered(building, dwelling)
            for building, dwelling in _named_dwellings(panel, parsed, devices)
        )
        short_topic = topic[:MAX_TOPIC_LENGTH]
        detail = _printable(rejection.detail[:DETAIL_LIMIT])
        if withheld:
            return cls(
                rejection.reason, WITHHELD_DETAIL, short_topic, device, None, "", False, True
            )
        echo, redacted = _echo(parsed)
        return cls(
            reason=rejection.reason,
            detail=detail,
            topic=short_topic,
            device=device,
            echo=echo,
            kept=payload[:KEPT_PAYLOAD_LIMIT].decode("utf-8", errors="replace"),
            truncated=len(payload) > KEPT_PAYLOAD_LIMIT,
            redacted=redacted,
        )

    @classmethod
    def bare(cls, topic: str, rejection: InputRejected) -> RejectedInput:
        """Reason, topic and detail only: when even the reduced echo could not be made."""
        detail = _printable(rejection.detail[:DETAIL_LIMIT])
        return cls(rejection.reason, detail, topic[:MAX_TOPIC_LENGTH], None, None, "", False, True)

    def envelope(self, *, received_at: datetime, gateway_id: str) -> Rejection:
        return Rejection(
            reason=self.reason,
            detail=self.detail,
            topic=self.topic,
            device=self.device,
            payload=self.echo,
            payload_truncated=self.truncated,
            payload_redacted=self.redacted,
            received_at=received_at,
            gateway_id=gateway_id,
        )


def _printable(text: str) -> str:
    """``text`` as UTF-8 can carry it (a lone surrogate becomes '?')."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _parse(payload: bytes, reason: RejectReason) -> Any:
    """The payload's JSON, or None where parsing it is unsafe or fails."""
    if reason in (RejectReason.OVERSIZED, RejectReason.TOO_DEEP) or len(payload) > _PARSE_LIMIT:
        return None
    try:
        parsed = json.loads(payload.decode("utf-8"))
        # JSON may spell a lone surrogate ("\ud800"), which no UTF-8 echo can carry.
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        return None
    return parsed


def _named_dwellings(panel: Any, parsed: Any, devices: DeviceIndex) -> Iterator[tuple[str, str]]:
    if panel is None:
        return
    entry = devices.devices.get(panel.device)
    if entry is not None and entry.role is DeviceRole.DWELLING_PANEL and entry.dwelling:
        yield entry.building, entry.dwelling
    if isinstance(parsed, dict):
        dwelling = parsed.get("dwelling_id")
        building = parsed.get("building_id", panel.building)
        if isinstance(dwelling, str) and isinstance(building, str):
            yield building, dwelling


def _echo(parsed: Any) -> tuple[str | None, bool]:
    if not isinstance(parsed, dict):
        return None, True
    try:
        cleaned, redacted = _clean(parsed, known_fields())
    except RecursionError:
        return None, True
    return json.dumps(cleaned, separators=(",", ":"), ensure_ascii=False), redacted


def _clean(value: Any, known: frozenset[str]) -> tuple[Any, bool]:
    """``value`` with unknown, image and free-text fields removed and strings cut."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        redacted = False
        for key, item in value.items():
            if key not in known:
                redacted = True
                continue
            out[key], cut = _clean(item, known)
            redacted = redacted or cut
        return out, redacted
    if isinstance(value, list):
        items = [_clean(item, known) for item in value[:_LIST_LIMIT]]
        return [i for i, _ in items], len(value) > _LIST_LIMIT or any(c for _, c in items)
    if isinstance(value, str):
        return value[:ECHO_STRING_LIMIT], len(value) > ECHO_STRING_LIMIT
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return None, True  # a 4,000-digit integer is not worth echoing
    if isinstance(value, float) and not math.isfinite(value):
        return None, True  # 1e999 parses as inf, which JSON cannot carry
    return value, False
