"""The acknowledgement queue without a bus: stages, in-order release, failures."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom_gateway.gateway.acks import AckQueue, Pending, Stage


@dataclass(eq=False, slots=True, kw_only=True)
class Entry(Pending):
    name: str
    writes: bool = False  # has records to commit before its acknowledgement


@dataclass
class World:
    """A queue with recording callbacks: what was settled, and what left it, in order."""

    settled: list[str] = field(default_factory=list)
    released: list[tuple[str, bool]] = field(default_factory=list)  # (name, acknowledged)
    queue: AckQueue[Entry] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = AckQueue(settle=self._settle, release=self._release)

    def _settle(self, entry: Entry) -> bool:
        self.settled.append(entry.name)
        return entry.writes and not entry.failed

    def _release(self, entry: Entry) -> None:
        self.released.append((entry.name, not entry.failed))

    def take(self, name: str, *, writes: bool = False) -> Entry:
        return self.queue.add(Entry(name=name, writes=writes))

    def step(self) -> list[tuple[str, bool]]:
        before = len(self.released)
        self.queue.release_ready()
        return self.released[before:]


def stage_of(entry: Pending) -> Stage:
    """Read afresh: mypy would otherwise keep the stage an earlier assert narrowed."""
    return entry.stage


def test_a_message_without_publishes_or_records_is_acknowledged_once_handled() -> None:
    world = World()
    entry = world.take("a")
    assert stage_of(entry) is Stage.HANDLING
    assert world.step() == []
    world.queue.handled(entry)
    assert stage_of(entry) is Stage.RECORDED
    assert world.step() == [("a", True)]
    assert len(world.queue) == 0


def test_stages_follow_publishes_then_the_commit() -> None:
    world = World()
    entry = world.take("a", writes=True)
    world.queue.publishing(entry)
    world.queue.publishing(entry)
    world.queue.handled(entry)
    assert (stage_of(entry), entry.publishes) == (Stage.SENDING, 2)
    world.queue.published(entry)
    assert stage_of(entry) is Stage.SENDING and world.settled == []
    world.queue.published(entry)
    assert stage_of(entry) is Stage.SETTLED and world.settled == ["a"]
    assert world.step() == []  # its records are not committed yet
    world.queue.recorded(entry)
    assert stage_of(entry) is Stage.RECORDED
    assert world.step() == [("a", True)]


def test_publishes_done_before_handling_ends_do_not_settle_it() -> None:
    world = World()
    entry = world.take("a")
    world.queue.publishing(entry)
    world.queue.published(entry)  # a PUBACK while the gateway is still handling it
    assert stage_of(entry) is Stage.HANDLING and world.settled == []
    world.queue.publishing(entry)
    world.queue.handled(entry)
    assert world.settled == []
    world.queue.published(entry)
    assert world.settled == ["a"]


def test_out_of_order_completion_is_released_in_arrival_order() -> None:
    world = World()
    a, b, c = (world.take(name, writes=True) for name in "abc")
    for entry in (a, b, c):
        world.queue.publishing(entry)
        world.queue.handled(entry)
    world.queue.published(c)
    world.queue.recorded(c)
    world.queue.published(b)
    world.queue.recorded(b)
    assert world.step() == []  # c and b are done, but a is not
    world.queue.published(a)
    assert world.step() == []  # settled, not committed
    world.queue.recorded(a)
    assert world.step() == [("a", True), ("b", True), ("c", True)]


def test_a_failed_message_leaves_unacknowledged_at_its_turn_and_still_settles() -> None:
    world = World()
    a, b = world.take("a", writes=True), world.take("b")
    world.queue.publishing(a)
    world.queue.publishing(a)
    world.queue.handled(a)
    world.queue.handled(b)
    world.queue.published(a, failed=True)  # one publish lost with the connection
    assert a.failed and stage_of(a) is Stage.SENDING
    # Never acknowledged, so nothing waits for its other publish: b goes on.
    assert world.step() == [("a", False), ("b", True)]
    world.queue.published(a)
    assert world.settled == ["b", "a"]  # what became of its publishes is still recorded


def test_a_failed_message_behind_a_pending_one_waits_for_its_turn() -> None:
    world = World()
    a, b = world.take("a"), world.take("b")
    world.queue.handled(b, failed=True)  # stopped half-way
    assert world.step() == []
    world.queue.handled(a)
    assert world.step() == [("a", True), ("b", False)]


def test_a_publish_refused_is_not_a_failure() -> None:
    world = World()
    a = world.take("a")
    world.queue.publishing(a)
    world.queue.handled(a)
    world.queue.published(a, failed=False)  # refused by the broker: retrying cannot help
    assert world.step() == [("a", True)]


def test_no_publish_once_handled() -> None:
    world = World()
    a = world.take("a")
    world.queue.handled(a)
    with pytest.raises(ValueError, match="recorded"):
        world.queue.publishing(a)


def test_recorded_before_settled_changes_nothing() -> None:
    world = World()
    a = world.take("a", writes=True)
    world.queue.publishing(a)
    world.queue.handled(a)
    world.queue.recorded(a)  # a commit of an earlier batch
    assert stage_of(a) is Stage.SENDING
    assert world.step() == []


def test_cleared_entries_are_never_released() -> None:
    world = World()
    a = world.take("a")
    world.queue.publishing(a)
    world.queue.handled(a)
    world.queue.clear()  # the connection is gone
    b = world.take("b")
    world.queue.published(a, failed=True)
    world.queue.handled(b)
    assert world.step() == [("b", True)]
    assert world.settled == ["a", "b"]
    assert world.queue.oldest is None


_ACTIONS = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3)), max_size=120)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=8), _ACTIONS)
def test_any_interleaving_releases_a_prefix_in_order_and_acks_only_finished_messages(
    messages: list[tuple[int, bool]], actions: list[tuple[int, int]]
) -> None:
    """Messages with some publishes each, completed, failed and committed in any order."""
    world = World()
    entries = [world.take(str(i), writes=writes) for i, (_, writes) in enumerate(messages)]
    due = {e.name: n for e, (n, _) in zip(entries, messages, strict=True)}
    for entry in entries:
        for _ in range(due[entry.name]):
            world.queue.publishing(entry)
    for kind, pick in actions:
        entry = entries[pick % len(entries)]
        if kind == 0 and stage_of(entry) is Stage.HANDLING:
            world.queue.handled(entry, failed=pick == 3)
        elif kind in (1, 2, 3) and due[entry.name] > 0:
            due[entry.name] -= 1
            world.queue.published(entry, failed=kind == 3 and pick == 0)
        elif kind == 4:
            world.queue.recorded(entry)
        world.step()
        names = [name for name, _ in world.released]
        assert names == [e.name for e in entries[: len(names)]]  # a prefix, in order
    for name, acked in world.released:
        entry = entries[int(name)]
        if acked:  # handled, every publish done, records committed if it had any
            assert stage_of(entry) is Stage.RECORDED and entry.publishes == 0
            assert not entry.failed
        else:
            assert entry.failed
    assert len(set(world.settled)) == len(world.settled)  # settled at most once
