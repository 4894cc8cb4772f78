"""The bus contract: every ``bus.Bus`` behaves alike, on the in-memory broker and on a
real Mosquitto (the ``transport`` fixture runs each test on both).

What the gateway relies on: wildcard routing, one copy per client, user properties
that come back exactly as sent (order, repeats, any UTF-8), QoS 1 messages delivered
again, marked DUP, when they were not acknowledged before the client left a kept
session, retained messages and retain handling 2, ``on_done`` once per publish after
its PUBACK, and order. Where the memory bus would pass and Mosquitto not, a component
test on it proves nothing: that is what this suite is for.
"""

from __future__ import annotations

import uuid

import pytest

from intercom_gateway.broker.mosquitto import CLOUD, GATEWAY, OPERATOR
from intercom_gateway.core import topics
from intercom_gateway.errors import ConnectionLost, PublishFailed
from tests.helpers import collect, collect_until
from tests.transports import Transport


@pytest.fixture
def building() -> str:
    """A building of this test's own: on the shared Mosquitto no other test's messages
    or retained messages match its filters."""
    return f"b{uuid.uuid4().hex[:10]}"


async def test_wildcards_route_each_message_to_the_filters_it_matches(
    transport: Transport, building: str
) -> None:
    sent = [
        topics.cloud(building, "d0001", "visitor"),
        topics.cloud(building, "d0002", "alarm"),
        topics.cloud(building, "d0002", "visitor"),
        topics.group(building, "d0001", "visitor"),
    ]
    async with (
        transport.bus(OPERATOR) as visitors,
        transport.bus(OPERATOR) as everything,
        transport.bus(GATEWAY) as writer,
    ):
        await visitors.subscribe(f"cloud/v1/{building}/+/visitor")
        # Two filters matching the same messages: a copy for each (Mosquitto 2 keeps
        # allow_duplicate_messages on by default; MQTT 5 allows either).
        await everything.subscribe(f"cloud/v1/{building}/#", f"+/v1/{building}/#")
        for topic in sent:
            await writer.publish(topic, topic.encode())
        got_visitors = await collect(visitors, 2)
        got_everything = await collect(everything, 7)
    assert [m.topic for m in got_visitors] == [sent[0], sent[2]]
    twice = [sent[0], sent[0], sent[1], sent[1], sent[2], sent[2], sent[3]]
    assert [m.topic for m in got_everything] == twice
    assert all(m.payload == m.topic.encode() for m in got_everything)


async def test_user_properties_come_back_exactly_as_sent(
    transport: Transport, building: str
) -> None:
    properties = [
        ("purpose", "care"),
        ("purpose", "delivery"),  # a key repeats: both kept, in order
        ("note", "日本語 ok"),
        ("empty", ""),
        ("emoji", "🔔"),
    ]
    topic = topics.cloud(building, "d0001", "visitor")
    async with transport.bus(OPERATOR) as reader, transport.bus(GATEWAY) as writer:
        await reader.subscribe(f"cloud/v1/{building}/#")
        await writer.publish(topic, b"with", user_properties=properties)
        await writer.publish(topic, b"without")
        with_properties, without = await collect(reader, 2)
    assert with_properties.user_properties == tuple(properties)
    assert with_properties.properties("purpose") == ["care", "delivery"]
    assert without.user_properties == ()


async def test_a_property_mqtt_cannot_carry_is_refused_before_it_leaves(
    transport: Transport, building: str
) -> None:
    """A lone surrogate is no UTF-8: refused by the codec, the connection stays up."""
    topic = topics.cloud(building, "d0001", "visitor")
    async with transport.bus(OPERATOR) as reader, transport.bus(GATEWAY) as writer:
        await reader.subscribe(f"cloud/v1/{building}/#")
        with pytest.raises(PublishFailed):
            await writer.publish(topic, b"bad", user_properties=[("k", "\ud800")])
        await writer.publish(topic, b"good")
        [message] = await collect(reader, 1)
    assert message.payload == b"good"


async def test_an_unacknowledged_message_comes_back_marked_dup_and_an_acked_one_does_not(
    transport: Transport, building: str
) -> None:
    """Acknowledge after handling: what a client took but did not acknowledge before
    it left is delivered again when it resumes its session; so is what came meanwhile."""
    topic = topics.cloud(building, "d0001", "visitor")
    session = {"clean_start": False, "session_expiry": 60, "manual_ack": True}
    suffix = f"contract-{uuid.uuid4().hex[:8]}"
    async with transport.bus(CLOUD, suffix, **session) as reader:
        await reader.subscribe(f"cloud/v1/{building}/#")
        async with transport.bus(GATEWAY) as writer:
            await writer.publish(topic, b"acked")
            await writer.publish(topic, b"not acked")
        first, second = await collect(reader, 2)
        reader.ack(first)
    async with transport.bus(GATEWAY) as writer:
        await writer.publish(topic, b"while away")
    async with transport.bus(CLOUD, suffix, **session) as again:
        assert again.session_present
        redelivered, queued = await collect(again, 2)
        again.ack(redelivered)
        again.ack(queued)
    assert (second.payload, second.dup) == (b"not acked", False)
    assert (redelivered.payload, redelivered.dup, redelivered.mid) == (
        b"not acked",
        True,
        second.mid,
    )
    assert (queued.payload, queued.dup) == (b"while away", False)


async def test_a_clean_start_finds_no_session(transport: Transport, building: str) -> None:
    suffix = f"contract-{uuid.uuid4().hex[:8]}"
    kept = {"clean_start": False, "session_expiry": 60}
    async with transport.bus(CLOUD, suffix, **kept) as first:
        await first.subscribe(f"cloud/v1/{building}/#")
        assert not first.session_present
    async with transport.bus(CLOUD, suffix, clean_start=True) as fresh:
        assert not fresh.session_present


async def test_retained_messages_reach_later_subscribers_unless_retain_handling_2(
    transport: Transport, building: str
) -> None:
    kept = topics.cloud(building, "d0001", "kept")
    fence = topics.cloud(building, "d0001", "fence")
    async with transport.bus(GATEWAY) as writer:
        await writer.publish(kept, b"state", retain=True)
        async with transport.bus(OPERATOR) as late, transport.bus(OPERATOR) as live_only:
            await late.subscribe(f"cloud/v1/{building}/#")
            await live_only.subscribe(f"cloud/v1/{building}/#", retain_handling=2)
            [retained] = await collect(late, 1)
            await writer.publish(kept, b"live", retain=True)
            [live] = await collect(late, 1)
            await writer.publish(fence, b"fence")
            seen_live_only = await collect_until(live_only, fence)
        await writer.publish(kept, b"", retain=True)  # an empty retained message clears it
        async with transport.bus(OPERATOR) as after:
            await after.subscribe(f"cloud/v1/{building}/#")
            await writer.publish(fence, b"fence")
            [first_after_clearing] = await collect(after, 1)
    assert (retained.payload, retained.retain) == (b"state", True)
    # Forwarded live, a retained publish is not flagged (retain-as-published is off).
    assert (live.payload, live.retain) == (b"live", False)
    assert [m.payload for m in seen_live_only] == [b"live", b"fence"]
    assert first_after_clearing.topic == fence


async def test_on_done_runs_once_per_publish_after_its_puback_in_order(
    transport: Transport, building: str
) -> None:
    topic = topics.cloud(building, "d0001", "visitor")
    done: list[tuple[int, BaseException | None]] = []
    async with transport.bus(OPERATOR) as reader, transport.bus(GATEWAY) as writer:
        await reader.subscribe(f"cloud/v1/{building}/#", qos=1)
        for index in range(100):
            await writer.publish(
                topic,
                index.to_bytes(2, "big"),
                qos=index % 2,
                on_done=lambda error, index=index: done.append((index, error)),
            )
        await writer.drain()
        # Once each, all acknowledged; at QoS 0 "sent" is all there is to know, so only
        # the QoS 1 ones wait for their PUBACK, which come back in publishing order.
        assert sorted(i for i, _ in done) == list(range(100))
        assert all(error is None for _, error in done)
        assert [i for i, _ in done if i % 2] == list(range(1, 100, 2))
        arrived = await collect(reader, 100)
    assert [int.from_bytes(m.payload, "big") for m in arrived] == list(range(100))
    assert [m.qos for m in arrived] == [i % 2 for i in range(100)]


async def test_the_subscription_caps_the_qos_of_what_is_delivered(
    transport: Transport, building: str
) -> None:
    topic = topics.cloud(building, "d0001", "visitor")
    async with (
        transport.bus(OPERATOR) as at_most_once,
        transport.bus(OPERATOR) as at_least_once,
        transport.bus(GATEWAY) as writer,
    ):
        await at_most_once.subscribe(f"cloud/v1/{building}/#", qos=0)
        await at_least_once.subscribe(f"cloud/v1/{building}/#", qos=1)
        await writer.publish(topic, b"q1", qos=1)
        await writer.publish(topic, b"q0", qos=0)
        capped = await collect(at_most_once, 2)
        full = await collect(at_least_once, 2)
    assert [(m.payload, m.qos, m.mid) for m in capped] == [(b"q1", 0, 0), (b"q0", 0, 0)]
    assert [(m.payload, m.qos) for m in full] == [(b"q1", 1), (b"q0", 0)]
    assert full[0].mid != 0 and (full[0].retain, full[0].dup) == (False, False)


async def test_a_closed_bus_publishes_nothing(transport: Transport, building: str) -> None:
    bus = transport.bus(GATEWAY)
    async with bus:
        pass
    with pytest.raises(ConnectionLost):
        await bus.publish(topics.cloud(building, "d0001", "visitor"), b"too late")
