"""The filters of whole output trees (core.topics): each covers its tree's event and
image topics and nothing of another tree."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from intercom_gateway.core import topics

TREES: dict[str, tuple[Callable[[], str], list[str]]] = {
    "cloud": (topics.cloud_filter, [topics.cloud("b1", "d1", "visitor")]),
    "group": (topics.group_filter, [topics.group("b1", "d1", "visitor")]),
    "partners": (topics.partners_filter, [topics.partner("p1", "b1", "d1", "visitor")]),
    "analytics": (topics.analytics_filter, [topics.analytics("visitor")]),
    "statistics": (topics.statistics_filter, [topics.statistics("b1")]),
    "gateway": (topics.gateway_filter, [topics.STATUS, topics.METRICS, topics.DEADLETTER]),
}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_a_tree_filter_covers_its_topics_and_their_images(tree: str) -> None:
    make, own = TREES[tree]
    for topic in own:
        assert topics.matches(make(), topic)
        assert topics.matches(make(), topics.image(topic))


@pytest.mark.parametrize("tree", sorted(TREES))
def test_a_tree_filter_covers_no_other_tree(tree: str) -> None:
    make, _ = TREES[tree]
    others = [t for name, (_, ts) in TREES.items() if name != tree for t in ts]
    assert not [t for t in others if topics.matches(make(), t)]
    assert not topics.matches(make(), topics.panel_events("b1", "dev1", "visitor"))


def test_panel_side_filters() -> None:
    assert topics.matches(topics.settings_ack_filter(), topics.settings_ack("b1", "p1"))
    assert not topics.matches(topics.settings_ack_filter(), topics.panel_settings("b1", "p1"))
    own = topics.device_events_filter("b1", "dev1")
    assert topics.matches(own, topics.panel_events("b1", "dev1", "alarm"))
    assert not topics.matches(own, topics.panel_events("b1", "dev2", "alarm"))


def test_is_rejected() -> None:
    assert topics.is_rejected(topics.rejected("stale"))
    assert not topics.is_rejected(topics.STATUS)
