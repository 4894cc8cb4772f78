"""The lean transport's MQTT v5 codec, checked against paho-mqtt's and the specification.

paho is the reference here: what it packs we must pack byte for byte, and what it packs
we must read back the same.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

from intercom_gateway.bus import mqtt5

# Text that MQTT allows in a UTF-8 string: no NUL, no surrogates (MQTT 5.0, 1.5.4).
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
pairs = st.lists(st.tuples(text, text), max_size=8)


def _paho_user_properties(items: list[tuple[str, str]]) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for key, value in items:
        properties.UserProperty = (key, value)
    return bytes(properties.pack())  # type: ignore[no-untyped-call]


@given(pairs)
def test_user_properties_are_packed_as_paho_packs_them(items: list[tuple[str, str]]) -> None:
    assert mqtt5.user_properties(items) == _paho_user_properties(items)


@given(st.integers(min_value=0, max_value=268_435_455))
def test_variable_byte_integers_match_paho(value: int) -> None:
    encoded = mqtt5.varint(value)
    assert encoded == VariableByteIntegers.encode(value)  # type: ignore[no-untyped-call]
    assert mqtt5.read_varint(encoded, 0, len(encoded)) == (value, len(encoded))


def test_an_incomplete_variable_byte_integer_says_so() -> None:
    assert mqtt5.read_varint(b"\x80\x80", 0, 2)[1] == -1


def test_a_five_byte_variable_byte_integer_is_malformed() -> None:
    with pytest.raises(mqtt5.MalformedPacket):
        mqtt5.read_varint(b"\xff\xff\xff\xff\x01", 0, 5)


@given(
    topic=text.filter(bool),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    packet_id=st.integers(min_value=1, max_value=65_535),
    items=pairs,
)
def test_a_publish_reads_back_as_written(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    packet_id: int,
    items: list[tuple[str, str]],
) -> None:
    packet = (
        mqtt5.publish_header(
            topic,
            len(payload),
            qos=qos,
            retain=retain,
            packet_id=packet_id,
            properties=mqtt5.user_properties(items),
        )
        + payload
    )
    length, body_at = mqtt5.read_varint(packet, 1, len(packet))
    assert body_at + length == len(packet)
    read = mqtt5.read_publish(packet[0], packet[body_at:])
    assert (read.topic, read.payload, read.qos, read.retain, read.dup) == (
        topic,
        payload,
        qos,
        retain,
        False,
    )
    assert read.mid == (packet_id if qos else 0)
    assert read.user_properties == tuple(items)


def test_properties_of_every_layout_read_as_paho_packs_them() -> None:
    properties = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = 20  # two-byte integer
    properties.MaximumPacketSize = 65_536  # four-byte integer
    properties.MaximumQoS = 1  # byte
    properties.AssignedClientIdentifier = "auto-1"  # UTF-8 string
    properties.ReasonString = "fine"
    properties.UserProperty = ("k", "v")  # string pair
    packed = bytes(properties.pack())  # type: ignore[no-untyped-call]
    read, end = mqtt5.read_properties(packed, 0)
    assert end == len(packed)
    assert read.values == {
        mqtt5.RECEIVE_MAXIMUM: 20,
        mqtt5.MAXIMUM_PACKET_SIZE: 65_536,
        mqtt5.MAXIMUM_QOS: 1,
        0x12: "auto-1",
        mqtt5.REASON_STRING: "fine",
    }
    assert read.user == (("k", "v"),)


def test_binary_and_variable_integer_properties_are_read() -> None:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.CorrelationData = b"\x00\x01"
    properties.SubscriptionIdentifier = 300
    packed = bytes(properties.pack())  # type: ignore[no-untyped-call]
    read, _ = mqtt5.read_properties(packed, 0)
    assert read.values == {0x09: b"\x00\x01", 0x0B: 300}


@pytest.mark.parametrize(
    ("packed", "why"),
    [
        (b"\x05\x21\x00", "runs past"),  # says 5 bytes, has 2
        (b"\x01\x7f", "unknown property"),
        (b"\x02\x21\x00\x14", "does not end"),  # a property crossing the list's end
        (b"\x02\x21\x00", "bad property list"),  # a two-byte integer cut short
        (b"\x05\x1f\x00\x09ab", "runs past"),  # a string longer than its packet
    ],
)
def test_a_malformed_property_list_is_refused(packed: bytes, why: str) -> None:
    with pytest.raises(mqtt5.MalformedPacket, match=why):
        mqtt5.read_properties(packed, 0)


def test_connect_packet_is_laid_out_as_the_specification_says() -> None:
    packet = mqtt5.connect(
        "gw-1",
        clean_start=False,
        keepalive=30,
        session_expiry=86_400,
        receive_maximum=1_000,
        username="gateway",
        password="pw",
        will=mqtt5.Will("gateway/v1/status", b"offline", qos=1, retain=True),
    )
    properties = b"\x11\x00\x01\x51\x80" + b"\x21\x03\xe8"
    body = (
        b"\x00\x04MQTT\x05"
        + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04])  # user, password, will retain/QoS 1/flag
        + b"\x00\x1e"
        + bytes([len(properties)])
        + properties
        + b"\x00\x04gw-1"
        + b"\x00"  # will properties
        + b"\x00\x11gateway/v1/status"
        + b"\x00\x07offline"
        + b"\x00\x07gateway"
        + b"\x00\x02pw"
    )
    assert packet == b"\x10" + mqtt5.varint(len(body)) + body


def test_a_clean_start_without_will_or_login_sets_only_that_flag() -> None:
    packet = mqtt5.connect("c", clean_start=True, keepalive=0)
    assert packet == b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x01c"


def test_acks_and_subacks_are_read() -> None:
    assert mqtt5.read_ack(b"\x00\x07") == (7, 0)
    assert mqtt5.read_ack(b"\x00\x07\x87") == (7, 0x87)
    assert mqtt5.read_suback(b"\x00\x02\x00\x01\x87") == (2, [1, 0x87])
    assert mqtt5.read_connack(b"\x00\x86") == (0x86, mqtt5.Properties())
    assert mqtt5.read_disconnect(b"") == (0, None)
    assert mqtt5.read_disconnect(b"\x8e\x05\x1f\x00\x02hi") == (0x8E, "hi")


def test_reason_names_carry_their_code() -> None:
    assert mqtt5.reason_name(0x87) == "Not authorized (0x87)"
    assert mqtt5.reason_name(0x7E) == "Unknown reason (0x7e)"


def test_a_publish_with_qos_3_is_malformed() -> None:
    with pytest.raises(mqtt5.MalformedPacket, match="QoS 3"):
        mqtt5.read_publish(0x36, b"\x00\x01t\x00\x01\x00")


_PAIRS = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=8)


@given(
    topic=st.text(min_size=1, max_size=50),
    payload=st.binary(max_size=300),
    qos=st.integers(0, 1),
    retain=st.booleans(),
    pairs=_PAIRS,
)
def test_a_whole_publish_reads_back_as_the_message_it_was_made_from(
    topic: str, payload: bytes, qos: int, retain: bool, pairs: list[tuple[str, str]]
) -> None:
    """What the memory bus does to every message: encode, split, decode."""
    try:
        packet = mqtt5.publish_packet(
            topic, payload, qos=qos, retain=retain, packet_id=9, pairs=tuple(pairs)
        )
    except ValueError:  # a lone surrogate: no UTF-8, so no MQTT string
        return
    message = mqtt5.read_publish(*mqtt5.split_packet(packet))
    assert message == mqtt5.Message(
        topic, payload, qos, retain, False, 9 if qos else 0, tuple(pairs)
    )


def test_a_packet_is_split_only_when_its_length_matches_its_bytes() -> None:
    packet = mqtt5.publish_packet("t", b"p", qos=0, retain=False, packet_id=0)
    assert mqtt5.split_packet(packet) == (0x30, b"\x00\x01t\x00p")
    for broken in (packet[:-1], packet + b"x", b"\x30"):
        with pytest.raises(mqtt5.MalformedPacket):
            mqtt5.split_packet(broken)
