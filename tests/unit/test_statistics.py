"""Statistics per building and window (§5(2)②, spec item 6): counts only, small ones hidden."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom_gateway.core.models import EventType
from intercom_gateway.core.policy import Policy
from intercom_gateway.core.statistics import StatisticsAggregator, Window, aggregate_id

T0 = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)


def _add(agg: StatisticsAggregator, building: str, event_type: EventType, n: int) -> None:
    for i in range(n):
        agg.add(building, event_type, T0 + timedelta(minutes=i % 60))


def test_counts_per_building_and_type_with_small_counts_suppressed() -> None:
    agg = StatisticsAggregator()
    _add(agg, "bldg-1", EventType.VISITOR, 7)
    _add(agg, "bldg-1", EventType.ALARM, 2)  # could point at one dwelling
    _add(agg, "bldg-2", EventType.VISITOR, 5)
    result = agg.flush(T0 + timedelta(hours=1))
    assert [(a.building_id, a.counts, a.suppressed) for a in result] == [
        ("bldg-1", {"visitor": 7}, 1),
        ("bldg-2", {"visitor": 5}, 0),
    ]
    assert result[0].window_start == T0
    assert result[0].window_end == T0 + timedelta(hours=1)


def test_open_windows_are_kept_until_they_end() -> None:
    agg = StatisticsAggregator()
    _add(agg, "bldg-1", EventType.VISITOR, 5)
    assert agg.flush(T0 + timedelta(minutes=59)) == []
    assert agg.pending == 5
    assert len(agg.flush(T0 + timedelta(hours=1))) == 1
    assert agg.pending == 0


def test_late_events_do_not_reopen_a_published_window() -> None:
    """A second, small count for a published window would slip past suppression."""
    agg = StatisticsAggregator()
    _add(agg, "bldg-1", EventType.VISITOR, 5)
    agg.flush(T0 + timedelta(hours=1))
    assert not agg.add("bldg-1", EventType.VISITOR, T0 + timedelta(minutes=30))
    assert agg.late == 1
    assert agg.flush(T0 + timedelta(hours=5)) == []


def test_window_and_group_size_are_parameters() -> None:
    agg = StatisticsAggregator(window=timedelta(minutes=15), min_group_size=2)
    _add(agg, "bldg-1", EventType.SECURITY, 2)  # minutes 0 and 1
    agg.add("bldg-1", EventType.SECURITY, T0 + timedelta(minutes=20))
    result = agg.flush(T0 + timedelta(minutes=30))
    assert [(a.window_start.minute, a.counts, a.suppressed) for a in result] == [
        (0, {"security": 2}, 0),
        (15, {}, 1),
    ]


@pytest.mark.parametrize(
    "kwargs", [{"window": timedelta(0)}, {"min_group_size": 0}], ids=["window", "group"]
)
def test_nonsense_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StatisticsAggregator(**kwargs)  # type: ignore[arg-type]


def test_message_names_rule_and_carries_no_identity(policy: Policy) -> None:
    agg = StatisticsAggregator()
    _add(agg, "bldg-1", EventType.VISITOR, 6)
    _add(agg, "bldg-1", EventType.UNLOCK_MODE, 6)
    (aggregate,) = agg.flush(T0 + timedelta(hours=2))
    message = aggregate.message(
        policy=policy, gateway_id="gw-1", decision_id=uuid.uuid4(), now=T0 + timedelta(hours=2)
    )
    assert aggregate.topic == "statistics/v1/bldg-1"
    assert message.event_id is None
    assert message.purposes == ("statistics",)
    assert message.rule_id == "statistics-counts"
    assert message.categories == ("mobile_security_event", "unlock_mode_operation")
    assert set(message.event) == {
        "building_id",
        "window_start",
        "window_end",
        "counts",
        "suppressed",
        "min_group_size",
    }
    assert message.event["window_start"] == "2026-04-02T09:00:00Z"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bldg-1", "bldg-2"]),
            st.sampled_from(list(EventType)),
            st.integers(min_value=0, max_value=3 * 3600 - 1),
        ),
        max_size=120,
    ),
    st.integers(min_value=1, max_value=8),
)
def test_no_published_count_is_below_the_minimum_and_none_is_lost(
    adds: list[tuple[str, EventType, int]], min_group_size: int
) -> None:
    agg = StatisticsAggregator(min_group_size=min_group_size)
    for building, event_type, offset in adds:
        agg.add(building, event_type, T0 + timedelta(seconds=offset))
    result = agg.flush(T0 + timedelta(hours=3))
    expected: dict[tuple[str, datetime, str], int] = {}
    for building, event_type, offset in adds:
        key = (building, T0 + timedelta(hours=offset // 3600), event_type.value)
        expected[key] = expected.get(key, 0) + 1
    published = {(a.building_id, a.window_start, t): n for a in result for t, n in a.counts.items()}
    assert all(n >= min_group_size for n in published.values())
    assert published == {k: n for k, n in expected.items() if n >= min_group_size}
    hidden = sum(a.suppressed for a in result)
    assert hidden == sum(1 for n in expected.values() if n < min_group_size)


def test_restored_windows_are_counted_on_and_published_with_their_own_bounds() -> None:
    """A window a previous process left in the store, even of another length."""
    agg = StatisticsAggregator(window=timedelta(minutes=30), min_group_size=1)
    old = Window("bldg-1", T0, T0 + timedelta(hours=1))  # counted under hourly windows
    agg.restore([(old, "alarm", 3)], closed_before=T0)
    assert agg.add("bldg-1", EventType.ALARM, T0 + timedelta(minutes=40)) == Window(
        "bldg-1", T0 + timedelta(minutes=30), T0 + timedelta(hours=1)
    )
    assert agg.flush(T0 + timedelta(minutes=59)) == []
    first, second = agg.flush(T0 + timedelta(hours=1))
    assert (first.window, first.counts) == (old, {"alarm": 3})
    assert second.counts == {"alarm": 1}


def test_a_restored_closed_before_keeps_published_windows_closed() -> None:
    agg = StatisticsAggregator()
    agg.restore([], closed_before=T0 + timedelta(hours=1))
    assert agg.add("bldg-1", EventType.VISITOR, T0 + timedelta(minutes=59)) is None
    assert agg.late == 1
    assert agg.add("bldg-1", EventType.VISITOR, T0 + timedelta(hours=1)) is not None


def test_a_window_closes_only_after_the_delay() -> None:
    agg = StatisticsAggregator(delay=timedelta(seconds=30), min_group_size=1)
    agg.add("bldg-1", EventType.ALARM, T0)
    assert agg.flush(T0 + timedelta(hours=1, seconds=29)) == []
    # Still open: an event that was on its way at the end of the window counts.
    assert agg.add("bldg-1", EventType.ALARM, T0 + timedelta(minutes=59, seconds=59))
    [aggregate] = agg.flush(T0 + timedelta(hours=1, seconds=30))
    assert aggregate.counts == {"alarm": 2}


def test_a_closing_window_is_handed_back_until_acknowledged() -> None:
    agg = StatisticsAggregator(min_group_size=1)
    agg.add("bldg-1", EventType.ALARM, T0)
    [sending] = agg.flush(T0 + timedelta(hours=1))
    assert agg.flush(T0 + timedelta(hours=1)) == []  # being published: not twice at once
    agg.unsent(sending.window)  # the connection was lost
    [again] = agg.flush(T0 + timedelta(hours=2))
    assert again == sending and agg.closing == 1
    agg.published(again.window)
    assert agg.flush(T0 + timedelta(hours=3)) == [] and agg.closing == 0


def test_an_aggregates_id_depends_on_its_building_and_window_only() -> None:
    window = Window("bldg-1", T0, T0 + timedelta(hours=1))
    same = Window("bldg-1", T0.astimezone(timezone(timedelta(hours=9))), window.end)
    assert aggregate_id(window) == aggregate_id(same)
    assert aggregate_id(window) != aggregate_id(window._replace(building_id="bldg-2"))
    assert aggregate_id(window) != aggregate_id(window._replace(end=T0 + timedelta(hours=2)))
    assert aggregate_id(window).version == 5


def test_a_window_whose_every_count_is_hidden_names_the_rule_that_counted_it(
    policy: Policy,
) -> None:
    """Issue 14: an empty aggregate carried ``rule_id: statistics``, no rule of the policy."""
    agg = StatisticsAggregator(min_group_size=5)
    _add(agg, "bldg-1", EventType.ALARM, 2)
    _add(agg, "bldg-1", EventType.UNLOCK_MODE, 1)
    (aggregate,) = agg.flush(T0 + timedelta(hours=1))
    assert aggregate.counts == {} and aggregate.suppressed == 2
    message = aggregate.message(
        policy=policy, gateway_id="gw-1", decision_id=uuid.uuid4(), now=T0 + timedelta(hours=1)
    )
    assert message.rule_id == "statistics-counts"
    assert message.rule_id in {rule.id for rule in policy.rules}
    assert message.clause == "§3(2), §5(2)②"
    assert message.categories == ()  # it carries no count of any category
    assert message.event["counts"] == {}
