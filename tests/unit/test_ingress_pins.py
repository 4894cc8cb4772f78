"""The door checks at their edges (issue 14, mutation testing of ingress.py).

The limits the README promises (a topic of 256 characters and 8 levels, 16 user
properties, the payload's size and nesting) hold exactly at the limit and refuse one
past it; the nesting scan is held to depths counted by hand, not to itself.
"""

from __future__ import annotations

import pytest

from intercom_gateway.core.ingress import (
    InputRejected,
    Limits,
    check_properties,
    check_size,
    check_topic,
    json_depth,
)
from intercom_gateway.core.models import RejectReason
from intercom_gateway.core.topics import MAX_TOPIC_LENGTH, MAX_TOPIC_LEVELS, PanelTopic

LIMITS = Limits()
MOST, DEEPEST = LIMITS.max_bytes, LIMITS.max_depth


@pytest.mark.parametrize(
    ("payload", "depth"),
    [
        (b"", 0),
        (b"7", 0),
        (b"{}", 1),
        (b"[][][]", 1),
        (b"{}{}{}", 1),
        (b"[[],[[]]]", 3),
        (b'{"a":[1,{"b":[]}]}', 4),
        (b'"{[[{"', 0),  # brackets inside a string
        (b'{"a":"]]}}"}', 1),
        (rb'{"a":"\"{["}', 1),  # an escaped quote does not end the string
        (rb'{"a":"\\","b":[]}', 2),  # an escaped backslash does not escape the quote
        (rb'["\\\"[",[]]', 2),
        (b'["a"][[["b"]]]', 3),
    ],
)
def test_json_depth_counts_nesting_outside_strings(payload: bytes, depth: int) -> None:
    assert json_depth(payload) == depth


def _panel_topic(length: int) -> str:
    head, tail = "intercom/v1/b001/", "/events/alarm"
    return f"{head}{'p' * (length - len(head) - len(tail))}{tail}"


def test_a_topic_of_the_longest_length_passes_and_one_longer_is_refused() -> None:
    longest = _panel_topic(MAX_TOPIC_LENGTH)
    assert check_topic(longest) == PanelTopic("b001", "p" * (MAX_TOPIC_LENGTH - 30), "alarm")
    with pytest.raises(InputRejected) as refused:
        check_topic(_panel_topic(MAX_TOPIC_LENGTH + 1))
    assert refused.value.reason is RejectReason.BAD_TOPIC
    assert refused.value.detail.startswith(f"{MAX_TOPIC_LENGTH + 1:,} characters")


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("/".join(["x"] * MAX_TOPIC_LEVELS), "not a panel topic"),
        ("/".join(["x"] * (MAX_TOPIC_LEVELS + 1)), f"{MAX_TOPIC_LEVELS + 1} levels"),
        ("intercom/v1/b001/panel-1/events", "not a panel topic"),
        ("intercom/v1/b001/+/events/alarm", "not a panel topic"),
    ],
)
def test_a_topic_too_deep_or_not_a_panel_topic_is_refused(topic: str, detail: str) -> None:
    """The depth is checked before the topic is parsed (README, "checks at the door")."""
    with pytest.raises(InputRejected) as refused:
        check_topic(topic)
    assert refused.value.reason is RejectReason.BAD_TOPIC
    assert refused.value.detail.startswith(detail)


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("intercom/v1/b001/panel-1/events/visitor", PanelTopic("b001", "panel-1", "visitor")),
        ("intercom/v1/b001/panel-1/settings", PanelTopic("b001", "panel-1", None)),
    ],
)
def test_panel_topics_pass(topic: str, parsed: PanelTopic) -> None:
    assert check_topic(topic) == parsed


def test_user_properties_up_to_the_limit_pass_and_one_more_is_refused() -> None:
    most = tuple(("k", str(i)) for i in range(LIMITS.max_user_properties))
    check_properties(most, LIMITS)
    check_properties((), LIMITS)
    with pytest.raises(InputRejected) as refused:
        check_properties((*most, ("k", "one too many")), LIMITS)
    assert refused.value.reason is RejectReason.TOO_MANY_PROPERTIES


@pytest.mark.parametrize(
    ("largest", "too_large", "reason"),
    [
        pytest.param(
            b" " * LIMITS.max_bytes,
            b" " * (LIMITS.max_bytes + 1),
            RejectReason.OVERSIZED,
            id="size",
        ),
        pytest.param(
            b"[" * LIMITS.max_depth,
            b"[" * (LIMITS.max_depth + 1),
            RejectReason.TOO_DEEP,
            id="depth",
        ),
        pytest.param(
            b"[]" * (DEEPEST + 1) + b'"' + b"[" * DEEPEST + b'"',
            b"[" * DEEPEST + b'"]]"' + b"[",
            RejectReason.TOO_DEEP,
            id="depth-outside-strings",
        ),
        pytest.param(
            b"[" * DEEPEST + b"]" * DEEPEST + b"[]",  # more brackets than the limit, not deeper
            b"[" * (DEEPEST + 1) + b"]" * (DEEPEST + 1),
            RejectReason.TOO_DEEP,
            id="depth-counted-exactly",
        ),
    ],
)
def test_payload_size_and_nesting_at_their_limits(
    largest: bytes, too_large: bytes, reason: RejectReason
) -> None:
    check_size(largest, LIMITS)  # at the limit: no refusal
    with pytest.raises(InputRejected) as refused:
        check_size(too_large, LIMITS)
    assert refused.value.reason is reason
