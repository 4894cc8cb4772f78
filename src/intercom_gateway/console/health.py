"""The health page's answer: the gateways on the broker, their partitions and queue
depth, the broker connection, the store's size.

Read as ``health`` and ``health --group`` read them: the retained status and metrics a
gateway publishes (``gateway/v1/status`` and ``…/metrics`` for one gateway,
``gateway/v1/<id>/status`` and ``…/metrics`` for each partitioned one), judged by the
same functions (``core.health.verdict``, ``gateway.group.judge_group``). A broker the
console cannot reach is shown as such, not raised: the page is how the operator finds
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from intercom_gateway.core import topics
from intercom_gateway.core.health import verdict
from intercom_gateway.core.models import utc_now
from intercom_gateway.errors import BusError, GatewayError
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store
from intercom_gateway.store.opening import describe_store, sqlite_path

READ_FOR = 2.0  # seconds at most to collect the retained messages
QUIET = 0.5  # seconds with no new retained message: the broker has sent them all
STALL_AFTER = 30.0  # seconds, as `health --stall-after` by default
FILTERS = (topics.STATUS, topics.METRICS, "gateway/v1/+/status", "gateway/v1/+/metrics")


async def report(settings: Settings, store: Store) -> dict[str, Any]:
    where = f"{settings.broker_host}:{settings.broker_port}"
    try:
        found = await _retained(settings)
        broker = {"address": where, "connected": True, "detail": "the operator account is in"}
    except (BusError, GatewayError, OSError) as error:
        found = {}
        broker = {"address": where, "connected": False, "detail": str(error)}
    return {
        "broker": broker,
        **_gateways(found),
        "store": {
            "where": describe_store(settings),
            "bytes": _size(sqlite_path(settings)),
            "rows": (await store.counts()).as_dict(),
        },
    }


def _gateways(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each gateway's status with its metrics, and the verdict on them."""
    from intercom_gateway.gateway.group import judge_group

    gateways = []
    single = found.get(topics.STATUS)
    if single is not None:
        metrics = found.get(topics.METRICS)
        judged = verdict(single, metrics, now=utc_now(), stall_after=STALL_AFTER)
        gateways.append({**single, "metrics": metrics, "healthy": judged.healthy})
        gateways[-1]["reason"] = judged.reason
    partitioned = sorted(
        (status for topic, status in found.items() if topic.endswith("/status")),
        key=lambda s: str(s.get("gateway_id")),
    )
    partitioned = [s for s in partitioned if s is not single]
    for status in partitioned:
        metrics = found.get(topics.gateway_metrics(str(status.get("gateway_id"))))
        gateways.append({**status, "metrics": metrics})
    group = judge_group(partitioned) if partitioned else None
    return {
        "gateways": gateways,
        "group": {"healthy": group.healthy, "reason": group.reason} if group else None,
    }


async def _retained(settings: Settings) -> dict[str, dict[str, Any]]:
    from intercom_gateway.broker.accounts import OPERATOR, load_credentials
    from intercom_gateway.bus import MqttBus
    from intercom_gateway.errors import ConnectFailed
    from intercom_gateway.gateway.presence import refusal

    address = load_credentials(settings.secrets_dir).address(
        OPERATOR, host=settings.broker_host, port=settings.broker_port
    )
    found: dict[str, dict[str, Any]] = {}
    try:
        async with MqttBus(address, client_id=address.client_id(uuid.uuid4().hex[:8])) as bus:
            await bus.subscribe(*FILTERS)

            async def read() -> None:
                messages = bus.messages().__aiter__()
                while True:
                    message = await asyncio.wait_for(anext(messages), QUIET)
                    with contextlib.suppress(ValueError):
                        found[message.topic] = json.loads(message.payload)

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(read(), READ_FOR)
    except ConnectFailed as error:
        raise refusal(address, error) from None
    return found


def _size(path: Path | None) -> int | None:
    """The SQLite file with its write-ahead log, in bytes; None for PostgreSQL."""
    if path is None:
        return None
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
