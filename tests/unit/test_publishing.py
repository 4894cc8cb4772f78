"""The one publish verb every bus shares (``inflight.Publishing``) and the window a broker
client keeps above its socket (``client.BrokerClient``), on fakes with no socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from intercom_gateway.bus.base import DoneCallback, UserProperties
from intercom_gateway.bus.client import BrokerClient
from intercom_gateway.bus.inflight import Publishing
from intercom_gateway.errors import ConnectionLost, PublishFailed


class Recording(Publishing):
    """Keeps each publish and its callback; the test says when the PUBACK comes."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.callbacks: list[DoneCallback] = []
        self.queued = asyncio.Event()

    async def _send(self, *publish: Any) -> None:
        # topic, payload, qos, retain, user_properties, on_done
        *sent, on_done = publish
        self.sent.append(tuple(sent))
        self.callbacks.append(on_done)
        self.queued.set()


class Socketless(BrokerClient[None]):
    """A broker client whose ``_transmit`` fails while ``refuse`` is set."""

    def __init__(self, *, publish_window: int) -> None:
        super().__init__(publish_window=publish_window)
        self.refuse = False
        self.next_id = 0

    async def _connect(self) -> None:
        pass

    def _detach(self) -> None:
        pass

    async def close(self, *, with_will: bool = False) -> None:
        self._closing = True

    def _transmit(
        self, topic: str, payload: bytes, qos: int, retain: bool, user_properties: UserProperties
    ) -> int:
        if self.refuse:
            raise PublishFailed("too large", topic=topic)
        self.next_id += 1
        return self.next_id


async def test_with_on_done_a_publish_is_queued_and_the_callback_goes_to_the_bus() -> None:
    bus = Recording()
    outcomes: list[BaseException | None] = []
    await bus.publish("t/1", b"x", qos=0, retain=True, on_done=outcomes.append)
    assert bus.sent == [("t/1", b"x", 0, True, ())]
    bus.callbacks[0](None)
    assert outcomes == [None]


async def test_without_on_done_a_publish_waits_for_its_acknowledgement() -> None:
    bus = Recording()
    waiting = asyncio.create_task(bus.publish("t/1", b"x", user_properties=(("k", "v"),)))
    await bus.queued.wait()
    assert bus.sent == [("t/1", b"x", 1, False, (("k", "v"),))]
    assert not waiting.done()
    bus.callbacks[0](None)
    await waiting


async def test_without_on_done_a_refusal_is_raised() -> None:
    bus = Recording()
    waiting = asyncio.create_task(bus.publish("t/1", b"x"))
    await bus.queued.wait()
    bus.callbacks[0](PublishFailed("not authorised", topic="t/1", reason_code=0x87))
    with pytest.raises(PublishFailed, match="not authorised"):
        await waiting


@pytest.mark.parametrize("qos", [-1, 2])
async def test_only_qos_0_and_1_are_published(qos: int) -> None:
    bus = Recording()
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        await bus.publish("t/1", b"x", qos=qos)
    assert bus.sent == []


async def test_a_publish_that_cannot_go_gives_its_place_in_the_window_back() -> None:
    bus = Socketless(publish_window=1)
    bus.refuse = True
    for _ in range(3):  # with its place kept, the second would wait for ever
        with pytest.raises(PublishFailed):
            await asyncio.wait_for(bus.publish("t/1", b"x", on_done=lambda _: None), 1)
    await asyncio.wait_for(bus.drain(), 1)


async def test_the_window_holds_a_publish_until_its_puback_and_fails_it_on_a_lost_connection() -> (
    None
):
    bus = Socketless(publish_window=1)
    outcomes: list[BaseException | None] = []
    await bus.publish("t/1", b"x", on_done=outcomes.append)
    second = asyncio.create_task(bus.publish("t/2", b"x", on_done=outcomes.append))
    await asyncio.sleep(0)  # let it reach the wait for a place
    assert not second.done()  # the window is full
    bus._inflight.acknowledged(1, 0, "Success")
    await second
    lost = ConnectionLost("gone")
    bus._connection_lost(lost)
    assert outcomes == [None, lost]
    with pytest.raises(ConnectionLost):
        await bus.publish("t/3", b"x", on_done=outcomes.append)
    with pytest.raises(ConnectionLost, match="gone"):
        await anext(aiter(bus.messages()))
