"""No message stops the gateway (issue 13): poison input, errors of ours, messages that
killed the process, refused publishes. The gateway on the in-memory bus with a real
store (SQLite, then PostgreSQL); ``tests/broker/test_poison.py`` does the same against a
real Mosquitto."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import decide as core_decision
from intercom_gateway.core import topics
from intercom_gateway.errors import PublishFailed
from intercom_gateway.gateway import service as gateway_module
from intercom_gateway.gateway.partitioned import UnknownBuildings
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message, settings_message

MAX_PACKET = 65_536  # mosquitto.conf max_packet_size

World = tuple[Gateway, MemoryBus, list[Message]]


@pytest.fixture
def settings(tmp_path: Path, both_stores: str) -> Settings:
    return gateway_settings(tmp_path)


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = broker.client("gateway")
        gateway._bus = bus
        yield gateway, bus, await observed(broker)


async def observed(broker: MemoryBroker) -> list[Message]:
    """Everything ``broker`` carries from now on, as an observer on ``#`` receives it."""
    seen: list[Message] = []
    observer = broker.client("observer")
    observer.deliver = seen.append  # type: ignore[method-assign,assignment]
    await observer.subscribe("#")
    return seen


_mids = iter(range(1, 1_000_000))


def inbound(topic: str, payload: bytes, **options: Any) -> Message:
    return Message(topic=topic, payload=payload, qos=1, mid=next(_mids), **options)


def rejections(seen: list[Message]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for message in seen:
        if message.topic.startswith("gateway/v1/rejected/") or message.topic == topics.DEADLETTER:
            found.setdefault(message.topic, []).append(json.loads(message.payload))
    return found


def cloud_ids(seen: list[Message]) -> set[str]:
    return {json.loads(m.payload)["event_id"] for m in seen if m.topic.startswith("cloud/")}


EDGE_INSTANTS = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-14:00",
    "2026-04-02T09:30:00+23:59",
]


@pytest.mark.parametrize("instant", EDGE_INSTANTS)
async def test_a_calendar_edge_with_an_offset_is_a_schema_violation_not_a_crash(
    world: World, instant: str
) -> None:
    gateway, bus, seen = world
    poison = event_dict("alarm", dwelling="d0001", occurred_at=None)
    poison["occurred_at"] = instant
    valid = event_dict("alarm", dwelling="d0002")
    await gateway.handle(bus, inbound(*panel_message(poison)))
    await gateway.handle(bus, inbound(*panel_message(valid)))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {"schema_violation": 1}
    assert cloud_ids(seen) == {valid["event_id"]}
    assert len(bus.acked) == 2


@pytest.mark.parametrize("seq", [10**30, int("9" * 4000)])
async def test_a_sequence_number_beyond_64_bits_is_refused(world: World, seq: int) -> None:
    gateway, bus, seen = world
    topic, _ = panel_message(event_dict("alarm", dwelling="d0001"))
    payload = json.dumps(event_dict("alarm", dwelling="d0001", seq=seq)).encode()
    await gateway.handle(bus, inbound(topic, payload))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {"schema_violation": 1}
    assert cloud_ids(seen) == set()
    (echo,) = rejections(seen)["gateway/v1/rejected/schema_violation"]
    assert str(seq)[:30] not in json.dumps(echo)  # a huge integer is not echoed


async def test_a_very_long_topic_level_is_refused_with_an_echo_that_fits_the_broker(
    world: World,
) -> None:
    gateway, bus, seen = world
    data = event_dict("alarm", dwelling="d0001")
    topic = topics.panel_events("b001", "panel-b001-d0001", "x" * 32_500)
    await gateway.handle(bus, inbound(topic, json.dumps(data).encode()))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {"bad_topic": 1}
    (message,) = [m for m in seen if m.topic == "gateway/v1/rejected/bad_topic"]
    echo = json.loads(message.payload)
    assert len(echo["topic"]) == topics.MAX_TOPIC_LENGTH
    assert "32,500 characters" in echo["detail"] or "characters" in echo["detail"]
    assert len(message.payload) < MAX_PACKET
    assert len(bus.acked) == 1


async def test_too_many_levels_and_too_many_properties_are_typed_refusals(world: World) -> None:
    gateway, bus, _ = world
    data = event_dict("alarm", dwelling="d0001")
    topic, payload = panel_message(data)
    deep = topic + "/x" * topics.MAX_TOPIC_LEVELS
    await gateway.handle(bus, inbound(deep, payload))
    properties = tuple((f"k{i}", "v") for i in range(17))
    await gateway.handle(bus, inbound(topic, payload, user_properties=properties))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {"bad_topic": 1, "too_many_properties": 1}
    assert len(bus.acked) == 2


async def test_an_error_of_ours_becomes_an_internal_error_rejection_and_the_loop_goes_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, bus, seen = world
    poison = event_dict("visitor", dwelling="d0001")
    real_decide = core_decision.decide

    def decide(event: Any, *args: Any, **kwargs: Any) -> Any:
        if str(event.event_id) == poison["event_id"]:
            raise ZeroDivisionError("a bug in the decision")
        return real_decide(event, *args, **kwargs)

    monkeypatch.setattr(gateway_module, "decide", decide)
    valid = [event_dict("alarm", dwelling=d) for d in ("d0001", "d0002", "d0003")]
    await gateway.handle(bus, inbound(*panel_message(valid[0])))
    await gateway.handle(bus, inbound(*panel_message(poison)))
    for data in valid[1:]:
        await gateway.handle(bus, inbound(*panel_message(data)))
    await gateway.finish_in_flight()
    assert gateway.metrics.internal_errors == 1
    assert gateway.metrics.rejected == {"internal_error": 1}
    (echo,) = rejections(seen)["gateway/v1/rejected/internal_error"]
    assert echo["detail"] == "ZeroDivisionError: a bug in the decision"
    assert cloud_ids(seen) == {d["event_id"] for d in valid}
    assert len(bus.acked) == 4
    kept = [r.as_dict() for r in await gateway.store.rejections()]
    assert [r["reason"] for r in kept] == ["internal_error"]


async def test_a_message_that_kept_killing_the_process_is_dead_lettered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies in the middle of one message (SystemExit stands for the kill); the
    broker delivers it again with the dup flag after each restart. After ``max_attempts``
    such deliveries it is set aside, and a neighbour that was redelivered too is not."""
    poison = event_dict("alarm", dwelling="d0001")
    neighbour = event_dict("alarm", dwelling="d0002")
    real_decide = core_decision.decide

    def decide(event: Any, *args: Any, **kwargs: Any) -> Any:
        if str(event.event_id) == poison["event_id"]:
            raise SystemExit("killed mid-message")
        return real_decide(event, *args, **kwargs)

    monkeypatch.setattr(gateway_module, "decide", decide)

    async def life(dup: bool) -> tuple[Gateway, MemoryBus, list[Message]]:
        broker = MemoryBroker()
        seen = await observed(broker)
        bus = broker.client("gateway")
        async with open_store(settings) as store:
            gateway = await Gateway.load(settings, store)
            gateway._bus = bus
            await gateway.handle(bus, inbound(*panel_message(neighbour), dup=dup))
            try:
                await gateway.handle(bus, inbound(*panel_message(poison), dup=dup))
            except SystemExit:
                return gateway, bus, seen  # died: nothing flushed, nothing acknowledged
            await gateway.finish_in_flight()
            return gateway, bus, seen

    await life(dup=False)  # the first delivery is not counted: it was not a redelivery
    for _ in range(settings.max_attempts):
        gateway, bus, _seen = await life(dup=True)
        assert poison["event_id"] not in {json.loads(m.payload)["event_id"] for m in bus.acked}
    gateway, bus, seen = await life(dup=True)
    assert gateway.metrics.dead_lettered == 1
    (echo,) = rejections(seen)[topics.DEADLETTER]
    assert echo["reason"] == "dead_letter"
    assert f"delivered {settings.max_attempts + 1} times" in echo["detail"]
    # The neighbour finished each time: a duplicate now, acknowledged, never set aside.
    acked = {json.loads(m.payload)["event_id"] for m in bus.acked}
    assert acked == {neighbour["event_id"], poison["event_id"]}
    assert gateway.metrics.duplicates == 1


async def test_rejected_input_of_an_initialised_dwelling_leaves_nothing_of_it(
    world: World,
) -> None:
    """§7(1)①: nothing of an initialised dwelling is echoed or kept beyond the reason."""
    gateway, bus, seen = world
    topic, payload = settings_message({"kind": "initialise"}, dwelling="d0003")
    await gateway.handle(bus, inbound(topic, payload))
    bad = event_dict("return_home", dwelling="d0003", surprise="Hana's diary")
    await gateway.handle(bus, inbound(*panel_message(bad)))
    await gateway.finish_in_flight()
    (echo,) = rejections(seen)["gateway/v1/rejected/schema_violation"]
    assert echo["payload"] is None and echo["payload_redacted"] is True
    assert echo["device"] == "panel-b001-d0003"
    text = json.dumps(echo)
    for private in ("Hana", "img-1", bad["event_id"]):  # the device names its dwelling
        assert private not in text
    (kept,) = [r.as_dict() for r in await gateway.store.rejections()]
    assert kept["payload"] == ""
    assert "Hana" not in json.dumps(kept) and bad["event_id"] not in json.dumps(kept)


async def test_a_rejection_echo_carries_no_image_and_no_free_text(world: World) -> None:
    gateway, bus, seen = world
    bad = event_dict("return_home", dwelling="d0001", surprise="x")  # schema violation
    await gateway.handle(bus, inbound(*panel_message(bad)))
    await gateway.finish_in_flight()
    (echo,) = rejections(seen)["gateway/v1/rejected/schema_violation"]
    payload = json.loads(echo["payload"])
    assert payload["event_id"] == bad["event_id"] and payload["method"] == "key"
    assert {"image", "key_nickname", "surprise"}.isdisjoint(payload)
    assert echo["payload_redacted"] is True
    (kept,) = [r.as_dict() for r in await gateway.store.rejections()]
    assert "Hana's key" in kept["payload"]  # the operator's store keeps it as it came


class _RefusingBus(MemoryBus):
    """Refuses every rejection echo before it leaves, as an oversized packet would be."""

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if topic.startswith("gateway/v1/rejected/"):
            raise PublishFailed("too large", topic=topic, reason_code=0x95)
        await super().publish(topic, payload, **kwargs)


async def test_a_publish_refused_before_it_leaves_does_not_stop_the_loop(
    world: World,
) -> None:
    gateway, _, _ = world
    bus = _RefusingBus(MemoryBroker(), "refusing")
    gateway._bus = bus
    bad = event_dict("alarm", dwelling="d0001", severity="apocalyptic")
    good = event_dict("alarm", dwelling="d0002")
    await gateway.handle(bus, inbound(*panel_message(bad)))
    await gateway.handle(bus, inbound(*panel_message(good)))
    await gateway.finish_in_flight()
    assert gateway.metrics.publish_refused == 1
    assert len(bus.acked) == 2


def _raising(error: BaseException) -> Callable[..., Any]:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise error

    return boom


async def test_a_store_error_while_rejecting_is_logged_and_the_message_still_acknowledged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, bus, _ = world
    monkeypatch.setattr(gateway_module, "decide", _raising(RuntimeError("decide failed")))
    monkeypatch.setattr(gateway.store, "record_rejection", _raising(OSError("disk gone")))
    await gateway.handle(bus, inbound(*panel_message(event_dict("alarm", dwelling="d0001"))))
    await gateway.finish_in_flight()
    assert gateway.metrics.internal_errors == 1
    assert len(bus.acked) == 1


async def test_the_unknown_buildings_session_rejects_them_and_leaves_the_rest_untouched(
    settings: Settings,
) -> None:
    """Partitioned gateways (docs/partitions.md, "Unknown buildings"): the session on the
    full panel wildcard rejects what a single gateway rejects for buildings that no
    partition takes, and acknowledges the registry's buildings without a count, a record
    or an attempt: their partition's session does all that."""
    broker = MemoryBroker()
    seen = await observed(broker)
    bus = broker.client("gateway")
    known = event_dict("alarm", dwelling="d0001")
    unknown = event_dict("alarm", building="b999", dwelling="d0001")
    async with open_store(settings) as store:
        gateway = await UnknownBuildings.load(settings, store)
        assert isinstance(gateway, UnknownBuildings)
        gateway._bus = bus
        await gateway.handle(bus, inbound(*panel_message(known)))
        await gateway.handle(bus, inbound(*panel_message(known), dup=True))  # no attempt
        await gateway.handle(bus, inbound("intercom/v1/b001//events/alarm", b"{}"))  # b001's
        await gateway.handle(bus, inbound(*panel_message(unknown)))
        await gateway.handle(bus, inbound("intercom/v1//panel/events/alarm", b"{}"))
        await gateway.finish_in_flight()
    assert gateway.metrics.rejected == {"unknown_device": 1, "bad_topic": 1}
    assert gateway.metrics.received == 2
    assert cloud_ids(seen) == set()
    echoes = rejections(seen)["gateway/v1/rejected/unknown_device"]
    assert [echo["topic"] for echo in echoes] == [panel_message(unknown)[0]]
    assert len(bus.acked) == 5
