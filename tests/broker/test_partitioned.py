"""Partitioned gateways (issue #17): several `run --partitioned` processes on one broker
and one PostgreSQL store share the 64 building partitions, and when one is killed the
others take its partitions and the broker gives them what was queued.

Judged on what arrives: every event reaches the cloud (after de-duplication by event
id, as QoS 1 allows), a partner a dwelling stopped receives nothing from that dwelling,
and the ledger holds no provision twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from intercom_gateway.broker.mosquitto import OPERATOR, Mosquitto
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa.runner import GatewayProcess, client, follow, partitioned_process
from intercom_gateway.qa.testing import publish_as_fleet
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event_dict, panel_message, settings_message

PARTITIONS = 64
TYPES = ("visitor", "return_home", "delivery_box", "alarm")


class Statuses:
    """The latest retained status of every gateway, as the operator reads it."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Condition()

    async def on(self, topic: str, payload: bytes, _message: Any) -> None:
        if not payload or not topic.endswith("/status") or topic == topics.STATUS:
            return
        status = json.loads(payload)
        async with self._changed:
            self.latest[status["gateway_id"]] = status
            self._changed.notify_all()

    def held(self, gateway_id: str) -> set[int]:
        status = self.latest.get(gateway_id)
        if status is None or status["state"] != "online":
            return set()
        return set(status["partitions"])

    async def until(self, shares: dict[str, int], *, timeout: float = 60) -> None:
        """Until each gateway named holds its share, all disjoint, all 64 held."""

        def settled() -> bool:
            held = [self.held(g) for g in shares]
            every = set().union(*held)
            disjoint = sum(len(h) for h in held) == len(every)
            return (
                disjoint
                and len(every) == PARTITIONS
                and [len(h) for h in held] == list(shares.values())
            )

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(settled)


async def _cli(
    broker: Mosquitto, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """A CLI command against ``broker`` for partitioned gateways."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "intercom_gateway",
        *args,
        env={
            **os.environ,
            "INTERCOM_BROKER_PORT": str(broker.port),
            "INTERCOM_SECRETS_DIR": str(broker.credentials.directory),
            "INTERCOM_PARTITIONED": "true",
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return subprocess.CompletedProcess(args, process.returncode or 0, out, err)


@pytest.fixture
def registry() -> Registry:
    return generate_registry(buildings=12, dwellings=3, services=SAMPLE_SERVICES)


@asynccontextmanager
async def gateways(
    broker: Mosquitto, registry: Registry, workdir: Path, dsn: str, names: list[str]
) -> AsyncIterator[dict[str, GatewayProcess]]:
    started: dict[str, GatewayProcess] = {}
    try:
        for name in names:
            started[name] = await partitioned_process(
                broker,
                workdir / name,
                registry,
                gateway_id=name,
                store=dsn,
                env={"INTERCOM_SESSION_EXPIRY": "3600", "INTERCOM_LOG_LEVEL": "INFO"},
            )
        yield started
    finally:
        for process in started.values():
            await process.aclose(graceful=False)


async def test_two_gateways_share_the_partitions_and_one_takes_over_a_killed_one(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    statuses = Statuses()
    cloud_ids: dict[str, int] = {}
    partner: list[dict[str, Any]] = []
    stopped = ("b003", "d0002")
    panel = f"panel-{stopped[0]}-{stopped[1]}"

    wanted: set[str] = set()
    all_arrived = asyncio.Event()

    first_arrival: dict[str, float] = {}

    async def on_cloud(topic: str, payload: bytes, _message: Any) -> None:
        event_id = json.loads(payload)["event_id"]
        cloud_ids[event_id] = cloud_ids.get(event_id, 0) + 1
        first_arrival.setdefault(event_id, time.monotonic())
        if wanted and wanted <= cloud_ids.keys():
            all_arrived.set()

    async def on_partner(topic: str, payload: bytes, _message: Any) -> None:
        partner.append({"topic": topic, **json.loads(payload)})

    acks: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_ack(topic: str, payload: bytes, _message: Any) -> None:
        await acks.put(payload)

    followers = [
        follow(own_broker, OPERATOR, [topics.gateway_filter()], statuses.on),
        follow(own_broker, OPERATOR, [topics.cloud_filter()], on_cloud),
        follow(own_broker, "concierge", [topics.partner_filter("concierge")], on_partner),
        follow(own_broker, OPERATOR, [topics.settings_ack(stopped[0], panel)], on_ack),
    ]
    tasks = [asyncio.create_task(f) for f in followers]
    try:
        async with gateways(own_broker, registry, tmp_path, postgres_dsn, ["gw-a", "gw-b"]) as gw:
            await gw["gw-a"].launch()
            await statuses.until({"gw-a": 64})
            await gw["gw-b"].launch()
            await statuses.until({"gw-a": 32, "gw-b": 32})
            group = await _cli(own_broker, "health", "--group")
            assert group.returncode == 0, group.stderr
            assert b"2 gateways serve all 64 partitions (gw-a 32, gw-b 32)" in group.stderr

            stop = settings_message(
                {"kind": "service_use", "partner_id": "concierge", "used": False},
                building=stopped[0],
                dwelling=stopped[1],
            )
            await publish_as_fleet(own_broker, [stop])
            ack = json.loads(await asyncio.wait_for(acks.get(), 30))
            assert ack["applied"] is True

            buildings = [b.id for b in registry.buildings]
            events = [
                event_dict(
                    TYPES[i % len(TYPES)], building=buildings[i % 12], dwelling=f"d000{1 + i % 3}"
                )
                for i in range(240)
            ]
            events += [
                event_dict("visitor", building=stopped[0], dwelling=stopped[1]) for _ in range(20)
            ]
            wanted.update(e["event_id"] for e in events)
            first, rest = events[:130], events[130:]
            await publish_as_fleet(own_broker, [panel_message(e) for e in first])

            orphaned = statuses.held("gw-a")  # the partitions the kill leaves
            killed_at = time.monotonic()
            await gw["gw-a"].kill()
            await publish_as_fleet(own_broker, [panel_message(e) for e in rest])
            await statuses.until({"gw-b": 64})
            handover = time.monotonic() - killed_at
            one = await _cli(own_broker, "health", env={"INTERCOM_GATEWAY_ID": "gw-b"})
            assert one.returncode == 0, one.stderr
            assert b"gateway gw-b is online" in one.stderr

            await asyncio.wait_for(all_arrived.wait(), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert wanted <= cloud_ids.keys()
    # The stop was told to concierge by the owner of b003's partition (spec item 11).
    notices = [p for p in partner if p["topic"].endswith("/consent_notice")]
    assert {(n["building_id"], n["dwelling_id"], n["change"]) for n in notices} == {
        (*stopped, "service_stopped")
    }
    assert len({n["notice_id"] for n in notices}) == 1
    partner = [p for p in partner if p not in notices]
    leaked = [p for p in partner if f"/{stopped[0]}/{stopped[1]}/" in p["topic"]]
    assert leaked == [], "a partner the dwelling stopped received its events"
    # No copy without its ledger row; a delivered row was received (a row written ahead
    # of a copy a killed gateway never sent stays "intended": it may not have left).
    connection = await asyncpg.connect(postgres_dsn)
    try:
        rows = await connection.fetch(
            "SELECT event_id, status FROM ledger"
            " WHERE recipient = 'partner:concierge' AND part = 'event'"
        )
    finally:
        await connection.close()
    received = {p["event_id"] for p in partner}
    assert received <= {r["event_id"] for r in rows}
    assert {r["event_id"] for r in rows if r["status"] == "delivered"} <= received
    # From the kill to the first event of a killed gateway's partition decided (and
    # forwarded) by the new owner: the hand-over as a dwelling sees it.
    from intercom_gateway.core.partitions import partition_of

    decided = [
        first_arrival[e["event_id"]]
        for e in rest
        if partition_of(e["building_id"]) in orphaned and e["event_id"] in first_arrival
    ]
    assert decided, "no event of the killed gateway's partitions came after the kill"
    to_first = min(decided) - killed_at
    print(f"hand-over: {handover:.2f} s from SIGKILL to all 64 partitions held by gw-b,")
    print(f"{to_first:.2f} s to the first event of a killed gateway's partition decided")


async def test_a_consent_change_applies_to_the_next_event_across_hand_overs(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    """The consent race, 240 times: a change is acknowledged, then at once an event of
    that dwelling; every 60 rounds a gateway is killed or restarted, so the partition's
    next owner must decide on the consent the last acknowledgement confirmed."""
    from intercom_gateway.broker.mosquitto import FLEET

    statuses = Statuses()
    arrived: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    notices: list[dict[str, Any]] = []
    stops: set[str] = set()

    async def on_partner(topic: str, payload: bytes, _message: Any) -> None:
        if topic.endswith("/consent_notice"):  # spec item 11: checked at the end
            notices.append(json.loads(payload))
            return
        await arrived.put(json.loads(payload))

    async def on_ack(topic: str, payload: bytes, _message: Any) -> None:
        await acks.put(json.loads(payload))

    tasks = [
        asyncio.create_task(f)
        for f in (
            follow(own_broker, OPERATOR, [topics.gateway_filter()], statuses.on),
            follow(own_broker, "concierge", [topics.partner_filter("concierge")], on_partner),
            follow(own_broker, OPERATOR, [topics.settings_ack_filter()], on_ack),
        )
    ]
    # The last dwelling of each building keeps concierge on: its events are the markers.
    dwellings = [(b.id, d.id) for b in registry.buildings for d in b.dwellings[:-1]]
    markers = {b.id: b.dwellings[-1].id for b in registry.buildings}
    using = dict.fromkeys(dwellings, True)
    stale: list[str] = []
    withheld_wrongly: list[str] = []
    try:
        async with (
            gateways(own_broker, registry, tmp_path, postgres_dsn, ["gw-a", "gw-b"]) as gw,
            client(own_broker, FLEET) as fleet,
        ):
            await gw["gw-a"].launch()
            await gw["gw-b"].launch()
            await statuses.until({"gw-a": 32, "gw-b": 32})

            async def check(which: list[tuple[str, str]]) -> None:
                """An event of each dwelling, then its building's marker: the event's
                copy arrives before the marker's if and only if consent allows it."""
                for building, dwelling in which:
                    data = event_dict("visitor", building=building, dwelling=dwelling)
                    marker = event_dict("visitor", building=building, dwelling=markers[building])
                    await fleet.publish(*panel_message(data))
                    await fleet.publish(*panel_message(marker))
                    seen: set[str] = set()
                    async with asyncio.timeout(30):
                        while marker["event_id"] not in seen:
                            seen.add((await arrived.get())["event_id"])
                    if data["event_id"] in seen and not using[(building, dwelling)]:
                        stale.append(data["event_id"])
                    if data["event_id"] not in seen and using[(building, dwelling)]:
                        withheld_wrongly.append(data["event_id"])

            for round_ in range(240):
                if round_ % 60 == 59:  # a hand-over: kill one, or bring it back
                    if gw["gw-a"].alive:
                        await gw["gw-a"].kill()
                        await statuses.until({"gw-b": 64})
                    else:
                        await gw["gw-a"].launch()
                        await statuses.until({"gw-a": 32, "gw-b": 32})
                    # The new owners decide on the consent the last acknowledgements
                    # confirmed, before any new change: every dwelling, once.
                    await check(dwellings)
                building, dwelling = dwellings[round_ % len(dwellings)]
                using[(building, dwelling)] = not using[(building, dwelling)]
                change = {
                    "kind": "service_use",
                    "partner_id": "concierge",
                    "used": using[(building, dwelling)],
                }
                topic, payload = settings_message(change, building=building, dwelling=dwelling)
                await fleet.publish(topic, payload)
                change_id = json.loads(payload)["change_id"]
                if not using[(building, dwelling)]:
                    stops.add(change_id)
                async with asyncio.timeout(30):  # a redelivered change may be acked twice
                    while (ack := await acks.get())["change_id"] != change_id:
                        pass
                assert ack["applied"] is True, ack
                await check([(building, dwelling)])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert stale == [], f"{len(stale)} events forwarded after their dwelling stopped the partner"
    assert withheld_wrongly == [], f"{len(withheld_wrongly)} events withheld after a resume"
    # Every stop was told to concierge, across the hand-overs; none of them twice over
    # (a notice may come again after a kill, the same notice: one id per change).
    assert {n["change_id"] for n in notices} == stops
    assert len({n["notice_id"] for n in notices}) == len(stops)


async def test_a_join_and_a_clean_leave_hand_over_without_a_duplicate(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    """A steady stream while a second gateway joins and the first then leaves (SIGTERM):
    each partition given away is drained before its lease goes, so every event reaches
    the cloud and the partner exactly once. (A killed gateway cannot drain: what it had
    forwarded but not acknowledged goes again, which the soak test counts.)"""
    from intercom_gateway.broker.mosquitto import FLEET

    statuses = Statuses()
    cloud: dict[str, int] = {}  # copies by topic and event id
    arrived: set[str] = set()
    partner: dict[str, int] = {}
    sent: list[str] = []
    all_arrived = asyncio.Event()
    streaming = True

    async def on_cloud(topic: str, payload: bytes, _message: Any) -> None:
        copy = f"{topic} {json.loads(payload)['event_id']}"  # an image is a copy of its own
        cloud[copy] = cloud.get(copy, 0) + 1
        arrived.add(json.loads(payload)["event_id"])
        if not streaming and set(sent) <= arrived:
            all_arrived.set()

    async def on_partner(topic: str, payload: bytes, _message: Any) -> None:
        copy = f"{topic} {json.loads(payload)['event_id']}"
        partner[copy] = partner.get(copy, 0) + 1

    tasks = [
        asyncio.create_task(f)
        for f in (
            follow(own_broker, OPERATOR, [topics.gateway_filter()], statuses.on),
            follow(own_broker, OPERATOR, [topics.cloud_filter()], on_cloud),
            follow(own_broker, "concierge", [topics.partner_filter("concierge")], on_partner),
        )
    ]
    buildings = [b.id for b in registry.buildings]

    async def stream(fleet: Any) -> None:
        i = 0
        while streaming or i < 200:
            data = event_dict(
                TYPES[i % len(TYPES)], building=buildings[i % 12], dwelling=f"d000{1 + i % 3}"
            )
            await fleet.publish(*panel_message(data))
            sent.append(data["event_id"])
            i += 1
            if i % 10 == 0:
                # A steady stream of about 300 events/s (a pace, not a wait for an event):
                # at full speed a 2-core machine would build a backlog of minutes.
                await fleet.drain()
                await asyncio.sleep(0.03)

    try:
        async with (
            gateways(own_broker, registry, tmp_path, postgres_dsn, ["gw-a", "gw-b"]) as gw,
            client(own_broker, FLEET) as fleet,
        ):
            await gw["gw-a"].launch()
            await statuses.until({"gw-a": 64})
            publishing = asyncio.create_task(stream(fleet))
            await gw["gw-b"].launch()  # gw-a hands 32 partitions over
            await statuses.until({"gw-a": 32, "gw-b": 32})
            assert await gw["gw-a"].stop() == 0  # SIGTERM: gw-a drains and releases
            await statuses.until({"gw-b": 64})
            streaming = False
            await publishing
            await fleet.drain()
            if set(sent) <= arrived:
                all_arrived.set()
            await asyncio.wait_for(all_arrived.wait(), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    twice = {e: n for e, n in cloud.items() if n > 1}
    assert twice == {}, f"{len(twice)} of {len(cloud)} cloud copies arrived twice"
    twice = {e: n for e, n in partner.items() if n > 1}
    assert twice == {}, f"{len(twice)} of {len(partner)} partner copies arrived twice"
    assert partner, "the partner received nothing: the test would prove nothing"
    print(f"{len(sent)} events over a join and a leave, each once")


async def test_the_next_holder_releases_the_analytics_copies_a_killed_gateway_held(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    """Analytics copies wait, durably, for their window to end (§5(5)). A gateway killed
    while holding some leaves them in the store; the next holder of their partitions
    takes them up with the partitions and releases them at the window's end, once."""
    from intercom_gateway.broker.mosquitto import ANALYTICS

    window = 8.0
    statuses = Statuses()
    acked: dict[str, int] = {}
    acked_changed = asyncio.Event()
    copies: list[dict[str, Any]] = []
    all_released = asyncio.Event()
    buildings = [b.id for b in registry.buildings]
    events = [
        event_dict(TYPES[i % len(TYPES)], building=buildings[i % 12], dwelling="d0001")
        for i in range(24)
    ]

    async def on_status(topic: str, payload: bytes, message: Any) -> None:
        await statuses.on(topic, payload, message)
        if payload and topic.endswith("/metrics"):
            metrics = json.loads(payload)
            acked[metrics["gateway_id"]] = metrics["acked"]
            acked_changed.set()

    async def on_analytics(topic: str, payload: bytes, _message: Any) -> None:
        copies.append(json.loads(payload))
        if len(copies) >= len(events):
            all_released.set()

    tasks = [
        asyncio.create_task(f)
        for f in (
            follow(own_broker, OPERATOR, [topics.gateway_filter()], on_status),
            follow(own_broker, ANALYTICS, [topics.analytics_filter()], on_analytics),
        )
    ]
    env = {"INTERCOM_ANALYTICS_WINDOW": str(window)}
    try:
        async with gateways(own_broker, registry, tmp_path, postgres_dsn, ["gw-a", "gw-b"]) as gw:
            for process in gw.values():
                process.env.update(env)
            await gw["gw-a"].launch()
            await gw["gw-b"].launch()
            await statuses.until({"gw-a": 32, "gw-b": 32})
            # Start at the beginning of a window (a pace to the clock, not a wait for an
            # event), so that the kill comes while the copies are still held.
            await asyncio.sleep(window - time.time() % window + 0.1)
            window_end = time.time() - time.time() % window + window
            await publish_as_fleet(own_broker, [panel_message(e) for e in events])
            async with asyncio.timeout(30):  # until every event is committed and acked
                while sum(acked.values()) < len(events):
                    acked_changed.clear()
                    await acked_changed.wait()
            await gw["gw-a"].kill()
            assert time.time() < window_end, "the window ended before the kill: too slow"
            assert copies == [], "no copy may leave before its window ends"
            await statuses.until({"gw-b": 64})
            await asyncio.wait_for(all_released.wait(), 3 * window)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len({c["decision_id"] for c in copies}) == len(copies) == len(events)


async def test_a_gateway_with_another_registry_refuses_to_join_in_one_line(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    statuses = Statuses()
    watching = asyncio.create_task(
        follow(own_broker, OPERATOR, [topics.gateway_filter()], statuses.on)
    )
    try:
        async with gateways(own_broker, registry, tmp_path, postgres_dsn, ["gw-a", "gw-b"]) as gw:
            await gw["gw-a"].launch()
            await statuses.until({"gw-a": 64})
            other = generate_registry(buildings=13, dwellings=3, services=SAMPLE_SERVICES)
            await gw["gw-b"].write_registry(other)
            code = await asyncio.wait_for((await gw["gw-b"].launch()).wait(), 60)
            log = (tmp_path / "gw-b" / "gateway-1.log").read_text().strip().splitlines()
            assert code == 1, log  # a configuration error (README, exit statuses)
            assert log[-1].startswith("Error: gateway gw-a decides with another registry"), log
            assert statuses.held("gw-a") == set(range(64))  # undisturbed
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def test_commands_that_need_a_gateway_accept_a_partitioned_group(
    own_broker: Mosquitto, registry: Registry, tmp_path: Path, postgres_dsn: str
) -> None:
    """`simulate` (like `consent set`) checks that a gateway reads the broker: a group of
    partitioned gateways keeps no single status, yet one of them online is enough."""
    statuses = Statuses()
    watching = asyncio.create_task(
        follow(own_broker, OPERATOR, [topics.gateway_filter()], statuses.on)
    )
    env = {
        "INTERCOM_PARTITIONED": "false",  # the command knows nothing of the group
        "INTERCOM_REGISTRY_PATH": str(tmp_path / "gw-a" / "registry.yaml"),
    }
    try:
        async with gateways(own_broker, registry, tmp_path, postgres_dsn, ["gw-a"]) as gw:
            await gw["gw-a"].launch()
            await statuses.until({"gw-a": 64})
            sent = await _cli(own_broker, "simulate", "--events", "12", env=env)
            assert sent.returncode == 0, sent.stderr
            assert await gw["gw-a"].stop() == 0
            refused = await _cli(own_broker, "simulate", "--events", "12", env=env)
            assert refused.returncode == 3, refused.stderr
            assert b"every partitioned gateway of the group is offline" in refused.stderr
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
