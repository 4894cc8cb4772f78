"""A bus on a broker connection, above its socket: what any MQTT client code shares.

``mqtt.MqttBus`` and the paho reference of the tests (tests/reference_paho.py) differ
only in how packets reach the broker. The rest is here, once: the window of publishes
awaiting their PUBACK, the subscriptions awaiting their SUBACK, the inbox, and how the
connection ends (every waiter fails with the same error).
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Generic, Self, TypeVar

from intercom_gateway.bus import mqtt5
from intercom_gateway.bus.base import DoneCallback, Message, UserProperties
from intercom_gateway.bus.inflight import Inflight, Publishing
from intercom_gateway.errors import (
    BusError,
    ConnectFailed,
    ConnectionLost,
    SessionTakenOver,
    SubscribeRefused,
)

__all__ = ["SESSION_TAKEN_OVER", "BrokerClient", "check_granted", "disconnected"]

# DISCONNECT reason: another connection with our client id took the session.
SESSION_TAKEN_OVER = 0x8E

Connack = TypeVar("Connack")


def check_granted(filters: Sequence[str], codes: Sequence[int]) -> None:
    """Every SUBACK code checked: Mosquitto's ACL refusals are otherwise silent."""
    if len(codes) != len(filters):
        raise BusError(f"SUBACK has {len(codes)} reason codes for {len(filters)} filters")
    for topic_filter, code in zip(filters, codes, strict=True):
        if code >= 0x80:
            raise SubscribeRefused(topic_filter, code)


def disconnected(reason_code: int, reason: str) -> ConnectionLost:
    """The error for a DISCONNECT from the broker, ``reason`` its reason in words."""
    lost = SessionTakenOver if reason_code == SESSION_TAKEN_OVER else ConnectionLost
    return lost(f"broker disconnected: {reason}")


class Inbox:
    """Inbound messages in arrival order, then the error that ended the connection.

    ``asyncio.Queue`` without what the bus does not use (a size limit, ``join``): a
    message costs an append and a look at an event, and a reader that finds messages
    waiting takes them without a coroutine of its own.
    """

    __slots__ = ("_ready", "items")

    def __init__(self) -> None:
        self.items: deque[Message | BaseException] = deque()
        self._ready = asyncio.Event()

    def put_nowait(self, item: Message | BaseException) -> None:
        self.items.append(item)
        self._ready.set()

    async def wait(self) -> None:
        """Until there is something to take."""
        while not self.items:
            self._ready.clear()
            await self._ready.wait()


class BrokerClient(Publishing, Generic[Connack]):
    """The state of one connection that is not the socket's. Use as ``async with``.

    A subclass connects (``_connect``, resolving ``_connack`` with its CONNACK), puts
    a PUBLISH on the wire (``_transmit``), hands on inbound messages (``_inbox``),
    acknowledgements (``_inflight``, ``_subacked``) and a lost connection
    (``_connection_lost``), and lets go of its socket (``_detach``).
    """

    def __init__(self, *, publish_window: int) -> None:
        # Packet ids are 16-bit: no more unacknowledged publishes can exist.
        self._inflight = Inflight(min(publish_window, mqtt5.MAX_PACKET_ID))
        self._subscribing: dict[int, asyncio.Future[list[int]]] = {}
        self._inbox = Inbox()
        self._lost: BaseException | None = None
        self._closing = False
        # The CONNACK's Session Present flag: with clean_start=False, False means the
        # broker had no session for us (never had one, expired, or erased).
        self.session_present = False
        self._connack: asyncio.Future[Connack] | None = None

    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    def _detach(self) -> None:
        """Let go of the socket and of what runs on it; idempotent."""

    @abc.abstractmethod
    def _transmit(
        self, topic: str, payload: bytes, qos: int, retain: bool, user_properties: UserProperties
    ) -> int:
        """Put one PUBLISH on its way, its place in the window taken; its packet id."""

    @abc.abstractmethod
    async def close(self, *, with_will: bool = False) -> None:
        """Disconnect; ``with_will`` asks the broker to publish our last will all the same."""

    async def __aenter__(self) -> Self:
        await self._connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # Leaving on an error, even a cancellation: whoever reads our will (the gateway's
        # status) must learn we are gone; only a clean exit is a clean disconnect.
        await self.close(with_will=exc_type is not None)

    # --- the end of the connection ---------------------------------------------------

    def _connection_lost(self, error: BaseException) -> None:
        if self._lost is not None:
            return
        self._lost = error
        self._detach()
        self._fail_pending(error)
        self._inbox.put_nowait(error)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectFailed(str(error)))

    def _fail_pending(self, error: BaseException) -> None:
        self._inflight.fail_all(error)
        for future in self._subscribing.values():
            if not future.done():
                future.set_exception(error)
        self._subscribing.clear()

    def _check(self) -> None:
        if self._lost is not None:
            raise ConnectionLost(str(self._lost)) from self._lost
        if self._closing:
            raise ConnectionLost("bus closed")

    # --- acknowledgements ----------------------------------------------------------

    async def _granted(self, packet_id: int, filters: Sequence[str]) -> None:
        """Wait for the SUBACK of the SUBSCRIBE ``packet_id`` and check its every code."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subscribing[packet_id] = future
        check_granted(filters, await future)

    def _subacked(self, packet_id: int, codes: list[int]) -> None:
        future = self._subscribing.pop(packet_id, None)
        if future is not None and not future.done():
            future.set_result(codes)

    # --- the Bus interface, but for subscribe and ack ---------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        items = self._inbox.items
        while True:
            if not items:
                await self._inbox.wait()
            item = items.popleft()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def drain(self) -> None:
        await self._inflight.drain()

    async def _send(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        user_properties: UserProperties,
        on_done: DoneCallback,
    ) -> None:
        """Queue a publish; waits only while the publish window is full."""
        if not self._inflight.try_reserve():
            await self._inflight.reserve()
        try:
            if self._lost is not None or self._closing:
                self._check()  # raises
            packet_id = self._transmit(topic, payload, qos, retain, user_properties)
        except BaseException:
            self._inflight.release()  # it never went
            raise
        self._inflight.sent(packet_id, qos, topic, on_done)
