"""Event, settings and output models: the vocabulary of every topic.

Panels publish the events of §2(2), §2(3)① and §2(5) of the privacy policy
(see ``shared/spec/privacy-policy.md``). Every model is frozen, forbids unknown
fields and is decoded with ``model_validate_json``. Images are never inline bytes:
a reference (id, content type, size, sha256), as real intercom APIs do.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from intercom_gateway.core.ids import random_uuid as random_uuid

SCHEMA_VERSION: Literal[1] = 1

# Identifiers end up as topic levels, so they may not contain '/', '+', '#' or '$'.
Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")]
ShortText = Annotated[str, Field(max_length=200)]

# A device's clock says what it likes. Before any arithmetic (conversion to UTC, the
# age and skew checks) a timestamp must be one the calendar can shift by any real
# offset: ``0001-01-01T00:00:00+14:00`` parses, and converting it to UTC raised
# OverflowError past the schema, which once stopped the gateway for good.
EARLIEST_YEAR, LATEST_YEAR = 1970, 2999  # a reset clock says 1970: stale, not broken
MAX_UTC_OFFSET = timedelta(hours=14)  # UTC+14 (Kiribati) and UTC-12 are the extremes in use


def _sane_instant(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None or abs(offset) > MAX_UTC_OFFSET:
        raise ValueError(f"UTC offset {offset} is beyond ±14:00")
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"year {value.year} is outside {EARLIEST_YEAR}-{LATEST_YEAR}")
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, AfterValidator(_sane_instant)]
"""An aware instant from a device, range-checked and then held in UTC."""


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class DeviceRole(enum.StrEnum):
    DWELLING_PANEL = "dwelling_panel"  # 住宅情報盤, inside the dwelling
    LOBBY_PANEL = "lobby_panel"  # ロビーインターホン, shared entrance
    DELIVERY_BOX = "delivery_box"  # 宅配ボックス


class EventType(enum.StrEnum):
    VISITOR = "visitor"
    RETURN_HOME = "return_home"
    ALARM = "alarm"
    DELIVERY_BOX = "delivery_box"
    UNLOCK_MODE = "unlock_mode"
    SECURITY = "security"
    DEVICE_FAILURE = "device_failure"
    # §2(1): usage information of a contractor's distribution, entered on the panel.
    NOTICE_READ = "notice_read"
    SURVEY_ANSWER = "survey_answer"


# Which device may emit which event: a lobby panel has no burglar alarm, a
# delivery box knows nothing of visitors.
EVENTS_BY_ROLE: dict[DeviceRole, frozenset[EventType]] = {
    DeviceRole.DWELLING_PANEL: frozenset(
        {
            EventType.VISITOR,
            EventType.RETURN_HOME,
            EventType.ALARM,
            EventType.SECURITY,
            EventType.DEVICE_FAILURE,
            EventType.NOTICE_READ,
            EventType.SURVEY_ANSWER,
        }
    ),
    DeviceRole.LOBBY_PANEL: frozenset({EventType.VISITOR, EventType.UNLOCK_MODE}),
    DeviceRole.DELIVERY_BOX: frozenset({EventType.DELIVERY_BOX, EventType.DEVICE_FAILURE}),
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class ImageRef(Model):
    """A reference to an image held by the panel or the cloud image store."""

    id: Ident
    content_type: Literal["image/jpeg", "image/png"]
    size: int = Field(gt=0, le=5_000_000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DeviceRef(Model):
    id: Ident
    role: DeviceRole


class Envelope(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: UUID
    seq: int = Field(ge=0, le=2**63 - 1, description="per-device sequence number")
    building_id: Ident
    dwelling_id: Ident
    device: DeviceRef
    occurred_at: Timestamp

    @model_validator(mode="after")
    def _role_may_emit(self) -> Envelope:
        event_type = EventType(getattr(self, "type", EventType.VISITOR))
        if event_type not in EVENTS_BY_ROLE[self.device.role]:
            raise ValueError(f"a {self.device.role.value} does not emit {event_type.value} events")
        return self


class VisitorEvent(Envelope):
    """§2(2): a visitor called at the door or from the lobby panel."""

    type: Literal["visitor"] = "visitor"
    call_id: Ident
    origin: Literal["lobby", "door"]
    outcome: Literal["answered", "missed", "rejected"]
    image: ImageRef | None = None


class ReturnHomeEvent(Envelope):
    """§2(2): a resident came home (unlocked with their key)."""

    type: Literal["return_home"] = "return_home"
    method: Literal["key", "card", "app"]
    key_nickname: ShortText | None = Field(
        default=None, description="free text: never to analytics"
    )
    image: ImageRef | None = None


class AlarmEvent(Envelope):
    """§2(2): fire, gas, intrusion, emergency button or tamper."""

    type: Literal["alarm"] = "alarm"
    kind: Literal["fire", "gas", "intrusion", "emergency_button", "tamper"]
    zone: Ident
    severity: Literal["info", "warning", "critical"]
    cleared: bool = False


class DeliveryBoxEvent(Envelope):
    """§2(2): a parcel arrived in, or was taken out of, a locker."""

    type: Literal["delivery_box"] = "delivery_box"
    action: Literal["arrival", "shipment"]
    box_number: int = Field(ge=1, le=999)
    carrier: Ident | None = None


class UnlockModeEvent(Envelope):
    """§2(5): unlock mode at the lobby panel, naming the destination dwelling."""

    type: Literal["unlock_mode"] = "unlock_mode"
    credential_kind: Literal["pin", "card", "app_token"]
    service_id: Ident = Field(description="the unlock-mode service whose credentials were used")
    result: Literal["granted", "denied"]
    image: ImageRef | None = None


class SecurityEvent(Envelope):
    """§2(3)①: burglar alert armed or disarmed on the dwelling panel."""

    type: Literal["security"] = "security"
    state: Literal["armed", "disarmed"]
    mode: Literal["away", "home"] = "away"


class LinkedDevice(Model):
    kind: Literal["aiseg", "air_conditioner", "water_heater", "lighting", "lock", "other"]
    model: ShortText


class DeviceFailureEvent(Envelope):
    """§2(3)①: a linked device or controller reported a fault."""

    type: Literal["device_failure"] = "device_failure"
    linked_device: LinkedDevice
    code: Annotated[str, Field(pattern=r"^[A-Z0-9-]{1,16}$")]
    message: ShortText | None = Field(default=None, description="free text: never to analytics")


# --- §2(1): usage information of a distribution (read receipts, survey answers) -------
MAX_SURVEY_QUESTIONS = 20
MAX_CHOICES = 10
MAX_ANSWER_TEXT = 500


class NoticeReadEvent(Envelope):
    """§2(1): the resident opened a contractor's notice on the dwelling panel."""

    type: Literal["notice_read"] = "notice_read"
    distribution_id: Ident
    contractor_id: Ident = Field(description="the contractor whose distribution was read")


class SurveyAnswer(Model):
    question_id: Ident
    choice_ids: tuple[Ident, ...] = Field(default=(), max_length=MAX_CHOICES)
    text: str | None = Field(
        default=None, max_length=MAX_ANSWER_TEXT, description="free text: never to analytics"
    )


class SurveyAnswerEvent(Envelope):
    """§2(1): the resident answered a contractor's survey on the dwelling panel."""

    type: Literal["survey_answer"] = "survey_answer"
    distribution_id: Ident
    contractor_id: Ident = Field(description="the contractor whose survey was answered")
    answers: tuple[SurveyAnswer, ...] = Field(min_length=1, max_length=MAX_SURVEY_QUESTIONS)


Event = Annotated[
    VisitorEvent
    | ReturnHomeEvent
    | AlarmEvent
    | DeliveryBoxEvent
    | UnlockModeEvent
    | SecurityEvent
    | DeviceFailureEvent
    | NoticeReadEvent
    | SurveyAnswerEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_MODELS: dict[EventType, type[Envelope]] = {
    EventType.VISITOR: VisitorEvent,
    EventType.RETURN_HOME: ReturnHomeEvent,
    EventType.ALARM: AlarmEvent,
    EventType.DELIVERY_BOX: DeliveryBoxEvent,
    EventType.UNLOCK_MODE: UnlockModeEvent,
    EventType.SECURITY: SecurityEvent,
    EventType.DEVICE_FAILURE: DeviceFailureEvent,
    EventType.NOTICE_READ: NoticeReadEvent,
    EventType.SURVEY_ANSWER: SurveyAnswerEvent,
}


def parse_event(payload: bytes | str) -> Event:
    """Decode one event; raises ``pydantic.ValidationError``."""
    return EVENT_ADAPTER.validate_json(payload)


# --- Resident settings (consent changes made on the dwelling panel) ---------------


class Register(Model):
    """Move-in setting: the dwelling registers with the server under a policy version."""

    kind: Literal["register"] = "register"
    policy_version: str


class Initialise(Model):
    """§7(1)①: move-out / initialisation stops all §2(2)-(4) collection."""

    kind: Literal["initialise"] = "initialise"


class ReturnHomeNotification(Model):
    """§7(1)②: return-home notification on or off."""

    kind: Literal["return_home_notification"] = "return_home_notification"
    enabled: bool


class ServiceUse(Model):
    """§5(1)②/§8: the dwelling starts or stops using a partner or unlock-mode service."""

    kind: Literal["service_use"] = "service_use"
    partner_id: Ident
    used: bool


class PurposeOptOut(Model):
    """§8: suspension of a use the baseline allows (marketing, profiling...)."""

    kind: Literal["purpose_opt_out"] = "purpose_opt_out"
    purpose: Ident
    opted_out: bool


class AcceptPolicy(Model):
    """§10: consent is consent to a version."""

    kind: Literal["accept_policy"] = "accept_policy"
    policy_version: str


SettingsChangeBody = Annotated[
    Register | Initialise | ReturnHomeNotification | ServiceUse | PurposeOptOut | AcceptPolicy,
    Field(discriminator="kind"),
]


class SettingsChange(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    change_id: UUID
    building_id: Ident
    dwelling_id: Ident
    requested_at: Timestamp
    change: SettingsChangeBody


SETTINGS_ADAPTER: TypeAdapter[SettingsChange] = TypeAdapter(SettingsChange)


class SettingsAck(Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    change_id: UUID
    dwelling_id: Ident
    applied: bool
    detail: str
    acknowledged_at: AwareDatetime


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


class PartitionedStatus(GatewayStatus):
    """A partitioned gateway's own status (``gateway/v1/{gateway_id}/status``): the
    building partitions it serves now (docs/partitions.md)."""

    partitions: tuple[int, ...]
