"""Nothing lost: real Mosquitto, the gateway as a real process, killed and restarted.

Simulated panels publish thousands of events of every kind. The gateway is killed
with SIGKILL at random points (or stopped with SIGTERM, or the broker is restarted,
or the gateway is down for a whole burst) and started again. Then every valid event
must have reached every destination it is entitled to (computed with the same
policy, registry and consent), no destination may have seen one it is not entitled
to, and after de-duplication by event id each destination has each event once. The
counts are printed and written to reports/nothing-lost.json.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.core.models import Event
from intercom_gateway.qa.runner import StatusWatch
from tests.broker.worlds import (
    Publisher,
    Recorder,
    World,
    entitled,
    ledger_key,
    make_events,
    open_world,
    recording,
    report,
)

pytestmark = pytest.mark.slow

REPORT = Path(__file__).resolve().parents[2] / "reports" / "nothing-lost.json"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, dwellings=10) as world:
        yield world


async def settle_and_check(
    name: str, world: World, recorder: Recorder, events: list[Event], *, extra: dict[str, Any]
) -> dict[str, Any]:
    expected = entitled(events, world.registry)
    await recorder.wait_complete(expected, timeout=120)
    lost = {d: len(ids - set(recorder.copies[d])) for d, ids in expected.items()}
    unentitled = {d: len(set(got) - expected.get(d, set())) for d, got in recorder.copies.items()}
    duplicates = {d: sum(n - 1 for n in got.values()) for d, got in recorder.copies.items()}
    delivered = {d: len(got) for d, got in recorder.copies.items()}
    result = {
        "scenario": name,
        "sent": len(events),
        "entitled": {d: len(ids) for d, ids in expected.items()},
        "delivered_distinct": delivered,
        "duplicates_before_dedup": duplicates,
        "lost": lost,
        "not_entitled": unentitled,
        **extra,
    }
    _report(result)
    assert sum(lost.values()) == 0, result
    assert sum(unentitled.values()) == 0, result
    assert delivered == {d: len(ids) for d, ids in expected.items()}, result
    # A graceful stop commits the last batch; then the ledger must be exact.
    assert await world.stop_gateway(signal.SIGTERM) == 0
    await _check_ledger(world, expected)
    return result


async def _check_ledger(world: World, expected: dict[str, set[str]]) -> None:
    """The ledger counts each third-party provision exactly once."""
    from intercom_gateway.settings import Settings
    from intercom_gateway.store import open_store

    # The gateway process's store: its SQLite file, or INTERCOM_STORE (--store=postgres).
    async with open_store(Settings(db_path=world.workdir / "gateway.sqlite")) as store:
        rows = [r.as_dict() for r in await store.provisions()]
    pairs = [(r["recipient"], r["event_id"], r["part"]) for r in rows if r["third_party"]]
    assert len(pairs) == len(set(pairs))
    third = {
        ledger_key(d, e) for d, ids in expected.items() if d.startswith("partner:") for e in ids
    }
    assert set(pairs) == third


def _report(result: dict[str, Any]) -> None:
    summary = (
        f"\n[nothing-lost] {result['scenario']}: sent {result['sent']}, "
        f"delivered {sum(result['delivered_distinct'].values())} (distinct, all destinations), "
        f"duplicates before de-dup {sum(result['duplicates_before_dedup'].values())}, "
        f"lost {sum(result['lost'].values())}"
    )
    report(REPORT, result["scenario"], result, summary)


# --- the scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_gateway_killed_at_random_points(world: World, seed: int) -> None:
    rng = random.Random(seed)
    events = make_events(world.registry, 2000, seed)
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        publisher = Publisher(world.broker)
        publishing = asyncio.create_task(publisher.publish(events, rate=1500))
        kills = 0
        while not publishing.done() and kills < 3:
            await asyncio.sleep(rng.uniform(0.2, 0.8))  # a random point to crash at
            await world.stop_gateway(signal.SIGKILL)
            kills += 1
            await world.start_gateway(status)
        await publishing
        await settle_and_check(
            f"sigkill-seed-{seed}", world, recorder, events, extra={"gateway_kills": kills}
        )
    assert kills >= 1


async def test_broker_restarted_mid_stream(world: World) -> None:
    events = make_events(world.registry, 2000, 11)
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        publisher = Publisher(world.broker)
        first, second = events[:1000], events[1000:]
        await publisher.publish(first)  # fast: a backlog builds up in front of the gateway
        await asyncio.to_thread(world.broker.restart)
        await publisher.publish(second)
        await settle_and_check(
            "broker-restart", world, recorder, events, extra={"broker_restarts": 1}
        )


async def test_gateway_down_for_a_burst_larger_than_the_default_queue(world: World) -> None:
    events = make_events(world.registry, 3000, 21)  # Mosquitto's default keeps only 1000
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        await Publisher(world.broker).publish(events)
        await world.start_gateway(status)
        result = await settle_and_check("burst-while-down", world, recorder, events, extra={})
    assert result["sent"] > 1000


async def test_sigterm_finishes_in_flight_events_without_duplicates(world: World) -> None:
    events = make_events(world.registry, 1500, 31)
    async with StatusWatch(world.broker, world.gateway_id) as status, recording(world) as recorder:
        await world.start_gateway(status)
        publishing = asyncio.create_task(Publisher(world.broker).publish(events, rate=2000))
        await asyncio.sleep(0.3)  # mid-stream
        assert await world.stop_gateway(signal.SIGTERM) == 0
        await world.start_gateway(status)
        await publishing
        result = await settle_and_check("sigterm", world, recorder, events, extra={})
    assert sum(result["duplicates_before_dedup"].values()) == 0
