"""Partition leases on a real PostgreSQL (our own throwaway cluster, never the machine's):
gateways join, leave and die; no partition is ever held twice; the fencing epoch stops a
gateway that lost its lease from recording."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import asyncpg
import pytest

from intercom_gateway.errors import ConfigMismatch, LeaseLost
from intercom_gateway.gateway import leases_sql
from intercom_gateway.gateway.leases import Lease, LeaseBook, fence
from intercom_gateway.qa.postgres import PostgresServer

if TYPE_CHECKING:
    Admin = asyncpg.Connection[asyncpg.Record]

_databases = itertools.count()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("leases-pg")) as server:
        yield server


@pytest.fixture
async def dsn(postgres: PostgresServer) -> AsyncIterator[str]:
    """A fresh database a test: no lease or member left over from another test."""
    name = f"leases_{next(_databases)}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/{name}"


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[Admin]:
    """A connection of the test itself: to look at pg_locks and end sessions."""
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def books(dsn: str) -> AsyncIterator[Books]:
    async with AsyncExitStack() as stack:
        yield Books(dsn, stack)


class Books:
    """Opens lease books (gateways) that close when the test ends."""

    def __init__(self, dsn: str, stack: AsyncExitStack) -> None:
        self.dsn = dsn
        self.stack = stack

    async def open(self, gateway_id: str, *, config: str | None = None) -> LeaseBook:
        return await self.stack.enter_async_context(
            LeaseBook.open(self.dsn, gateway_id=gateway_id, config_sha256=config)
        )


async def settle(books: Sequence[LeaseBook], *, rounds: int = 3) -> int:
    """Rebalance every book in turn until a whole round changes nothing; the rounds taken.

    At least two rounds: a joining book's first rebalance gains nothing and loses nothing,
    yet the others see it only at their next one.
    """
    for done in range(1, rounds + 1):
        changed = False
        for book in books:
            gained, lost = await book.rebalance()
            changed = changed or bool(gained or lost)
        if not changed and done > 1:
            return done
    raise AssertionError(f"no stable split after {rounds} rounds")


async def counts(books: Sequence[LeaseBook]) -> list[int]:
    return [len(await book.owned()) for book in books]


async def lock_holders(admin: Admin) -> Counter[int]:
    """How many sessions hold each partition's advisory lock, straight from pg_locks."""
    rows = await admin.fetch(
        "SELECT objid::integer AS p FROM pg_locks WHERE locktype = 'advisory'"
        " AND classid = $1::oid AND objsubid = 2 AND granted",
        leases_sql.NAMESPACE,
    )
    return Counter(row["p"] for row in rows)


async def assert_no_partition_held_twice(books: Sequence[LeaseBook], admin: Admin) -> None:
    holders: Counter[int] = Counter()
    for book in books:
        for lease in await book.owned():
            if await book.holds(lease.partition, lease.epoch):
                holders[lease.partition] += 1
    assert [p for p, n in holders.items() if n > 1] == []
    assert [p for p, n in (await lock_holders(admin)).items() if n > 1] == []


async def terminate(admin: Admin, book: LeaseBook) -> None:
    """The gateway's database session ends (a crash, a cut cable): wait until it is gone."""
    assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", book.backend_pid)


# --- joining -------------------------------------------------------------------------


async def test_one_gateway_takes_every_partition(books: Books, admin: Admin) -> None:
    a = await books.open("gw-a")
    gained, lost = await a.rebalance()
    assert sorted(lease.partition for lease in gained) == list(range(64))
    assert lost == []
    assert all(lease.owner == "gw-a" and lease.epoch == 1 for lease in gained)
    assert await lock_holders(admin) == Counter(range(64))
    assert await a.owners() == gained
    assert await a.rebalance() == ([], [])  # a second round changes nothing


async def test_a_second_and_a_third_gateway_get_their_share(
    books: Books, admin: asyncpg.Connection
) -> None:
    a = await books.open("gw-a")
    await a.rebalance()
    b = await books.open("gw-b")
    # b joins (nothing free), a releases its upper half, b takes it.
    assert await settle([b, a, b]) <= 2
    assert await counts([a, b]) == [32, 32]
    assert [lease.partition for lease in await a.owned()] == list(range(32))
    await assert_no_partition_held_twice([a, b], admin)

    c = await books.open("gw-c")
    await settle([c, a, b, c])
    assert await counts([a, b, c]) == [22, 21, 21]
    await assert_no_partition_held_twice([a, b, c], admin)
    owners = await a.owners()
    assert len(owners) == 64
    assert Counter(lease.owner for lease in owners) == {"gw-a": 22, "gw-b": 21, "gw-c": 21}


async def test_a_joining_gateway_wakes_the_others(books: Books) -> None:
    """NOTIFY on join: the owner need not wait a whole heartbeat to hand partitions over."""
    a = await books.open("gw-a")
    await a.rebalance()
    b = await books.open("gw-b")
    await b.rebalance()
    await a.wait()  # returns at once: woken by b's join, not by the 1 s heartbeat
    gained, lost = await a.rebalance()
    assert len(lost) == 32
    await b.wait()  # woken by a's release
    gained, lost = await b.rebalance()
    assert len(gained) == 32


async def test_a_gateway_that_drains_first_keeps_its_surplus_until_it_releases(
    books: Books, admin: Admin
) -> None:
    """``hand_back=False``: the partitions above the share stay locked (and fenced to
    their holder) while it drains them; nobody else takes them until they are released."""
    a = await books.open("gw-a")
    await a.rebalance(hand_back=False)
    assert a.surplus == []
    b = await books.open("gw-b")
    await b.rebalance()
    gained, lost = await a.rebalance(hand_back=False)
    assert (gained, lost) == ([], [])
    surplus = a.surplus
    assert surplus == list(range(63, 31, -1))  # the highest first
    assert all([await a.holds(lease.partition, lease.epoch) for lease in await a.owned()])
    assert await b.rebalance() == ([], [])  # nothing is free while a drains
    await a.release(*surplus)
    assert a.surplus == []
    gained, lost = await b.rebalance()
    assert sorted(lease.partition for lease in gained) == sorted(surplus)
    assert await lock_holders(admin) == Counter(range(64))


async def test_a_gateway_with_other_files_refuses_to_join(books: Books, admin: Admin) -> None:
    """Two registries in one group would decide a building under two: the newcomer
    refuses before its first heartbeat, so the members never count it."""
    a = await books.open("gw-a", config="1" * 64)
    await a.rebalance()
    b = await books.open("gw-b", config="2" * 64)
    with pytest.raises(ConfigMismatch, match="gateway gw-a decides with another registry"):
        await b.rebalance()
    assert await a.rebalance() == ([], [])  # still alone, still holding all 64
    c = await books.open("gw-c", config="1" * 64)
    await settle([a, c])
    assert await counts([a, c]) == [32, 32]


async def test_rounds_yields_changes_and_stops_when_cancelled(books: Books, admin: Admin) -> None:
    """The loop the runtime runs: a change comes out of it, and cancelling it ends it even
    while a notification is arriving (on Python 3.11, ``wait_for`` around the wake-up
    ``Event`` left such a task cancelling forever)."""
    a = await books.open("gw-a")
    changes: asyncio.Queue[tuple[list[Lease], list[int]]] = asyncio.Queue()

    async def loop() -> None:
        async for change in a.rounds():
            await changes.put(change)

    task = asyncio.create_task(loop())
    gained, lost = await changes.get()
    assert (len(gained), lost) == (64, [])
    b = await books.open("gw-b")
    await b.rebalance()  # its NOTIFY wakes a's loop before the heartbeat is due
    task.cancel()  # while that NOTIFY arrives
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    # The book itself is still fine. (The cancel may land inside the loop's own
    # rebalance, after it released some of the 32: how many this one releases varies.)
    gained, _lost = await a.rebalance()
    assert gained == []
    assert len(await a.owned()) == 32
    # Every lock the session holds is one the book knows: none left behind by a release
    # the cancel cut short.
    assert await lock_holders(admin) == Counter(lease.partition for lease in await a.owned())


# --- leaving and dying ----------------------------------------------------------------


async def test_a_clean_leave_hands_everything_over_in_one_rebalance(
    books: Books, admin: asyncpg.Connection
) -> None:
    a, b, c = [await books.open(f"gw-{x}") for x in "abc"]
    await settle([a, b, c, a, b, c])
    leaving = await b.owned()
    await b.release_all()
    assert await b.owned() == []
    assert not await b.holds(leaving[0].partition, leaving[0].epoch)
    await a.rebalance()
    await c.rebalance()
    assert await counts([a, c]) == [32, 32]
    assert await lock_holders(admin) == Counter(range(64))
    taken = {lease.partition: lease for lease in await a.owned() + await c.owned()}
    assert all(taken[old.partition].epoch == old.epoch + 1 for old in leaving)


async def test_release_of_one_partition(books: Books, admin: Admin) -> None:
    a = await books.open("gw-a")
    await a.rebalance()
    await a.release(5)
    assert 5 not in [lease.partition for lease in await a.owned()]
    assert 5 not in await lock_holders(admin)
    assert 5 not in [lease.partition for lease in await a.owners()]
    await a.release(5)  # twice is harmless


@pytest.mark.parametrize("how", ["terminate", "close"])
async def test_a_dead_gateway_loses_its_partitions_and_its_epochs(
    books: Books, admin: Admin, how: str
) -> None:
    a, b, c = [await books.open(f"gw-{x}") for x in "abc"]
    await settle([a, b, c, a, b, c])
    dead = await b.owned()
    if how == "terminate":
        await terminate(admin, b)
    else:  # the socket closes abruptly, without a goodbye to the server
        pid = b.backend_pid
        assert b._conn is not None
        b._conn.terminate()
        await admin.fetchval(
            "SELECT pg_terminate_backend($1, 5000) FROM pg_stat_activity WHERE pid = $1", pid
        )
    # the survivors notice the ended session at their next rebalance, not after expiry
    assert await settle([a, c]) == 2
    assert await counts([a, c]) == [32, 32]
    assert await lock_holders(admin) == Counter(range(64))
    now = {lease.partition: lease for lease in await a.owners()}
    for old in dead:
        assert not await b.holds(old.partition, old.epoch)
        assert now[old.partition].epoch == old.epoch + 1
        assert now[old.partition].owner in {"gw-a", "gw-c"}
    await assert_no_partition_held_twice([a, b, c], admin)


async def test_a_gateway_whose_connection_died_rejoins_at_its_next_rebalance(
    books: Books, admin: asyncpg.Connection
) -> None:
    a, b = [await books.open(f"gw-{x}") for x in "ab"]
    await settle([a, b, a, b])
    held = await b.owned()
    await terminate(admin, b)
    await a.rebalance()  # a takes everything while b is gone
    assert await counts([a]) == [64]
    gained, lost = await b.rebalance()  # b: everything lost, reconnected, nothing free yet
    assert lost == [lease.partition for lease in held]
    assert gained == []
    await settle([a, b])
    assert await counts([a, b]) == [32, 32]
    await assert_no_partition_held_twice([a, b], admin)


async def test_a_member_that_stops_heartbeating_is_ended_after_expiry(
    books: Books, admin: asyncpg.Connection
) -> None:
    """A hung gateway (its session lives, it holds locks, it does not heartbeat): the
    others end its session after ``expiry`` and take its partitions; it is fenced off."""
    a, b = [await books.open(f"gw-{x}") for x in "ab"]
    await settle([a, b, a, b])
    hung = await b.owned()
    # Its last heartbeat ages past expiry: rewrite it instead of sleeping five seconds.
    await admin.execute(
        "UPDATE gateway_members SET heartbeat_at = heartbeat_at - interval '1 minute'"
        " WHERE gateway_id = 'gw-b'"
    )
    await a.rebalance()
    assert await counts([a]) == [64]
    assert not await b.holds(hung[0].partition, hung[0].epoch)
    assert [lease.owner for lease in await a.owners()] == ["gw-a"] * 64


# --- fencing ---------------------------------------------------------------------------


async def test_fencing_inside_a_flush_transaction(books: Books, admin: Admin, dsn: str) -> None:
    a, b = [await books.open(f"gw-{x}") for x in "ab"]
    await a.rebalance()
    old = (await a.owned())[40]
    await admin.execute("CREATE TABLE flushed (partition integer, epoch bigint, note text)")
    store_a = await asyncpg.connect(dsn)  # gateway a's store: a connection of its own
    try:

        async def flush(lease: Lease, note: str) -> None:
            async with store_a.transaction():
                await store_a.execute(a.fence_sql(), lease.partition, lease.epoch)
                await store_a.execute(
                    "INSERT INTO flushed VALUES ($1, $2, $3)", lease.partition, lease.epoch, note
                )

        await flush(old, "while owner")
        await terminate(admin, a)  # a dies; its store connection lives on (a long pause)
        await b.rebalance()
        new = next(lease for lease in await b.owned() if lease.partition == old.partition)
        assert new.epoch == old.epoch + 1
        with pytest.raises(asyncpg.PostgresError) as raised:
            await flush(old, "after takeover")
        assert raised.value.sqlstate == leases_sql.FENCE_SQLSTATE
        with pytest.raises(LeaseLost) as lost:
            async with store_a.transaction():
                await fence(store_a, old.partition, old.epoch)
        assert (lost.value.partition, lost.value.epoch) == (old.partition, old.epoch)
        async with store_a.transaction():  # the new owner's epoch passes
            await fence(store_a, new.partition, new.epoch)
        notes = await admin.fetch("SELECT note FROM flushed ORDER BY note")
        assert [row["note"] for row in notes] == ["while owner"]
    finally:
        await store_a.close()


async def test_a_takeover_waits_for_a_flush_in_progress(
    books: Books, admin: Admin, dsn: str
) -> None:
    """FOR SHARE: the new owner's epoch bump waits until the old owner's flush commits."""
    a, b = [await books.open(f"gw-{x}") for x in "ab"]
    await a.rebalance()
    old = (await a.owned())[0]
    store_a = await asyncpg.connect(dsn)
    try:
        flushing = store_a.transaction()
        await flushing.start()
        await fence(store_a, old.partition, old.epoch)  # row locked FOR SHARE
        await terminate(admin, a)
        takeover = asyncio.create_task(b.rebalance())
        # The bump of the partition b tries first blocks on a's share lock. A lock wait
        # in the server sends no event to await: pg_locks is polled until it shows it.
        while not await admin.fetchval(  # noqa: ASYNC110
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1", b.backend_pid
        ):
            await asyncio.sleep(0.01)
        assert not takeover.done()
        await flushing.commit()
        gained, _ = await takeover
        assert old.partition in [lease.partition for lease in gained]
    finally:
        await store_a.close()


async def test_holds_is_false_for_a_wrong_epoch_or_an_unowned_partition(books: Books) -> None:
    a, b = [await books.open(f"gw-{x}") for x in "ab"]
    await settle([a, b, a, b])
    mine = (await a.owned())[0]
    theirs = (await b.owned())[0]
    assert await a.holds(mine.partition, mine.epoch)
    assert not await a.holds(mine.partition, mine.epoch + 1)
    assert not await a.holds(theirs.partition, theirs.epoch)


# --- many rounds -------------------------------------------------------------------------

ACTIONS = ["join", "join", "join", "leave", "kill", "hang", "rebalance", "rebalance"]


@pytest.mark.parametrize("seed", range(5))
async def test_random_joins_leaves_kills_and_hangs(dsn: str, admin: Admin, seed: int) -> None:
    """Invariant at every step: no partition has two books whose ``holds`` is True; after
    the survivors settle, every partition is owned, by a survivor, in fair shares."""
    rng = random.Random(seed)
    names = (f"gw-{n:02d}" for n in itertools.count())
    live: list[LeaseBook] = []
    gone: list[LeaseBook] = []  # left, killed or hung: asked `holds` all the same
    async with AsyncExitStack() as stack:

        async def join() -> None:
            book = LeaseBook.open(dsn, gateway_id=next(names))
            live.append(await stack.enter_async_context(book))

        def pick() -> LeaseBook:
            book = live.pop(rng.randrange(len(live)))
            gone.append(book)
            return book

        await join()
        for _ in range(60):
            action = rng.choice(ACTIONS)
            if action == "join" and len(live) < 6:
                await join()
            elif action == "leave" and len(live) > 1:
                await pick().release_all()
            elif action == "kill" and len(live) > 1:
                await terminate(admin, pick())
            elif action == "hang" and len(live) > 1:
                await admin.execute(
                    "UPDATE gateway_members SET heartbeat_at = heartbeat_at - interval '1 hour'"
                    " WHERE gateway_id = $1",
                    pick().gateway_id,
                )
            for book in rng.sample(live, rng.randint(1, len(live))):
                await book.rebalance()
            await assert_no_partition_held_twice(live + gone, admin)

        await settle(live, rounds=5)
        owners = await live[0].owners()
        assert [lease.partition for lease in owners] == list(range(64))
        assert {lease.owner for lease in owners} <= {book.gateway_id for book in live}
        shares = await counts(live)
        assert sum(shares) == 64
        assert max(shares) - min(shares) <= 1
        await assert_no_partition_held_twice(live + gone, admin)


async def test_a_fenced_store_commits_nothing_once_its_partition_moved_on(
    books: Books, admin: Admin, dsn: str
) -> None:
    """The partitioned gateway's flush (PostgresStore.fenced): the lease check runs in the
    flush's own transaction, so the old owner's last batch is refused whole, with
    LeaseLost, and the new owner's goes through."""
    from intercom_gateway.store.postgres.store import PostgresStore
    from tests.component.test_store_decisions import FORWARDED, _row

    a, b = [await books.open(f"gw-{x}") for x in "ab"]
    await a.rebalance()
    old = (await a.owned())[7]
    async with PostgresStore.open(dsn) as store:
        mine = store.fenced(lambda db: fence(db, old.partition, old.epoch))
        mine.record_decision(_row("e-first", FORWARDED))
        await mine.flush()
        await terminate(admin, a)  # a dies; its store's pool lives on
        await b.rebalance()
        new = next(lease for lease in await b.owned() if lease.partition == old.partition)
        mine.record_decision(_row("e-late", FORWARDED))
        with pytest.raises(LeaseLost):
            await mine.flush()
        theirs = store.fenced(lambda db: fence(db, new.partition, new.epoch))
        theirs.record_decision(_row("e-new-owner", FORWARDED))
        await theirs.flush()
        logged = await admin.fetch("SELECT event_id FROM decisions")
    assert sorted(row["event_id"] for row in logged) == ["e-first", "e-new-owner"]
