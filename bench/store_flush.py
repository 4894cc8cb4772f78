"""The event path's store cost on each backend: what a flush costs per event.

Records ``--events`` events the way the gateway does (a decision row, a provision to
each of three recipients, the completed id) and flushes every ``--batch`` events, on a
SQLite file and on a PostgreSQL database of our own (``qa.postgres.PostgresServer``:
loopback TCP, fsync off, so the number is the store's code and the protocol, not the
disk). Alternates the two ``--repeat`` times and reports the median µs per event of each
and the ratio PostgreSQL / SQLite.

Writes ``bench/results/store_flush.json``. Run from the checkout:
``.venv/bin/python -m bench.store_flush``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intercom_gateway.core.records import DecisionRow, LedgerRow
from intercom_gateway.qa.postgres import PostgresServer
from intercom_gateway.store import Store
from intercom_gateway.store.postgres import PostgresStore
from intercom_gateway.store.sqlite import SqliteStore

RESULTS = Path(__file__).parent / "results" / "store_flush.json"
OUTCOMES = json.dumps([{"destination": "cloud", "forwarded": True, "purposes": ["p1"]}])
RECIPIENTS = (
    ("partner:concierge", "partner", True),
    ("partner:parcel-unlock", "unlock_service", True),
    ("group", "group", False),
)
START = datetime(2026, 4, 1, tzinfo=UTC)
Opener = Callable[[], AbstractAsyncContextManager[Store]]


def _event(n: int, run: str) -> tuple[DecisionRow, list[LedgerRow]]:
    event_id = f"{run}-e{n}"
    at = START + timedelta(milliseconds=n)
    dwelling = f"d{n % 500:04d}"
    decision = DecisionRow(
        event_id, f"dec-{event_id}", "b001", dwelling, "visitor", at, "2026-04-01", 1, OUTCOMES
    )
    row = LedgerRow(
        at, "", "", False, "b001", dwelling, event_id, "visitor", ("event_type", "at"), False,
        ("p1",), "rule-1", "2026-04-01", decision.decision_id,
    )  # fmt: skip
    rows = [replace(row, recipient=r, recipient_kind=k, third_party=t) for r, k, t in RECIPIENTS]
    return decision, rows


async def _run(open_store: Opener, events: int, batch: int, run: str) -> float:
    """Seconds to record and flush ``events`` events in batches of ``batch``."""
    made = [_event(n, run) for n in range(events)]
    async with open_store() as store:
        began = time.perf_counter()
        for n, (decision, rows) in enumerate(made, 1):
            store.record_decision(decision)
            store.record_provisions(rows)
            store.record_completed(decision.event_id, float(n))
            if n % batch == 0:
                await store.flush()
        await store.flush()
        return time.perf_counter() - began


async def measure(events: int, batch: int, repeat: int, workdir: Path) -> dict[str, Any]:
    with PostgresServer(workdir / "pg") as server:
        openers: dict[str, Opener] = {
            "sqlite": lambda: SqliteStore.open(workdir / "store.sqlite"),
            "postgres": lambda: PostgresStore.open(server.dsn),
        }
        seconds: dict[str, list[float]] = {name: [] for name in openers}
        await _run(openers["sqlite"], batch, batch, "warm")  # tables made, code warm
        await _run(openers["postgres"], batch, batch, "warm")
        for r in range(repeat):
            for name, opener in openers.items():
                seconds[name].append(await _run(opener, events, batch, f"r{r}"))
    per_event = {name: statistics.median(s) / events * 1e6 for name, s in seconds.items()}
    return {
        "events": events,
        "batch": batch,
        "repeat": repeat,
        "rows_per_event": 1 + len(RECIPIENTS) + 1,
        "us_per_event": {name: round(us, 1) for name, us in per_event.items()},
        "seconds": seconds,
        "ratio_postgres_to_sqlite": round(per_event["postgres"] / per_event["sqlite"], 2),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200, help="events per flush")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-flush-") as folder:
        result = asyncio.run(measure(args.events, args.batch, args.repeat, Path(folder)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
