"""Helpers for tests that run the real thing: Mosquitto with the project's configuration,
the gateway, and clients logged in as panels, partners or the operator.

The broker and the gateway start through ``intercom_gateway.qa.runner``; its names used
by tests are re-exported here. Used by this project's broker tests and by integrators
through the pytest plugin (``intercom_gateway.qa.pytest_plugin``). Everything is
awaited; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

from intercom_gateway.broker.mosquitto import FLEET
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.qa.runner import Broker, RunningGateway, running_gateway, start_broker
from intercom_gateway.settings import Settings

__all__ = [
    "RunningGateway",
    "collect_until_quiet",
    "partner_ids",
    "publish_as_fleet",
    "running_gateway",
    "sentinel_topic",
    "start_broker",
]


def partner_ids(settings: Settings) -> list[str]:
    partners = load_partners(settings.partners_path, policy=load_policy(settings.policy_path))
    return [service.id for service in partners.services]


async def publish_as_fleet(broker: Broker, messages: Iterable[tuple[str, bytes]]) -> int:
    """Publish raw panel messages through the simulator account; returns how many."""
    sent = 0
    address = broker.address(FLEET)
    async with MqttBus(address, client_id=address.client_id(uuid.uuid4().hex[:8])) as bus:
        for topic, payload in messages:
            await bus.publish(topic, payload, on_done=lambda _error: None)  # drained below
            sent += 1
        await bus.drain()
    return sent


async def collect_until_quiet(
    bus: MqttBus, *, sentinel_topic: str, timeout: float = 10.0
) -> list[Message]:
    """Everything ``bus`` receives before a message on ``sentinel_topic``."""
    seen: list[Message] = []

    async def take() -> None:
        async for message in bus.messages():
            if message.topic == sentinel_topic:
                return
            seen.append(message)

    await asyncio.wait_for(take(), timeout)
    return seen


def sentinel_topic(partner_id: str) -> str:
    """A topic in a partner's tree that no dwelling can produce (no building is named so)."""
    return topics.partner(partner_id, "zz-sentinel", "zz-sentinel", "sentinel")
