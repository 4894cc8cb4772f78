"""The simulators through a real Mosquitto, speaking as the fleet account."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from intercom_gateway.broker.mosquitto import FLEET, GATEWAY
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event, parse_event
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.qa.runner import started_broker
from intercom_gateway.simulators.fleet import run_fleet

COUNT = 200


async def _receive(bus: MqttBus, count: int) -> list[Message]:
    received: list[Message] = []
    async with asyncio.timeout(20):
        async for message in bus.messages():
            received.append(message)
            if len(received) == count:
                break
    return received


@pytest.mark.broker
async def test_fleet_events_reach_a_gateway_subscriber(tmp_path: Path) -> None:
    registry = generate_registry(buildings=2, dwellings=5)
    sent: list[tuple[str, Event]] = []
    async with (
        started_broker(tmp_path, registry, []) as mosquitto,
        MqttBus(
            mosquitto.address(GATEWAY), client_id=mosquitto.address(GATEWAY).client_id("test")
        ) as gateway,
        MqttBus(
            mosquitto.address(FLEET), client_id=mosquitto.address(FLEET).client_id("test")
        ) as fleet,
    ):
        await gateway.subscribe(topics.PANEL_EVENTS_FILTER)
        receiving = asyncio.create_task(_receive(gateway, COUNT))
        summary = await run_fleet(
            fleet,
            registry,
            seed=11,
            acceleration=1e7,
            max_events=COUNT,
            on_event=lambda topic, event: sent.append((topic, event)),
        )
        received = await receiving

    assert summary.published == COUNT
    assert [(m.topic, parse_event(m.payload)) for m in received] == sent
    assert {m.qos for m in received} == {1}
    assert set(summary.by_building) == {"b001", "b002"}
