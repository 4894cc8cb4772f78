"""The bad-input classes a scenario may name (``bad_input`` steps): each is a generator of
``intercom_gateway.simulators.bad_input``, and the reason the gateway must give it."""

from __future__ import annotations

from typing import Literal

from intercom_gateway.core.models import RejectReason

# The bad-input generators of ``intercom_gateway.simulators.bad_input``, with the reason
# each must get.
BAD_INPUT_CLASSES: dict[str, RejectReason] = {
    "malformed_json": RejectReason.MALFORMED_JSON,
    "unknown_event_type": RejectReason.UNKNOWN_TYPE,
    "missing_field": RejectReason.SCHEMA_VIOLATION,
    "wrong_enum": RejectReason.SCHEMA_VIOLATION,
    "type_mismatch": RejectReason.TOPIC_MISMATCH,
    "device_mismatch": RejectReason.TOPIC_MISMATCH,
    "unknown_device": RejectReason.UNKNOWN_DEVICE,
    "spoofed_dwelling": RejectReason.SPOOFED_DWELLING,
    "oversized": RejectReason.OVERSIZED,
    "too_deep": RejectReason.TOO_DEEP,
    "replayed": RejectReason.REPLAYED,
    "stale": RejectReason.STALE,
    "future": RejectReason.FUTURE,
    "calendar_edge": RejectReason.SCHEMA_VIOLATION,
    "huge_seq": RejectReason.SCHEMA_VIOLATION,
    "long_topic_level": RejectReason.BAD_TOPIC,
    "unknown_distribution": RejectReason.UNKNOWN_DISTRIBUTION,
}
BadInputClass = Literal[
    "malformed_json",
    "unknown_event_type",
    "missing_field",
    "wrong_enum",
    "type_mismatch",
    "device_mismatch",
    "unknown_device",
    "spoofed_dwelling",
    "oversized",
    "too_deep",
    "replayed",
    "stale",
    "future",
    "calendar_edge",
    "huge_seq",
    "long_topic_level",
    "unknown_distribution",
]
