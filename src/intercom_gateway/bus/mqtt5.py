"""MQTT v5 packets: the subset of the protocol the gateway's transport speaks.

Encoding and decoding only; no I/O. ``mqtt.MqttBus`` drives it on an asyncio protocol, and
``memory.MemoryBus`` puts every message through it, so component tests run the codec too.
What is covered: CONNECT (clean start, keepalive, session expiry, receive maximum,
will, user name and password), CONNACK, PUBLISH at QoS 0 and 1 with user properties,
PUBACK with reason codes, SUBSCRIBE/SUBACK, PINGREQ/PINGRESP and DISCONNECT. QoS 2,
topic aliases, AUTH and UNSUBSCRIBE are not: the gateway never asks for them, so a
broker never sends them (OASIS MQTT 5.0, sections 3.1-3.14).

Why not paho: at the gateway's fan-out of four copies an event, paho's per-packet
objects (a ``Properties`` and a ``ReasonCode`` per PUBACK, a ``threading.Condition``
per publish) cost 0.42 ms an event, the largest single item of the gateway's profile
(docs/benchmarks.md). The codec here is checked byte for byte against paho's in
tests/unit/test_mqtt5.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# The values the codec reads and writes live with the seam (base.py); re-exported.
from intercom_gateway.bus import codes
from intercom_gateway.bus.base import Message as Message
from intercom_gateway.bus.base import UserProperties
from intercom_gateway.bus.base import Will as Will
from intercom_gateway.bus.codes import MAXIMUM_PACKET_SIZE as MAXIMUM_PACKET_SIZE
from intercom_gateway.bus.codes import MAXIMUM_QOS as MAXIMUM_QOS
from intercom_gateway.bus.codes import REASON_STRING as REASON_STRING
from intercom_gateway.bus.codes import REASONS as REASONS
from intercom_gateway.bus.codes import RECEIVE_MAXIMUM as RECEIVE_MAXIMUM
from intercom_gateway.bus.codes import SESSION_EXPIRY as SESSION_EXPIRY
from intercom_gateway.bus.codes import USER_PROPERTY as USER_PROPERTY
from intercom_gateway.bus.codes import reason_name as reason_name
from intercom_gateway.errors import MalformedPacket as MalformedPacket

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # the low nibble of SUBSCRIBE is fixed at 0b0010
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PING_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # normal disconnection: the broker drops the will
# Reason 0x04, "disconnect with will message": we are going down for a reason other
# than being asked to stop, and the broker is to publish our last will all the same.
DISCONNECT_WITH_WILL_PACKET = b"\xe0\x01\x04"

MAX_PACKET_ID = 65_535
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# --- encoding --------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A variable byte integer: 7 bits a byte, the high bit says more follow."""
    if value < 128:
        return _SMALL[value]
    if value < 16_384:  # most packets: one struct call, no loop
        return _U16.pack(0x8000 | (value & 0x7F) << 8 | value >> 7)
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


_SMALL = [bytes((value,)) for value in range(128)]


def utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 65_535:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return _U16.pack(len(data)) + data


def binary(data: bytes) -> bytes:
    if len(data) > 65_535:
        raise ValueError("MQTT binary data is at most 65,535 bytes")
    return _U16.pack(len(data)) + data


class _Cache(dict[tuple[str, str], bytes]):
    """Encoded user properties by their (key, value) pair.

    Most of the gateway's properties (purposes, categories, policy version, rule id)
    repeat from event to event, and the ids of one event repeat over its copies: a
    dictionary lookup by the pair the caller already holds is cheaper than encoding
    them again. Per-event ids would grow it without end, so it starts afresh when full:
    the pairs that repeat are back after one event, at the cost of one encoding each.
    """

    __slots__ = ()
    limit = 4_096

    def __missing__(self, pair: tuple[str, str]) -> bytes:
        key, value = pair
        encoded = b"\x26" + utf8(key) + utf8(value)
        if len(self) >= self.limit:
            self.clear()
        self[pair] = encoded
        return encoded


_PAIRS = _Cache()


def user_properties(pairs: UserProperties) -> bytes:
    """The property section (length prefix included) holding these user properties."""
    if not pairs:
        return b"\x00"
    cache = _PAIRS
    body = b"".join([cache[pair] for pair in pairs])
    return varint(len(body)) + body


def connect(
    client_id: str,
    *,
    clean_start: bool,
    keepalive: int,
    session_expiry: int = 0,
    receive_maximum: int = 65_535,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    if not 1 <= receive_maximum <= 65_535:
        raise ValueError("receive maximum must be 1-65,535")
    flags = 0x02 if clean_start else 0x00
    properties = b""
    if session_expiry:
        properties += bytes((SESSION_EXPIRY,)) + _U32.pack(session_expiry)
    if receive_maximum != 65_535:
        properties += bytes((RECEIVE_MAXIMUM,)) + _U16.pack(receive_maximum)
    payload = utf8(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += b"\x00" + utf8(will.topic) + binary(will.payload)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += binary(password.encode("utf-8"))
    variable = (
        utf8("MQTT")
        + bytes((5, flags))
        + _U16.pack(keepalive)
        + varint(len(properties))
        + properties
    )
    return _packet(CONNECT, variable + payload)


def subscribe(
    packet_id: int, filters: tuple[str, ...] | list[str], qos: int, retain_handling: int = 0
) -> bytes:
    """SUBSCRIBE; ``retain_handling`` 0 sends retained messages at every subscribe, 1 only
    for a new subscription, 2 never (MQTT 5.0, 3.8.3.1)."""
    option = qos | (retain_handling << 4)
    options = b"".join(utf8(f) + bytes((option,)) for f in filters)
    return _packet(SUBSCRIBE, _U16.pack(packet_id) + b"\x00" + options)


def publish_header(
    topic: str, payload_length: int, *, qos: int, retain: bool, packet_id: int, properties: bytes
) -> bytes:
    """Everything of a PUBLISH but its payload (which the caller writes after it); raises
    ValueError for what MQTT cannot carry (a string over 65,535 bytes, a lone surrogate)."""
    name = topic.encode("utf-8")
    size = len(name)
    if size > 65_535:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    if qos:
        # One join of parts made without intermediate concatenations: a few of these
        # for every event the gateway forwards.
        return b"".join(
            (
                _FIRST[qos << 1 | retain],
                varint(size + 4 + len(properties) + payload_length),
                _U16.pack(size),
                name,
                _U16.pack(packet_id),
                properties,
            )
        )
    return b"".join(
        (
            _FIRST[retain],
            varint(size + 2 + len(properties) + payload_length),
            _U16.pack(size),
            name,
            properties,
        )
    )


# The first byte of a PUBLISH by its QoS and retain flag (QoS << 1 | retain).
_FIRST = [bytes((PUBLISH | flags,)) for flags in range(4)]


def publish_packet(
    topic: str,
    payload: bytes,
    *,
    qos: int,
    retain: bool,
    packet_id: int,
    pairs: UserProperties = (),
) -> bytes:
    """A whole PUBLISH with ``pairs`` as its user properties; raises ValueError for what
    MQTT cannot carry (a string over 65,535 bytes, a lone surrogate)."""
    properties = user_properties(pairs)
    header = publish_header(
        topic, len(payload), qos=qos, retain=retain, packet_id=packet_id, properties=properties
    )
    return header + payload


def puback(packet_id: int) -> bytes:
    # Reason code and properties left out: "Success" (MQTT 5.0, 3.4.2.1).
    return b"\x40\x02" + _U16.pack(packet_id)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes((kind,)) + varint(len(body)) + body


# --- decoding --------------------------------------------------------------------------


@dataclass(slots=True)
class Properties:
    values: dict[int, int | str | bytes] = field(default_factory=dict)
    user: tuple[tuple[str, str], ...] = ()


def read_varint(data: bytes | bytearray, cursor: int, end: int) -> tuple[int, int]:
    """(value, position after it); position -1 when the integer is not complete yet."""
    value = 0
    shift = 0
    while cursor < end:
        byte = data[cursor]
        cursor += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, cursor
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than 4 bytes")
    return value, -1


def read_properties(body: bytes, cursor: int) -> tuple[Properties, int]:
    """The property list at ``cursor``; returns it and the position after it."""
    length, cursor = read_varint(body, cursor, len(body))
    end = cursor + length
    if cursor < 0 or end > len(body):
        raise MalformedPacket("property length runs past the packet")
    properties = Properties()
    if not length:
        return properties, end
    user: list[tuple[str, str]] = []
    values = properties.values
    try:
        while cursor < end:
            identifier = body[cursor]
            if identifier == USER_PROPERTY:  # the common case, read without a detour
                pair, cursor = _read_pair(body, cursor + 1, end)
                user.append(pair)
                continue
            kind = codes.PROPERTY_KINDS[identifier]
            cursor += 1
            if kind == codes.BYTE:
                values[identifier] = body[cursor]
                cursor += 1
            elif kind == codes.U16:
                values[identifier] = _U16.unpack_from(body, cursor)[0]
                cursor += 2
            elif kind == codes.U32:
                values[identifier] = _U32.unpack_from(body, cursor)[0]
                cursor += 4
            elif kind == codes.VARINT:
                values[identifier], cursor = read_varint(body, cursor, end)
            elif kind == codes.UTF8:
                values[identifier], cursor = _read_utf8(body, cursor)
            else:
                size = _U16.unpack_from(body, cursor)[0]
                values[identifier] = body[cursor + 2 : cursor + 2 + size]
                cursor += 2 + size
    except KeyError as error:
        raise MalformedPacket(f"unknown property 0x{error.args[0]:02x}") from None
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise MalformedPacket(f"bad property list: {error}") from None
    if cursor != end:
        raise MalformedPacket("property list does not end where its length says")
    properties.user = tuple(user)
    return properties, end


def _read_utf8(body: bytes, cursor: int) -> tuple[str, int]:
    size = _U16.unpack_from(body, cursor)[0]
    end = cursor + 2 + size
    if end > len(body):
        raise MalformedPacket("string runs past the packet")
    return body[cursor + 2 : end].decode("utf-8"), end


def _read_pair(body: bytes, cursor: int, end: int) -> tuple[tuple[str, str], int]:
    """The user property (a string pair) at ``cursor``, which must end by ``end``.

    The pairs that repeat from message to message are decoded once: the encoded pair
    (both length prefixes included) is looked up in a bounded cache first.
    """
    value_at = cursor + 2 + (body[cursor] << 8 | body[cursor + 1])
    after = value_at + 2 + (body[value_at] << 8 | body[value_at + 1])
    if after > end:
        raise MalformedPacket("string runs past the packet")
    encoded = body[cursor:after]
    pair = _DECODED.get(encoded)
    if pair is None:
        pair = (
            body[cursor + 2 : value_at].decode("utf-8"),
            body[value_at + 2 : after].decode("utf-8"),
        )
        if len(_DECODED) >= _Cache.limit:
            _DECODED.clear()
        _DECODED[encoded] = pair
    return pair, after


# Decoded user properties by their encoding: the reverse of ``_PAIRS``.
_DECODED: dict[bytes, tuple[str, str]] = {}


def split_packet(packet: bytes) -> tuple[int, bytes]:
    """(first byte, body) of exactly one whole packet."""
    if len(packet) < 2:
        raise MalformedPacket("packet shorter than its fixed header")
    length, cursor = read_varint(packet, 1, len(packet))
    if cursor < 0 or cursor + length != len(packet):
        raise MalformedPacket("packet length does not match its bytes")
    return packet[0], packet[cursor:]


def read_publish(first: int, body: bytes) -> Message:
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    try:
        size = _U16.unpack_from(body, 0)[0]
        cursor = 2 + size
        topic = body[2:cursor].decode("utf-8")
        packet_id = 0
        if qos:
            packet_id = _U16.unpack_from(body, cursor)[0]
            cursor += 2
    except (struct.error, UnicodeDecodeError) as error:
        raise MalformedPacket(f"bad PUBLISH header: {error}") from None
    if cursor < len(body) and body[cursor] == 0:  # the common case: no properties
        user: tuple[tuple[str, str], ...] = ()
        cursor += 1
    else:
        properties, cursor = read_properties(body, cursor)
        user = properties.user
    return Message(
        topic, body[cursor:], qos, bool(first & 0x01), bool(first & 0x08), packet_id, user
    )


def read_ack(body: bytes) -> tuple[int, int]:
    """(packet id, reason code) of a PUBACK; a 2-byte PUBACK means success."""
    if len(body) < 2:
        raise MalformedPacket("PUBACK shorter than its packet id")
    return _U16.unpack_from(body, 0)[0], body[2] if len(body) > 2 else 0


def read_suback(body: bytes) -> tuple[int, list[int]]:
    if len(body) < 3:
        raise MalformedPacket("SUBACK too short")
    packet_id = _U16.unpack_from(body, 0)[0]
    _, cursor = read_properties(body, 2)
    return packet_id, list(body[cursor:])


def read_connack(body: bytes) -> tuple[int, Properties]:
    """(reason code, properties) of a CONNACK."""
    if len(body) < 2:
        raise MalformedPacket("CONNACK too short")
    if len(body) == 2:
        return body[1], Properties()
    properties, _ = read_properties(body, 2)
    return body[1], properties


def read_disconnect(body: bytes) -> tuple[int, str | None]:
    """(reason code, reason string) of a DISCONNECT from the broker."""
    if not body:
        return 0, None
    reason = body[0]
    if len(body) == 1:
        return reason, None
    properties, _ = read_properties(body, 1)
    text = properties.values.get(REASON_STRING)
    return reason, text if isinstance(text, str) else None
