"""Lease hand-over times (issue #17): how long the partitions of a gateway that goes away
stay without an owner, with the default heartbeat (1 s) and expiry (5 s).

Three lease books (gateways) run their rebalance loop (``LeaseBook.rounds``) in one
process against our own throwaway PostgreSQL. Then, ``--repeat`` times each, one of them
goes away and the clock runs until the two others own all 64 partitions again:

- **kill**: its database session is ended (``pg_terminate_backend``), as when the process
  or its machine dies; the others see the session gone at their next heartbeat;
- **leave**: ``release_all`` (the SIGTERM path); its NOTIFY wakes the others at once;
- **hang**: it stops heartbeating while its session lives on and holds its locks; the
  others end that session once its heartbeat is older than ``expiry``.

After each one it comes back and the three settle on 22/21/21; the next one goes away at
a random moment of the heartbeat period (seeded), not in step with the last hand-over. Writes
``bench/results/leases.json``. Run from the checkout:
``.venv/bin/python -m bench.lease_handover``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from intercom_gateway.gateway.leases import LeaseBook
from intercom_gateway.qa.postgres import PostgresServer

RESULTS = Path(__file__).resolve().parent / "results" / "leases.json"
PARTITIONS = 64


class Group:
    """Gateways running their rebalance loops; ``changed`` fires at every hand-over."""

    def __init__(self, dsn: str, *, heartbeat: float, expiry: float) -> None:
        self.dsn = dsn
        self.heartbeat = heartbeat
        self.expiry = expiry
        self.owned: dict[str, set[int]] = {}
        self.books: dict[str, LeaseBook] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()

    async def start(self, gateway_id: str) -> None:
        book = LeaseBook(
            self.dsn, gateway_id=gateway_id, heartbeat=self.heartbeat, expiry=self.expiry
        )
        self.books[gateway_id] = book
        self.owned[gateway_id] = set()
        self.tasks[gateway_id] = asyncio.create_task(self._loop(book), name=gateway_id)

    async def _loop(self, book: LeaseBook) -> None:
        async for gained, lost in book.rounds():
            mine = self.owned[book.gateway_id]
            mine.difference_update(lost)
            mine.update(lease.partition for lease in gained)
            self.changed.set()

    async def stop_loop(self, gateway_id: str) -> LeaseBook:
        """The gateway stops doing anything (its connection stays as it is)."""
        task = self.tasks.pop(gateway_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        del self.owned[gateway_id]
        return self.books.pop(gateway_id)

    async def until(self, shares: list[int]) -> None:
        """Until the running gateways own exactly these numbers of partitions."""
        while sorted((len(s) for s in self.owned.values()), reverse=True) != shares:
            self.changed.clear()
            await self.changed.wait()

    async def close(self) -> None:
        for gateway_id in list(self.tasks):
            await (await self.stop_loop(gateway_id)).close()


async def goes_away(group: Group, admin: asyncpg.Connection[Any], how: str, victim: str) -> float:
    """Seconds from the victim going away to the two others owning every partition."""
    book = await group.stop_loop(victim)  # the victim's own loop does nothing more
    start = time.monotonic()
    if how == "leave":
        await book.release_all()
    elif how == "kill":
        await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", book.backend_pid)
    await group.until([32, 32])
    took = time.monotonic() - start
    await book.close()
    return took


async def measure(dsn: str, *, repeat: int, heartbeat: float, expiry: float) -> dict[str, Any]:
    group = Group(dsn, heartbeat=heartbeat, expiry=expiry)
    admin = await asyncpg.connect(dsn)
    results: dict[str, list[float]] = {"kill": [], "leave": [], "hang": []}
    rng = random.Random(17)
    try:
        for gateway_id in ("gw-a", "gw-b", "gw-c"):
            await group.start(gateway_id)
        await group.until([22, 21, 21])
        for round_ in range(repeat):
            for how in results:
                victim = ("gw-a", "gw-b", "gw-c")[round_ % 3]
                await asyncio.sleep(rng.uniform(0, heartbeat))  # out of step with the loops
                took = await goes_away(group, admin, how, victim)
                results[how].append(took)
                print(f"{how:5} {victim}: all {PARTITIONS} owned again after {took:.3f} s")
                await group.start(victim)
                await group.until([22, 21, 21])
    finally:
        await group.close()
        await admin.close()
    return {
        "heartbeat_s": heartbeat,
        "expiry_s": expiry,
        "runs": results,
        "summary": {
            how: {"median_s": statistics.median(v), "max_s": max(v), "min_s": min(v)}
            for how, v in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--expiry", type=float, default=5.0)
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="lease-bench-") as folder,
        PostgresServer(Path(folder)) as server,
    ):
        report = asyncio.run(
            measure(
                server.dsn,
                repeat=options.repeat,
                heartbeat=options.heartbeat,
                expiry=options.expiry,
            )
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    for how, figures in report["summary"].items():
        print(
            f"{how:5}: median {figures['median_s']:.3f} s, "
            f"min {figures['min_s']:.3f} s, max {figures['max_s']:.3f} s"
        )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
