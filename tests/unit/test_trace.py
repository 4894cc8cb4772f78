"""W3C trace context (``core.trace``): which ``traceparent`` is taken, what every
identified copy carries, and that an analytics copy carries none (§5(5))."""

from __future__ import annotations

import pytest

from intercom_gateway.core.models import EventType
from intercom_gateway.core.plan import plan
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.trace import trace_properties, valid_traceparent
from tests.factories import decided

from .conftest import NOW
from .test_decision import consent, make_event

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_a_valid_traceparent_gives_its_trace_id_and_flags() -> None:
    assert valid_traceparent(f"00-{TRACE}-{PARENT}-01") == (TRACE, "01")
    assert valid_traceparent(f"00-{TRACE}-{PARENT}-00") == (TRACE, "00")


@pytest.mark.parametrize(
    "value",
    [
        f"01-{TRACE}-{PARENT}-01",  # another version
        f"ff-{TRACE}-{PARENT}-01",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper case
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short
        f"00-{TRACE}-{PARENT}-01-extra",
        f"00-{TRACE}-{PARENT}-1",
        f"00-{TRACE}-{PARENT}-0g",
        f" 00-{TRACE}-{PARENT}-01",
        "",
    ],
)
def test_anything_else_is_not_a_traceparent(value: str) -> None:
    assert valid_traceparent(value) is None


def _parts(properties: tuple[tuple[str, str], ...]) -> tuple[str, str, str]:
    [(name, value), *_] = properties
    assert name == "traceparent" and valid_traceparent(value) is not None
    _, trace_id, span_id, flags = value.split("-")
    return trace_id, span_id, flags


def test_an_inbound_trace_is_continued_with_a_span_of_the_gateways_own() -> None:
    inbound = (("x", "y"), ("traceparent", f"00-{TRACE}-{PARENT}-01"), ("tracestate", "a=1"))
    first, second = trace_properties(inbound), trace_properties(inbound)
    trace_id, span_id, flags = _parts(first)
    assert (trace_id, flags) == (TRACE, "01") and span_id != PARENT
    assert first[1:] == (("tracestate", "a=1"),)
    assert _parts(second)[1] != span_id  # a new span per event


@pytest.mark.parametrize(
    "inbound",
    [
        (),
        (("traceparent", "garbage"), ("tracestate", "a=1")),
        (("traceparent", f"00-{TRACE}-{PARENT}-01"), ("traceparent", f"00-{TRACE}-{PARENT}-01")),
    ],
)
def test_without_one_valid_traceparent_a_new_trace_is_started(
    inbound: tuple[tuple[str, str], ...],
) -> None:
    properties = trace_properties(inbound)
    trace_id, _span_id, flags = _parts(properties)
    assert trace_id != TRACE and flags == "00"
    assert len(properties) == 1  # its tracestate, if any, is dropped with it


def test_tracestates_are_joined_and_a_long_one_is_dropped() -> None:
    parent = ("traceparent", f"00-{TRACE}-{PARENT}-01")
    joined = trace_properties((parent, ("tracestate", "a=1"), ("tracestate", "b=2")))
    assert joined[1:] == (("tracestate", "a=1,b=2"),)
    assert trace_properties((parent, ("tracestate", "a=" + "x" * 600)))[1:] == ()


def test_every_identified_copy_carries_the_trace_and_an_analytics_copy_none(
    policy: Policy, partners: PartnerRegistry
) -> None:
    event = make_event(EventType.VISITOR, image=True)
    decision = decided(event, consent(policy), policy, partners, now=NOW)
    trace = trace_properties((("traceparent", f"00-{TRACE}-{PARENT}-01"),))
    planned = plan(decision, occurred_at=event.occurred_at, now=NOW, gateway_id="gw", trace=trace)
    untraced = plan(decision, occurred_at=event.occurred_at, now=NOW, gateway_id="gw")
    assert len(planned.publications) >= 3
    for traced, plain in zip(planned.publications, untraced.publications, strict=True):
        # Appended to the properties the copy has anyway; the payload is unchanged.
        assert list(traced.properties) == [*plain.properties, *trace]
        assert traced.payload == plain.payload
    assert planned.analytics is not None
    assert TRACE not in repr(planned.analytics)
