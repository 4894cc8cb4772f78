"""The store's configuration revisions (§10), on both backends: numbered in order,
append-only, the latest or any one read back as recorded."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from intercom_gateway.core.configuration import ConfigRecord
from intercom_gateway.core.policy import default_policy, sample_partners
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.store import Store

AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def record(actor: str, *, dwellings: int = 2, at: datetime = AT) -> ConfigRecord:
    registry = generate_registry(buildings=1, dwellings=dwellings)
    return ConfigRecord.of(default_policy(), sample_partners(), registry, actor=actor, at=at)


async def test_revisions_are_numbered_from_one_and_read_back_as_recorded(
    any_store: Store,
) -> None:
    assert await any_store.config() is None
    first, second = record("alice"), record("bob", dwellings=3, at=AT + timedelta(hours=1))
    assert await any_store.save_config(first) == 1
    assert await any_store.save_config(second) == 2
    latest = await any_store.config()
    assert latest is not None
    assert latest == replace(second, revision=2)
    earlier = await any_store.config(1)
    assert earlier is not None and earlier.actor == "alice" and earlier.digest == first.digest
    assert await any_store.config(3) is None
    assert len(list(earlier.configuration().registry.dwellings())) == 2


async def test_a_moment_in_another_zone_is_the_same_moment(any_store: Store) -> None:
    jst = AT.astimezone(timezone(timedelta(hours=9)))
    await any_store.save_config(record("carol", at=jst))
    found = await any_store.config()
    assert found is not None and found.at == AT


async def test_changes_recorded_at_once_get_distinct_numbers(any_store: Store) -> None:
    numbers = await asyncio.gather(*(any_store.save_config(record(f"op{i}")) for i in range(5)))
    assert sorted(numbers) == [1, 2, 3, 4, 5]
