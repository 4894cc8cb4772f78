"""Shared fuzzing strategies and budgets (tests/unit/test_fuzz_ingress.py, the gateway-level
tests/component/test_fuzz_gateway.py and ``scripts/fuzz``; docs/fuzzing.md).

Inputs come from four sources, mixed: the JSON grammar of the event models (their own
JSON Schema, walked here), the valid fixtures and simulator events and the bad-input
samples (mutated field by field and byte by byte), hand-picked edge values (calendar
edges with offsets, huge and odd numbers, deep nesting, invalid UTF-8, lone
surrogates), and topics and MQTT 5 user properties around the limits at the door.

Budgets are hypothesis profiles: ``fuzz`` (the default, sized so the fuzz tests of the
normal suite take about a minute on a 2-core machine) and ``fuzz-long`` (``scripts/fuzz``).
``INTERCOM_FUZZ_PROFILE`` picks one; ``INTERCOM_FUZZ_EXAMPLES`` overrides the examples.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from intercom_gateway.core import topics
from intercom_gateway.core.models import EVENT_ADAPTER, EVENTS_BY_ROLE, EventType
from intercom_gateway.core.registry import Registry
from intercom_gateway.simulators import bad_input
from intercom_gateway.simulators.panels import iter_events
from tests.conftest import FIXTURES

# --- budgets -------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
}
settings.register_profile("fuzz", max_examples=600, **_COMMON)
settings.register_profile("fuzz-long", max_examples=3_000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("INTERCOM_FUZZ_PROFILE", "fuzz"))
_OVERRIDE = os.environ.get("INTERCOM_FUZZ_EXAMPLES")


def budget(share: float) -> settings:
    """The profile's settings with ``share`` of its examples (tests differ in cost)."""
    examples = int(_OVERRIDE) if _OVERRIDE else PROFILE.max_examples
    return settings(PROFILE, max_examples=max(10, round(examples * share)))


# --- an oracle of our own: nesting depth from the parsed value, not the gateway's scanner ---


def nesting(value: object) -> int:
    """Depth of arrays and objects in a decoded JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def payload_depth(payload: bytes) -> int:
    return nesting(json.loads(payload))


# --- edge values -----------------------------------------------------------------------------

MAX_SEQ = 2**63 - 1
# The instants the calendar cannot move past, with offsets that push them over the edge
# once converted to UTC (issue 13, item 1), and offsets no time zone uses.
CALENDAR_EDGES = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999-00:01",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1999-12-31T23:59:59+14:00",
    "3000-01-01T00:00:00-14:00",
    "2026-05-01T12:00:00+23:59",
    "2026-05-01T12:00:00-23:59",
    "2026-05-01T12:00:00+14:01",
    "2026-05-01T12:00:00+99:00",
    "2026-05-01T12:00:00",
    "2026-02-30T12:00:00Z",
    "2026-05-01T24:00:00Z",
    "2026-05-01T12:00:60Z",
    "+12026-05-01T12:00:00Z",
    "2026-05-01",
    "1777636800",
    "",
)
# As JSON text, so that values json.dumps cannot write (huge exponents, 4,000 digits) appear.
NUMBER_EDGES = (
    "-1",
    "0",
    "-0",
    str(MAX_SEQ),
    str(MAX_SEQ + 1),
    str(2**64),
    "1" + "0" * 30,
    "9" * 4_000,
    "9" * 4_301,  # past CPython's int-to-text limit
    "-" + "9" * 4_000,
    "1.0",
    "1e3",
    "1e308",
    "1e400",
    "-1e400",
    "0.0000001",
    "NaN",
    "Infinity",
    "true",
    "null",
    '"1"',
    "[]",
    "{}",
)
# Strings that are valid JSON but awkward further on: escapes, lone surrogates, NUL,
# right-to-left marks, and long text.
STRING_EDGES = (
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"\\u202e\\u200f"',
    '"日本語のキー"',
    '"\U0001f511"',
    '"' + "x" * 5_000 + '"',
    '"' + "\\\\" * 300 + '"',
    '"' + "[" * 40 + '"',
)
INVALID_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80")


# --- the JSON grammar of the event models -----------------------------------------------------


def _from_schema(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        return st.deferred(lambda: _from_schema(defs[node["$ref"].rsplit("/", 1)[1]], defs))
    for key in ("oneOf", "anyOf"):
        if key in node:
            return st.one_of([_from_schema(option, defs) for option in node[key]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        # A constant (the event's type, the schema version) is always written: panels do.
        constant = {k for k, v in properties.items() if "const" in v}
        required = set(node.get("required", ())) | constant
        return st.fixed_dictionaries(
            {k: _from_schema(v, defs) for k, v in properties.items() if k in required},
            optional={k: _from_schema(v, defs) for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        return st.lists(_from_schema(node.get("items", {}), defs), max_size=3)
    if kind == "integer":
        low = node.get("minimum", node.get("exclusiveMinimum", -(2**63) - 1) + 1)
        return st.integers(low, node.get("maximum", MAX_SEQ))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "string":
        if node.get("format") == "uuid":
            return st.uuids().map(str)
        if node.get("format") == "date-time":
            return st.datetimes(
                datetime(2000, 1, 1), datetime(2999, 12, 31), timezones=OFFSETS
            ).map(datetime.isoformat)
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True)
        return st.text(max_size=node.get("maxLength", 40))
    return JSON_VALUES


OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=4,
)


@cache
def grammar_events() -> st.SearchStrategy[dict[str, Any]]:
    """Documents of the event union, as its JSON Schema describes them (ids unregistered)."""
    schema = EVENT_ADAPTER.json_schema()
    return _from_schema(schema, schema.get("$defs", {}))


# --- the seed corpus: valid fixtures, simulator events, bad-input samples ---------------------


def fixture_documents() -> list[dict[str, Any]]:
    folder = FIXTURES / "events" / "valid"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def simulator_documents(
    registry: Registry, *, now: datetime, count: int = 40
) -> list[dict[str, Any]]:
    events: Iterator[Any] = iter_events(registry, seed=13, start=now - timedelta(hours=1))
    return [next(events).model_dump(mode="json") for _ in range(count)]


def sample_payloads(registry: Registry, *, now: datetime) -> list[tuple[str, bytes]]:
    return [(s.topic, s.payload) for s in bad_input.all_samples(registry, now=now, seed=5)]


def corpus(registry: Registry, *, now: datetime) -> list[dict[str, Any]]:
    """Every seed document: fixtures, simulator events, and the parseable bad-input samples."""
    found = fixture_documents() + simulator_documents(registry, now=now)
    for _, payload in sample_payloads(registry, now=now):
        try:
            found.append(json.loads(payload))
        except ValueError:
            continue
    return [d for d in found if isinstance(d, dict)]


def documents(
    registry: Registry, *, now: datetime, max_age: timedelta, max_skew: timedelta
) -> st.SearchStrategy[dict[str, Any]]:
    """Documents of the corpus or of the grammar, mostly tied to a registered device, its
    dwelling and the time window, so that they get past the registry checks."""
    devices = sorted(registry.devices(), key=lambda bd: bd[1].id)
    homes = {
        b.id: sorted(d.id for b2, d in registry.dwellings() if b2.id == b.id) for b, _ in devices
    }

    @st.composite
    def anchored(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
        if not draw(st.sampled_from([True, True, True, True, False])):
            return data  # as drawn: one in five
        # A device that may emit the document's kind, so that its fields still fit.
        fitting = [(b, d) for b, d in devices if data.get("type") in EVENTS_BY_ROLE[d.role]]
        building, device = draw(st.sampled_from(fitting or devices))
        kinds = sorted(t.value for t in EVENTS_BY_ROLE[device.role])
        kind = data.get("type") if data.get("type") in kinds else draw(st.sampled_from(kinds))
        dwelling = device.dwelling or draw(st.sampled_from(homes[building.id]))
        age = draw(st.timedeltas(-max_skew, max_age))
        return data | {
            "building_id": building.id,
            "dwelling_id": dwelling,
            "device": {"id": device.id, "role": device.role.value},
            "type": kind,
            "occurred_at": (now - age).astimezone(draw(OFFSETS)).isoformat(),
        }

    seeds = st.sampled_from(corpus(registry, now=now)) | grammar_events()
    return seeds.flatmap(anchored)


@st.composite
def payload_variant(draw: st.DrawFn, data: dict[str, Any], seeds: list[dict[str, Any]]) -> bytes:
    """The document as it is, or with an edge value, nesting around the limit or byte damage."""
    kind = draw(st.sampled_from(["plain", "field", "field", "nested", "bytes", "bytes"]))
    if kind == "field":
        return draw(field_edge(data))
    if kind == "nested":
        return draw(nested(data))
    if kind == "bytes":
        other = json.dumps(draw(st.sampled_from(seeds))).encode()
        return draw(byte_mutation(json.dumps(data).encode(), other))
    return json.dumps(data).encode()


# --- mutations -------------------------------------------------------------------------------

_FIELD_EDGES = {
    "occurred_at": st.sampled_from(CALENDAR_EDGES).map(json.dumps),
    "seq": st.sampled_from(NUMBER_EDGES),
}
EDGE_TOKEN = (
    st.sampled_from(NUMBER_EDGES)
    | st.sampled_from(STRING_EDGES)
    | st.sampled_from([json.dumps(t) for t in CALENDAR_EDGES])
)
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null')


@st.composite
def field_edge(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """The document with one field (often seq or occurred_at) set to an edge value, as text."""
    keys = sorted(document)
    key = draw(st.sampled_from(["occurred_at", "seq", *keys]))
    token = draw(_FIELD_EDGES.get(key, EDGE_TOKEN))
    body = {k: v for k, v in document.items() if k != key}
    text = json.dumps(body)
    inner = text[1:-1]
    joined = f"{json.dumps(key)}: {token}" + (f", {inner}" if inner else "")
    return ("{" + joined + "}").encode()


@st.composite
def nested(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """Arrays and objects nested around the limit, in a field or around the whole event."""
    depth = draw(st.sampled_from([15, 16, 17, 32, 33, 64, 1_000, 5_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]))
    text = json.dumps(document)
    if draw(st.booleans()):
        inner = opener * depth + "0" + closer * depth
        return (text[:-1] + f', "extra": {inner}}}').encode()
    return (opener * depth + text + closer * depth).encode()


@st.composite
def byte_mutation(draw: st.DrawFn, payload: bytes, other: bytes) -> bytes:
    """Byte-level damage of a well-formed payload: the kinds a broken panel produces."""
    kind = draw(
        st.sampled_from(["flip", "insert", "utf8", "delete", "splice", "token", "truncate"])
    )
    at = draw(st.integers(0, len(payload)))
    if kind == "flip" and payload:
        at = min(at, len(payload) - 1)
        return payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1 :]
    if kind == "insert":
        return payload[:at] + draw(st.binary(min_size=1, max_size=8)) + payload[at:]
    if kind == "utf8":
        return payload[:at] + draw(st.sampled_from(INVALID_UTF8)) + payload[at:]
    if kind == "delete":
        return payload[:at] + payload[at + draw(st.integers(1, 16)) :]
    if kind == "splice":
        return payload[:at] + other[draw(st.integers(0, len(other))) :]
    if kind == "token":
        tokens = list(_TOKEN.finditer(payload))
        if tokens:
            match = draw(st.sampled_from(tokens))
            token = draw(EDGE_TOKEN).encode()
            return payload[: match.start()] + token + payload[match.end() :]
    return payload[:at]


# --- topics and user properties ---------------------------------------------------------------

_LEVEL_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00/"), max_size=12
)


@st.composite
def topic_texts(draw: st.DrawFn, registry: Registry) -> str:
    """Panel topics and near misses: long and empty levels, too many levels, wildcards,
    ``$``, unicode."""
    building, device = draw(st.sampled_from([(b.id, d.id) for b, d in registry.devices()]))
    event_type = draw(st.sampled_from([t.value for t in EventType]))
    levels = ["intercom", "v1", building, device, "events", event_type]
    kind = draw(
        st.sampled_from(
            ["valid", "settings", "long", "many", "wildcard", "dollar", "unicode", "empty"]
        )
    )
    if kind == "settings":
        return topics.panel_settings(building, device)
    at = draw(st.integers(2, len(levels) - 1))
    if kind == "long":
        levels[at] = levels[at] + "x" * draw(st.sampled_from([200, 251, 256, 300, 32_500]))
    elif kind == "many":
        levels += ["x"] * draw(st.integers(1, 12))
    elif kind == "wildcard":
        levels[at] = draw(st.sampled_from(["+", "#", "a+b", "a#"]))
    elif kind == "dollar":
        levels[at] = "$" + levels[at]
    elif kind == "unicode":
        levels[at] = draw(_LEVEL_TEXT.filter(bool))
    elif kind == "empty":
        levels.insert(at, "")
    return "/".join(levels)


PROPERTY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
USER_PROPERTIES = st.one_of(
    st.just(()),
    st.lists(st.tuples(PROPERTY_TEXT, PROPERTY_TEXT), max_size=4).map(tuple),
    st.integers(15, 40).map(lambda n: tuple(("k", str(i)) for i in range(n))),
)
