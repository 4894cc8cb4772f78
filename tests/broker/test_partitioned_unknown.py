"""Partitioned gateways reject panel messages of buildings not in the registry (promise 4,
docs/partitions.md): no partition subscribes to them, so the holder of partition 0 runs a
session on the full panel wildcard that rejects them, as a single gateway does, and
leaves the registry's buildings to their partitions (no event goes out twice).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from intercom_gateway.broker.mosquitto import OPERATOR, Mosquitto
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa.runner import following
from intercom_gateway.qa.testing import publish_as_fleet
from tests.broker.test_partitioned import TYPES, Statuses, gateways
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event_dict, panel_message

UNKNOWN = "b999"  # not in the registry (b001…b012)


class Seen:
    """What the cloud and the rejection topics carry; copies counted by (topic, event id)."""

    def __init__(self) -> None:
        self.cloud: Counter[tuple[str, str]] = Counter()
        self.rejected: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    async def on(self, topic: str, payload: bytes, _message: Any) -> None:
        async with self._changed:
            if topics.matches(topics.REJECTED_FILTER, topic):
                self.rejected.append(json.loads(payload))
            else:
                self.cloud[topic, json.loads(payload)["event_id"]] += 1
            self._changed.notify_all()

    async def until(self, *, cloud: set[str], rejected: int) -> None:
        def arrived() -> bool:
            copied = {event_id for _topic, event_id in self.cloud}
            return cloud <= copied and len(self.rejected) >= rejected

        async with asyncio.timeout(60), self._changed:
            await self._changed.wait_for(arrived)


@pytest.fixture
def registry() -> Registry:
    return generate_registry(buildings=12, dwellings=3, services=SAMPLE_SERVICES)


def _holder_of_zero(statuses: Statuses, names: list[str]) -> str:
    return next(name for name in names if 0 in statuses.held(name))


async def _rejection_rows(dsn: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(
            "SELECT reason, topic FROM rejections WHERE topic LIKE $1", f"intercom/v1/{UNKNOWN}/%"
        )
    finally:
        await connection.close()


async def test_an_unknown_building_is_rejected_once_and_the_rest_forwarded_once(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    statuses, seen = Statuses(), Seen()
    buildings = [b.id for b in registry.buildings]
    valid = [
        event_dict(TYPES[i % 2], building=buildings[i % 12], dwelling=f"d000{1 + i % 3}")
        for i in range(24)
    ]
    unknown = event_dict("visitor", building=UNKNOWN, dwelling="d0001")
    names = ["gw-a", "gw-b"]
    async with (
        following(own_broker, [(OPERATOR, [topics.gateway_filter()])], statuses.on),
        following(
            own_broker, [(OPERATOR, [topics.cloud_filter(), topics.REJECTED_FILTER])], seen.on
        ),
        gateways(own_broker, registry, tmp_path, postgres_dsn, names) as gw,
    ):
        for name in names:
            await gw[name].launch()
        await statuses.until({"gw-a": 32, "gw-b": 32})
        holder = _holder_of_zero(statuses, names)
        await publish_as_fleet(own_broker, [panel_message(e) for e in [unknown, *valid]])
        await seen.until(cloud={e["event_id"] for e in valid}, rejected=1)
        # Drained at SIGTERM: whatever either gateway took is sent and committed.
        for name in names:
            assert await gw[name].stop() == 0

    assert [r["reason"] for r in seen.rejected] == ["unknown_device"]
    assert seen.rejected[0]["gateway_id"] == holder
    assert [(r["reason"], r["topic"]) for r in await _rejection_rows(postgres_dsn)] == [
        ("unknown_device", panel_message(unknown)[0])
    ]
    assert set(seen.cloud.values()) == {1}, "a copy reached the cloud more than once"


async def test_after_the_holder_of_partition_0_stops_the_other_rejects_unknown_buildings(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    statuses, seen = Statuses(), Seen()
    names = ["gw-a", "gw-b"]
    async with (
        following(own_broker, [(OPERATOR, [topics.gateway_filter()])], statuses.on),
        following(own_broker, [(OPERATOR, [topics.REJECTED_FILTER])], seen.on),
        gateways(own_broker, registry, tmp_path, postgres_dsn, names) as gw,
    ):
        for name in names:
            await gw[name].launch()
        await statuses.until({"gw-a": 32, "gw-b": 32})
        holder = _holder_of_zero(statuses, names)
        other = next(name for name in names if name != holder)
        assert await gw[holder].stop() == 0  # SIGTERM: drained, leases released
        await statuses.until({other: 64})
        unknown = event_dict("visitor", building=UNKNOWN, dwelling="d0001")
        await publish_as_fleet(own_broker, [panel_message(unknown)])
        await seen.until(cloud=set(), rejected=1)
        assert await gw[other].stop() == 0

    assert [(r["reason"], r["gateway_id"]) for r in seen.rejected] == [("unknown_device", other)]
    assert len(await _rejection_rows(postgres_dsn)) == 1
