"""Partitioned gateways: this process serves the partitions it holds a lease on.

The design, with the owner of every piece of state, is ``docs/partitions.md``. In short:
a building belongs to one of 64 partitions (``core.partitions``); a partition is served
by exactly one gateway process at a time, the holder of its lease (``gateway.leases``,
PostgreSQL advisory locks with an epoch for fencing), on an MQTT session of its own
(client id ``gateway.pNN``) subscribed to its buildings' panel topics only. Everything a
dwelling sends is therefore decided, in order, by one ``Gateway``; what arrives while no
one holds the partition waits in the partition's broker session.

Here, one ``Gateway`` per held partition shares the process's store and compiled policy
and has its own consent, acknowledgement order, statistics and receipts, read from the
store once the partition is leased; the completed event ids are one set for the process
(an event id belongs to one partition), refreshed from the store at each take. Each
partition writes through a view of the store fenced by its lease
(``PostgresStore.fenced``): a gateway that lost it commits, acknowledges and sends
nothing more for it, and the broker gives the unacknowledged messages to the new holder,
which finds the committed ones in the store and does not forward them again. The process
publishes its own status and metrics on ``gateway/v1/{gateway_id}/status`` and
``…/metrics`` (retained), with the partitions it holds.

No partition subscribes to a building that is not in the registry, so the holder of
partition 0 also runs the session ``gateway.unknown`` on the full panel wildcard: it
rejects those buildings' messages as a single gateway does (``UnknownBuildings`` lets
the registry's buildings through untouched, to their partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from intercom_gateway.bus import BrokerAddress, Bus, Message, MqttBus, Will
from intercom_gateway.core import partitions, topics
from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.configuration import Configuration, digest_of
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import PartitionedStatus, utc_now
from intercom_gateway.core.statistics import Window
from intercom_gateway.errors import ConfigError
from intercom_gateway.gateway.leases import Lease, fence
from intercom_gateway.gateway.metrics import Backlog, backlog_of, collector_of, serving_metrics
from intercom_gateway.gateway.run import broker_address, serve_connected
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.gateway.status import Metrics
from intercom_gateway.settings import Settings
from intercom_gateway.store.opening import POSTGRES_SCHEMES

log = structlog.get_logger("intercom_gateway.gateway.partitioned")


class UnknownBuildings(Gateway):
    """The gateway on the full panel wildcards (``gateway.unknown``): it rejects what
    comes for buildings no partition takes, as a single gateway does, and lets the
    registry's buildings (``known``) through untouched."""

    @functools.cached_property
    def known(self) -> frozenset[str]:
        return frozenset(b.id for b in self.registry.buildings)

    async def handle(self, bus: Bus, message: Message) -> None:
        """A known building's message is acknowledged in its turn before anything is
        counted, recorded or attempted: its partition's session does all that (and
        rejects it there if the rest of its topic is bad, so this goes by the building
        level alone)."""
        if topics.panel_building(message.topic) in self.known:
            self.completion.handled(self.completion.take(message))
            return
        await super().handle(bus, message)


@dataclass
class Held:
    """One partition this process serves."""

    partition: int
    epoch: int
    since: datetime
    gateway: Gateway
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class Partitioned:
    settings: Settings
    store: Any  # store.postgres.PostgresStore: each partition flushes through .fenced()
    leases: Any  # gateway.leases.LeaseBook
    base: Gateway  # the policy, partners, registry and device index, loaded once
    address: BrokerAddress
    groups: dict[int, list[str]]
    held: dict[int, Held] = field(default_factory=dict)
    # Partitions being drained before their lease goes: beside the lease loop, whose
    # heartbeat must go on (a drain under load can outlast the lease expiry).
    handing_back: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    retired: Metrics = field(default_factory=Metrics)  # counts of partitions given up
    unknown: Held | None = None  # the unknown buildings' session, with partition 0

    def fingerprint(self, config: Configuration) -> None:
        """After a change (§10) the group compares the new configuration's fingerprint: a
        gateway joining under it is not refused by members that took it up live."""
        self.leases.config_sha256 = digest_of(config.policy, config.partners, config.registry)

    async def take_all(self, leases: list[Lease]) -> None:
        """Serve the partitions just leased. What they start from is read once for all of
        them, after the leases were taken: consent as the last acknowledgement left it,
        the completed event ids (into the process's one set), the statistics windows,
        and what a previous holder left of their buildings: its ledger intents, marked
        unconfirmed (§8), and its held analytics copies, to be released with their
        windows. Only the partitions taken: the other gateways' rows are theirs."""
        if not leases:
            return
        buildings = [b for lease in leases for b in self.groups.get(lease.partition, [])]
        unconfirmed = await self.store.save_unconfirmed(buildings)
        if unconfirmed:
            log.warning(
                "ledger rows intended by the previous holder are marked unconfirmed (§8)",
                rows=unconfirmed,
                partitions=[lease.partition for lease in leases],
            )
        held = await self.store.analytics_held(buildings)
        # §10: a partition starts under the latest configuration on record; each one then
        # swaps on its own loop when a notice comes (``Gateway._take_config``).
        record = await self.store.config()
        if record is not None and record.revision > self.base.config.revision:
            self.base.install(record.configuration())
            self.fingerprint(self.base.config)
        consents = await self.store.consents()
        for event_id in await self.store.recent_completed(self.settings.completed_memory):
            self.base.completed.add(event_id)
        windows = await self.store.statistics_windows()
        for lease in leases:
            await self.take(lease.partition, lease.epoch, consents, windows, held)

    async def take(
        self,
        partition: int,
        epoch: int,
        consents: dict[tuple[str, str], ConsentState],
        windows: tuple[list[tuple[Window, str, int]], datetime | None],
        held: Sequence[HeldCopy] = (),
    ) -> None:
        """Serve ``partition`` on its own session, writing through a store fenced by its
        lease."""
        buildings = self.groups.get(partition, [])
        store = self.store.fenced(lambda db: fence(db, partition, epoch))
        gateway = self._gateway_for(store, buildings, dict(consents), windows)
        gateway.analytics.restore(c for c in held if c.building_id in buildings)
        filters = partitions.panel_filters(buildings)
        client_id = partitions.client_id(partition)  # the same for every gateway
        self.held[partition] = await self._start(
            partition, epoch, gateway, client_id, filters, name=f"partition-{partition}"
        )
        if partition == 0:
            await self._take_unknown(epoch)
        log.info("partition taken", partition=partition, epoch=epoch, buildings=len(buildings))

    async def _take_unknown(self, epoch: int) -> None:
        """Reject what panels send for buildings not in the registry, as a single gateway
        does: no partition subscribes to them. A session of its own takes every panel
        topic, acknowledges the registry's buildings untouched (their partition decides
        them) and rejects the rest. It writes through a store fenced by partition 0's
        lease, so a gateway that lost partition 0 records nothing more; a view of its
        own, so that neither session's flush commits the other's records."""
        store = self.store.fenced(lambda db: fence(db, 0, epoch))
        gateway = self._gateway_for(store, [], {}, ([], None), kind=UnknownBuildings)
        filters = [topics.PANEL_EVENTS_FILTER, topics.PANEL_SETTINGS_FILTER]
        self.unknown = await self._start(
            0, epoch, gateway, partitions.UNKNOWN_CLIENT_ID, filters, name="unknown-buildings"
        )

    async def _start(
        self,
        partition: int,
        epoch: int,
        gateway: Gateway,
        client_id: str,
        filters: list[str],
        *,
        name: str,
    ) -> Held:
        stop = asyncio.Event()
        task = asyncio.create_task(self._serve(gateway, client_id, filters, stop), name=name)
        if filters:
            # Held once its session is subscribed: a session made at this first
            # subscription queues only what is published after it.
            online = asyncio.ensure_future(gateway.online.wait())
            await asyncio.wait({online, task}, return_when=asyncio.FIRST_COMPLETED)
            online.cancel()
        return Held(partition, epoch, utc_now(), gateway, stop, task)

    async def _serve(
        self, gateway: Gateway, client_id: str, filters: list[str], stop: asyncio.Event
    ) -> None:
        if not filters:  # a partition with no building: held, nothing to subscribe
            await stop.wait()
            return
        await serve_connected(
            gateway, self.address, client_id=client_id, stop=stop, filters=filters, announce=False
        )

    def _gateway_for(
        self,
        store: Any,
        buildings: list[str],
        consents: dict[tuple[str, str], ConsentState],
        windows: tuple[list[tuple[Window, str, int]], datetime | None],
        *,
        kind: type[Gateway] = Gateway,
    ) -> Gateway:
        base = self.base
        gateway = kind(
            settings=self.settings,
            store=store,
            policy=base.policy,
            partners=base.partners,
            registry=base.registry,
            consents=consents,
            completed=base.completed,  # event ids are unique: one set serves every partition
            revision=base.config.revision,
        )
        gateway.announce = False
        gateway.installed = self.fingerprint
        gateway.buildings = tuple(buildings)  # whose consent notices it publishes again
        mine = set(buildings)
        counts, closed_before = windows
        gateway.statistics.restore(
            [c for c in counts if c[0].building_id in mine], closed_before=closed_before
        )
        return gateway

    async def give_up(self, partition: int, *, drain: bool) -> None:
        """Stop serving ``partition``: finish what is in flight first if ``drain``."""
        held = self.held.pop(partition, None)
        if held is None:
            return
        sessions = [held]
        if partition == 0 and self.unknown is not None:
            sessions.append(self.unknown)
            self.unknown = None
        await asyncio.gather(*(self._stop(h, drain=drain) for h in sessions))
        log.info("partition given up", partition=partition, drained=drain)

    async def _stop(self, held: Held, *, drain: bool) -> None:
        if drain:
            held.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(held.task), 30)
        if not held.task.done():
            held.task.cancel()
        with contextlib.suppress(BaseException):
            await held.task
        _add(self.retired, held.gateway.metrics)

    def hand_back(self, surplus: list[int]) -> None:
        """Give ``surplus`` to the other gateways without a duplicate: drain each partition
        (stop taking, commit and acknowledge what was taken, keep the broker session) and
        only then release its lease. The next holder resumes the session and receives
        exactly what this gateway did not acknowledge. Runs in a task of its own per
        partition, so that the lease loop goes on heartbeating meanwhile."""
        for partition in surplus:
            if partition not in self.handing_back:
                self.handing_back[partition] = asyncio.create_task(
                    self._hand_back(partition), name=f"hand-back-{partition}"
                )

    async def _hand_back(self, partition: int) -> None:
        try:
            await self.give_up(partition, drain=True)
            await self.leases.release(partition)
        finally:
            self.handing_back.pop(partition, None)

    async def handed_back(self) -> None:
        """Until every hand-back under way is done (at shutdown)."""
        await asyncio.gather(*self.handing_back.values(), return_exceptions=True)

    def metrics(self) -> Metrics:
        total = Metrics()
        _add(total, self.retired)
        for held in self.held.values():
            _add(total, held.gateway.metrics)
        if self.unknown is not None:
            _add(total, self.unknown.gateway.metrics)
        return total

    def backlog(self) -> Backlog:
        gateways = [held.gateway for held in self.held.values()]
        if self.unknown is not None:
            gateways.append(self.unknown.gateway)
        return Backlog.total(backlog_of(g) for g in gateways)

    def status(self, state: Literal["online", "offline"]) -> bytes:
        status = PartitionedStatus(
            gateway_id=self.settings.gateway_id,
            state=state,
            since=utc_now(),
            partitions=tuple(sorted(self.held)),
        )
        return status.model_dump_json().encode()

    def ended(self) -> list[int]:
        """Partitions whose session ended on its own (a lost lease, a fatal error); the
        unknown buildings' session counts as partition 0's."""
        ended = [p for p, h in self.held.items() if h.task.done()]
        if self.unknown is not None and self.unknown.task.done() and 0 not in ended:
            ended.append(0)
        return ended


def _session_ids() -> set[str]:
    """The client ids of the sessions a group's gateways share (partitions, unknown
    buildings): a gateway's own connection must not take one of them over."""
    return {partitions.client_id(p) for p in range(partitions.PARTITIONS)} | {
        partitions.UNKNOWN_CLIENT_ID
    }


def config_fingerprint(gateway: Gateway) -> str:
    """SHA-256 of what a gateway decides with: its registry, partner registry and policy,
    as loaded (the same content in another layout is the same). Members of one group
    must agree on it (``LeaseBook``), or one building would be decided under two."""
    return digest_of(gateway.policy, gateway.partners, gateway.registry)


def _add(total: Metrics, part: Metrics) -> None:
    for name, value in vars(part).items():
        mine = getattr(total, name)
        if isinstance(value, int):
            setattr(total, name, mine + value)
        else:
            mine.update(value)


async def run_partitioned(
    settings: Settings,
    *,
    stop: asyncio.Event,
    ready: Callable[[Partitioned], None] | None = None,
) -> Metrics:
    """Serve this gateway's share of the partitions until ``stop``; then drain each one and
    release its lease, so the others take them at once."""
    from intercom_gateway.gateway.leases import LeaseBook
    from intercom_gateway.store import open_store
    from intercom_gateway.store.postgres.store import PostgresStore

    dsn = settings.store
    if not dsn or not dsn.startswith(POSTGRES_SCHEMES):
        raise ConfigError(
            "several gateways need a shared store: --store postgresql://… (INTERCOM_STORE)"
        )
    # The gateway account's sessions are "gateway.<suffix>", its own connection's too.
    if settings.gateway_id in {cid.partition(".")[2] for cid in _session_ids()}:
        raise ConfigError(
            f"gateway id {settings.gateway_id!r} is the name of a partition's session:"
            " choose another --gateway-id"
        )
    address = broker_address(settings)
    async with open_store(settings) as store:
        assert isinstance(store, PostgresStore)  # checked above: a postgresql:// store
        base = await Gateway.load(settings, store)  # recovers nothing: each partition, at take
        async with LeaseBook.open(
            dsn, gateway_id=settings.gateway_id, config_sha256=config_fingerprint(base)
        ) as leases:
            return await _serve_leases(settings, stop, ready, store, leases, base, address)


async def _serve_leases(
    settings: Settings,
    stop: asyncio.Event,
    ready: Callable[[Partitioned], None] | None,
    store: Any,  # store.postgres.PostgresStore
    leases: Any,  # gateway.leases.LeaseBook
    base: Gateway,
    address: BrokerAddress,
) -> Metrics:
    """Serve this gateway's share until ``stop``, then drain and release everything."""
    groups = partitions.buildings_by_partition(b.id for b in base.registry.buildings)
    work = Partitioned(settings, store, leases, base, address, groups)
    collector = collector_of(base, metrics=work.metrics, backlog=work.backlog)
    async with serving_metrics(collector, settings.metrics_host, settings.metrics_port) as server:
        base.metrics_server = server
        if ready is not None:
            ready(work)
        await _serve_work(settings, stop, leases, work, address)
    await store.flush()
    return work.metrics()


async def _serve_work(
    settings: Settings,
    stop: asyncio.Event,
    leases: Any,  # gateway.leases.LeaseBook
    work: Partitioned,
    address: BrokerAddress,
) -> None:
    """The lease loop: take, give up and hand back partitions until ``stop``."""
    own = address.client_id(settings.gateway_id)
    will = Will(topics.gateway_status(settings.gateway_id), work.status("offline"))
    async with MqttBus(address, client_id=own, will=will) as bus:
        try:
            while not stop.is_set():
                for partition in work.ended():
                    await work.give_up(partition, drain=False)
                    await leases.release(partition)
                gained, lost = await leases.rebalance(hand_back=False)
                for partition in lost:
                    await work.give_up(partition, drain=True)
                work.hand_back(leases.surplus)
                await work.take_all(gained)
                await _report(bus, work, "online")
                # The next heartbeat, or sooner: another member joined or left.
                waking = asyncio.ensure_future(leases.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for pending in (waking, stopping):
                    pending.cancel()
        finally:
            await work.handed_back()
            await asyncio.gather(*(work.give_up(p, drain=True) for p in list(work.held)))
            await leases.release_all()
            await _report(bus, work, "offline")


async def _report(bus: MqttBus, work: Partitioned, state: Literal["online", "offline"]) -> None:
    gateway_id = work.settings.gateway_id
    await bus.publish(topics.gateway_status(gateway_id), work.status(state), retain=True)
    snapshot = {"gateway_id": gateway_id, "at": utc_now().isoformat(), **work.metrics().snapshot()}
    await bus.publish(
        topics.gateway_metrics(gateway_id), json.dumps(snapshot).encode(), retain=True
    )
