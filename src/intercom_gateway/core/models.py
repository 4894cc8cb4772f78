"""Event, settings and output models: the vocabulary of every topic.

Panels publish the events of §2(2), §2(3)①, §2(4) and §2(5) of the privacy policy
(see ``shared/spec/privacy-policy.md``). Every model is frozen, forbids unknown
fields and is decoded with ``model_validate_json``. Images are never inline bytes:
a reference (id, content type, size, sha256), as real intercom APIs do.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, TypeAdapter, model_validator

from intercom_gateway.core.outputs import ConsentNotice as ConsentNotice
from intercom_gateway.core.outputs import Forwarded as Forwarded
from intercom_gateway.core.outputs import GatewayStatus as GatewayStatus
from intercom_gateway.core.outputs import PartitionedStatus as PartitionedStatus
from intercom_gateway.core.outputs import Receipt as Receipt
from intercom_gateway.core.outputs import Rejection as Rejection

# What the gateway publishes (outputs.py), re-exported with the rest of the vocabulary.
from intercom_gateway.core.outputs import RejectReason as RejectReason

# The shared values (values.py), re-exported: models is where the vocabulary is found.
from intercom_gateway.core.values import EARLIEST_YEAR as EARLIEST_YEAR
from intercom_gateway.core.values import LATEST_YEAR as LATEST_YEAR
from intercom_gateway.core.values import MAX_UTC_OFFSET as MAX_UTC_OFFSET
from intercom_gateway.core.values import SCHEMA_VERSION as SCHEMA_VERSION
from intercom_gateway.core.values import DeviceValues as DeviceValues
from intercom_gateway.core.values import Handset as Handset
from intercom_gateway.core.values import Ident as Ident
from intercom_gateway.core.values import ImageRef as ImageRef
from intercom_gateway.core.values import LinkedDevice as LinkedDevice
from intercom_gateway.core.values import Model as Model
from intercom_gateway.core.values import ShortText as ShortText
from intercom_gateway.core.values import Timestamp as Timestamp
from intercom_gateway.core.values import random_uuid as random_uuid
from intercom_gateway.core.values import utc_now as utc_now


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
    # §2(3)① linked devices and scenes, §2(4) lobby calls to the Intercom app (part A)
    DEVICE_CONTROL = "device_control"
    SCENE = "scene"
    DEVICE_STATE = "device_state"
    LOBBY_CALL = "lobby_call"
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
            EventType.DEVICE_CONTROL,
            EventType.SCENE,
            EventType.DEVICE_STATE,
            EventType.NOTICE_READ,
            EventType.SURVEY_ANSWER,
        }
    ),
    DeviceRole.LOBBY_PANEL: frozenset(
        {EventType.VISITOR, EventType.UNLOCK_MODE, EventType.LOBBY_CALL}
    ),
    DeviceRole.DELIVERY_BOX: frozenset({EventType.DELIVERY_BOX, EventType.DEVICE_FAILURE}),
}


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


class DeviceFailureEvent(Envelope):
    """§2(3)①: a linked device or controller reported a fault."""

    type: Literal["device_failure"] = "device_failure"
    linked_device: LinkedDevice
    code: Annotated[str, Field(pattern=r"^[A-Z0-9-]{1,16}$")]
    message: ShortText | None = Field(default=None, description="free text: never to analytics")


# --- §2(3)① linked devices and scenes, §2(4) lobby calls (part A) --------------------


class DeviceControlEvent(Envelope):
    """§2(3)①: an instruction to a linked device, from the panel or the app, and its result."""

    type: Literal["device_control"] = "device_control"
    instruction_id: Ident
    linked_device: LinkedDevice
    command: Literal[
        "power_on", "power_off", "set_mode", "set_temperature", "set_level", "lock", "unlock"
    ]
    parameters: DeviceValues = Field(default_factory=dict)
    result: Literal["ok", "failed", "timeout"]
    origin: Literal["panel", "app"]
    error: ShortText | None = Field(default=None, description="free text: never to analytics")


class SceneEvent(Envelope):
    """§2(3)①: a scene set (saved) or run on the dwelling panel."""

    type: Literal["scene"] = "scene"
    scene_id: Ident
    name: ShortText | None = Field(
        default=None, description="the resident's name for it, free text: never to analytics"
    )
    action: Literal["set", "run"]
    devices_affected: int = Field(ge=0, le=64)


class DeviceStateEvent(Envelope):
    """§2(3)①: a linked device's state report."""

    type: Literal["device_state"] = "device_state"
    linked_device: LinkedDevice
    values: DeviceValues = Field(description="what the device reports, e.g. power, mode")


class LobbyCallEvent(Envelope):
    """§2(4): a call from the lobby panel to a dwelling, relayed to the Intercom app.

    No image: §3(3) names visitor images for visitor events only (the lobby panel's
    ``visitor`` event carries it).
    """

    type: Literal["lobby_call"] = "lobby_call"
    call_id: Ident
    outcome: Literal["answered", "missed", "declined"]
    handset: Handset | None = Field(default=None, description="the handset that answered")


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
    | DeviceControlEvent
    | SceneEvent
    | DeviceStateEvent
    | LobbyCallEvent
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
    EventType.DEVICE_CONTROL: DeviceControlEvent,
    EventType.SCENE: SceneEvent,
    EventType.DEVICE_STATE: DeviceStateEvent,
    EventType.LOBBY_CALL: LobbyCallEvent,
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
    # §8: the resident's stop-provision request, named in the service's consent notice.
    request: Literal["stop_provision"] | None = None


class PurposeOptOut(Model):
    """§8: suspension of a use the baseline allows (marketing, profiling...)."""

    kind: Literal["purpose_opt_out"] = "purpose_opt_out"
    purpose: Ident
    opted_out: bool


class AcceptPolicy(Model):
    """§10: consent is consent to a version."""

    kind: Literal["accept_policy"] = "accept_policy"
    policy_version: str


class IntercomApp(Model):
    """§7(2): the dwelling's handsets linked to (or all removed from) the Intercom app.

    Removing the device from the Intercom app stops §2(4): no lobby call is collected.
    """

    kind: Literal["intercom_app"] = "intercom_app"
    linked: bool


SettingsChangeBody = Annotated[
    Register
    | Initialise
    | ReturnHomeNotification
    | ServiceUse
    | PurposeOptOut
    | AcceptPolicy
    | IntercomApp,
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
