"""The demo's simulated clock: accelerated, yet every event inside the gateway's window.

The demo once started its simulated time ``duration x acceleration`` in the past, so a
30 s demo sent 61% stale events and "until Ctrl-C" sent future ones. These run the
demo's event source (the panels' schedule through ``SlidingClock``) for long simulated
spans and ask the gateway's own ingress whether it would take every event.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from intercom_gateway.bus import MemoryBroker
from intercom_gateway.core import ingress, topics
from intercom_gateway.core.models import Event
from intercom_gateway.core.registry import Registry, generate_registry, load_registry
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.clock import SlidingClock, window_for
from intercom_gateway.simulators.fleet import iter_events, run_fleet

ANCHOR = datetime(2026, 4, 1, 12, 0, 0, 123_000, tzinfo=UTC)
DEMO_ACCELERATION = 7200.0  # the demo's default


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(Settings().registry_path)  # the demo's registry


def _gateway_limits() -> ingress.Limits:
    settings = Settings()
    return ingress.Limits(
        max_age=timedelta(seconds=settings.max_event_age),
        max_skew=timedelta(seconds=settings.max_clock_skew),
    )


def _rejections(
    registry: Registry, *, acceleration: float, real_seconds: float, seed: int = 0
) -> tuple[int, list[str]]:
    """Events the demo's source sends in ``real_seconds``, and the ingress's refusals of
    them, checked at the wall time each is due."""
    limits = _gateway_limits()
    clock = SlidingClock(
        anchor=ANCHOR,
        acceleration=acceleration,
        window=window_for(limits.max_age.total_seconds()),
    )
    devices = ingress.DeviceIndex.from_registry(registry)
    end = ANCHOR + timedelta(seconds=real_seconds)
    sent, refused = 0, []
    events = iter_events(registry, seed=seed, start=clock.origin)
    for event in itertools.takewhile(lambda e: clock.due(e.occurred_at) <= end, events):
        now = clock.due(event.occurred_at)
        stamped = event.model_copy(update={"occurred_at": clock.stamp(event.occurred_at)})
        topic = topics.parse_panel_topic(
            topics.panel_events(stamped.building_id, stamped.device.id, stamped.type)
        )
        assert topic is not None
        sent += 1
        try:
            ingress.check_event(
                topic,
                stamped.model_dump_json().encode(),
                devices=devices,
                limits=limits,
                now=now,
            )
        except ingress.InputRejected as error:
            refused.append(error.reason.value)
    return sent, refused


def test_a_60_s_demo_sends_nothing_stale_or_future(registry: Registry) -> None:
    sent, refused = _rejections(registry, acceleration=DEMO_ACCELERATION, real_seconds=60)
    assert sent > 200  # 120 simulated hours of the sample fleet
    assert refused == []


@pytest.mark.parametrize("acceleration", [0.5, 1.0, 60.0, DEMO_ACCELERATION, 86_400.0])
def test_until_ctrl_c_stays_accepted_over_simulated_days(
    registry: Registry, acceleration: float
) -> None:
    # Several simulated days, or a few real days at the slow rates.
    real_seconds = (
        max(4 * 86_400 / acceleration, 3 * 86_400)
        if acceleration <= 1
        else (7 * 86_400 / acceleration)
    )
    sent, refused = _rejections(registry, acceleration=acceleration, real_seconds=real_seconds)
    assert sent > 0
    assert refused == []


@pytest.mark.parametrize("acceleration", [0.25, 1.0, 7.0, 3600.0, 1e6])
@pytest.mark.parametrize("max_age", [60.0, 3_600.0, 86_400.0, 7 * 86_400.0])
def test_every_stamp_lies_between_the_window_and_its_due_time(
    acceleration: float, max_age: float
) -> None:
    window = window_for(max_age)
    assert timedelta(0) < window < timedelta(seconds=max_age)
    clock = SlidingClock(anchor=ANCHOR, acceleration=acceleration, window=window)
    for step in range(0, 200_000, 997):
        simulated = clock.origin + timedelta(seconds=step * 37.3)
        due, stamp = clock.due(simulated), clock.stamp(simulated)
        assert due - window <= stamp < due, (step, simulated)


def test_simulated_time_moves_on_faster_than_the_wall_clock() -> None:
    clock = SlidingClock(anchor=ANCHOR, acceleration=3600, window=timedelta(hours=23))
    early, later = clock.origin + timedelta(hours=1), clock.origin + timedelta(hours=2)
    assert clock.stamp(later) - clock.stamp(early) == timedelta(hours=1)
    assert clock.due(later) - clock.due(early) == timedelta(seconds=1)


def test_the_clock_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="acceleration"):
        SlidingClock(anchor=ANCHOR, acceleration=0, window=timedelta(hours=1))
    with pytest.raises(ValueError, match="window"):
        SlidingClock(anchor=ANCHOR, acceleration=1, window=timedelta(0))


async def test_run_fleet_with_a_window_stamps_inside_it() -> None:
    """The shell: a fast run through many wraps (days of schedule, a one-hour window),
    every stamp at or before the wall clock and within the window."""
    fleet = generate_registry(buildings=1, dwellings=10)
    window = timedelta(hours=1)
    shown: list[Event] = []

    def keep(_: str, event: Event) -> None:
        assert event.occurred_at <= datetime.now(UTC)
        shown.append(event)

    before = datetime.now(UTC)
    await run_fleet(
        MemoryBroker().client(),
        fleet,
        seed=5,
        acceleration=1e6,
        max_events=300,
        window=window,
        on_event=keep,
    )
    assert len(shown) == 300
    assert all(e.occurred_at >= before - window for e in shown)
    # Simulated time stepped back by a window at least once (300 events are days).
    stamps = [e.occurred_at for e in shown]
    assert stamps != sorted(stamps)
