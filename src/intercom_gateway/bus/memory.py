"""A broker and its clients in one process, for component tests.

Every message crosses the same MQTT v5 codec as on the wire, twice: the publisher's
PUBLISH packet is encoded and decoded by the broker, and each subscriber's copy is
encoded with its own packet id and decoded on delivery. A user property the codec
cannot carry, or reads back differently, fails here as it would on Mosquitto.

What is modelled, as Mosquitto does it (the bus contract tests run both): wildcard
routing, a copy for each matching subscription of a client (Mosquitto 2's
``allow_duplicate_messages`` default), retained messages (an empty
one clears) and retain handling, the RETAIN flag set only on retained copies sent at
subscribe time, kept sessions (``session_expiry`` > 0) that queue QoS 1 messages while
their client is away and deliver again, marked DUP, what a ``manual_ack`` client had
not acknowledged. Not modelled: flow control, packet size limits, ACLs, takeover.
A publish is acknowledged as soon as it is routed: ``on_done`` runs before
``publish`` returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from intercom_gateway.bus import mqtt5
from intercom_gateway.bus.base import DoneCallback, Message, UserProperties
from intercom_gateway.bus.inflight import Publishing
from intercom_gateway.core import topics
from intercom_gateway.errors import ConnectionLost, PublishFailed

__all__ = ["MemoryBroker", "MemoryBus"]

_DUP = 0x08


@dataclass
class _Session:
    """What the broker keeps of a client: its subscriptions and undelivered messages."""

    client_id: str
    subscriptions: dict[str, int] = field(default_factory=dict)  # filter -> granted QoS
    unacked: dict[int, bytes] = field(default_factory=dict)  # packet id -> PUBLISH sent
    queued: list[tuple[Message, int]] = field(default_factory=list)  # while away
    next_id: int = 0

    def granted(self, topic: str) -> list[int]:
        """The QoS of each of this session's filters that matches ``topic``."""
        return [q for f, q in self.subscriptions.items() if topics.matches(f, topic)]

    def allocate_id(self) -> int:
        packet_id = self.next_id
        while True:
            packet_id = packet_id % mqtt5.MAX_PACKET_ID + 1
            if packet_id not in self.unacked:
                self.next_id = packet_id
                return packet_id


@dataclass
class MemoryBroker:
    """A broker in one process: wildcard routing, retained messages, kept sessions."""

    buses: list[MemoryBus] = field(default_factory=list)
    retained: dict[str, Message] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)  # kept, client away

    def client(
        self,
        client_id: str = "memory",
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
    ) -> MemoryBus:
        """A connected bus; with ``clean_start=False`` it resumes a kept session."""
        bus = MemoryBus(
            self,
            client_id,
            clean_start=clean_start,
            session_expiry=session_expiry,
            manual_ack=manual_ack,
        )
        self.buses.append(bus)
        bus._resume()
        return bus

    def route(self, message: Message) -> None:
        """Hand a published message to every session subscribed to its topic."""
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)  # an empty retained message clears
        for bus in list(self.buses):
            bus.deliver(message)
        for session in self.sessions.values():
            for granted in session.granted(message.topic):
                if granted and message.qos:  # QoS 0 is not queued for a client away
                    session.queued.append((message, granted))

    def _resume(self, bus: MemoryBus) -> bool:
        """Give ``bus`` its kept session, if there is one; whether there was."""
        kept = self.sessions.pop(bus.client_id, None)
        if kept is None or bus._clean_start:
            return False
        bus._session = kept
        return True

    def _leave(self, bus: MemoryBus) -> None:
        if bus in self.buses:
            self.buses.remove(bus)
        if bus._session_expiry:
            self.sessions[bus.client_id] = bus._session


class MemoryBus(Publishing):
    """A client of ``MemoryBroker``; ``ack`` calls are kept in ``acked`` for tests."""

    def __init__(
        self,
        broker: MemoryBroker,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.acked: list[Message] = []
        self.session_present = False
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._session = _Session(client_id)
        self._inbox: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    async def __aenter__(self) -> MemoryBus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.broker._leave(self)

    def _resume(self) -> None:
        """Connected: with a kept session, what it held comes first, as on Mosquitto."""
        self.session_present = self.broker._resume(self)
        if not self.session_present:
            return
        session = self._session
        for packet in list(session.unacked.values()):
            self._receive(bytes((packet[0] | _DUP,)) + packet[1:])
        queued, session.queued = session.queued, []
        for message, granted in queued:
            self._deliver(message, granted, retain=False)

    def deliver(self, message: Message) -> None:
        """The broker offers every message it routes; this client takes what it asked for."""
        for granted in self._session.granted(message.topic):
            self._deliver(message, granted, retain=False)

    def _deliver(self, message: Message, granted: int, *, retain: bool) -> None:
        """Send this client its copy, encoded as the broker would put it on the wire."""
        qos = min(message.qos, granted)
        packet_id = self._session.allocate_id() if qos else 0
        packet = mqtt5.publish_packet(
            message.topic,
            message.payload,
            qos=qos,
            retain=retain,
            packet_id=packet_id,
            pairs=message.user_properties,
        )
        if qos and self._manual_ack:
            self._session.unacked[packet_id] = packet
        self._receive(packet)

    def _receive(self, packet: bytes) -> None:
        first, body = mqtt5.split_packet(packet)
        self._inbox.append(mqtt5.read_publish(first, body))
        self._ready.set()

    # --- the Bus interface -----------------------------------------------------------

    async def subscribe(self, *filters: str, qos: int = 1, retain_handling: int = 0) -> None:
        subscriptions = self._session.subscriptions
        for topic_filter in filters:
            new = topic_filter not in subscriptions
            subscriptions[topic_filter] = qos
            if retain_handling == 2 or (retain_handling == 1 and not new):
                continue
            for message in list(self.broker.retained.values()):
                if topics.matches(topic_filter, message.topic):
                    self._deliver(message, qos, retain=True)

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            while not self._inbox:
                self._ready.clear()
                await self._ready.wait()
            yield self._inbox.popleft()

    def ack(self, message: Message) -> None:
        self.acked.append(message)
        if message.qos:
            self._session.unacked.pop(message.mid, None)

    async def _send(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        user_properties: UserProperties,
        on_done: DoneCallback,
    ) -> None:
        """Route at once; ``on_done`` (the PUBACK) runs before ``publish`` returns."""
        if self._closed:
            raise ConnectionLost("bus closed")
        try:
            packet = mqtt5.publish_packet(
                topic, payload, qos=qos, retain=retain, packet_id=1, pairs=tuple(user_properties)
            )
        except ValueError as error:
            raise PublishFailed(str(error), topic=topic) from error
        self.broker.route(mqtt5.read_publish(*mqtt5.split_packet(packet)))
        on_done(None)

    async def drain(self) -> None:
        """Nothing to wait for: every publish was acknowledged when it was routed."""
