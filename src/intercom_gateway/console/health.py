"""The health page's answer: the gateways on the broker, their partitions, the broker
connection, the store's size.

The gateways are read as ``health --group`` reads them: each one's retained status on
the broker (``gateway.group.read_group``), judged as a group when they are partitioned.
A broker the console cannot reach is shown as such, not raised: the page is how the
operator finds out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from intercom_gateway.errors import BusError, GatewayError
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store
from intercom_gateway.store.opening import describe_store, sqlite_path

READ_FOR = 2.0  # seconds at most to collect the retained statuses


async def report(settings: Settings, store: Store) -> dict[str, Any]:
    from intercom_gateway.broker.accounts import OPERATOR, load_credentials
    from intercom_gateway.gateway.group import judge_group, read_group

    where = f"{settings.broker_host}:{settings.broker_port}"
    gateways: list[dict[str, Any]] = []
    try:
        address = load_credentials(settings.secrets_dir).address(
            OPERATOR, host=settings.broker_host, port=settings.broker_port
        )
        gateways = await read_group(address, timeout=READ_FOR)
        broker = {"address": where, "connected": True, "detail": "the operator account is in"}
    except (BusError, GatewayError, OSError) as error:
        broker = {"address": where, "connected": False, "detail": str(error)}
    partitioned = any(g.get("partitions") for g in gateways)
    verdict = judge_group(gateways) if partitioned else None
    return {
        "broker": broker,
        "gateways": gateways,
        "group": {"healthy": verdict.healthy, "reason": verdict.reason} if verdict else None,
        "store": {
            "where": describe_store(settings),
            "bytes": _size(sqlite_path(settings)),
            "rows": (await store.counts()).as_dict(),
        },
    }


def _size(path: Path | None) -> int | None:
    """The SQLite file with its write-ahead log, in bytes; None for PostgreSQL."""
    if path is None:
        return None
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
