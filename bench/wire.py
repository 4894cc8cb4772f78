"""A minimal MQTT v5 client on an asyncio protocol: the benchmark's measuring instruments.

The publisher and subscriber share two cores with the broker and the relay under test,
so what they cost is taken from what is measured. paho decodes every inbound property
set into a ``Properties`` object and does a few system calls per packet; this client
reads whatever the socket has in one call, parses only the fixed header, topic and
payload, and writes a whole batch of packets (or PUBACKs) at once. It is not a general
client: no TLS, no QoS 2, no reconnect, no keepalive, nothing but what is measured.
Its packets are made by ``intercom_gateway.bus.mqtt5``, the codec of the gateway's own
transport, which tests/unit/test_mqtt5.py checks against paho's.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence

from intercom_gateway.bus import mqtt5
from intercom_gateway.bus.mqtt5 import CONNACK, PUBACK, PUBLISH, SUBACK

_PACKET_ID = struct.Struct("!H")

# (topic, payload, arrival monotonic_ns is taken by the caller)
OnPublish = Callable[[str, bytes], None]


class WireError(Exception):
    pass


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """QoS 1, no properties."""
    header = mqtt5.publish_header(
        topic, len(payload), qos=1, retain=False, packet_id=packet_id, properties=b"\x00"
    )
    return header + payload


class Client(asyncio.Protocol):
    """Connect, subscribe, publish at QoS 1; acknowledges every QoS 1 message it gets."""

    def __init__(self, on_publish: OnPublish | None = None) -> None:
        self.on_publish = on_publish
        self.acked = 0  # PUBACKs received for our publishes
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_id = 0
        self.acked_changed = asyncio.Event()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(WireError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        acks: list[bytes] = []
        position = 0
        end = len(buffer)
        while position + 2 <= end:
            kind = buffer[position]
            length, cursor = mqtt5.read_varint(buffer, position + 1, end)
            if cursor < 0 or cursor + length > end:
                break  # the rest of this packet has not arrived yet
            body = bytes(buffer[cursor : cursor + length])
            position = cursor + length
            if kind & 0xF0 == PUBLISH:
                ack = self._publish(kind, body)
                if ack is not None:
                    acks.append(ack)
            elif kind == PUBACK:
                self.acked += 1
            else:
                self._control(kind, body)
        del buffer[:position]
        if acks and self._transport is not None:
            self._transport.write(b"".join(acks))
        if self.acked:
            self.acked_changed.set()

    def _publish(self, kind: int, body: bytes) -> bytes | None:
        qos = (kind >> 1) & 0x03
        topic_length = _PACKET_ID.unpack_from(body, 0)[0]
        topic = body[2 : 2 + topic_length].decode()
        cursor = 2 + topic_length
        packet_id = None
        if qos:
            packet_id = body[cursor : cursor + 2]
            cursor += 2
        properties, cursor = mqtt5.read_varint(body, cursor, len(body))
        if self.on_publish is not None:
            self.on_publish(topic, body[cursor + properties :])
        return None if packet_id is None else bytes([PUBACK, 2]) + packet_id

    def _control(self, kind: int, body: bytes) -> None:
        if kind == CONNACK:
            key = 0
        elif kind == SUBACK:
            key = _PACKET_ID.unpack_from(body, 0)[0]
        else:
            return  # PINGRESP, DISCONNECT and the like do not matter here
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(body)

    # --- what the instruments call ----------------------------------------------------

    def _expect(self, key: int) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return future

    def write(self, data: bytes) -> None:
        if self._transport is None:
            raise WireError("not connected")
        self._transport.write(data)

    async def handshake(self, client_id: str, username: str, password: str) -> None:
        reply = self._expect(0)
        self.write(
            mqtt5.connect(
                client_id, clean_start=True, keepalive=0, username=username, password=password
            )
        )
        body = await asyncio.wait_for(reply, 10)
        if body[1] >= 0x80:
            raise WireError(f"broker refused the connection: reason 0x{body[1]:02x}")

    async def subscribe(self, filters: Sequence[str]) -> None:
        reply = self._expect(1)
        self.write(mqtt5.subscribe(1, list(filters), 1))
        body = await asyncio.wait_for(reply, 10)
        properties, cursor = mqtt5.read_varint(body, 2, len(body))  # after the packet id
        codes = body[cursor + properties :]  # one reason code a filter
        if any(code >= 0x80 for code in codes):
            raise WireError(f"subscription refused: {codes.hex()}")

    def next_packet_id(self) -> int:
        self._next_id = self._next_id % 65_535 + 1
        return self._next_id

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.write(b"\xe0\x00")  # DISCONNECT, normal
            self._transport.close()
            await self._closed


async def connect(
    host: str,
    port: int,
    *,
    client_id: str,
    username: str,
    password: str,
    on_publish: OnPublish | None = None,
) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(on_publish), host, port)
    await client.handshake(client_id, username, password)
    return client
