"""How ``MqttBus`` reads the broker's byte stream, without a socket: the same packets
read the same however the socket cuts them, and bytes that are no MQTT end the
connection with ``ConnectionLost``, never with another exception.

The fast paths of the reader (a success PUBACK read where it lies, a one-byte length)
sit beside the general ones, so both are fed here: PUBACKs with and without a reason
code, PUBLISHes with user properties and with bodies over 127 bytes.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.bus import mqtt5
from intercom_gateway.bus.base import BrokerAddress, DoneCallback
from intercom_gateway.bus.mqtt import MqttBus
from intercom_gateway.errors import ConnectionLost, PublishFailed

text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
Pairs = tuple[tuple[str, str], ...]


def _publish(topic: str, payload: bytes, qos: int, pairs: list[tuple[str, str]]) -> bytes:
    return mqtt5.publish_packet(
        topic, payload, qos=qos, retain=False, packet_id=5, pairs=tuple(pairs)
    )


def _puback(packet_id: int, reason: int | None) -> bytes:
    ack = mqtt5.puback(packet_id)
    return ack if reason is None else b"\x40\x03" + ack[2:] + bytes((reason,))


# Packets as the broker sends them: PUBLISHes (some over 127 bytes, some with user
# properties) and PUBACKs (the two-byte success and ones with a reason code).
packets = st.one_of(
    st.builds(
        _publish,
        text.filter(bool),
        st.binary(max_size=200),
        st.sampled_from([0, 1]),
        st.lists(st.tuples(text, text), max_size=4),
    ),
    st.builds(_puback, st.integers(1, 8), st.sampled_from([None, 0x00, 0x10, 0x87, 0x97])),
)


class _Socket:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


class _Reader:
    """A bus with publishes 1-8 awaiting their PUBACK; what it read, in order."""

    def __init__(self) -> None:
        self.bus = MqttBus(BrokerAddress(), client_id="reader", manual_ack=True)
        self.bus._transport = _Socket()  # type: ignore[assignment]
        self.outcomes: list[tuple[int, int | None]] = []
        for packet_id in range(1, 9):
            assert self.bus._inflight.try_reserve()
            self.bus._inflight.sent(packet_id, 1, "t", self._outcome(packet_id))

    def _outcome(self, packet_id: int) -> DoneCallback:
        def done(error: BaseException | None) -> None:
            code = error.reason_code if isinstance(error, PublishFailed) else None
            self.outcomes.append((packet_id, code))

        return done

    def read(self) -> list[tuple[str, bytes, int, Pairs]]:
        return [
            (item.topic, item.payload, item.qos, item.user_properties)
            for item in self.bus._inbox.items
            if not isinstance(item, BaseException)
        ]


@given(st.lists(packets, max_size=12), st.lists(st.integers(1, 300), max_size=8))
def test_a_stream_reads_the_same_however_it_is_cut(packets: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(packets)
    whole, pieces = _Reader(), _Reader()
    whole.bus._received(stream)
    position = 0
    for size in [*cuts, len(stream)]:
        pieces.bus._received(stream[position : position + size])
        position += size
    assert whole.bus._lost is None and pieces.bus._lost is None
    assert pieces.read() == whole.read()
    assert pieces.outcomes == whole.outcomes
    # and each is what its packet says
    expected = [mqtt5.read_publish(*mqtt5.split_packet(p)) for p in packets if p[0] & 0xF0 == 0x30]
    assert whole.read() == [(m.topic, m.payload, m.qos, m.user_properties) for m in expected]


def test_a_puback_settles_its_publish_with_its_reason() -> None:
    reader = _Reader()
    reader.bus._received(mqtt5.puback(3) + b"\x40\x03\x00\x04\x87" + b"\x40\x04\x00\x05\x10\x00")
    assert reader.outcomes == [(3, None), (4, 0x87), (5, None)]


@given(st.binary(max_size=300))
def test_bytes_that_are_no_mqtt_end_the_connection_and_nothing_else(data: bytes) -> None:
    reader = _Reader()
    reader.bus._received(data)
    assert reader.bus._lost is None or isinstance(reader.bus._lost, ConnectionLost)
