"""Await-based helpers shared by the component and broker tiers."""

from __future__ import annotations

import asyncio

from intercom_gateway.bus import Bus, Message


async def collect(bus: Bus, count: int, *, timeout: float = 10.0) -> list[Message]:
    """Await exactly ``count`` messages (fails on timeout, naming what did arrive)."""
    seen: list[Message] = []

    async def take() -> None:
        async for message in bus.messages():
            seen.append(message)
            if len(seen) == count:
                return

    try:
        await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        arrived = [m.topic for m in seen]
        raise AssertionError(f"expected {count} messages, got {len(seen)}: {arrived}") from None
    return seen


async def collect_until(bus: Bus, topic_prefix: str, *, timeout: float = 10.0) -> list[Message]:
    """Collect messages until one whose topic starts with ``topic_prefix`` arrives."""
    seen: list[Message] = []

    async def take() -> None:
        async for message in bus.messages():
            seen.append(message)
            if message.topic.startswith(topic_prefix):
                return

    try:
        await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        arrived = [m.topic for m in seen]
        raise AssertionError(f"no {topic_prefix}... message; got {arrived}") from None
    return seen


def unawaited(_error: BaseException | None) -> None:
    """``on_done`` for a publish nobody waits on (the caller drains, or a receipt settles
    it): ``publish`` then returns once the message is queued, as ``send`` used to."""
