"""Partitions: the building-to-partition map is pinned (it decides which MQTT session holds a
building's queued messages, so it must never drift), spreads evenly, and fair shares always
cover every partition exactly once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.core import topics
from intercom_gateway.core.partitions import (
    PARTITIONS,
    buildings_by_partition,
    client_id,
    fair_share,
    panel_filters,
    partition_of,
)

PINNED = [
    ("b1", 37),
    ("b01", 8),
    ("building-0001", 12),
    ("Musterstraße 12", 46),
    ("", 20),
]


@pytest.mark.parametrize(("building", "partition"), PINNED)
def test_partition_of_is_pinned(building: str, partition: int) -> None:
    assert partition_of(building) == partition


def test_partition_of_is_the_documented_hash() -> None:
    digest = hashlib.sha256(b"b001").digest()
    assert partition_of("b001", 64) == int.from_bytes(digest[:8], "big") % 64
    assert partition_of("b001", 7) == int.from_bytes(digest[:8], "big") % 7


def test_partition_of_does_not_depend_on_the_hash_seed() -> None:
    """``hash()`` of a str changes with PYTHONHASHSEED; ours must not."""
    code = "from intercom_gateway.core.partitions import partition_of; print(partition_of('b1'))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "37"


def test_a_thousand_buildings_spread_over_all_partitions() -> None:
    counts = Counter(partition_of(f"building-{i:04d}") for i in range(1000))
    mean = 1000 / PARTITIONS
    assert len(counts) == PARTITIONS
    # Binomial(1000, 1/64): sd ~3.9 around 15.6; these ids give 7..26.
    assert min(counts.values()) >= mean / 3
    assert max(counts.values()) <= 2 * mean


@given(st.text(max_size=40), st.integers(min_value=1, max_value=256))
def test_partition_of_is_in_range(building: str, partitions: int) -> None:
    assert 0 <= partition_of(building, partitions) < partitions


def test_partition_of_refuses_no_partitions() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_of("b1", 0)


@pytest.mark.parametrize("partitions", [1, 7, 64, 100])
@pytest.mark.parametrize("members", range(1, 71))
def test_fair_shares_add_up_and_differ_by_at_most_one(partitions: int, members: int) -> None:
    shares = [fair_share(partitions, members, rank) for rank in range(members)]
    assert sum(shares) == partitions
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)  # the extra ones go to the first ranks


def test_fair_share_examples() -> None:
    assert [fair_share(64, 3, r) for r in range(3)] == [22, 21, 21]
    assert [fair_share(64, 2, r) for r in range(2)] == [32, 32]
    assert fair_share(64, 1, 0) == 64
    assert [fair_share(2, 3, r) for r in range(3)] == [1, 1, 0]


@pytest.mark.parametrize(("members", "rank"), [(0, 0), (3, 3), (3, -1)])
def test_fair_share_refuses_impossible_ranks(members: int, rank: int) -> None:
    with pytest.raises(ValueError):
        fair_share(64, members, rank)


def test_client_id() -> None:
    assert client_id(7) == "gateway.p07"
    assert client_id(0) == "gateway.p00"
    assert client_id(63) == "gateway.p63"


def test_buildings_by_partition_groups_sorted_and_once() -> None:
    grouped = buildings_by_partition(["b01", "b1", "b1", "building-0001"])
    assert grouped == {8: ["b01"], 12: ["building-0001"], 37: ["b1"]}
    every = [f"b{i:03d}" for i in range(300)]
    grouped = buildings_by_partition(every)
    assert sorted(b for bs in grouped.values() for b in bs) == every
    assert all(partition_of(b) == p for p, bs in grouped.items() for b in bs)


def test_panel_filters_cover_exactly_the_buildings_panel_topics() -> None:
    filters = panel_filters(["b2", "b1"])
    assert filters == [
        "intercom/v1/b1/+/events/+",
        "intercom/v1/b1/+/settings",
        "contractors/+/v1/b1/distributions",
        "intercom/v1/b2/+/events/+",
        "intercom/v1/b2/+/settings",
        "contractors/+/v1/b2/distributions",
    ]

    def covered(topic: str) -> bool:
        return any(topics.matches(f, topic) for f in filters)

    assert covered(topics.panel_events("b1", "panel-b1-d0101", "doorbell"))
    assert covered(topics.panel_settings("b2", "panel-b2-d0101"))
    assert not covered(topics.panel_events("b3", "panel-b3-d0101", "doorbell"))
    assert not covered(topics.settings_ack("b1", "panel-b1-d0101"))
    assert not covered(topics.receipts("b1", "panel-b1-d0101"))
    # A contractor's distributions for the building, not its acks or usage information.
    assert covered(topics.contractor_distributions("kanri", "b1"))
    assert not covered(topics.contractor_distributions("kanri", "b3"))
    assert not covered(topics.contractor_distributions_ack("kanri", "b1"))
    assert not covered(topics.contractor("kanri", "b1", "d0101", "notice_read"))
    assert not covered(topics.panel_distributions("b1", "panel-b1-d0101"))
    # The same layout as the single-gateway filters, with the building filled in.
    assert all(
        topics.matches(general, topic)
        for general, topic in zip(
            [
                topics.PANEL_EVENTS_FILTER,
                topics.PANEL_SETTINGS_FILTER,
                topics.CONTRACTOR_DISTRIBUTIONS_FILTER,
            ]
            * 2,
            [f.replace("+", "x") for f in filters],
            strict=True,
        )
    )


@pytest.mark.parametrize("gateway_id", ["p07", "p63", "unknown"])
async def test_a_gateway_id_that_names_a_shared_session_is_refused(gateway_id: str) -> None:
    """Its own connection would take a partition's session over (same client id)."""
    import asyncio

    from intercom_gateway.errors import ConfigError
    from intercom_gateway.gateway.partitioned import run_partitioned
    from intercom_gateway.settings import Settings

    settings = Settings(gateway_id=gateway_id, store="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="is the name of a partition's session"):
        await run_partitioned(settings, stop=asyncio.Event())
