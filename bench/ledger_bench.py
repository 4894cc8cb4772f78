"""Provision-ledger benchmark (issue 4): a dwelling's records for a year at one million
rows, and the gateway's event-path throughput with the ledger on and off.

1. Fill a SQLite store (the gateway's own schema) with ``--rows`` ledger rows spread over
   ``--dwellings`` dwellings and three years, appended in time order as the gateway
   appends them (executemany, 100,000 rows a transaction).
2. Query one random dwelling's records for a random one-year window, ``--queries``
   times, through ``Store.provisions`` (what ``resident provisions`` and the API call,
   JSON decoding included): median and p99 in ms.
3. Run the gateway loop (``Gateway.serve``) on the in-memory bus over ``--events``
   events of dwellings that use all three sample partner services (about three ledger
   rows an event), with the ledger on and with ledger writes dropped, alternating,
   ``--repeat`` times each: events/s.

Writes ``bench/results/ledger.json``. Run from the checkout:
``.venv/bin/python -m bench.ledger_bench``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intercom_gateway.bus import MemoryBroker
from intercom_gateway.core import topics
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.registry import dump_registry, generate_registry
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store.sqlite import LedgerRow, SqliteStore

RESULTS = Path(__file__).parent / "results" / "ledger.json"
SERVICES = ("concierge", "elder-watch", "parcel-unlock")
RECIPIENTS = (
    ("partner:concierge", "partner", 1),
    ("partner:elder-watch", "partner", 1),
    ("partner:parcel-unlock", "unlock_service", 1),
    ("group", "group", 0),
)
YEARS = 3
CHUNK = 100_000


# --- 1. fill -----------------------------------------------------------------------------


def _rows(
    count: int, dwellings: int, start: datetime, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    span = YEARS * 365 * 86_400
    per_chunk = span / max(1, count // CHUNK)
    for chunk_start in range(0, count, CHUNK):
        size = min(CHUNK, count - chunk_start)
        base = (chunk_start // CHUNK) * per_chunk
        # Time order within and across chunks, as the gateway appends.
        for offset in sorted(rng.uniform(0, per_chunk) for _ in range(size)):
            yield _row(start + timedelta(seconds=base + offset), rng.randrange(dwellings), rng)


def _row(at: datetime, dwelling: int, rng: random.Random) -> tuple[Any, ...]:
    recipient, kind, third_party = rng.choice(RECIPIENTS)
    return (
        at.isoformat(),
        recipient,
        kind,
        third_party,
        f"b{dwelling // 100:03d}",
        f"d{dwelling % 100:04d}",
        str(uuid.UUID(int=rng.getrandbits(128))),
        "visitor",
        '["event_id","occurred_at","outcome"]',
        0,
        '["partner_provision"]',
        "partner-events",
        "2026-04-01",
        str(uuid.UUID(int=rng.getrandbits(128))),
    )


def fill(path: Path, *, rows: int, dwellings: int, start: datetime, seed: int) -> float:
    asyncio.run(_create(path))
    rng = random.Random(seed)
    began = time.perf_counter()
    with sqlite3.connect(path) as db:
        iterator = _rows(rows, dwellings, start, rng)
        while batch := [row for _, row in zip(range(CHUNK), iterator, strict=False)]:
            db.executemany(
                "INSERT INTO ledger (at, recipient, recipient_kind, third_party, building_id,"
                " dwelling_id, event_id, event_type, items, image, purposes, rule_id,"
                " policy_version, decision_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                batch,
            )
            db.commit()
    return time.perf_counter() - began


async def _create(path: Path) -> None:
    async with SqliteStore.open(path):
        pass  # the gateway's schema and indexes


# --- 2. query ----------------------------------------------------------------------------


async def query(
    path: Path, *, dwellings: int, queries: int, start: datetime, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    timings, sizes = [], []
    async with SqliteStore.open(path) as store:
        for _ in range(queries):
            dwelling = rng.randrange(dwellings)
            since = start + timedelta(days=rng.uniform(0, (YEARS - 1) * 365))
            began = time.perf_counter()
            rows = await store.provisions(
                building_id=f"b{dwelling // 100:03d}",
                dwelling_id=f"d{dwelling % 100:04d}",
                start=since,
                end=since + timedelta(days=365),
            )
            timings.append((time.perf_counter() - began) * 1_000)
            sizes.append(len(rows))
        with sqlite3.connect(path) as db:
            plan = db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM ledger WHERE building_id = ? AND"
                " dwelling_id = ? AND at >= ? AND at < ? ORDER BY at, id",
                ("b001", "d0001", "a", "b"),
            ).fetchall()
    return {
        "queries": queries,
        "median_ms": round(statistics.median(timings), 3),
        "p99_ms": round(_percentile(timings, 99), 3),
        "max_ms": round(max(timings), 3),
        "rows_per_answer_median": statistics.median(sizes),
        "plan": [str(step[-1]) for step in plan],
    }


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def purge(path: Path, *, before: datetime) -> dict[str, Any]:
    async with SqliteStore.open(path) as store:
        began = time.perf_counter()
        deleted = await store.purge_ledger(before=before)
    return {"deleted": deleted, "seconds": round(time.perf_counter() - began, 3)}


# --- 3. throughput ----------------------------------------------------------------------


class _NoLedgerStore(SqliteStore):
    """The same store with ledger writes dropped: the 'ledger off' baseline."""

    def record_provisions(self, rows: Iterable[LedgerRow]) -> None:
        for _ in rows:
            pass

    # The write-ahead path (ledger.WriteAhead): intents, then their completion.
    async def save_intents(self, rows: Sequence[LedgerRow]) -> None:
        return None

    def record_delivered(self, rows: Iterable[LedgerRow]) -> None:
        for _ in rows:
            pass

    def record_unconfirmed(self, rows: Iterable[LedgerRow]) -> None:
        for _ in rows:
            pass


def _events(count: int, buildings: int, dwellings: int) -> list[tuple[str, bytes]]:
    kinds: dict[str, dict[str, Any]] = {
        "visitor": {"call_id": "c-1", "origin": "door", "outcome": "answered"},
        "delivery_box": {"action": "arrival", "box_number": 12, "carrier": "yamato"},
        "alarm": {"kind": "fire", "zone": "kitchen", "severity": "critical"},
    }
    image = {"id": "img-1", "content_type": "image/jpeg", "size": 48_213, "sha256": "0" * 64}
    now = (utc_now() - timedelta(seconds=1)).isoformat()
    messages = []
    for index in range(count):
        kind = list(kinds)[index % 3]
        building = f"b{1 + index % buildings:03d}"
        dwelling = f"d{1 + (index // buildings) % dwellings:04d}"
        device, role = f"panel-{building}-{dwelling}", "dwelling_panel"
        if kind == "delivery_box":
            device, role = f"box-{building}", "delivery_box"
        data: dict[str, Any] = {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "seq": index + 1,
            "building_id": building,
            "dwelling_id": dwelling,
            "device": {"id": device, "role": role},
            "occurred_at": now,
            "type": kind,
            **kinds[kind],
        }
        if kind == "visitor":
            data["image"] = image
        messages.append((topics.panel_events(building, device, kind), json.dumps(data).encode()))
    return messages


async def throughput(workdir: Path, *, events: int, ledger: bool) -> dict[str, Any]:
    registry = generate_registry(buildings=10, dwellings=20, services=SERVICES)
    registry_path = workdir / "registry.yaml"
    registry_path.write_text(dump_registry(registry))
    db_path = workdir / f"gw-{uuid.uuid4().hex[:6]}.sqlite"
    settings = Settings(db_path=db_path, registry_path=registry_path, log_events=False)
    messages = _events(events, 10, 20)
    broker = MemoryBroker()
    store_class = SqliteStore if ledger else _NoLedgerStore
    async with store_class.open(db_path) as store:
        gateway = await Gateway.load(settings, store)
        bus, panels = broker.client("gateway"), broker.client("panels")
        stop = asyncio.Event()
        serving = asyncio.create_task(gateway.serve(bus, stop=stop))
        await gateway.online.wait()
        began = time.perf_counter()
        for topic, payload in messages:
            await panels.publish(topic, payload)
        await gateway.wait_acked(events)
        elapsed = time.perf_counter() - began
        stop.set()
        await serving
        rows = (await store.counts()).ledger
    return {
        "events_per_s": round(events / elapsed),
        "seconds": round(elapsed, 3),
        "ledger_rows": rows,
    }


async def compare(events: int, repeat: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):  # alternate, so drift of the machine touches both alike
            for mode in ("on", "off"):
                runs[mode].append(await throughput(Path(tmp), events=events, ledger=mode == "on"))
    median = {m: statistics.median(r["events_per_s"] for r in runs[m]) for m in runs}
    return {
        "events": events,
        "repeat": repeat,
        "ledger_on_events_per_s": median["on"],
        "ledger_off_events_per_s": median["off"],
        "ledger_rows_per_run": runs["on"][0]["ledger_rows"],
        "cost_percent": round(100 * (1 - median["on"] / median["off"]), 1),
        "runs": runs,
    }


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dwellings", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    start = datetime(2023, 4, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite"
        fill_s = fill(path, rows=args.rows, dwellings=args.dwellings, start=start, seed=args.seed)
        print(f"filled {args.rows:,} rows in {fill_s:.1f} s", flush=True)
        answer = asyncio.run(
            query(path, dwellings=args.dwellings, queries=args.queries, start=start, seed=args.seed)
        )
        print(f"one dwelling, one year: median {answer['median_ms']} ms, p99 {answer['p99_ms']} ms")
        purged = asyncio.run(purge(path, before=start + timedelta(days=365)))
        print(f"purge of the oldest year: {purged['deleted']:,} rows in {purged['seconds']} s")
    path_result = asyncio.run(compare(args.events, args.repeat))
    print(
        f"event path: ledger on {path_result['ledger_on_events_per_s']:,.0f} ev/s,"
        f" off {path_result['ledger_off_events_per_s']:,.0f} ev/s"
        f" ({path_result['cost_percent']} % cost)"
    )
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "system": platform.platform(),
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "fill": {"rows": args.rows, "dwellings": args.dwellings, "seconds": round(fill_s, 1)},
        "query_one_dwelling_one_year": answer,
        "purge_oldest_year": purged,
        "event_path": path_result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
