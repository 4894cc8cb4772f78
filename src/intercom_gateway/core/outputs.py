"""What the gateway publishes: rejections, receipts, the envelope of every forwarded
copy, its status, and the consent notices to services. ``models.py`` re-exports them:
it is where the vocabulary of every topic is found.
"""

from __future__ import annotations

import enum
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from intercom_gateway.core.values import SCHEMA_VERSION, Ident, Model

# --- What the gateway publishes ---------------------------------------------------


class RejectReason(enum.StrEnum):
    OVERSIZED = "oversized"
    TOO_DEEP = "too_deep"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_TYPE = "unknown_type"
    SCHEMA_VIOLATION = "schema_violation"
    BAD_TOPIC = "bad_topic"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_DWELLING = "unknown_dwelling"
    SPOOFED_DWELLING = "spoofed_dwelling"
    REPLAYED = "replayed"
    STALE = "stale"
    FUTURE = "future"
    TOO_MANY_PROPERTIES = "too_many_properties"  # MQTT 5 user properties beyond the limit
    # Handling the message raised an error of ours: kept with the error's class and text,
    # acknowledged, and the loop goes on (a bug must not stop every other event).
    INTERNAL_ERROR = "internal_error"
    # Delivered again after handling it had already failed (or killed the process)
    # ``max_attempts`` times: set aside on the dead-letter topic instead of looping.
    DEAD_LETTER = "dead_letter"
    # §2(1): usage information naming no distribution the gateway delivered to this
    # dwelling for the contractor it names.
    UNKNOWN_DISTRIBUTION = "unknown_distribution"
    # §5(1)①: a distribution from a contractor not in the registry, or for a building it
    # may not address.
    UNKNOWN_CONTRACTOR = "unknown_contractor"
    BUILDING_NOT_ADDRESSABLE = "building_not_addressable"


class Rejection(Model):
    """Input the gateway refused, as echoed on ``gateway/v1/rejected/{reason}``.

    What it carries is bounded and obeys consent (``rejections.py``): nothing of a
    dwelling that is not registered beyond the reason and the device, and never an
    image reference or free text.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: RejectReason
    detail: str = Field(description="why, at most 512 characters")
    topic: str = Field(description="the topic it came on, at most 256 characters")
    device: str | None = Field(default=None, description="the device the topic names")
    payload: str | None = Field(
        default=None,
        description="the payload's JSON reduced to the schema's fields, without image, "
        "free text or strings over 64 characters; null when it is not a JSON object, is "
        "too large or deep to parse, or names a dwelling that is not registered",
    )
    payload_truncated: bool = False
    payload_redacted: bool = Field(
        default=False, description="something of the payload was removed or withheld"
    )
    received_at: AwareDatetime
    gateway_id: str


class Receipt(Model):
    """The gateway's word to a panel: these events are decided and their records committed.

    A panel keeps each event until a receipt names it and sends it again after a
    timeout; the gateway's de-duplication by event id makes the resend harmless
    (README, "Nothing lost"). Rejected events with a readable id are named too, so a
    panel never resends an event that can never be accepted.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    gateway_id: str
    event_ids: tuple[UUID, ...]
    at: AwareDatetime


class Forwarded(Model):
    """The envelope of everything the gateway publishes to a destination."""

    schema_version: Literal[1] = SCHEMA_VERSION
    decision_id: UUID
    event_id: UUID | None = Field(
        description="None for aggregated statistics and de-identified analytics copies"
    )
    gateway_id: str
    forwarded_at: AwareDatetime
    destination: str
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    policy_version: str
    rule_id: str
    clause: str
    event: dict[str, Any]


class GatewayStatus(Model):
    gateway_id: str
    state: Literal["online", "offline"]
    since: AwareDatetime
    # §10: the configuration revision in force (core.configuration); None: not known
    # (the last will, written before the gateway loaded its configuration).
    config_revision: int | None = None


class PartitionedStatus(GatewayStatus):
    """A partitioned gateway's own status (``gateway/v1/{gateway_id}/status``): the
    building partitions it serves now (docs/partitions.md)."""

    partitions: tuple[int, ...]


# --- Consent notices to partner services (§8, §5(1)②; spec item 11) ----------------


class ConsentNotice(Model):
    """A dwelling withdrew from the service (``core.notices`` says what it asks, and why)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    notice_id: UUID = Field(description="the same on every copy of one notice")
    partner_id: Ident
    building_id: Ident
    dwelling_id: Ident
    # §5(1)② service_use with used false; §8 the same as a stop-provision request; §7(1)①.
    change: Literal["service_stopped", "provision_stopped", "initialised"]
    clause: str
    change_id: UUID = Field(description="the settings change that withdrew the dwelling")
    effective_from: AwareDatetime = Field(description="when the change was acknowledged")
    consent_revision: int = Field(ge=0, description="the dwelling's consent revision from then")
    stop: tuple[Literal["receiving", "processing"], ...]
    delete: tuple[Literal["images", "all"], ...]
    policy_version: str
