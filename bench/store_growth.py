"""How the event path's store writes cost more as the tables grow.

The gateway's own ``Store`` (real schema, a real SQLite file, aiosqlite) takes what the
gateway records for each event, in the order it does: the provisions' write-ahead
intents committed in groups of ``--intents`` events (``gateway.ledger.WriteAhead``),
then, in the batch that completes the events, a decision, the provisions "delivered" and
the completed id, flushed every ``--batch`` events as the gateway flushes about every
50 ms. Event ids are random, as the panels make them. Printed per slice of ``--slice``
events: CPU µs per event of the whole process (the aiosqlite thread included), and the
size of the file.

``.venv/bin/python -m bench.store_growth --events 200000``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from intercom_gateway.store.sqlite import DecisionRow, LedgerRow, SqliteStore

RECIPIENTS = (
    ("partner:concierge", "partner", True),
    ("partner:elder-watch", "partner", True),
    ("group", "group", False),
)
OUTCOMES = '[{"destination":"cloud","forwarded":true}]'  # one set, as most events share


async def grow(
    path: Path, *, events: int, batch: int, intents: int, slice_: int, seed: int
) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 11, 22, tzinfo=UTC)
    async with SqliteStore.open(path) as store:
        began = time.process_time()
        intended: list[LedgerRow] = []
        for number in range(1, events + 1):
            at = start + timedelta(microseconds=250 * number)
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            decision_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            building, dwelling = f"b{rng.randrange(10):03d}", f"d{rng.randrange(40):04d}"
            store.record_decision(
                DecisionRow(
                    event_id, decision_id, building, dwelling, "visitor", at, "2026-04-01", 3,
                    OUTCOMES,
                )
            )  # fmt: skip
            rows = [
                LedgerRow(
                    at, recipient, kind, third_party, building, dwelling, event_id, "visitor",
                    ("outcome",), False, ("partner_provision",), "partner-events", "2026-04-01",
                    decision_id,
                )
                for recipient, kind, third_party in RECIPIENTS[: 2 + number % 2]
            ]  # fmt: skip
            intended.extend(rows)
            if number % intents == 0:
                await store.save_intents(intended)
                store.record_delivered(intended)
                intended = []
            store.record_completed(event_id, at.timestamp())
            if number % batch == 0:
                await store.flush()
            if number % slice_ == 0:
                cpu = time.process_time() - began
                print(
                    f"{number - slice_:>9,}-{number:<9,} {1e6 * cpu / slice_:7.1f} µs CPU/event"
                    f"  file {path.stat().st_size / 1e6:6.0f} MB",  # noqa: ASYNC240 (untimed)
                    flush=True,
                )
                began = time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=250, help="events per flush")
    parser.add_argument(
        "--intents", type=int, default=50, help="events per write-ahead commit (divides --batch)"
    )
    parser.add_argument("--slice", type=int, default=20_000, help="events per printed line")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(
            grow(
                Path(tmp) / "store.sqlite",
                events=args.events,
                batch=args.batch,
                intents=args.intents,
                slice_=args.slice,
                seed=args.seed,
            )
        )


if __name__ == "__main__":
    main()
