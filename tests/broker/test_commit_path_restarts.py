"""Issue 13 at the broker tier: the gateway as a real process, killed and restarted.

- Statistics across SIGTERM and SIGKILL restarts: with two-second windows and a
  minimum group of one, the published counts of every window equal the events sent in
  it; an aggregate published twice (a crash between the broker's acknowledgement and
  the store's record of it) carries the same id and the same counts.
- Ledger completeness: every partner copy a subscriber saw has its ledger row, at the
  instant of each crash (gateway SIGKILL, broker SIGKILL) and after the run, "delivered"
  or "unconfirmed", never missing, never two.

Counts are printed and written to reports/commit-path.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import ANALYTICS, FLEET, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event, utc_now
from intercom_gateway.core.policy import DestinationKind
from intercom_gateway.qa.runner import StatusWatch, following
from intercom_gateway.settings import Settings
from tests.broker.worlds import (
    Publisher,
    Recorder,
    World,
    decisions,
    entitled,
    ledger_key,
    make_events,
    open_world,
    recording,
    report,
)
from tests.helpers import unawaited
from tests.stores import committed

pytestmark = pytest.mark.slow

REPORT = Path(__file__).resolve().parents[2] / "reports" / "commit-path.json"
WINDOW_S = 2
STATISTICS = {
    "INTERCOM_STATISTICS_WINDOW": str(WINDOW_S),
    "INTERCOM_STATISTICS_MIN_GROUP": "1",
    # Longer than a restart takes: what was on its way when a window ended still counts.
    "INTERCOM_STATISTICS_DELAY": "15",
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, dwellings=10) as world:
        yield world


# --- statistics ---------------------------------------------------------------------------


class Aggregates:
    """Every statistics message, as (id, building, window start, counts, suppressed)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, dict[str, int], int]] = []
        self._grew = asyncio.Condition()

    async def on(self, topic: str, payload: bytes, _message: Any) -> None:
        envelope = json.loads(payload)
        body = envelope["event"]
        entry = (
            envelope["decision_id"],
            body["building_id"],
            body["window_start"],
            body["counts"],
            body["suppressed"],
        )
        async with self._grew:
            self.seen.append(entry)
            self._grew.notify_all()

    async def wait_for(self, windows: set[tuple[str, str]], timeout: float) -> None:
        def covered() -> bool:
            return windows <= {(b, w) for _, b, w, _, _ in self.seen}

        async with self._grew:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grew.wait_for(covered), timeout)


def listening(
    broker: Mosquitto, aggregates: Aggregates
) -> contextlib.AbstractAsyncContextManager[None]:
    subscription = (ANALYTICS, [topics.statistics_filter()])
    return following(broker, [subscription], aggregates.on, prefix="stats")


async def send_stamped(broker: Mosquitto, pool: list[Event], *, rate: float) -> list[Event]:
    """Publish the pool paced, each event stamped with the moment it is sent."""
    sent = []
    async with MqttBus(
        broker.address(FLEET), client_id=f"{FLEET}.pub-{uuid.uuid4().hex[:6]}"
    ) as bus:
        for event in pool:
            stamped = event.model_copy(update={"occurred_at": utc_now()})
            topic = topics.panel_events(stamped.building_id, stamped.device.id, stamped.type)
            await bus.publish(topic, stamped.model_dump_json().encode(), on_done=unawaited)
            sent.append(stamped)
            await asyncio.sleep(1 / rate)  # pacing the panels, not syncing
        await bus.drain()
    return sent


def counted_windows(events: list[Event], world: World) -> dict[tuple[str, str], Counter[str]]:
    """(building, window start) -> counts per type, of the events statistics may count."""
    expected: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for event, decision in decisions(events, world.registry):
        if any(o.kind is DestinationKind.STATISTICS for o in decision.forwarded):
            expected[(event.building_id, _window_start(event.occurred_at))][event.type] += 1
    return expected


def _window_start(moment: datetime) -> str:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start = epoch + ((moment - epoch) // timedelta(seconds=WINDOW_S)) * timedelta(seconds=WINDOW_S)
    return start.isoformat().replace("+00:00", "Z")


async def test_statistics_windows_count_every_event_once_across_sigterm_and_sigkill(
    world: World,
) -> None:
    world.extra.update(STATISTICS)
    pool = make_events(world.registry, 1200, seed=41)
    aggregates = Aggregates()
    async with (
        StatusWatch(world.broker, world.gateway_id) as status,
        listening(world.broker, aggregates),
    ):
        await world.start_gateway(status)
        sending = asyncio.create_task(send_stamped(world.broker, pool, rate=120))
        restarts = []
        for sig, after in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.5), (signal.SIGKILL, 2.5)):
            await asyncio.sleep(after)  # a point in the stream to stop at, not a sync
            code = await world.stop_gateway(sig)
            restarts.append(sig.name)
            if sig is signal.SIGTERM:
                assert code == 0
            await world.start_gateway(status)
        sent = await sending
        expected = counted_windows(sent, world)
        await aggregates.wait_for(set(expected), timeout=90)
        assert await world.stop_gateway(signal.SIGTERM) == 0

    by_id: dict[str, set[tuple[str, str, str, int]]] = defaultdict(set)
    ids_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    published: dict[tuple[str, str], Counter[str]] = {}
    for aggregate_id, building, start, counts, suppressed in aggregates.seen:
        by_id[aggregate_id].add((building, start, json.dumps(counts, sort_keys=True), suppressed))
        ids_of[(building, start)].add(aggregate_id)
        published[(building, start)] = Counter(counts)
    republished = sum(1 for _ in aggregates.seen) - len(by_id)
    result = {
        "scenario": "statistics-restarts",
        "restarts": restarts,
        "events_sent": len(sent),
        "events_counted_expected": sum(sum(c.values()) for c in expected.values()),
        "events_counted_published": sum(sum(c.values()) for c in published.values()),
        "windows": len(expected),
        "aggregates_received": len(aggregates.seen),
        "republished_same_id": republished,
    }
    _report(result)
    # The same aggregate every time it is published, and one per window.
    assert all(len(versions) == 1 for versions in by_id.values()), by_id
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert published == expected, result
    assert {s for *_, s in aggregates.seen} == {0}  # a minimum group of one hides nothing


# --- ledger completeness -------------------------------------------------------------------


def ledger_rows(world: World) -> list[tuple[str, str, str, str]]:
    """(recipient, event, part, status) of every ledger row, read while the gateway may
    run."""
    # The gateway process's store: its SQLite file, or INTERCOM_STORE (--store=postgres).
    settings = Settings(db_path=world.workdir / "gateway.sqlite")
    return [
        (str(r), str(e), str(p), str(s))
        for r, e, p, s in committed(
            settings, "SELECT recipient, event_id, part, status FROM ledger"
        )
    ]


def check_rows(world: World, recorder: Recorder) -> dict[str, Any]:
    """Every partner copy seen so far has exactly one row. The rows are read after the
    copies, so a copy seen has had its row committed before it (write-ahead)."""
    seen = {
        ledger_key(destination, event_id)
        for destination, ids in list(recorder.copies.items())
        if destination.startswith("partner:")
        for event_id in list(ids)
    }
    rows = ledger_rows(world)
    keys = Counter((r, e, p) for r, e, p, _ in rows)
    missing = seen - set(keys)
    assert not missing, f"{len(missing)} partner copies without a ledger row: {sorted(missing)[:5]}"
    assert max(keys.values(), default=1) == 1, "a provision recorded twice"
    return {"partner_copies_seen": len(seen), "statuses": dict(Counter(s for *_, s in rows))}


async def test_every_partner_copy_seen_has_its_ledger_row_through_sigkills(
    world: World,
) -> None:
    rng = random.Random(51)
    events = make_events(world.registry, 2000, 51)
    crashes = ["gateway", "broker", "gateway", "gateway"]
    at_crash = []
    async with (
        StatusWatch(world.broker, world.gateway_id) as status,
        recording(world) as recorder,
    ):
        await world.start_gateway(status)
        publishing = asyncio.create_task(Publisher(world.broker).publish(events, rate=1000))
        for crash in crashes:
            await asyncio.sleep(rng.uniform(0.2, 0.7))  # a random point to crash at
            if crash == "gateway":
                await world.stop_gateway(signal.SIGKILL)
                at_crash.append(check_rows(world, recorder))
                await world.start_gateway(status)
            else:
                await asyncio.to_thread(world.broker.restart, kill=True)
                at_crash.append(check_rows(world, recorder))
        await publishing
        # A broker SIGKILL may lose copies for good (its persistence is a snapshot), so
        # this waits for what can still come, then checks what did.
        await recorder.wait_complete(entitled(events, world.registry), timeout=30)
        assert await world.stop_gateway(signal.SIGTERM) == 0
        final = check_rows(world, recorder)

    _report(
        {
            "scenario": "ledger-completeness-sigkill",
            "crashes": crashes,
            "events_sent": len(events),
            "at_each_crash": at_crash,
            "after_the_run": final,
        }
    )
    assert set(final["statuses"]) <= {"delivered", "unconfirmed"}  # nothing left pending
    assert final["partner_copies_seen"] > 0


def _report(result: dict[str, Any]) -> None:
    report(REPORT, result["scenario"], result, f"\n[commit-path] {json.dumps(result)}")
