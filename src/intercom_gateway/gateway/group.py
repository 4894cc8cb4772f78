"""The health of a group of partitioned gateways, from what each publishes retained.

Each `run --partitioned` process keeps ``gateway/v1/{gateway_id}/status`` (online or
offline, the partitions it serves, since when) and ``…/metrics``. The group is healthy
when the online gateways together serve every partition, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.core.partitions import PARTITIONS
from intercom_gateway.errors import ConnectFailed
from intercom_gateway.gateway.presence import refusal

STATUS_FILTER = "gateway/v1/+/status"
QUIET = 0.5  # seconds with no new retained status: the broker has sent them all


@dataclass(frozen=True, slots=True)
class GroupVerdict:
    healthy: bool
    reason: str
    gateways: list[dict[str, Any]]


async def read_group(address: BrokerAddress, *, timeout: float) -> list[dict[str, Any]]:
    """Every gateway's retained status on the broker (at most ``timeout`` seconds)."""
    found: dict[str, dict[str, Any]] = {}
    client_id = address.client_id(f"group-{uuid.uuid4().hex[:8]}")
    try:
        async with MqttBus(address, client_id=client_id) as bus:
            await bus.subscribe(STATUS_FILTER)

            async def read() -> None:
                messages = bus.messages().__aiter__()
                while True:
                    # Retained messages come in one burst after the subscription.
                    message = await asyncio.wait_for(anext(messages), QUIET)
                    with contextlib.suppress(ValueError, KeyError):
                        status = json.loads(message.payload)
                        found[status["gateway_id"]] = status

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(read(), timeout)
    except ConnectFailed as error:
        raise refusal(address, error) from None
    return [found[g] for g in sorted(found)]


def judge_group(gateways: list[dict[str, Any]], partitions: int = PARTITIONS) -> GroupVerdict:
    online = [g for g in gateways if g.get("state") == "online"]
    held: dict[int, list[str]] = {}
    for gateway in online:
        for partition in gateway.get("partitions") or []:
            held.setdefault(int(partition), []).append(gateway["gateway_id"])
    twice = {p: owners for p, owners in held.items() if len(owners) > 1}
    missing = sorted(set(range(partitions)) - held.keys())
    if not online:
        return GroupVerdict(False, "no partitioned gateway is online on this broker", gateways)
    if twice:
        first = min(twice)
        return GroupVerdict(
            False, f"partition {first} is claimed by {', '.join(twice[first])}", gateways
        )
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" …" if len(missing) > 8 else "")
        return GroupVerdict(False, f"{len(missing)} partitions have no gateway: {shown}", gateways)
    shares = ", ".join(f"{g['gateway_id']} {len(g.get('partitions') or [])}" for g in online)
    return GroupVerdict(
        True, f"{len(online)} gateways serve all {partitions} partitions ({shares})", gateways
    )
