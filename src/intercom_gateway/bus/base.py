"""The bus seam: what the gateway, simulators and tests need from MQTT, and its values.

One way to subscribe, one to iterate messages, one to acknowledge, one to publish, and
``drain`` to wait for what is still unacknowledged. Two implementations:
``mqtt.MqttBus`` (the production transport) and ``memory.MemoryBus`` (one process, for
component tests; every message goes through the same MQTT v5 codec as on the wire).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "BrokerAddress",
    "Bus",
    "DoneCallback",
    "Message",
    "TlsOptions",
    "UserProperties",
    "Will",
]

UserProperties = Sequence[tuple[str, str]]
# Called once per publish: None when the broker acknowledged it, else the error.
DoneCallback = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class Message:
    """An inbound PUBLISH as the bus hands it over; ``mid`` is its packet id."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    mid: int = 0
    user_properties: tuple[tuple[str, str], ...] = ()

    def properties(self, name: str) -> list[str]:
        return [value for key, value in self.user_properties if key == name]


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class TlsOptions:
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None

    def client_id(self, suffix: str) -> str:
        """A client id this account may use: ``<username>.<suffix>``.

        The broker refuses any other id than the account's name or that form
        (``data/broker/clientid_binding.c``, docs/security.md), so that no account can
        take over another's session.
        """
        return suffix if self.username is None else f"{self.username}.{suffix}"


class Bus(Protocol):
    """What the gateway, simulators and tests need from MQTT."""

    async def subscribe(self, *filters: str, qos: int = 1, retain_handling: int = 0) -> None:
        """Subscribe; every SUBACK code is checked (``SubscribeRefused``).

        ``retain_handling`` 0 sends retained messages at every subscribe, 1 only for a
        new subscription, 2 never (MQTT 5.0, 3.8.3.1).
        """
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Inbound messages in arrival order; raises ``ConnectionLost`` when the bus is."""
        ...

    def ack(self, message: Message) -> None:
        """Acknowledge an inbound QoS 1 message once it is handled (with manual_ack)."""
        ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        user_properties: UserProperties = (),
        on_done: DoneCallback | None = None,
    ) -> None:
        """Publish at QoS 0 or 1.

        Without ``on_done`` it returns once the broker acknowledged the message (its
        PUBACK), raising ``PublishFailed`` if the broker refused it. With ``on_done`` it
        returns as soon as the message is queued (waiting only while the publish window
        is full) and ``on_done`` gets the outcome: how the gateway keeps thousands of
        publishes in flight without a future each. Either way ``PublishFailed`` is raised
        at once for a message that cannot be sent at all (too large, bad UTF-8).
        """
        ...

    async def drain(self) -> None:
        """Wait until every publish queued so far is acknowledged (or failed)."""
        ...
