"""Just enough of an MQTT 5 server to send what Debian's Mosquitto 2.0.11 never sends.

On a session takeover MQTT 5 (§3.1.4) has the server send the old connection a
DISCONNECT with reason 0x8E. Mosquitto 2.0.11 closes that connection without one (the
fix came in 2.0.15: eclipse-mosquitto issue #2607), so the real broker cannot exercise
the buses' and the gateway's handling of 0x8E. This server can: it accepts any CONNECT,
grants every subscription, acknowledges every QoS 1 publish and answers pings, and on
``take_over()`` sends the current connection DISCONNECT 0x8E and closes it. It is the
proof of that one path only; everything else in test_identity.py runs on Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from intercom_gateway.bus import mqtt5

SESSION_TAKEN_OVER = b"\xe0\x02\x8e\x00"  # DISCONNECT, reason 0x8E, no properties


class TakeoverServer:
    def __init__(self, *, session_present: bool = False) -> None:
        self.session_present = session_present
        self.connects = 0
        self.connected = asyncio.Condition()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TakeoverServer]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            for writer in self._writers:
                writer.close()
            self._server.close()
            await self._server.wait_closed()

    async def wait_connects(self, count: int) -> None:
        async with self.connected:
            await self.connected.wait_for(lambda: self.connects >= count)

    async def take_over(self) -> None:
        """What a broker does to the old connection when another takes its session."""
        writer = self._writers[-1]
        writer.write(SESSION_TAKEN_OVER)
        await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first, body = await _read_packet(reader)
                reply = await self._answer(first, body)
                if reply is None:
                    break
                if reply:
                    writer.write(reply)
        writer.close()

    async def _answer(self, first: int, body: bytes) -> bytes | None:
        kind = first & 0xF0
        if kind == mqtt5.CONNECT:
            async with self.connected:
                self.connects += 1
                self.connected.notify_all()
            return bytes([mqtt5.CONNACK, 3, int(self.session_present), 0, 0])
        if first == mqtt5.SUBSCRIBE:
            return _suback(body)
        if kind == mqtt5.PUBLISH and (first >> 1) & 0x03:
            topic_length = int.from_bytes(body[:2], "big")
            packet_id = body[2 + topic_length : 4 + topic_length]
            return bytes([mqtt5.PUBACK, 2]) + packet_id
        if kind == mqtt5.PINGREQ:
            return b"\xd0\x00"
        if kind == mqtt5.DISCONNECT:
            return None
        return b""  # PUBACKs of what we never sent, and the like


def _suback(body: bytes) -> bytes:
    packet_id = body[:2]
    properties_length, cursor = mqtt5.read_varint(body, 2, len(body))
    cursor += properties_length
    granted = bytearray()
    while cursor < len(body):
        length = int.from_bytes(body[cursor : cursor + 2], "big")
        cursor += 2 + length
        granted.append(body[cursor] & 0x03)  # the QoS asked for, granted
        cursor += 1
    rest = packet_id + b"\x00" + bytes(granted)
    return bytes([mqtt5.SUBACK]) + mqtt5.varint(len(rest)) + rest


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)
