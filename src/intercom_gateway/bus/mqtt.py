"""The production MQTT transport: an MQTT v5 client on an asyncio protocol.

``MqttBus`` speaks the packets of ``mqtt5``. It is ours rather than a library's for
two measured reasons:

- the gateway must acknowledge an inbound QoS 1 message only after it has finished
  with it (aiomqtt acknowledges on receipt, its issue #345), and awaiting one future
  per publish cost the gateway half its throughput: here a publish may take a callback;
- paho, which we drove from the event loop before, spent 0.42 ms an event at the
  gateway's fan-out on per-packet objects (docs/benchmarks.md). This client writes
  every packet of a loop iteration in one system call and decodes only what it uses.

paho-mqtt stays as the reference it is checked against: ``tests/reference_paho.py`` is
the same bus on paho, and the bus tests on a real Mosquitto run on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import cast

from intercom_gateway.bus import mqtt5
from intercom_gateway.bus.base import BrokerAddress, Message, UserProperties, Will
from intercom_gateway.bus.client import BrokerClient, disconnected
from intercom_gateway.errors import ConnectFailed, ConnectionLost, PublishFailed

__all__ = ["MqttBus"]


class _Protocol(asyncio.Protocol):
    """Hands the socket's events to its bus."""

    def __init__(self, bus: MqttBus) -> None:
        self.bus = bus

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, so no isinstance.
        self.bus._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.bus._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.bus._transport_closed(exc)


class MqttBus(BrokerClient[tuple[int, mqtt5.Properties]]):
    """An MQTT v5 client on the running event loop. Use as ``async with``.

    Every packet made during one turn of the event loop (publishes, acknowledgements)
    goes out in one write, at the end of that turn. Lost connections are not retried
    here: the caller makes a new bus (the gateway with backoff, keeping its session).
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
        receive_maximum: int = 1000,
        publish_window: int = 1000,
        keepalive: int = 30,
        will: Will | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(publish_window=publish_window)
        self.address = address
        self.client_id = client_id
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._receive_maximum = receive_maximum
        self._keepalive = keepalive
        self._will = will
        self._connect_timeout = connect_timeout
        self._closed: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._rest = b""  # the start of a packet whose end has not arrived yet
        # What this turn of the loop writes; handed to the transport whole, and a new
        # one begun, never reused (a transport may keep it until the socket takes it).
        self._out = bytearray()
        self._flush_handle: asyncio.Handle | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._max_packet = 0  # the broker's Maximum Packet Size; 0: it set none
        self._last_sent = self._last_received = time.monotonic()

    # --- lifecycle -----------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.address.host, self.address.port
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        try:
            context = self._tls_context()
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                ),
                self._connect_timeout,
            )
        except TimeoutError as error:
            raise ConnectFailed(
                f"cannot reach broker {host}:{port}: no answer in {self._connect_timeout} s"
            ) from error
        except (OSError, ssl.SSLError) as error:
            raise ConnectFailed(f"cannot reach broker {host}:{port}: {error}") from error
        self._queue(
            mqtt5.connect(
                self.client_id,
                clean_start=self._clean_start,
                keepalive=self._keepalive,
                session_expiry=self._session_expiry,
                receive_maximum=self._receive_maximum,
                username=self.address.username,
                password=self.address.password,
                will=self._will,
            )
        )
        try:
            reason, properties = await asyncio.wait_for(self._connack, self._connect_timeout)
        except TimeoutError as error:
            self._detach()
            raise ConnectFailed(f"no CONNACK from broker {host}:{port} in time") from error
        except ConnectFailed:
            self._detach()
            raise
        if reason >= 0x80:
            self._detach()
            raise ConnectFailed(
                f"broker refused connection: {mqtt5.reason_name(reason)}", reason_code=reason
            )
        values = properties.values
        receive_maximum = values.get(mqtt5.RECEIVE_MAXIMUM)
        if isinstance(receive_maximum, int):  # the broker's limit on our unacked publishes
            self._inflight.size = min(self._inflight.size, receive_maximum)
        maximum_packet = values.get(mqtt5.MAXIMUM_PACKET_SIZE)
        if isinstance(maximum_packet, int):
            self._max_packet = maximum_packet
        if self._keepalive:
            self._keepalive_task = loop.create_task(
                self._keep_alive(), name=f"mqtt-keepalive-{self.client_id}"
            )

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.address.tls
        if tls is None:
            return None
        # Verifies the broker's certificate and its host name, as paho's tls_set() does.
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        return context

    async def _keep_alive(self) -> None:
        interval = self._keepalive
        while True:
            await asyncio.sleep(interval / 2)  # the keepalive clock, not synchronisation
            now = time.monotonic()
            if now - self._last_received > interval * 1.5:
                self._connection_lost(
                    ConnectionLost(f"nothing from the broker in {interval * 1.5:g} s (keepalive)")
                )
                return
            if now - self._last_sent >= interval / 2:
                self._queue(mqtt5.PING_PACKET)

    async def close(self, *, with_will: bool = False) -> None:
        """Disconnect; ``with_will`` asks the broker to publish our last will all the same."""
        if self._closing:
            return
        self._closing = True
        transport = self._transport
        if self._lost is None and transport is not None and not transport.is_closing():
            self._out += mqtt5.DISCONNECT_WITH_WILL_PACKET if with_will else mqtt5.DISCONNECT_PACKET
            self._flush()
            transport.close()  # writes what is buffered first
            if self._closed is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._closed), 5)
        self._detach()
        self._fail_pending(ConnectionLost("bus closed"))

    def _detach(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out = bytearray()

    def _transport_closed(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if not self._closing:
            cause = exc or "the broker closed it"
            self._connection_lost(ConnectionLost(f"connection to the broker lost: {cause}"))

    # --- writing ---------------------------------------------------------------------

    def _queue(self, packet: bytes) -> None:
        self._out += packet
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._out and self._transport is not None:
            self._transport.write(self._out)
            self._out = bytearray()
            self._last_sent = time.monotonic()

    def _allocate_id(self) -> int:
        packet_id = self._next_id % mqtt5.MAX_PACKET_ID + 1
        pending, subscribing = self._inflight.pending, self._subscribing
        while packet_id in pending or packet_id in subscribing:
            packet_id = packet_id % mqtt5.MAX_PACKET_ID + 1
        self._next_id = packet_id
        return packet_id

    # --- reading ---------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        self._last_received = time.monotonic()
        if self._rest:
            data = self._rest + data
        position, end = 0, len(data)
        acknowledged = self._inflight.acknowledged
        try:
            while end - position >= 2 and self._lost is None:
                first = data[position]
                length = data[position + 1]
                if length < 0x80:
                    cursor = position + 2
                else:
                    length, cursor = mqtt5.read_varint(data, position + 1, end)
                    if cursor < 0:
                        break  # the rest of its length has not arrived yet
                if cursor + length > end:
                    break  # the rest of this packet has not arrived yet
                position = cursor + length
                if first == mqtt5.PUBACK and length == 2:
                    # The commonest packet by far, "Success" with nothing else in it:
                    # read where it lies, without a copy of its body.
                    acknowledged(data[cursor] << 8 | data[cursor + 1], 0)
                    continue
                body = data[cursor:position]
                kind = first & 0xF0
                if kind == mqtt5.PUBLISH:
                    self._on_publish(first, body)
                elif kind == mqtt5.PUBACK:
                    self._on_puback(body)
                else:
                    self._on_control(first, body)
        except mqtt5.MalformedPacket as error:
            self._connection_lost(ConnectionLost(f"malformed packet from the broker: {error}"))
            return
        self._rest = data[position:]

    def _on_publish(self, first: int, body: bytes) -> None:
        message = mqtt5.read_publish(first, body)
        if message.qos == 2:
            raise mqtt5.MalformedPacket("a QoS 2 PUBLISH, though no subscription asked for QoS 2")
        if message.qos and not self._manual_ack:
            self._queue(mqtt5.puback(message.mid))
        self._inbox.put_nowait(message)

    def _on_puback(self, body: bytes) -> None:
        packet_id, reason = mqtt5.read_ack(body)
        self._inflight.acknowledged(packet_id, reason)

    def _on_control(self, first: int, body: bytes) -> None:
        if first == mqtt5.CONNACK:
            if self._connack is not None and not self._connack.done():
                connack = mqtt5.read_connack(body)
                self.session_present = bool(body[0] & 0x01)
                self._connack.set_result(connack)
        elif first == mqtt5.SUBACK:
            self._subacked(*mqtt5.read_suback(body))
        elif first == mqtt5.PINGRESP:
            pass  # its arrival is all that counts
        elif first == mqtt5.DISCONNECT:
            reason, text = mqtt5.read_disconnect(body)
            detail = f": {text}" if text else ""
            self._connection_lost(disconnected(reason, f"{mqtt5.reason_name(reason)}{detail}"))
        else:
            raise mqtt5.MalformedPacket(f"unexpected packet type 0x{first:02x}")

    # --- the Bus interface -----------------------------------------------------------

    async def subscribe(self, *filters: str, qos: int = 1, retain_handling: int = 0) -> None:
        self._check()
        if not filters:
            return
        packet_id = self._allocate_id()
        self._queue(mqtt5.subscribe(packet_id, filters, qos, retain_handling))
        await self._granted(packet_id, filters)

    def ack(self, message: Message) -> None:
        """Acknowledge an inbound QoS 1 message (only meaningful with manual_ack)."""
        if self._manual_ack and message.qos > 0 and self._lost is None and not self._closing:
            self._queue(mqtt5.puback(message.mid))

    # --- writing a PUBLISH (the rest of publish is BrokerClient's) -------------------

    def _transmit(
        self, topic: str, payload: bytes, qos: int, retain: bool, user_properties: UserProperties
    ) -> int:
        """Queue the PUBLISH; its packet id (0 at QoS 0)."""
        packet_id = self._allocate_id() if qos else 0
        try:
            header = mqtt5.publish_header(
                topic,
                len(payload),
                qos=qos,
                retain=retain,
                packet_id=packet_id,
                properties=mqtt5.user_properties(user_properties),
            )
        except ValueError as error:
            raise PublishFailed(str(error), topic=topic) from error
        if self._max_packet and len(header) + len(payload) > self._max_packet:
            size = len(header) + len(payload)
            raise PublishFailed(
                f"a {size:,}-byte packet is over the broker's maximum of {self._max_packet:,}",
                topic=topic,
                reason_code=0x95,
            )
        out = self._out
        out += header
        out += payload
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        return packet_id
