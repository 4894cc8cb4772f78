"""The store's cost per event on an empty store and on one of a complex's three years.

A seeded store (``bench.store_seed``: 10 million decisions, ~25 million provisions)
takes ``--events`` more, written as the gateway writes them (a decision, two or three
provisions, the completed id; a flush every ``--batch`` events), and so does an empty
store, alternately, ``--repeat`` times. Measured: the process's CPU (the aiosqlite
thread included) per event, and for PostgreSQL also the server's (every process of our
own cluster, from /proc), the ratio seeded / empty, and the resident's provision query
(one dwelling, one year: ``Store.provisions``) on the seeded store, for ``--queries``
dwellings, each asked twice (the first answer may read from the disk).

``.venv/bin/python -m bench.store_size --sqlite /var/tmp/s.sqlite --postgres-dir /var/tmp/pg``
(the PostgreSQL folder as ``bench.store_seed --postgres-dir`` left it). Writes
``bench/results/store_size.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.store_seed import END, OUTCOME_SETS, RECIPIENTS
from intercom_gateway.core.records import DecisionRow, LedgerRow
from intercom_gateway.store import Store
from intercom_gateway.store.sqlite import SqliteStore

RESULTS = Path(__file__).parent / "results" / "store_size.json"
Opener = Callable[[], AbstractAsyncContextManager[Store]]
Server = Callable[[], float]  # the server's CPU seconds so far (0 for SQLite)


async def write(store: Store, *, events: int, batch: int, rng: random.Random) -> None:
    """``events`` events as the gateway records them, after everything seeded."""
    start = END + timedelta(days=rng.randrange(30))
    for n in range(1, events + 1):
        at = start + timedelta(microseconds=250 * n)
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        decision_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        building, dwelling = f"b{rng.randrange(10):03d}", f"d{rng.randrange(200):04d}"
        store.record_decision(
            DecisionRow(
                event_id, decision_id, building, dwelling, "visitor", at, "2026-04-01", 3,
                OUTCOME_SETS[n % len(OUTCOME_SETS)],
            )
        )  # fmt: skip
        store.record_provisions(
            LedgerRow(
                at, recipient, kind, third_party, building, dwelling, event_id, "visitor",
                ("event_type", "at", "dwelling_id"), False, ("partner_provision",), rule,
                "2026-04-01", decision_id,
            )
            for recipient, kind, third_party, rule in RECIPIENTS[: 2 + n % 2]
        )  # fmt: skip
        store.record_completed(event_id, at.timestamp())
        if n % batch == 0:
            await store.flush()
    await store.flush()


async def cpu_per_event(
    opener: Opener, server: Server, *, events: int, batch: int, seed: int
) -> tuple[float, float]:
    """µs of CPU per event: this process's, and the server's."""
    async with opener() as store:
        process, served = time.process_time(), server()
        await write(store, events=events, batch=batch, rng=random.Random(seed))
        process, served = time.process_time() - process, server() - served
    return 1e6 * process / events, 1e6 * served / events


async def provision_queries(opener: Opener, *, queries: int, seed: int) -> dict[str, Any]:
    """Milliseconds to answer one dwelling's provisions over a year, first and second ask."""
    rng = random.Random(seed)
    first: list[float] = []
    again: list[float] = []
    rows: list[int] = []
    async with opener() as store:
        for _ in range(queries):
            building, dwelling = f"b{rng.randrange(10):03d}", f"d{rng.randrange(200):04d}"
            year_end = END - timedelta(days=rng.randrange(700))
            for times in (first, again):
                began = time.perf_counter()
                found = await store.provisions(
                    building_id=building,
                    dwelling_id=dwelling,
                    start=year_end - timedelta(days=365),
                    end=year_end,
                )
                times.append(1e3 * (time.perf_counter() - began))
            rows.append(len(found))
    return {
        "median_ms_first": round(statistics.median(first), 1),
        "median_ms_again": round(statistics.median(again), 1),
        "max_ms_first": round(max(first), 1),
        "rows_median": statistics.median(rows),
    }


async def compare(
    variants: dict[str, tuple[Opener, Opener]], server: Server, args: argparse.Namespace
) -> dict[str, Any]:
    """Each variant's empty and seeded store alternately; medians, runs and ratios."""
    shape = {"events": args.events, "batch": args.batch}
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name, (_, seeded) in variants.items():
        await cpu_per_event(seeded, server, **shape, seed=0)  # the seeded store's pages warm
        runs[name] = {"empty": [], "seeded": []}
    for r in range(args.repeat):
        for name, (empty, seeded) in variants.items():
            runs[name]["empty"].append(await cpu_per_event(empty, server, **shape, seed=r + 1))
            runs[name]["seeded"].append(await cpu_per_event(seeded, server, **shape, seed=r + 1))
            print(f"  run {r + 1} {name}: {runs[name]}", flush=True)
    result: dict[str, Any] = {}
    for name, (_, seeded) in variants.items():
        result[name] = summary(runs[name])
        result[name]["provisions"] = await provision_queries(seeded, queries=args.queries, seed=7)
    return result


def summary(runs: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind, pairs in runs.items():
        result[kind] = {
            "process_us": round(statistics.median(p for p, _ in pairs), 1),
            "server_us": round(statistics.median(s for _, s in pairs), 1),
            "total_us": round(statistics.median(p + s for p, s in pairs), 1),
            "runs": [[round(p, 1), round(s, 1)] for p, s in pairs],
        }
    result["ratio_seeded_to_empty"] = round(
        result["seeded"]["total_us"] / result["empty"]["total_us"], 2
    )
    return result


async def measure_sqlite(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="store-size-") as folder:
        counter = iter(range(1_000_000))

        def opener(pragmas: str, target: Path | None) -> Opener:
            @asynccontextmanager
            async def opened() -> AsyncIterator[Store]:
                where = target or Path(folder) / f"empty{next(counter)}.sqlite"
                async with SqliteStore.open(where) as store:
                    if pragmas:
                        await store.connection.executescript(pragmas)
                    yield store

            return opened

        variants = {
            name: (opener(pragmas, None), opener(pragmas, path))
            for name, pragmas in (v.split("=", 1) for v in args.sqlite_variant or ["as-is="])
        }
        return await compare(variants, lambda: 0.0, args)


async def measure_postgres(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from intercom_gateway.qa.postgres import PostgresServer, own_database
    from intercom_gateway.store.postgres import PostgresStore

    with PostgresServer(workdir) as server:
        await configure(server, args.pg_setting or [])

        @asynccontextmanager
        async def empty() -> AsyncIterator[Store]:
            async with (
                own_database(server.dsn, uuid.uuid4().hex[:8]) as dsn,
                PostgresStore.open(dsn) as store,
            ):
                yield store

        return await compare(
            {"as-is": (empty, lambda: PostgresStore.open(server.dsn))},
            lambda: cluster_cpu(server.data / "postmaster.pid"),
            args,
        )


async def configure(server: Any, settings: list[str]) -> None:
    """``NAME=VALUE`` settings for this run (``ALTER SYSTEM``, then a restart); the
    ones named before are reset first, so a run without any has the defaults."""
    import asyncpg

    db = await asyncpg.connect(server.dsn)
    try:
        await db.execute("ALTER SYSTEM RESET ALL")
        for setting in settings:
            name, value = setting.split("=", 1)
            await db.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await db.close()
    server.stop()
    server.start()


def cluster_cpu(pid_file: Path) -> float:
    """CPU seconds of the postmaster and its children (backends, writers) so far."""
    postmaster = int(pid_file.read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == postmaster or int(entry.name) == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", type=Path, help="a seeded SQLite file")
    parser.add_argument("--postgres-dir", type=Path, help="a seeded PostgreSQL folder")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=250, help="events per flush")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--sqlite-variant",
        action="append",
        help="NAME=PRAGMAS run on each SQLite store opened (several: compared in one run)",
    )
    parser.add_argument(
        "--pg-setting", action="append", help="NAME=VALUE for the PostgreSQL server's run"
    )
    parser.add_argument("--queries", type=int, default=9, help="dwellings asked")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "events": args.events,
        "batch": args.batch,
        "at": str(datetime.now(UTC)),
    }
    if args.sqlite is not None:
        result["sqlite"] = asyncio.run(measure_sqlite(args.sqlite, args))
        print(json.dumps(result["sqlite"], indent=2), flush=True)
    if args.postgres_dir is not None:
        result["postgres"] = asyncio.run(measure_postgres(args.postgres_dir, args))
        print(json.dumps(result["postgres"], indent=2), flush=True)
    if "sqlite" in result and "postgres" in result:
        sqlite = next(iter(result["sqlite"].values()))
        result["postgres_to_sqlite"] = {
            kind: round(result["postgres"]["as-is"][kind]["total_us"] / sqlite[kind]["total_us"], 2)
            for kind in ("empty", "seeded")
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("sqlite", "postgres")}))


if __name__ == "__main__":
    main()
