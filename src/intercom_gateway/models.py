"""The models a partner's own tests import (README, "Testing your partner integration").

They live in ``intercom_gateway.core.models``; this module is their stable public name.
"""

from intercom_gateway.core.models import (
    AcceptPolicy,
    AlarmEvent,
    DeliveryBoxEvent,
    DeviceFailureEvent,
    Event,
    EventType,
    Forwarded,
    GatewayStatus,
    Initialise,
    PurposeOptOut,
    Receipt,
    Register,
    Rejection,
    RejectReason,
    ReturnHomeEvent,
    ReturnHomeNotification,
    SecurityEvent,
    ServiceUse,
    SettingsAck,
    SettingsChange,
    UnlockModeEvent,
    VisitorEvent,
)

__all__ = [
    "AcceptPolicy",
    "AlarmEvent",
    "DeliveryBoxEvent",
    "DeviceFailureEvent",
    "Event",
    "EventType",
    "Forwarded",
    "GatewayStatus",
    "Initialise",
    "PurposeOptOut",
    "Receipt",
    "Register",
    "RejectReason",
    "Rejection",
    "ReturnHomeEvent",
    "ReturnHomeNotification",
    "SecurityEvent",
    "ServiceUse",
    "SettingsAck",
    "SettingsChange",
    "UnlockModeEvent",
    "VisitorEvent",
]
