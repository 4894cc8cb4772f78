"""One test body, two transports (FastStream's pattern): the in-memory broker and the
real Mosquitto of the session, behind the same few calls.

A test asks for the ``transport`` fixture (tests/conftest.py) and makes its buses with
``transport.bus(account, ...)``: on memory, a client of a broker of the test's own; on
Mosquitto, an ``MqttBus`` logged in as that generated account (its ACL applies), with a
client id the broker accepts. The Mosquitto case is marked ``broker``; the memory case
needs nothing, so ``-m "not broker"`` still runs every test body once.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.bus import MemoryBroker, MemoryBus, Message, MqttBus


class Transport(Protocol):
    name: str

    def bus(self, account: str, suffix: str | None = None, **options: Any) -> Any:
        """A bus to use as ``async with``; ``suffix`` names its session (else a fresh one)."""
        ...


class MemoryTransport:
    name = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def bus(self, account: str, suffix: str | None = None, **options: Any) -> MemoryBus:
        return self.broker.client(f"{account}.{suffix or uuid.uuid4().hex[:8]}", **options)


class AckRecordingMqttBus(MqttBus):
    """``MqttBus`` keeping what it was asked to acknowledge, as ``MemoryBus.acked`` does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acked: list[Message] = []

    def ack(self, message: Message) -> None:
        self.acked.append(message)
        super().ack(message)


class MosquittoTransport:
    name = "mosquitto"

    def __init__(self, broker: Mosquitto) -> None:
        self.mosquitto = broker

    def bus(self, account: str, suffix: str | None = None, **options: Any) -> MqttBus:
        address = self.mosquitto.address(account)
        client_id = address.client_id(suffix or uuid.uuid4().hex[:8])
        return AckRecordingMqttBus(address, client_id=client_id, **options)
