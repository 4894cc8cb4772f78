"""§10, live configuration: a new policy, partner registry or device registry is taken up
between two messages, without a restart, and each event is decided under exactly one
configuration, named on its copies (``gateway/configs.py``).

The gateway is driven message by message (``handle``) on the in-memory broker with a
real store, so where the notice falls in the stream is exact; one test serves it for
real, to see that the retained notice reaches a gateway that starts after it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.core import topics
from intercom_gateway.core.configuration import ConfigAck, ConfigNotice
from intercom_gateway.core.models import RejectReason, utc_now
from intercom_gateway.core.policy import PartnerRegistry, Policy, default_policy
from intercom_gateway.core.registry import Dwelling, InitialConsent, Registry, load_registry
from intercom_gateway.gateway.reconfigure import load_files, publish_notice, record_and_notice
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.resident.desk import open_desk
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store, open_store
from tests.factories import event_dict, gateway_settings, panel_message, settings_message
from tests.helpers import collect

NEW_VERSION = "2026-12-01"


def new_policy(*, reaccept: bool = False) -> Policy:
    """The packaged policy as a new version, which still knows the one dwellings accepted."""
    old = default_policy()
    data = old.model_dump(mode="json")
    data |= {
        "version": NEW_VERSION,
        "supersedes": [old.version, *old.supersedes],
        "requires_reacceptance": reaccept,
    }
    return Policy.model_validate(data)


@dataclass
class World:
    settings: Settings
    store: Store
    gateway: Gateway
    bus: MemoryBus
    observer: MemoryBus
    mids: list[int] = field(default_factory=lambda: [0])

    def files(self) -> tuple[Policy, PartnerRegistry, Registry]:
        return load_files(self.settings)

    async def handle(self, topic: str, payload: bytes) -> None:
        self.mids[0] += 1
        message = Message(topic=topic, payload=payload, qos=1, mid=self.mids[0])
        await self.gateway.handle(self.bus, message)

    async def event(self, event_type: str = "visitor", **kwargs: Any) -> dict[str, Any]:
        data = event_dict(event_type, **kwargs)
        await self.handle(*panel_message(data))
        return data

    async def change(self, files: tuple[Policy, PartnerRegistry, Registry]) -> ConfigNotice:
        """Record ``files`` as the next revision and hand the gateway its notice."""
        notice = await record_and_notice(self.store, files, actor="test", at=utc_now())
        await self.handle(topics.CONFIG, notice.model_dump_json().encode())
        return notice


@pytest.fixture
async def world(tmp_path: Path, both_stores: str) -> AsyncIterator[World]:
    settings = gateway_settings(tmp_path)
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = broker.client("gateway")
        gateway._bus = bus  # handle() is driven directly, without serve()
        observer = broker.client("observer")
        await observer.subscribe("#")
        yield World(settings, store, gateway, bus, observer)


async def delivered(observer: MemoryBus) -> list[Message]:
    """Every message delivered so far: on the in-memory broker a finished publish is
    in the subscriber's inbox already."""
    count = len(observer._inbox)
    return await collect(observer, count) if count else []


def cloud_copies(messages: list[Message]) -> dict[str, Message]:
    """The cloud copies (not images) by event id."""
    found = {}
    for message in messages:
        if message.topic.startswith("cloud/") and not topics.is_image(message.topic):
            found[json.loads(message.payload)["event_id"]] = message
    return found


def answers(messages: list[Message]) -> list[ConfigAck]:
    return [
        ConfigAck.model_validate_json(m.payload)
        for m in messages
        if topics.matches(topics.CONFIG_ACKS_FILTER, m.topic)
    ]


async def test_every_event_is_decided_under_the_configuration_in_force_when_it_is_taken(
    world: World,
) -> None:
    """The notice falls between two events: those before it carry revision 0 and the old
    policy version, those after it revision 1 and the new one; none is lost."""
    policy, partners, registry = world.files()
    before = [await world.event(dwelling="d0001") for _ in range(3)]
    await world.change((new_policy(), partners, registry))
    after = [await world.event(dwelling="d0002") for _ in range(3)]
    await world.gateway.finish_in_flight()
    messages = await delivered(world.observer)
    copies = cloud_copies(messages)
    assert set(copies) == {e["event_id"] for e in before + after}
    for data, revision, version in [(d, "0", policy.version) for d in before] + [
        (d, "1", NEW_VERSION) for d in after
    ]:
        copy = copies[data["event_id"]]
        assert copy.properties("config_revision") == [revision]
        assert copy.properties("policy_version") == [version]
        assert json.loads(copy.payload)["policy_version"] == version
    (ack,) = answers(messages)
    assert (ack.state, ack.asked, ack.revision, ack.policy_version) == (
        "applied",
        1,
        1,
        NEW_VERSION,
    )
    assert [m.mid for m in world.bus.acked] == list(range(1, 8))  # the notice too, in turn


async def test_the_router_and_its_memos_do_not_outlive_their_configuration(
    world: World,
) -> None:
    _, partners, registry = world.files()
    await world.event(dwelling="d0001")
    old = world.gateway.router
    assert len(old._templates) > 0  # the first event left a template behind
    await world.change((new_policy(), partners, registry))
    assert world.gateway.router is not old
    assert world.gateway.router.policy.version == NEW_VERSION
    assert len(world.gateway.router._templates) == 0
    await world.event(dwelling="d0001")
    await world.gateway.finish_in_flight()
    logged = await world.store.provisions()
    assert {row.policy_version for row in logged} == {default_policy().version, NEW_VERSION}


async def test_a_version_that_needs_reacceptance_withholds_until_the_dwelling_accepts(
    world: World,
) -> None:
    """§10: consent is consent to a version; the swap holds like the start does."""
    _, partners, registry = world.files()
    await world.change((new_policy(reaccept=True), partners, registry))
    held = await world.event(dwelling="d0001")
    topic, payload = settings_message(
        {"kind": "accept_policy", "policy_version": NEW_VERSION}, dwelling="d0001"
    )
    await world.handle(topic, payload)
    accepted = await world.event(dwelling="d0001")
    await world.gateway.finish_in_flight()
    copies = cloud_copies(await delivered(world.observer))
    assert held["event_id"] not in copies
    assert accepted["event_id"] in copies
    assert world.gateway.metrics.withheld_by[("cloud", "policy_not_accepted")] >= 1


async def test_new_dwellings_get_their_seed_consent_and_removed_devices_are_refused(
    world: World,
) -> None:
    policy, partners, registry = world.files()
    (building,) = registry.buildings
    newcomer = Dwelling(
        id="d0004", consent=InitialConsent(policy_version=policy.version, services=())
    )
    gone = "panel-b001-d0003"
    devices = [d for d in building.devices if d.id != gone]
    devices.append(devices[-1].model_copy(update={"id": "panel-b001-d0004", "dwelling": "d0004"}))
    changed = building.model_copy(
        update={"dwellings": (*building.dwellings, newcomer), "devices": tuple(devices)}
    )
    await world.event(dwelling="d0003")  # still registered: forwarded
    await world.change((policy, partners, Registry(buildings=(changed,))))
    welcomed = await world.event(dwelling="d0004")
    refused = await world.event(dwelling="d0003")
    await world.gateway.finish_in_flight()
    copies = cloud_copies(await delivered(world.observer))
    assert welcomed["event_id"] in copies and refused["event_id"] not in copies
    assert world.gateway.metrics.rejected[RejectReason.UNKNOWN_DEVICE.value] == 1
    assert world.gateway.consent("b001", "d0004").registered
    assert await world.store.dwelling_known("b001", "d0004")


async def test_a_revision_the_store_does_not_hold_is_refused_and_nothing_changes(
    world: World,
) -> None:
    before = world.gateway.config
    notice = ConfigNotice(
        revision=7, policy_version="x", digest="0" * 64, actor="someone", at=utc_now()
    )
    await world.handle(topics.CONFIG, notice.model_dump_json().encode())
    await world.gateway.finish_in_flight()
    (ack,) = answers(await delivered(world.observer))
    assert (ack.state, ack.asked, ack.revision) == ("failed", 7, 0)
    assert "not in this gateway's store" in ack.detail
    assert world.gateway.config is before


async def test_a_notice_that_is_not_one_is_rejected_and_the_loop_goes_on(world: World) -> None:
    await world.handle(topics.CONFIG, b'{"revision": "many"}')
    data = await world.event(dwelling="d0001")
    await world.gateway.finish_in_flight()
    assert world.gateway.metrics.rejected[RejectReason.SCHEMA_VIOLATION.value] == 1
    assert data["event_id"] in cloud_copies(await delivered(world.observer))
    assert world.gateway.config.revision == 0


async def test_an_older_or_equal_revision_changes_nothing(world: World) -> None:
    _, partners, registry = world.files()
    notice = await world.change((new_policy(), partners, registry))
    installed = world.gateway.config
    await world.handle(topics.CONFIG, notice.model_dump_json().encode())
    await world.gateway.finish_in_flight()
    states = [a.state for a in answers(await delivered(world.observer))]
    assert states == ["applied", "in_force"]
    assert world.gateway.config is installed


async def test_a_gateway_that_starts_later_decides_under_the_latest_revision(
    tmp_path: Path,
) -> None:
    """Started after a change: it loads the revision from the store, and the retained
    notice it receives when it subscribes only confirms it."""
    settings = gateway_settings(tmp_path)
    broker = MemoryBroker()
    async with open_store(settings) as store:
        _, partners, registry = load_files(settings)
        operator = broker.client("operator")
        notice = await record_and_notice(
            store, (new_policy(), partners, registry), actor="test", at=utc_now()
        )
        await publish_notice(operator, notice)
        gateway = await Gateway.load(settings, store)
        assert (gateway.config.revision, gateway.policy.version) == (1, NEW_VERSION)
        observer = broker.client("observer")
        await observer.subscribe(topics.CONFIG_ACKS_FILTER, topics.STATUS)
        stop = asyncio.Event()
        async with broker.client("gateway") as bus:
            serving = asyncio.create_task(gateway.serve(bus, stop=stop))
            received = await collect(observer, 2)
            stop.set()
            await asyncio.wait_for(serving, 10)
    (ack,) = answers(received)
    assert (ack.state, ack.revision) == ("in_force", 1)
    (status,) = [json.loads(m.payload) for m in received if m.topic == topics.STATUS]
    assert status["config_revision"] == 1


async def test_the_files_of_a_configuration_are_kept_as_validated(tmp_path: Path) -> None:
    """What is recorded is what was validated: the registry read back is the file's."""
    settings = gateway_settings(tmp_path)
    async with open_store(settings) as store:
        files = load_files(settings)
        notice = await record_and_notice(store, files, actor="test", at=utc_now())
        record = await store.config(notice.revision)
    assert record is not None
    assert record.configuration().registry == load_registry(settings.registry_path)


async def test_the_resident_desk_answers_under_the_latest_revision(tmp_path: Path) -> None:
    """§8 notification of purposes says what the gateways decide under (§10): a partner
    service gone from the recorded partner registry is gone from the answer."""
    settings = gateway_settings(tmp_path)
    async with open_store(settings) as store:
        await Gateway.load(settings, store)  # makes the store, seeds the consents
        policy, partners, registry = load_files(settings)
        fewer = PartnerRegistry(services=tuple(s for s in partners.services if s.id != "concierge"))
        await record_and_notice(store, (policy, fewer, registry), actor="test", at=utc_now())
    async with open_desk(settings, via="test") as desk:
        answer = await desk.purposes("b001", "d0001")
    destinations = {d["destination"] for d in answer["destinations"]}
    assert "cloud" in destinations and "partner:elder-watch" in destinations
    assert "partner:concierge" not in destinations


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.sampled_from(["event", "change"]), min_size=1, max_size=6))
def test_each_copy_names_the_changes_taken_before_its_event(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    """Whatever the interleaving of events and changes: an event's copies name exactly
    the revision of the changes taken before it, and every event is forwarded once."""
    asyncio.run(_interleave(tmp_path_factory.mktemp("steps"), steps))


async def _interleave(folder: Path, steps: list[str]) -> None:
    settings = gateway_settings(folder)
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = broker.client("gateway")
        gateway._bus = bus
        observer = broker.client("observer")
        await observer.subscribe(topics.cloud("+", "+", "+"))
        world = World(settings, store, gateway, bus, observer)
        expected: dict[str, str] = {}
        changes = 0
        for step in steps:
            if step == "change":
                await world.change(world.files())
                changes += 1
            else:
                expected[(await world.event(dwelling="d0002"))["event_id"]] = str(changes)
        await gateway.finish_in_flight()
        copies = cloud_copies(await delivered(observer))
    assert {e: m.properties("config_revision") for e, m in copies.items()} == {
        e: [r] for e, r in expected.items()
    }


async def test_a_partitioned_group_compares_the_configuration_taken_up_live(
    world: World,
) -> None:
    """Members of a partitioned group refuse a joiner whose configuration differs from
    theirs (``LeaseBook.config_sha256``): after a live change the fingerprint a process
    heartbeats must be the new configuration's, or a gateway started under it would be
    refused until every member restarted."""
    from types import SimpleNamespace

    from intercom_gateway.core.configuration import digest_of
    from intercom_gateway.gateway.partitioned import Partitioned, config_fingerprint

    leases = SimpleNamespace(config_sha256=config_fingerprint(world.gateway))
    process = Partitioned.__new__(Partitioned)  # only its fingerprint is exercised
    process.leases = leases
    world.gateway.installed = process.fingerprint
    before = leases.config_sha256
    _, partners, registry = world.files()
    await world.change((new_policy(), partners, registry))

    assert world.gateway.config.policy.version == NEW_VERSION
    assert leases.config_sha256 != before
    assert leases.config_sha256 == digest_of(new_policy(), partners, registry)
    assert leases.config_sha256 == config_fingerprint(world.gateway)
