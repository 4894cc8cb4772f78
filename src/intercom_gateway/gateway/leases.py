"""Who owns which partition: leases in PostgreSQL, for several gateways (issue #17).

Buildings map to ``PARTITIONS`` partitions (``core/partitions.py``); each partition is
owned by exactly one gateway at a time. Ownership, fencing and membership live in the
PostgreSQL database the gateways share, not in a home-made cluster protocol:

- **Ownership is a session-level advisory lock** ``pg_try_advisory_lock(NAMESPACE, p)``,
  held on one dedicated connection of the gateway (the book's own). When the gateway
  dies, its database session ends and the locks go with it: no timeout has to pass
  before another gateway may take the partition at its next rebalance.
- **Fencing is an epoch** in ``partition_leases(partition, owner, epoch, since)``: taking a
  partition (once its lock is held) adds one to the epoch. A gateway that lost a lease
  (its connection died, a long pause, a network split) still believes its old epoch;
  ``holds(p, epoch)`` tells it otherwise, and ``fence_sql`` lets the store check the
  epoch inside the very transaction of a flush, ``FOR SHARE`` on the lease row: a
  takeover's epoch bump waits for that commit, or the flush sees the new epoch and fails
  (``LeaseLost`` through ``fence``). A released partition has no owner, so a late flush of
  the releasing gateway fails the same way.
- **Membership** is ``gateway_members(gateway_id, heartbeat_at, backend_pid, ...)``,
  refreshed by every ``rebalance``. A member is live while its heartbeat is younger than
  ``expiry`` *and* its database session still exists, so a gateway whose session ended
  drops out of the count at the others' next rebalance, not ``expiry`` later. A member
  that stops heartbeating while its session lives on and holds locks (a hung process, a
  half-open connection) has its session ended by the others after ``expiry``
  (``pg_terminate_backend``; the gateways share a database role, or have
  ``pg_signal_backend``), which frees its locks; the epoch fences it off afterwards.
- **Fair shares**: the live members sorted by id; member ``rank`` should own
  ``fair_share(partitions, members, rank)``. A rebalance releases the partitions above its
  share, highest first (so a joining gateway gets its share from everybody), and takes
  free ones up to it. A gateway rebalances with ``hand_back=False``: it drains the
  partitions above its share (``surplus``) before releasing them, so that none of their
  messages in flight goes to the next holder again. Taking starts at an offset that
  depends on the rank, so gateways rebalancing at the same moment rarely try the same
  lock.
- ``NOTIFY intercom_leases`` after a join or a release wakes the other books
  (``wait``/``rounds``), so a hand-over takes one round trip, not a heartbeat.

One connection serves the book, guarded by an ``asyncio.Lock`` (asyncpg runs one query at
a time a connection). If it is lost, the next ``rebalance`` reports every partition as
lost, connects again (ending the old session if the server still has it) and rejoins.
The schema (``leases_sql.SCHEMA``) is created at start until the store's versioned
migrations take it over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from intercom_gateway.core.partitions import PARTITIONS, fair_share
from intercom_gateway.errors import ConfigMismatch, LeaseError, LeaseLost
from intercom_gateway.gateway import leases_sql as sql

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[Record]

log = structlog.get_logger("intercom_gateway.gateway.leases")

# What a dead connection or an ended session looks like to asyncpg.
_GONE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,  # 57P01, after pg_terminate_backend
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
)
TERMINATE_WAIT_MS = 2000  # how long to wait for an evicted session to be gone


@dataclass(frozen=True)
class Lease:
    """A partition held by ``owner`` since ``since``; ``epoch`` is its fencing token."""

    partition: int
    owner: str
    epoch: int
    since: datetime


async def fence(
    connection: Connection | PoolConnectionProxy[Record], partition: int, epoch: int
) -> None:
    """Run the fencing check (``LeaseBook.fence_sql``) in the caller's transaction.

    Raises ``LeaseLost`` when ``epoch`` is not the partition's current lease; the row stays
    locked ``FOR SHARE`` until the caller's transaction ends.
    """
    try:
        await connection.execute(sql.FENCE, partition, epoch)
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) == sql.FENCE_SQLSTATE:
            raise LeaseLost(partition, epoch) from error
        raise


class LeaseBook:
    """One gateway's view of the partition leases, on its own database connection."""

    def __init__(
        self,
        dsn: str,
        *,
        gateway_id: str,
        partitions: int = PARTITIONS,
        heartbeat: float = 1.0,
        expiry: float = 5.0,
        config_sha256: str | None = None,
    ) -> None:
        if expiry <= heartbeat:
            raise ValueError(f"expiry ({expiry:g} s) must be longer than heartbeat")
        self.dsn = dsn
        self.gateway_id = gateway_id
        self.partitions = partitions
        self.heartbeat = heartbeat
        self.expiry = expiry
        # A fingerprint of what this gateway decides with (``config_fingerprint``): a
        # gateway whose fingerprint differs from a live member's refuses to join.
        self.config_sha256 = config_sha256
        self._conn: Connection | None = None
        self._session: tuple[int, Any] | None = None  # (pid, backend_start) of our session
        self._guard = asyncio.Lock()
        self._held: dict[int, Lease] = {}
        self._wake = asyncio.Event()
        self._members: list[str] = []
        self._share = partitions  # this member's fair share, as of the last rebalance

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        dsn: str,
        *,
        gateway_id: str,
        partitions: int = PARTITIONS,
        heartbeat: float = 1.0,
        expiry: float = 5.0,
        config_sha256: str | None = None,
    ) -> AsyncIterator[LeaseBook]:
        """Connect and create the schema; leaving closes the connection (its locks go).

        Leaving does not release cleanly: call ``release_all`` first (after draining) so
        that the others need not notice the closed session.
        """
        book = cls(
            dsn,
            gateway_id=gateway_id,
            partitions=partitions,
            heartbeat=heartbeat,
            expiry=expiry,
            config_sha256=config_sha256,
        )
        await book._connect()
        try:
            yield book
        finally:
            await book.close()

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend that holds this book's locks (tests, health)."""
        return self._session[0] if self._session else None

    async def close(self) -> None:
        """Close the connection: PostgreSQL drops its advisory locks with the session."""
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), self.expiry)
            except (TimeoutError, *_GONE):
                conn.terminate()

    # --- the rebalance ---------------------------------------------------------------

    async def rebalance(self, *, hand_back: bool = True) -> tuple[list[Lease], list[int]]:
        """Heartbeat, then take free partitions up to the fair share or release above it.

        Returns the leases gained and the partitions lost (released here, or gone with a
        lost connection): stop work on the lost ones before starting the gained ones.

        ``hand_back=False`` keeps the partitions above the share instead of releasing
        them: they are in ``surplus``, for the caller to drain (finish and acknowledge
        what it took) and then ``release``. Released first, a partition's last messages
        in flight would fail their fence and go again to the new holder.
        """
        async with self._guard:
            lost: list[int] = []
            if self._conn is None or self._conn.is_closed():
                lost = self._forget_all()
                await self._connect()
            try:
                gained, released = await self._rebalance(self._live(), hand_back)
            except _GONE:
                lost += self._forget_all()
                await self._connect()
                gained, released = await self._rebalance(self._live(), hand_back)
            return gained, lost + released

    @property
    def surplus(self) -> list[int]:
        """The partitions held above this gateway's share as of the last rebalance, highest
        first: what ``rebalance(hand_back=False)`` kept for the caller to drain and release."""
        return sorted(self._held, reverse=True)[: max(0, len(self._held) - self._share)]

    async def _rebalance(
        self, conn: Connection, hand_back: bool = True
    ) -> tuple[list[Lease], list[int]]:
        if not self._members and self.config_sha256 is not None:  # joining
            await self._check_config(conn)
        await conn.execute(sql.HEARTBEAT, self.gateway_id, self.config_sha256)
        await self._evict_stale(conn)
        await conn.execute(sql.FORGET_DEAD, self.expiry, self.gateway_id)
        members = [row[0] for row in await conn.fetch(sql.LIVE_MEMBERS, self.expiry)]
        if self.gateway_id not in members:  # our own row is fresh by construction
            members = sorted([*members, self.gateway_id])
        joined = members != self._members
        self._members = members
        rank = members.index(self.gateway_id)
        share = self._share = fair_share(self.partitions, len(members), rank)
        released = []
        for partition in self.surplus if hand_back else []:
            await self._release(conn, partition)
            released.append(partition)
        gained = await self._take_free(conn, share, rank, len(members))
        if released or (joined and len(members) > 1):
            await self._notify(conn)
        if gained or released:
            log.info(
                "leases rebalanced",
                gateway=self.gateway_id,
                members=len(members),
                share=share,
                gained=[lease.partition for lease in gained],
                released=released,
            )
        return gained, released

    async def _check_config(self, conn: Connection) -> None:
        others = await conn.fetch(
            sql.OTHER_CONFIGS, self.expiry, self.gateway_id, self.config_sha256
        )
        if others:
            names = ", ".join(row[0] for row in others)
            raise ConfigMismatch(
                f"gateway {names} decides with another registry, partner registry or policy:"
                " every gateway of a group must use the same files"
            )

    async def _take_free(
        self, conn: Connection, share: int, rank: int, members: int
    ) -> list[Lease]:
        if len(self._held) >= share:
            return []
        free = [row[0] for row in await conn.fetch(sql.FREE_PARTITIONS, self.partitions)]
        start = rank * self.partitions // members
        free.sort(key=lambda p: (p - start) % self.partitions)
        gained = []
        for partition in free:
            if len(self._held) >= share:
                break
            if partition in self._held or not await conn.fetchval(sql.TRY_LOCK, partition):
                continue
            try:
                row = await conn.fetchrow(sql.TAKE, partition, self.gateway_id)
            except asyncpg.PostgresError:
                await conn.fetchval(sql.UNLOCK, partition)
                raise
            assert row is not None  # INSERT ... RETURNING always returns the row
            lease = Lease(partition, self.gateway_id, row["epoch"], row["since"])
            self._held[partition] = lease
            gained.append(lease)
        return gained

    async def _evict_stale(self, conn: Connection) -> None:
        for gateway_id, pid in await conn.fetch(sql.STALE_HOLDERS, self.expiry, self.gateway_id):
            log.warning(
                "ending the session of a member that stopped heartbeating",
                gateway=self.gateway_id,
                member=gateway_id,
                backend_pid=pid,
            )
            try:
                await conn.fetchval(sql.TERMINATE, pid, TERMINATE_WAIT_MS)
            except asyncpg.InsufficientPrivilegeError:
                log.warning(
                    "not allowed to end the session; its locks stay until it ends",
                    gateway=self.gateway_id,
                    member=gateway_id,
                )

    # --- releasing ---------------------------------------------------------------------

    async def release(self, *partitions: int) -> None:
        """Give up partitions (after draining them); the others may take them at once."""
        async with self._guard:
            mine = [p for p in partitions if p in self._held]
            if not mine:
                return
            try:
                for partition in mine:
                    await self._release(self._live(), partition)
                await self._notify(self._live())
            except _GONE:
                self._forget_all()

    async def release_all(self) -> None:
        """Release every partition and leave the members: the others take over at once."""
        async with self._guard:
            try:
                conn = self._live()
                for partition in sorted(self._held, reverse=True):
                    await self._release(conn, partition)
                await conn.execute(sql.LEAVE, self.gateway_id)
                self._members = []
                await self._notify(conn)
            except _GONE:
                self._forget_all()

    async def _release(self, conn: Connection, partition: int) -> None:
        # No owner first: a late flush of ours fails its fence even before anyone takes.
        await conn.execute(sql.RELEASE, partition, self.gateway_id)
        await conn.fetchval(sql.UNLOCK, partition)
        # Forgotten only once both are done: a release cancelled half-way leaves the
        # partition in the book (still locked by our session), and the next round
        # releases it again, instead of a lock nobody knows of until the session ends.
        self._held.pop(partition, None)

    # --- checks and views --------------------------------------------------------------

    async def holds(self, partition: int, epoch: int) -> bool:
        """The fencing check: our session holds the lock and the lease is still ``epoch``."""
        async with self._guard:
            if partition not in self._held or self._conn is None or self._conn.is_closed():
                return False
            try:
                return bool(await self._conn.fetchval(sql.HOLDS, partition, epoch, self.gateway_id))
            except _GONE:
                return False

    async def owned(self) -> list[Lease]:
        """This gateway's leases as of its last rebalance (``holds`` checks one for real)."""
        return [self._held[p] for p in sorted(self._held)]

    async def owners(self) -> list[Lease]:
        """Every partition whose lock is held now, with its owner (for health)."""
        async with self._guard:
            try:
                rows = await self._live().fetch(sql.OWNERS)
            except _GONE as error:
                raise LeaseError(f"the lease database went away: {error}") from error
        return [Lease(row[0], row[1], row[2], row[3]) for row in rows]

    def fence_sql(self) -> str:
        """``SELECT intercom_lease_fence($1, $2)``: run it in a transaction with partition
        and epoch; it raises (SQLSTATE ``IGL01``, ``fence`` turns it into ``LeaseLost``)
        unless the epoch is current, and locks the lease row ``FOR SHARE`` till commit."""
        return sql.FENCE

    # --- waiting -----------------------------------------------------------------------

    async def wait(self) -> None:
        """Until the next heartbeat is due or another member announced a change."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.heartbeat):
                await self._wake.wait()
        self._wake.clear()

    async def rounds(self) -> AsyncIterator[tuple[list[Lease], list[int]]]:
        """Rebalance every heartbeat (sooner when woken) and yield each change."""
        while True:
            gained, lost = await self.rebalance()
            if gained or lost:
                yield gained, lost
            await self.wait()

    # --- the connection ----------------------------------------------------------------

    def _live(self) -> Connection:
        if self._conn is None:
            raise asyncpg.ConnectionDoesNotExistError("the lease connection is closed")
        return self._conn

    def _forget_all(self) -> list[int]:
        lost = sorted(self._held)
        self._held.clear()
        self._members = []
        return lost

    async def _connect(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.expiry)
        except (*_GONE, asyncpg.PostgresError) as error:
            raise LeaseError(f"cannot connect to the lease database: {error}") from error
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.SCHEMA_LOCK)
                await conn.execute(sql.SCHEMA)
            if self._session is not None:  # our previous session may linger, holding locks
                await conn.execute(sql.END_OLD_SESSION, *self._session, TERMINATE_WAIT_MS)
            start = await conn.fetchval(sql.BACKEND_START)
            await conn.add_listener(sql.NOTIFY_CHANNEL, self._notified)
        except (*_GONE, asyncpg.PostgresError) as error:
            conn.terminate()
            raise LeaseError(f"cannot prepare the lease database: {error}") from error
        self._conn = conn
        self._session = (conn.get_server_pid(), start)

    async def _notify(self, conn: Connection) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", sql.NOTIFY_CHANNEL, self.gateway_id)

    def _notified(self, _conn: object, pid: int, _channel: str, _payload: object) -> None:
        if self._session is None or pid != self._session[0]:
            self._wake.set()
