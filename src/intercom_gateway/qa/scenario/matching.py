"""Whether what arrived matches what a scenario expects: pure functions, no I/O.

Every message the runner sees becomes an ``Observed``: its destination (decided by the
topic it arrived on, which is what a subscriber relies on), the part a scenario's field
paths refer to (the forwarded event, the statistics aggregate, the rejection, the ack),
and the purposes it carries, both in the envelope and as MQTT user properties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.qa.scenario.model import LedgerMatch, Match

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Sent:
    """What a named step published, so expectations can refer to it."""

    name: str
    topic: str
    payload: bytes
    ident: str | None  # the event id or settings change id, when there is one
    at: float  # monotonic seconds, when the broker acknowledged it


@dataclass(frozen=True, slots=True)
class Observed:
    destination: str
    topic: str
    content: dict[str, Any]
    purposes: tuple[str, ...] | None  # None where a destination has none (rejected, ack)
    property_purposes: tuple[str, ...]
    envelope: dict[str, Any]  # the whole payload: rule, categories, policy version...
    properties: tuple[tuple[str, str], ...]  # MQTT 5 user properties
    ident: str | None  # event id of a forwarded copy, change id of an ack
    arrived: float  # monotonic seconds


def destination_filters(
    partner_ids: Iterable[str], contractor_ids: Iterable[str] = ()
) -> dict[str, str]:
    """The topic filter of every destination a scenario can name."""
    # "#" in the event type's place: a destination's events and the images that go with
    # them, each a message of its own one level below (topics.image).
    filters = {
        "cloud": topics.cloud("+", "+", "#"),
        "group": topics.group("+", "+", "#"),
        "analytics": topics.analytics("+"),
        "statistics": topics.statistics("+"),
        "app": topics.app_filter(),  # §2(4): the Intercom app's lobby calls
        "rejected": topics.REJECTED_FILTER,
        "ack": topics.settings_ack("+", "+"),
    }
    filters |= {f"partner:{pid}": topics.partner_filter(pid) for pid in sorted(set(partner_ids))}
    # §5(1)①: a contractor's usage information (its acks come with no event in them).
    filters |= {
        f"contractor:{cid}": topics.contractor(cid, "+", "+", "+")
        for cid in sorted(set(contractor_ids))
    }
    return filters


def observe(message: Message, filters: Mapping[str, str], *, at: float) -> Observed | None:
    """Classify one message by its topic; None if it belongs to no destination."""
    destination = next((d for d, f in filters.items() if topics.matches(f, message.topic)), None)
    if destination is None:
        return None
    try:
        body = json.loads(message.payload)
    except ValueError:
        body = {"unparsable": message.payload.decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {"value": body}
    forwarded = destination not in {"rejected", "ack"}
    content = body.get("event") if forwarded else body
    ident = _text(body.get("event_id") if forwarded else body.get("change_id"))
    if message.topic.endswith(f"/{topics.CONSENT_NOTICE_LEVEL}"):
        # A consent notice (spec item 11) is its own content, from its settings change.
        forwarded, content, ident = False, body, _text(body.get("change_id"))
    return Observed(
        destination=destination,
        topic=message.topic,
        content=content if isinstance(content, dict) else {},
        purposes=tuple(body.get("purposes", ())) if forwarded else None,
        property_purposes=tuple(message.properties("purpose")),
        envelope=body,
        properties=message.user_properties,
        ident=ident,
        arrived=at,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def lookup(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    current: Any = document
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def mismatches(observed: Observed, match: Match, refs: Mapping[str, Sent]) -> list[str]:
    """Why ``observed`` does not match; empty when it does."""
    content = observed.content
    problems = _identity(observed, match, refs)
    problems += [f"no field {p}" for p in match.present if lookup(content, p) is _MISSING]
    problems += [f"has field {p}" for p in match.absent if lookup(content, p) is not _MISSING]
    problems += _values(content, match)
    problems += _purposes(observed, match)
    problems += _labels(observed, match)
    return problems


def _values(content: Mapping[str, Any], match: Match) -> list[str]:
    problems: list[str] = []
    for path, wanted in match.values.items():
        actual = lookup(content, path)
        if actual is _MISSING:
            problems.append(f"no field {path} (wanted {wanted!r})")
        elif actual != wanted:
            problems.append(f"{path} is {actual!r}, not {wanted!r}")
    for path, pattern in match.patterns.items():
        actual = lookup(content, path)
        if actual is _MISSING or not re.search(pattern, str(actual)):
            shown = "missing" if actual is _MISSING else repr(actual)
            problems.append(f"{path} is {shown}, which does not match /{pattern}/")
    return problems


def _labels(observed: Observed, match: Match) -> list[str]:
    """Rule, categories and policy version, in the envelope and the user properties."""
    problems: list[str] = []
    envelope, properties = observed.envelope, dict(observed.properties)
    for key, wanted in (("rule_id", match.rule), ("policy_version", match.policy_version)):
        if wanted is None:
            continue
        if envelope.get(key) != wanted:
            problems.append(f"{key} is {envelope.get(key)!r}, not {wanted!r}")
        elif properties.get(key) != wanted:
            problems.append(f"user property {key} is {properties.get(key)!r}, not {wanted!r}")
    if match.categories_include:
        have = set(envelope.get("categories", ()))
        labelled = {value for key, value in observed.properties if key == "category"}
        missing = sorted(set(match.categories_include) - (have & labelled))
        if missing:
            problems.append(f"categories (envelope and user properties) lack {missing}")
    return problems


def _identity(observed: Observed, match: Match, refs: Mapping[str, Sent]) -> list[str]:
    content = observed.content
    problems: list[str] = []
    for key, wanted in (
        ("type", match.type),
        ("building_id", match.building),
        ("dwelling_id", match.dwelling),
        ("reason", match.reason),
    ):
        if wanted is not None and content.get(key) != wanted:
            problems.append(f"{key} is {content.get(key)!r}, not {str(wanted)!r}")
    if match.event is not None and not _is_from(observed, refs[match.event]):
        problems.append(f"not from step {match.event}")
    return problems


def _is_from(observed: Observed, sent: Sent) -> bool:
    if observed.destination == "rejected":
        # A rejection names the topic (cut to its limit) and echoes the payload reduced
        # to its schema fields, or not at all (not JSON, too large, or the dwelling is not
        # registered): then the topic is all there is to go by.
        if observed.content.get("topic") != sent.topic[: topics.MAX_TOPIC_LENGTH]:
            return False
        quoted = observed.content.get("payload")
        if quoted is None:
            return True
        echoed, original = _json_object(str(quoted)), _json_object(sent.payload)
        return any(
            key in original and echoed.get(key) == original[key]
            for key in ("event_id", "change_id")
        )
    return sent.ident is not None and observed.ident == sent.ident


def _json_object(text: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _purposes(observed: Observed, match: Match) -> list[str]:
    if match.purposes is None and not (match.purposes_include or match.purposes_exclude):
        return []
    if observed.purposes is None:
        return [f"{observed.destination} messages carry no purposes"]
    problems: list[str] = []
    if set(observed.purposes) != set(observed.property_purposes):
        problems.append(
            f"envelope purposes {sorted(observed.purposes)} differ from the user properties "
            f"{sorted(observed.property_purposes)}"
        )
    have = set(observed.purposes)
    if match.purposes is not None and have != set(match.purposes):
        problems.append(f"purposes are {sorted(have)}, not {sorted(set(match.purposes))}")
    missing = sorted(set(match.purposes_include) - have)
    if missing:
        problems.append(f"purposes lack {missing}")
    extra = sorted(set(match.purposes_exclude) & have)
    if extra:
        problems.append(f"purposes include {extra}")
    return problems


def ledger_matches(row: Mapping[str, Any], match: LedgerMatch, refs: Mapping[str, Sent]) -> bool:
    """Whether one provision-ledger row fits ``match``."""
    plain = (
        ("building_id", match.building),
        ("dwelling_id", match.dwelling),
        ("recipient", match.recipient),
        ("event_type", match.event_type),
        ("third_party", match.third_party),
    )
    if any(wanted is not None and row.get(key) != wanted for key, wanted in plain):
        return False
    # A consent notice's row names the settings change that made it (its decision_id).
    if match.event is not None and refs[match.event].ident not in (
        row.get("event_id"),
        row.get("decision_id") if row.get("event_type") == topics.CONSENT_NOTICE_LEVEL else None,
    ):
        return False
    items, purposes = set(row.get("items", ())), set(row.get("purposes", ()))
    return (
        set(match.items_include) <= items
        and not set(match.items_exclude) & items
        and set(match.purposes_include) <= purposes
    )


# --- describing what was seen --------------------------------------------------------


def describe(observed: Observed, names: Mapping[str, str]) -> str:
    """One line: topic, kind, which step it came from, purposes and fields."""
    content = observed.content
    parts = [observed.topic]
    kind = content.get("type") or content.get("reason")
    if kind:
        parts.append(str(kind))
    if observed.ident is not None:
        parts.append(f"from {names.get(observed.ident, observed.ident[:8])}")
    if observed.purposes is not None:
        parts.append(f"purposes [{', '.join(observed.purposes)}]")
    parts.append(f"fields [{', '.join(sorted(_paths(content)))}]")
    return " ".join(parts)


def describe_row(row: Mapping[str, Any], names: Mapping[str, str]) -> str:
    event = names.get(str(row.get("event_id")), str(row.get("event_id"))[:8])
    return (
        f"{row.get('recipient')} {row.get('building_id')}/{row.get('dwelling_id')} "
        f"{row.get('event_type')} from {event} items [{', '.join(row.get('items', ()))}] "
        f"purposes [{', '.join(row.get('purposes', ()))}]"
    )


def _paths(document: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and path != "image":
            out += _paths(value, f"{path}.")
        else:
            out.append(path)
    return out


def summarise(values: Sequence[str], *, limit: int = 8) -> list[str]:
    """At most ``limit`` lines, and how many more there were."""
    shown = list(values[:limit])
    if len(values) > limit:
        shown.append(f"... and {len(values) - limit} more")
    return shown
