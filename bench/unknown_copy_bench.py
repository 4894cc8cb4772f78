"""What the unknown buildings' session costs the broker: one more copy of each panel message.

Partitioned gateways reject unknown buildings on a session of the holder of partition 0
subscribed to the full panel wildcards (``gateway.unknown``, docs/partitions.md), so the
broker delivers every panel message twice: to its partition's session and to that one.
This measures that copy alone, without PostgreSQL and the gateways' own work. One
Mosquitto (the packaged config); a backlog of ``--events`` simulated panel events
(bench/workload.py) is published by the fleet account to a persistent session of the
gateway account subscribed like a partition (acknowledging each message), with or
without a second such session subscribed like ``gateway.unknown``; the two ways
alternate over ``--repeat`` rounds. Reported per way, median over the rounds: the
broker's CPU seconds per 10,000 events (from /proc), and this process's (the publisher
and the subscribers' reading and acknowledging), and the events/s until every session
had every message. Run from the checkout: ``.venv/bin/python -m bench.unknown_copy_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.gateways_bench import SERVICES, cpu_seconds
from bench.workload import prepare
from intercom_gateway.broker.mosquitto import FLEET, GATEWAY, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.qa.runner import client, started_broker

WAYS = ("partition only", "with gateway.unknown")


async def _consume(bus: MqttBus, count: int, done: asyncio.Event) -> None:
    """Take and acknowledge ``count`` messages, as a gateway session does."""
    seen = 0
    async for message in bus.messages():
        bus.ack(message)
        seen += 1
        if seen == count:
            done.set()
            return


async def one_run(
    broker: Mosquitto, messages: list[tuple[str, bytes]], sessions: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    subscribers = [
        client(broker, GATEWAY, client_id=f"{GATEWAY}.bench-{tag}-{i}", manual_ack=True)
        for i in range(sessions)
    ]
    dones = [asyncio.Event() for _ in subscribers]
    async with contextlib.AsyncExitStack() as stack:
        buses = [await stack.enter_async_context(bus) for bus in subscribers]
        for bus in buses:
            await bus.subscribe(topics.PANEL_EVENTS_FILTER, topics.PANEL_SETTINGS_FILTER)
        consumers = [
            asyncio.create_task(_consume(bus, len(messages), done))
            for bus, done in zip(buses, dones, strict=True)
        ]
        assert broker.process is not None
        pid = broker.process.pid
        broker_before, own_before = cpu_seconds(pid), time.process_time()
        started = time.perf_counter()
        async with client(broker, FLEET) as fleet:
            for topic, payload in messages:
                await fleet.publish(topic, payload, on_done=lambda _error: None)
            await fleet.drain()
            await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 300)
        elapsed = time.perf_counter() - started
        broker_cpu = cpu_seconds(pid) - broker_before
        own_cpu = time.process_time() - own_before
        await asyncio.gather(*consumers)
    per_10k = 10_000 / len(messages)
    return {
        "way": WAYS[sessions - 1],
        "events": len(messages),
        "events_per_s": len(messages) / elapsed,
        "broker_cpu_s_per_10k": broker_cpu * per_10k,
        "process_cpu_s_per_10k": own_cpu * per_10k,
    }


async def measure(events: int, repeat: int) -> dict[str, Any]:
    registry = generate_registry(buildings=64, dwellings=4, services=SERVICES)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="unknown-copy-bench-") as tmp:
        async with started_broker(Path(tmp) / "mqtt", registry, SERVICES) as broker:
            for round_ in range(repeat):
                work = prepare(registry, events, seed=round_)
                messages = [(topic, payload.encode()) for topic, payload in work.messages]
                for sessions in (1, 2):
                    run = await one_run(broker, messages, sessions)
                    print(json.dumps(run), flush=True)
                    runs.append(run)
    median = {
        way: {
            key: statistics.median(r[key] for r in runs if r["way"] == way)
            for key in ("events_per_s", "broker_cpu_s_per_10k", "process_cpu_s_per_10k")
        }
        for way in WAYS
    }
    return {"runs": runs, "median": median}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Events per run [20000].")
    parser.add_argument("--repeat", type=int, default=5, help="Alternating rounds [5].")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.events, args.repeat))
    for way, figures in result["median"].items():
        print(
            f"{way}: {figures['events_per_s']:,.0f} events/s, broker "
            f"{figures['broker_cpu_s_per_10k']:.2f} CPU s/10k, this process "
            f"{figures['process_cpu_s_per_10k']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
