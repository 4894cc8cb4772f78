"""Our transport against the reference, on a real Mosquitto: ``MqttBus`` and paho's
``PahoBus`` (tests/reference_paho.py, paho-mqtt from the test extra).

Both implement ``bus.Bus``; every test here runs on both, so where our MQTT code and
paho's differ, a test fails, and the last tests put them side by side: the same
messages sent by either, read by either, must arrive the same, and the broker's
refusals must carry the same reason codes. A few tests are for what only our bus does.
The contract both share with the in-memory bus is tests/contract/test_bus_contract.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import CLOUD, GATEWAY, Mosquitto
from intercom_gateway.bus import Message, MqttBus, Will
from intercom_gateway.core import topics
from intercom_gateway.errors import ConnectFailed, ConnectionLost, PublishFailed
from tests.helpers import collect, unawaited
from tests.reference_paho import PahoBus

BusFactory = Callable[..., Any]
CLOUD_TOPIC = topics.cloud("b001", "d0001", "visitor")


@pytest.fixture(params=[MqttBus, PahoBus], ids=["lean", "paho"])
def make(request: pytest.FixtureRequest) -> BusFactory:
    kind = request.param

    def build(broker: Mosquitto, user: str, **options: Any) -> Any:
        address = broker.address(user)
        client_id = options.pop("client_id", address.client_id(uuid.uuid4().hex[:8]))
        return kind(address, client_id=client_id, **options)

    return build


async def test_a_publish_arrives_with_its_user_properties_in_order(
    broker: Mosquitto, make: BusFactory
) -> None:
    properties = [("purpose", "p1"), ("purpose", "p2"), ("note", "日本語 ok")]
    async with make(broker, CLOUD) as reader, make(broker, GATEWAY) as writer:
        await reader.subscribe("cloud/#")
        for index in range(50):
            await writer.publish(
                CLOUD_TOPIC,
                f"m{index}".encode(),
                user_properties=[*properties, ("i", str(index))],
                on_done=unawaited,
            )
        await writer.drain()
        arrived = await collect(reader, 50)
    assert [m.payload for m in arrived] == [f"m{i}".encode() for i in range(50)]
    assert all(m.topic == CLOUD_TOPIC and m.qos == 1 for m in arrived)
    assert arrived[7].user_properties == (*properties, ("i", "7"))
    assert arrived[7].properties("purpose") == ["p1", "p2"]


async def test_more_publishes_than_the_window_all_complete(
    broker: Mosquitto, make: BusFactory
) -> None:
    done: list[BaseException | None] = []
    async with make(broker, CLOUD) as reader, make(broker, GATEWAY, publish_window=16) as writer:
        await reader.subscribe("cloud/#")
        for index in range(2_000):
            await writer.publish(CLOUD_TOPIC, index.to_bytes(4, "big"), on_done=done.append)
        await writer.drain()
        arrived = await collect(reader, 2_000)
    assert done == [None] * 2_000
    assert [int.from_bytes(m.payload, "big") for m in arrived] == list(range(2_000))


async def test_a_retained_message_reaches_a_later_subscriber(
    broker: Mosquitto, make: BusFactory
) -> None:
    topic = topics.cloud("b001", "d0002", f"retained-{uuid.uuid4().hex[:6]}")
    async with make(broker, GATEWAY) as writer:
        await writer.publish(topic, b"kept", retain=True)
    async with make(broker, CLOUD) as reader:
        await reader.subscribe(topic)
        [message] = await collect(reader, 1)
        assert (message.payload, message.retain) == (b"kept", True)
    async with make(broker, GATEWAY) as writer:
        await writer.publish(topic, b"", retain=True)  # clears it for other tests


async def test_an_unacknowledged_message_comes_back_after_reconnecting(
    broker: Mosquitto, make: BusFactory
) -> None:
    """Manual acknowledgement with a kept session: what was not acked is redelivered,
    marked as a duplicate; what was acked is not."""
    reader_id = broker.address(CLOUD).client_id(f"manual-{uuid.uuid4().hex[:8]}")
    session = {"client_id": reader_id, "clean_start": False, "session_expiry": 60}
    async with make(broker, CLOUD, manual_ack=True, **session) as reader:
        await reader.subscribe("cloud/#")
        async with make(broker, GATEWAY) as writer:
            await writer.publish(CLOUD_TOPIC, b"acked")
            await writer.publish(CLOUD_TOPIC, b"not acked")
        first, second = await collect(reader, 2)
        reader.ack(first)
        # Leaving writes the queued acknowledgement before the DISCONNECT.
    assert second.payload == b"not acked"
    async with make(broker, CLOUD, manual_ack=True, **session) as again:
        [redelivered] = await collect(again, 1)
        again.ack(redelivered)
    assert (redelivered.payload, redelivered.dup) == (b"not acked", True)


async def test_a_lost_broker_fails_pending_publishes_and_ends_messages(
    own_broker: Mosquitto, make: BusFactory
) -> None:
    outcomes: list[BaseException | None] = []
    async with make(own_broker, CLOUD) as reader:
        await reader.subscribe("cloud/#")
        assert own_broker.process is not None
        os.kill(own_broker.process.pid, signal.SIGSTOP)  # accepts bytes, answers nothing
        try:
            await reader.publish(CLOUD_TOPIC, b"never acked", on_done=outcomes.append)
        finally:
            await asyncio.to_thread(own_broker.stop, kill=True)
        with pytest.raises(ConnectionLost):
            await collect(reader, 1)
    assert len(outcomes) == 1 and isinstance(outcomes[0], ConnectionLost)


async def test_the_will_is_published_when_the_connection_drops(
    own_broker: Mosquitto, make: BusFactory
) -> None:
    will = Will(topics.STATUS, b'{"state":"offline"}', qos=1, retain=False)
    async with make(own_broker, CLOUD) as watcher:
        await watcher.subscribe(topics.STATUS)
        leaving = make(own_broker, GATEWAY, will=will)
        await leaving.__aenter__()
        # Not a clean DISCONNECT: the socket just goes, as when the process dies.
        _abort(leaving)
        [message] = await collect(watcher, 1)
    assert message.payload == will.payload
    await leaving.close()


def _abort(bus: Any) -> None:
    if isinstance(bus, MqttBus):
        assert bus._transport is not None
        bus._transport.abort()
    else:
        bus._sock.shutdown(socket.SHUT_RDWR)


async def test_a_silent_broker_is_noticed_by_the_keepalive(own_broker: Mosquitto) -> None:
    """The lean bus pings when idle and gives up when nothing comes back in 1.5 keepalives."""
    address = own_broker.address(CLOUD)
    async with MqttBus(address, client_id=address.client_id("ka"), keepalive=1) as bus:
        assert own_broker.process is not None
        os.kill(own_broker.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ConnectionLost, match="keepalive"):
                await asyncio.wait_for(collect(bus, 1, timeout=30), 10)
        finally:
            os.kill(own_broker.process.pid, signal.SIGCONT)


async def test_an_idle_connection_stays_up_past_its_keepalive(own_broker: Mosquitto) -> None:
    """Pings keep an idle connection alive: Mosquitto drops a client silent for 1.5 keepalives."""
    cloud, gateway = own_broker.address(CLOUD), own_broker.address(GATEWAY)
    async with (
        MqttBus(cloud, client_id=cloud.client_id("idle"), keepalive=1) as idle,
        MqttBus(gateway, client_id=gateway.client_id("writer")) as writer,
    ):
        await idle.subscribe("cloud/#")
        await asyncio.sleep(3.5)  # the time under test, not synchronisation
        await writer.publish(CLOUD_TOPIC, b"still there")
        [message] = await collect(idle, 1)
    assert message.payload == b"still there"


async def test_a_packet_over_the_brokers_maximum_is_refused_before_sending(
    broker: Mosquitto,
) -> None:
    """mosquitto.conf sets max_packet_size; the broker would drop the whole connection."""
    address = broker.address(GATEWAY)
    async with MqttBus(address, client_id=address.client_id(f"big-{uuid.uuid4().hex[:8]}")) as bus:
        with pytest.raises(PublishFailed, match="maximum") as refused:
            await bus.publish(CLOUD_TOPIC, b"x" * 70_000)
        assert refused.value.reason_code == 0x95
        await bus.publish(CLOUD_TOPIC, b"small")  # the connection is still there


async def test_received_messages_keep_their_flags(broker: Mosquitto, make: BusFactory) -> None:
    async with make(broker, CLOUD) as reader, make(broker, GATEWAY) as writer:
        await reader.subscribe("cloud/#", qos=0)
        await writer.publish(CLOUD_TOPIC, b"q0", qos=0)
        [message] = await collect(reader, 1)
    assert isinstance(message, Message)
    assert (message.qos, message.retain, message.dup, message.payload) == (0, False, False, b"q0")


# --- side by side: what ours and paho's send, receive and are refused must be alike -----


async def test_ours_and_paho_send_and_receive_the_same_messages(broker: Mosquitto) -> None:
    """Each writes the same messages; each reads both writers': four identical streams."""
    building = f"b{uuid.uuid4().hex[:10]}"
    batch: list[dict[str, Any]] = [
        {"qos": 1, "user_properties": [("purpose", "care"), ("purpose", "delivery")]},
        {"qos": 0, "user_properties": [("note", "日本語 ok"), ("empty", ""), ("emoji", "🔔")]},
        {"qos": 1, "user_properties": []},
        {"qos": 1, "user_properties": [(f"k{i}", "v" * i) for i in range(16)]},
        {"qos": 1, "user_properties": [("big", "x" * 20_000)]},
    ]
    kinds = {"ours": MqttBus, "paho": PahoBus}

    def bus(kind: str, user: str) -> Any:
        address = broker.address(user)
        return kinds[kind](address, client_id=address.client_id(uuid.uuid4().hex[:8]))

    async with (
        bus("ours", CLOUD) as our_reader,
        bus("paho", CLOUD) as paho_reader,
        bus("ours", GATEWAY) as our_writer,
        bus("paho", GATEWAY) as paho_writer,
    ):
        for reader in (our_reader, paho_reader):
            await reader.subscribe(f"cloud/v1/{building}/#")
        for name, writer in (("ours", our_writer), ("paho", paho_writer)):
            for index, options in enumerate(batch):
                topic = topics.cloud(building, name, f"kind{index}")
                await writer.publish(topic, f"payload {index}".encode(), **options)
        read = {"ours": await collect(our_reader, 10), "paho": await collect(paho_reader, 10)}

    def stream(messages: list[Message], writer: str) -> list[tuple[Any, ...]]:
        prefix = topics.cloud(building, writer, "")
        return [
            (m.topic.removeprefix(prefix), m.payload, m.qos, m.retain, m.dup, m.user_properties)
            for m in messages
            if m.topic.startswith(prefix)
        ]

    expected = [
        (f"kind{i}", f"payload {i}".encode(), o["qos"], False, False, tuple(o["user_properties"]))
        for i, o in enumerate(batch)
    ]
    for reader in ("ours", "paho"):
        for writer in ("ours", "paho"):
            assert stream(read[reader], writer) == expected, (reader, writer)


async def test_ours_and_paho_are_refused_with_the_same_reason_codes(broker: Mosquitto) -> None:
    """A publish the ACL forbids (PUBACK), a wrong password and a client id bound to
    another account (CONNACK): the same codes reach the caller from either bus."""

    async def refusals(kind: Callable[..., Any]) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        address = broker.address(GATEWAY)
        async with kind(address, client_id=address.client_id(uuid.uuid4().hex[:8])) as bus:
            with pytest.raises(PublishFailed) as forbidden:
                await bus.publish(topics.panel_events("b001", "panel-b001-d0001", "visitor"), b"x")
            codes["publish to a topic the ACL forbids"] = forbidden.value.reason_code
            await bus.publish(CLOUD_TOPIC, b"still connected")
        wrong = replace(address, password="not-the-password")
        with pytest.raises(ConnectFailed) as bad_password:
            async with kind(wrong, client_id=wrong.client_id(uuid.uuid4().hex[:8])):
                pass
        codes["wrong password"] = bad_password.value.reason_code
        cloud = broker.address(CLOUD)
        with pytest.raises(ConnectFailed) as foreign_id:
            async with kind(cloud, client_id=address.client_id(uuid.uuid4().hex[:8])):
                pass
        codes["another account's client id"] = foreign_id.value.reason_code
        return codes

    ours, paho = await refusals(MqttBus), await refusals(PahoBus)
    assert ours == paho
    assert ours["publish to a topic the ACL forbids"] == 0x87
    assert ours["wrong password"] in {0x86, 0x87}  # Mosquitto 2.0 answers 0x87
    assert ours["another account's client id"] == 0x87
