"""One base error, a few leaves with structured attributes."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(GatewayError):
    """A configuration, registry, policy or scenario file is wrong."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class BusError(GatewayError):
    """Something went wrong talking to the broker."""


class ConnectFailed(BusError):
    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectionLost(BusError):
    """The broker connection dropped; the caller decides whether to reconnect."""


class SessionTakenOver(ConnectionLost):
    """The broker handed our session to another connection with our client id (0x8E).

    Either a second process of ours, or an account allowed to use our client id: the
    messages queued for us went to the newcomer, or were erased by its clean start.
    """


class PublishFailed(BusError):
    def __init__(self, message: str, *, topic: str, reason_code: int | None = None) -> None:
        super().__init__(f"{message} (topic {topic!r})")
        self.topic = topic
        self.reason_code = reason_code


class SubscribeRefused(BusError):
    """The broker refused a subscription (SUBACK reason code >= 0x80)."""

    def __init__(self, topic_filter: str, reason_code: int) -> None:
        super().__init__(f"subscription to {topic_filter!r} refused (reason code {reason_code:#x})")
        self.topic = topic_filter
        self.reason_code = reason_code


class BrokerError(GatewayError):
    """The Mosquitto process could not be started or stopped."""
