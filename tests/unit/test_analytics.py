"""Analytics copies held per window (§5(5), issue 14): nothing in a copy is finer than
its window, a batch comes out shuffled, and every copy is handed out once until the
broker acknowledges it."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from intercom_gateway.core.analytics import AnalyticsWindows, Draft, coarse_occurred_at, floor_to
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.encoding import user_properties
from intercom_gateway.core.models import Forwarded
from intercom_gateway.core.policy import PartnerRegistry, Policy
from tests.factories import decided, event

T0 = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def draft(policy: Policy, partners: PartnerRegistry, **fields: object) -> Draft:
    happened = event("alarm", occurred_at=T0 + timedelta(minutes=17, seconds=3), **fields)
    state = ConsentState(
        building_id="b001",
        dwelling_id="d0101",
        registered=True,
        accepted_policy_version=policy.version,
        revision=1,
    )
    decision = decided(happened, state, policy, partners, now=T0)
    return Draft.of(decision.outcome("analytics"), policy_version=policy.version, gateway_id="gw-1")


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (timedelta(seconds=2), "2026-04-02T09:00:00Z"),  # never finer than the hour
        (HOUR, "2026-04-02T09:00:00Z"),
        (6 * HOUR, "2026-04-02T06:00:00Z"),  # the window, when it is longer
        (24 * HOUR, "2026-04-02T00:00:00Z"),
    ],
)
def test_occurred_at_is_truncated_to_the_window_or_the_hour(
    window: timedelta, expected: str
) -> None:
    assert coarse_occurred_at("2026-04-02T09:17:03.25Z", window) == expected
    assert coarse_occurred_at("2026-04-02T18:17:03+09:00", window) == expected


def test_a_held_copy_carries_nothing_finer_than_its_window(
    policy: Policy, partners: PartnerRegistry
) -> None:
    windows = AnalyticsWindows(window=6 * HOUR)
    held = windows.hold(draft(policy, partners), T0 + timedelta(minutes=41, seconds=9))
    envelope = json.loads(held.payload)
    assert held.window_start == T0 - 3 * HOUR and held.window_end == T0 + 3 * HOUR
    assert envelope["forwarded_at"] == "2026-04-02T06:00:00Z"
    assert envelope["event"]["occurred_at"] == "2026-04-02T06:00:00Z"
    assert envelope["event_id"] is None
    assert envelope["decision_id"] == held.copy_id
    names = [name for name, _ in held.properties]
    assert "event_id" not in names
    assert ("decision_id", held.copy_id) in held.properties
    assert held.topic == "analytics/v1/alarm"


def test_every_copy_has_its_own_random_id(policy: Policy, partners: PartnerRegistry) -> None:
    windows = AnalyticsWindows(window=HOUR)
    copies = [windows.hold(draft(policy, partners), T0) for _ in range(50)]
    assert len({c.copy_id for c in copies}) == 50
    assert all(uuid.UUID(c.copy_id).version == 4 for c in copies)


def test_copies_are_due_only_once_their_window_has_ended(
    policy: Policy, partners: PartnerRegistry
) -> None:
    windows = AnalyticsWindows(window=HOUR)
    first = windows.hold(draft(policy, partners), T0 + timedelta(minutes=5))
    later = windows.hold(draft(policy, partners), T0 + HOUR + timedelta(minutes=5))
    assert windows.next_release(T0 + timedelta(minutes=5)) == T0 + HOUR
    assert not windows.any_due(T0 + HOUR - timedelta(microseconds=1))
    assert windows.due(T0 + HOUR - timedelta(microseconds=1)) == []
    assert windows.due(T0 + HOUR) == [first]
    assert windows.due(T0 + HOUR) == []  # being published: handed out once
    windows.published(first.copy_id)
    assert windows.held == 1 and windows.released == 1
    assert windows.due(T0 + 2 * HOUR) == [later]


def test_a_failed_publish_is_handed_back_and_a_refused_one_is_not(
    policy: Policy, partners: PartnerRegistry
) -> None:
    windows = AnalyticsWindows(window=HOUR)
    lost = windows.hold(draft(policy, partners), T0)
    refused = windows.hold(draft(policy, partners), T0)
    assert len(windows.due(T0 + HOUR)) == 2
    windows.unsent(lost.copy_id)
    windows.abandon(refused.copy_id)
    assert windows.due(T0 + HOUR) == [lost]
    assert windows.released == 0


def test_a_batch_is_shuffled(policy: Policy, partners: PartnerRegistry) -> None:
    windows = AnalyticsWindows(window=HOUR, rng=random.Random(7))
    held = [windows.hold(draft(policy, partners), T0) for _ in range(40)]
    released = windows.due(T0 + HOUR)
    assert sorted(c.copy_id for c in released) == sorted(c.copy_id for c in held)
    assert released != held  # 1 in 40! to be the same order by chance


def test_the_default_shuffle_is_the_operating_systems_csprng() -> None:
    windows = AnalyticsWindows(window=HOUR)
    assert isinstance(windows._rng, random.SystemRandom)


def test_restored_copies_keep_their_window(policy: Policy, partners: PartnerRegistry) -> None:
    old = AnalyticsWindows(window=HOUR).hold(draft(policy, partners), T0)
    windows = AnalyticsWindows(window=2 * HOUR)  # the setting changed across the restart
    windows.restore([old])
    assert windows.due(T0 + HOUR) == [old]


def test_a_window_must_have_a_length() -> None:
    with pytest.raises(ValueError, match="positive"):
        AnalyticsWindows(window=timedelta(0))


def test_windows_are_counted_from_the_epoch() -> None:
    assert floor_to(T0 + timedelta(minutes=59), HOUR) == T0
    assert floor_to(T0 + timedelta(seconds=3), timedelta(seconds=2)) == T0 + timedelta(seconds=2)


@pytest.mark.parametrize("event_type", ["alarm", "device_failure", "visitor", "security"])
def test_a_held_copy_is_a_valid_envelope_with_its_own_properties(
    policy: Policy, partners: PartnerRegistry, event_type: str
) -> None:
    """The bytes are built without a model: they are the model's bytes all the same."""
    happened = event(event_type, occurred_at=T0 + timedelta(minutes=3))
    state = ConsentState(
        building_id="b001",
        dwelling_id="d0101",
        registered=True,
        accepted_policy_version=policy.version,
        revision=1,
    )
    decision = decided(happened, state, policy, partners, now=T0)
    made = Draft.of(decision.outcome("analytics"), policy_version=policy.version, gateway_id="gw-1")
    held = AnalyticsWindows(window=HOUR).hold(made, T0 + timedelta(minutes=30))
    envelope = Forwarded.model_validate_json(held.payload)
    assert envelope.model_dump_json().encode() == held.payload
    assert held.properties == tuple(user_properties(envelope))
    assert envelope.forwarded_at == T0 and envelope.event_id is None
