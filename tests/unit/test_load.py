"""The load generator's pure parts: percentiles, matching arrivals, entitlements, pacing."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.bus import Message
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa.load import write_histogram
from intercom_gateway.qa.tracking import (
    Entitlements,
    LatencySummary,
    LoadPlan,
    Tracker,
    destination_filters,
    due_offsets,
    event_id_of,
    passed,
    percentile,
)
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.panels import iter_events

SERVICES = ("concierge", "elder-watch", "parcel-unlock")


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([7.0], 99, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 90, 4.0),
        (list(map(float, range(1, 101))), 99, 99.0),
        (list(map(float, range(1, 101))), 100, 100.0),
        (list(map(float, range(1, 1001))), 90, 900.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_refuses_nonsense(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1), st.floats(0.01, 100))
def test_percentile_is_a_measured_value_and_monotone(values: list[float], q: float) -> None:
    ordered = sorted(values)
    found = percentile(ordered, q)
    assert found in ordered
    assert found is not None and found <= (percentile(ordered, min(q + 1, 100)) or 0)


def test_latency_summary_in_milliseconds() -> None:
    summary = LatencySummary.of([0.001 * i for i in range(1, 101)])
    assert summary.count == 100
    assert summary.p50 == pytest.approx(50.0)
    assert summary.p90 == pytest.approx(90.0)
    assert summary.p99 == pytest.approx(99.0)
    assert summary.max == pytest.approx(100.0)
    assert summary.mean == pytest.approx(50.5)
    assert LatencySummary.of([]) == LatencySummary(0, None, None, None, None, None)


def tracker() -> Tracker:
    return Tracker(destination_filters(SERVICES))


def test_topics_map_to_the_decisions_destination_names() -> None:
    t = tracker()
    assert t.destination_of("cloud/v1/b001/d0001/visitor") == "cloud"
    assert t.destination_of("group/v1/b001/d0001/visitor") == "group"
    assert t.destination_of("partners/elder-watch/v1/b001/d0001/alarm") == "partner:elder-watch"
    assert t.destination_of("analytics/v1/visitor") == "analytics"
    assert t.destination_of("statistics/v1/b001") is None
    assert t.destination_of("gateway/v1/rejected/stale") is None


def test_matching_counts_delivered_lost_duplicated_and_misdirected() -> None:
    t = tracker()
    t.expect("e1", seq=0, at=10.0, destinations=["cloud", "group", "analytics"])
    t.expect("e2", seq=1, at=11.0, destinations=["cloud", "partner:concierge"])
    t.arrived("cloud", "e1", at=10.004)
    t.arrived("cloud", "e1", at=10.009)  # the same copy again
    t.arrived("partner:elder-watch", "e1", at=10.005)  # not entitled
    t.arrived("analytics", None, at=10.006)
    t.arrived("cloud", "e2", at=11.002)
    t.arrived("partner:concierge", "e2", at=11.003)
    t.arrived("cloud", "someone-elses", at=12.0)

    assert list(t.lost()) == [("e1", "group", 0)]
    assert t.duplicates == {"cloud": 1}
    assert t.unexpected == {"partner:elder-watch": 1}
    assert t.foreign == 1
    assert t.analytics_expected == t.analytics_received == 1
    rows = t.per_destination()
    assert rows["cloud"]["expected"] == rows["cloud"]["delivered"] == 2
    assert rows["group"] == {
        "expected": 1,
        "delivered": 0,
        "lost": 1,
        "duplicates": 0,
        "unexpected": 0,
        "latency_ms": {
            "count": 0,
            "p50": None,
            "p90": None,
            "p99": None,
            "max": None,
            "mean": None,
        },
    }
    assert rows["cloud"]["latency_ms"]["max"] == pytest.approx(4.0)
    assert rows["partner:concierge"]["latency_ms"]["p50"] == pytest.approx(3.0)


def test_complete_only_after_sending_stopped_and_everything_arrived() -> None:
    done: list[bool] = []
    t = Tracker(destination_filters(SERVICES), on_complete=lambda: done.append(True))
    t.expect("e1", seq=0, at=0.0, destinations=["cloud", "analytics"])
    t.arrived("cloud", "e1", at=0.1)
    t.arrived("analytics", None, at=0.1)
    assert not t.complete and not done  # more may still be sent
    t.finish_sending()
    assert t.complete and done


def test_event_id_from_the_user_property_or_else_the_envelope() -> None:
    with_property = Message("cloud/v1/b/d/visitor", b"{}", user_properties=(("event_id", "a"),))
    assert event_id_of(with_property) == "a"
    envelope = json.dumps({"event_id": "b", "event": {}}).encode()
    assert event_id_of(Message("cloud/v1/b/d/visitor", envelope)) == "b"
    assert event_id_of(Message("analytics/v1/visitor", b'{"event_id": null}')) is None
    assert event_id_of(Message("analytics/v1/visitor", b"not json")) is None


@pytest.fixture(scope="module")
def registry() -> Registry:
    return generate_registry(buildings=2, dwellings=5, services=SERVICES)


@pytest.fixture(scope="module")
def entitlements(registry: Registry) -> Entitlements:
    settings = Settings()
    policy = load_policy(settings.policy_path)
    return Entitlements(registry, policy, load_partners(settings.partners_path, policy=policy))


def test_entitlements_follow_the_policy(registry: Registry, entitlements: Entitlements) -> None:
    start = datetime(2026, 4, 1, tzinfo=UTC)
    events = list(itertools.islice(iter_events(registry, seed=3, start=start), 400))
    for event in events:
        wanted = entitlements.destinations(event)
        assert "cloud" in wanted, event.type  # §1(4): every valid event of a registered home
        assert "statistics" not in wanted  # aggregated, never matched per event
        if event.type == "unlock_mode":
            assert not {"partner:concierge", "partner:elder-watch"} & set(wanted)  # §1(8)
        # An image is a message of its own, awaited apart; never to group or analytics.
        image = event.__dict__.get("image") is not None
        assert ("cloud/image" in wanted) is (image and event.type in {"visitor", "return_home"})
        assert not {"group/image", "analytics/image"} & set(wanted)
    kinds = {event.type for event in events}
    assert {"visitor", "return_home", "delivery_box", "unlock_mode"} <= kinds


def test_an_unknown_dwelling_is_entitled_to_nothing(entitlements: Entitlements) -> None:
    stranger = generate_registry(buildings=3, dwellings=1, services=SERVICES)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    event = next(e for e in iter_events(stranger, start=start) if e.building_id == "b003")
    assert entitlements.destinations(event) == []


def test_rate_pacing_spaces_events_evenly_and_stops(registry: Registry) -> None:
    events = iter_events(registry, start=datetime(2026, 4, 1, tzinfo=UTC))
    offsets = [o for o, _ in due_offsets(LoadPlan(rate=100, duration=None, events=50), events)]
    assert len(offsets) == 50
    assert offsets[:3] == [0.0, 0.01, 0.02]
    by_time = due_offsets(LoadPlan(rate=100, duration=0.5), events)
    assert len(list(by_time)) == 51  # offsets 0.00 .. 0.50


def test_acceleration_pacing_follows_simulated_time(registry: Registry) -> None:
    events = list(
        itertools.islice(iter_events(registry, start=datetime(2026, 4, 1, tzinfo=UTC)), 20)
    )
    plan = LoadPlan(rate=None, acceleration=3600, duration=None, events=20)
    paced = list(due_offsets(plan, events))
    first = events[0].occurred_at
    for offset, event in paced:
        assert offset == pytest.approx((event.occurred_at - first).total_seconds() / 3600)


@pytest.mark.parametrize(
    "options",
    [
        {"rate": None},
        {"rate": 10.0, "acceleration": 2.0},
        {"rate": 0.0},
        {"duration": None, "events": None},
        {"publish_window": 0},
    ],
)
def test_a_plan_must_pace_and_end(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LoadPlan(**options)  # type: ignore[arg-type]


def test_passed_needs_everything_once_and_nothing_else() -> None:
    good = {
        "lost": 0,
        "duplicates": 0,
        "unexpected": 0,
        "publish_failed": 0,
        "rejected": {},
        "analytics": {"expected": 3, "received": 3},
    }
    assert passed(good)
    for key, value in [("lost", 1), ("duplicates", 1), ("unexpected", 2), ("rejected", {"x": 1})]:
        assert not passed({**good, key: value})
    assert not passed({**good, "analytics": {"expected": 3, "received": 2}})


def test_histogram_is_a_png_even_without_samples(tmp_path: Path) -> None:
    for name, latencies in [("some", {"cloud": [0.002, 0.003, 0.010]}), ("none", {})]:
        path = write_histogram(tmp_path / f"{name}.png", latencies)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_image_copy_is_counted_apart_not_as_a_duplicate() -> None:
    t = Tracker(destination_filters(["concierge"]))
    t.expect("e1", seq=0, at=0.0, destinations=["cloud", "cloud/image", "partner:concierge"])
    assert t.destination_of("cloud/v1/b001/d0001/visitor") == "cloud"
    image = t.destination_of("cloud/v1/b001/d0001/visitor/image")
    assert image == "cloud/image"
    assert t.destination_of("partners/concierge/v1/b001/d0001/visitor/image") == (
        "partner:concierge/image"
    )
    t.arrived("cloud", "e1", at=1.0)
    t.arrived(image, "e1", at=1.5)
    assert not t.duplicates and t.outstanding == 1  # concierge's facts still awaited
    t.arrived("partner:concierge/image", "e1", at=2.0)  # an image concierge is not owed
    assert t.unexpected["partner:concierge/image"] == 1
