"""W3C trace context (``traceparent``, ``tracestate``) carried from a panel's event onto
the copies it causes, so that a partner can stitch its trace to the event's.

A panel may send a ``traceparent`` MQTT 5 user property with its event. A valid one
(version ``00``, a 32-hex trace id and a 16-hex parent id, neither all zeros, 2-hex
flags; lower-case, as the W3C Trace Context spec writes them) gives the event its
trace id and flags; an invalid one is treated as absent, never as a reason to reject
the event, and then, as when none came, the gateway starts a trace of its own.

The gateway's handling of one event is one span: the decision and every copy it
publishes. So every identified copy of an event (cloud, group, partners, unlock-mode
service) carries the same ``traceparent``: the event's trace id, the gateway's span id
for that event (new per event, random) as parent id, and the inbound flags (``00``
when the gateway started the trace and records no trace data itself; with the
OpenTelemetry export on, ``gateway/otel.py`` builds the same properties from these
functions with ``01``, as it exports that span). A ``tracestate`` that came with a
valid ``traceparent`` passes through unchanged.

De-identified analytics copies (§5(5)) and statistics aggregates carry none: a trace
id would join an analytics copy to the identified copies of its event, which is what
their held, shuffled release per window is there to prevent.
"""

from __future__ import annotations

import random
import re

__all__ = [
    "MAX_TRACESTATE",
    "TRACEPARENT",
    "TRACESTATE",
    "copy_properties",
    "inbound_context",
    "new_span_id",
    "new_trace_id",
    "trace_properties",
    "valid_traceparent",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The W3C spec lets a vendor drop a tracestate longer than 512 characters.
MAX_TRACESTATE = 512

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_STARTED_FLAGS = "00"  # not sampled: the gateway records no trace data of its own

# Span and trace ids need to be unique, not secret: the module's generator is enough.
_random = random.Random()


def valid_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, flags) of a valid version-00 ``traceparent``; None if it is not one."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    trace_id, parent_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, flags


def inbound_context(
    inbound: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str, str] | None, str]:
    """The panel's trace context: ((trace id, parent id, flags) of its one valid
    ``traceparent``, or None; its ``tracestate``, joined, "" when none or too long)."""
    given: list[str] = []
    states: list[str] = []
    for name, value in inbound:
        if name == TRACEPARENT:
            given.append(value)
        elif name == TRACESTATE:
            states.append(value)
    # Two traceparents contradict each other: neither is taken (W3C §3.2).
    match = _TRACEPARENT.fullmatch(given[0]) if len(given) == 1 else None
    if match is None:
        return None, ""
    trace_id, parent_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None, ""
    # Several tracestate properties are one list, as several headers are (W3C §3.3.1.1).
    state = ",".join(states)
    return (trace_id, parent_id, flags), state if len(state) <= MAX_TRACESTATE else ""


def new_trace_id() -> str:
    return f"{_random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_random.getrandbits(64) or 1:016x}"


def copy_properties(
    trace_id: str, span_id: str, flags: str, state: str = ""
) -> tuple[tuple[str, str], ...]:
    """The user properties every identified copy of an event carries."""
    traceparent = (TRACEPARENT, f"00-{trace_id}-{span_id}-{flags}")
    return (traceparent, (TRACESTATE, state)) if state else (traceparent,)


def trace_properties(inbound: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The trace context user properties of an event's identified copies.

    ``inbound``: the panel message's user properties. A new span id per event; the
    inbound trace id and flags when its ``traceparent`` is valid (and then its
    ``tracestate``), else a new trace, not sampled (the gateway records no span; with
    the OpenTelemetry export on, ``gateway.otel.EventSpans.start`` is used instead).
    """
    parent, state = inbound_context(inbound)
    if parent is None:
        return copy_properties(new_trace_id(), new_span_id(), _STARTED_FLAGS)
    return copy_properties(parent[0], new_span_id(), parent[2], state)
