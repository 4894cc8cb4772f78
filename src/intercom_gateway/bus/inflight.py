"""Publishes on their way: the one ``publish`` verb, the window that caps publishes and
the callbacks their PUBACKs run.

Kept apart from the socket code of ``mqtt.MqttBus`` because it is the same bookkeeping
whatever moves the packets: every bus publishes through ``Publishing``, and the paho
reference bus of the tests shares the window too.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable

from intercom_gateway.bus.base import DoneCallback, UserProperties
from intercom_gateway.bus.codes import reason_name
from intercom_gateway.errors import PublishFailed

__all__ = ["Inflight", "Publishing", "until_done"]


class Publishing(abc.ABC):
    """The ``publish`` verb of ``base.Bus`` on one hook each bus writes: ``_send``.

    ``_send`` puts one publish on its way and reports its outcome to ``on_done``; a
    publish without ``on_done`` waits here for that outcome (``until_done``).
    """

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        user_properties: UserProperties = (),
        on_done: DoneCallback | None = None,
    ) -> None:
        """See ``base.Bus.publish``: with ``on_done``, queued; without, acknowledged."""
        if qos not in (0, 1):
            raise ValueError("the bus publishes at QoS 0 or 1")
        if on_done is not None:
            await self._send(topic, payload, qos, retain, user_properties, on_done)
        else:
            await until_done(
                lambda done: self._send(topic, payload, qos, retain, user_properties, done)
            )

    @abc.abstractmethod
    async def _send(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        user_properties: UserProperties,
        on_done: DoneCallback,
    ) -> None:
        """Put one publish (QoS 0 or 1) on its way; ``on_done`` gets its outcome."""


class Inflight:
    """Unacknowledged QoS 1 publishes by packet id, at most ``size`` at once.

    Packet ids are 16-bit, so no more than 65,535 can exist; the broker's Receive
    Maximum may lower the cap further once connected. Every publish takes a place and
    every PUBACK gives one back, so the two events are touched only when someone waits
    on them: ``_waiting`` publishes for a place, ``drain`` for none taken (``_empty`` is
    set exactly while ``_count`` is 0).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._count = 0
        self._waiting = 0
        # By packet id: what a PUBACK settles. Public for the id allocation of the bus.
        self.pending: dict[int, tuple[str, DoneCallback | None]] = {}
        self._space = asyncio.Event()
        self._space.set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __contains__(self, packet_id: int) -> bool:
        return packet_id in self.pending

    def try_reserve(self) -> bool:
        """Take a place for one publish if there is one now: ``reserve`` without a
        coroutine, for the common case of a window with room."""
        count = self._count
        if count >= self.size:
            return False
        self._count = count + 1
        if not count:
            self._empty.clear()
        return True

    async def reserve(self) -> None:
        """Take a place for one publish, waiting while the window is full."""
        while not self.try_reserve():
            self._space.clear()
            self._waiting += 1
            try:
                await self._space.wait()
            finally:
                self._waiting -= 1

    def release(self) -> None:
        """Give back a place: its publish is done, or never went."""
        count = self._count = self._count - 1
        if self._waiting and count < self.size:
            self._space.set()
        if not count:
            self._empty.set()

    def sent(self, packet_id: int, qos: int, topic: str, on_done: DoneCallback | None) -> None:
        """A publish is on its way: await its PUBACK, or, at QoS 0, it is done."""
        if qos:
            self.pending[packet_id] = (topic, on_done)
            return
        # QoS 0 has no acknowledgement; sent is all we will ever know.
        self.release()
        if on_done is not None:
            on_done(None)

    def acknowledged(self, packet_id: int, reason: int, name: str | None = None) -> None:
        """The broker's PUBACK for ``packet_id``, with its reason code (and the code in
        words, ``mqtt5.reason_name``'s unless given: only a refusal needs it)."""
        entry = self.pending.pop(packet_id, None)
        if entry is None:
            return
        self.release()
        callback = entry[1]
        if callback is None:
            return
        if reason >= 0x80:
            topic = entry[0]
            name = name or reason_name(reason)
            callback(
                PublishFailed(f"broker refused publish: {name}", topic=topic, reason_code=reason)
            )
        else:
            callback(None)

    def fail_all(self, error: BaseException) -> None:
        """The connection is gone: every publish still waiting fails with ``error``."""
        pending, self.pending = self.pending, {}
        for _topic, callback in pending.values():
            self.release()
            if callback is not None:
                callback(error)

    async def drain(self) -> None:
        await self._empty.wait()


async def until_done(queue: Callable[[DoneCallback], Awaitable[None]]) -> None:
    """Queue one publish through ``queue(on_done)`` and wait for its outcome.

    How ``publish`` without ``on_done`` awaits the PUBACK: a refusal is raised here.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    await queue(finish)
    await done
