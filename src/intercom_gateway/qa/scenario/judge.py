"""What a scenario saw, and the verdict on each expectation.

``Collector`` keeps every message the runner's operator account receives, classified by
destination, with its arrival time. ``judge`` decides one expectation against it (or
against the provision ledger) and, when it fails, says what was expected and what was
actually seen on that destination, message by message, with why each did not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from intercom_gateway.bus import MqttBus
from intercom_gateway.qa.scenario import matching
from intercom_gateway.qa.scenario.matching import Observed, Sent
from intercom_gateway.qa.scenario.model import (
    Expectation,
    LedgerMatch,
    LedgerRowExists,
    Match,
    NoLedgerRow,
    NotReceives,
    Receives,
)
from intercom_gateway.store import Store

# A probe the runner sends to an external gateway comes back quoted in a rejection: a
# JSON object whose event id (not a UUID: a schema violation) carries the mark.
PROBE_MARK = "scenario-barrier "


def probe_payload(token: str) -> bytes:
    return json.dumps({"event_id": f"{PROBE_MARK}{token}"}).encode()


def _probe_token(observed: Observed) -> str | None:
    if observed.destination != "rejected" or not isinstance(observed.content.get("payload"), str):
        return None
    try:
        quoted = json.loads(observed.content["payload"])
    except ValueError:
        return None
    mark = quoted.get("event_id") if isinstance(quoted, dict) else None
    if isinstance(mark, str) and mark.startswith(PROBE_MARK):
        return mark.removeprefix(PROBE_MARK)
    return None


@dataclass
class ExpectationResult:
    summary: str
    passed: bool
    detail: list[str] = field(default_factory=list)
    index: int = 0
    line: int = 0  # of the expectation in its file


@dataclass(frozen=True)
class Evidence:
    """What the verdicts are based on."""

    collector: Collector
    refs: Mapping[str, Sent]
    store: Store | None

    @property
    def names(self) -> dict[str, str]:
        return {s.ident: s.name for s in self.refs.values() if s.ident is not None}

    def matching(self, destination: str, match: Match) -> list[Observed]:
        return [
            o
            for o in self.collector.at(destination)
            if not matching.mismatches(o, match, self.refs)
        ]

    def seen(self, destination: str, match: Match) -> list[str]:
        """Every message on ``destination``, and why it does not match."""
        observed = self.collector.at(destination)
        if not observed:
            return ["seen: nothing on that destination"]
        lines = [
            f"  {matching.describe(o, self.names)} -- "
            + ", ".join(matching.mismatches(o, match, self.refs))
            for o in observed
        ]
        return [f"seen: {len(observed)} other message(s):", *matching.summarise(lines)]


class Collector:
    """Everything the operator account receives, classified, as it arrives."""

    def __init__(self, filters: dict[str, str], *, sentinel: str) -> None:
        self.filters = filters
        self.sentinel = sentinel
        self.observed: list[Observed] = []
        self.tokens: set[str] = set()  # barrier tokens that came back
        self._changed = asyncio.Event()

    async def run(self, bus: MqttBus) -> None:
        async for message in bus.messages():
            if message.topic == self.sentinel:
                self.tokens.add(message.payload.decode())
            else:
                self._add(matching.observe(message, self.filters, at=time.monotonic()))
            self._changed.set()
            self._changed = asyncio.Event()

    def _add(self, observed: Observed | None) -> None:
        if observed is None:
            return
        token = _probe_token(observed)
        if token is not None:
            self.tokens.add(token)
        else:
            self.observed.append(observed)

    async def wait_until(self, ready: Callable[[], bool], *, deadline: float) -> bool:
        """Wait until ``ready()`` holds or the monotonic ``deadline`` passes."""
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def at(self, destination: str) -> list[Observed]:
        return [o for o in self.observed if o.destination == destination]


async def judge(
    expectation: Expectation, evidence: Evidence, *, steps_end: float, unsettled: str | None
) -> ExpectationResult:
    """``unsettled``: why the runner could not confirm the gateway handled every step."""
    if isinstance(expectation, Receives):
        return await _receives(expectation, evidence, steps_end)
    if isinstance(expectation, NotReceives):
        return _not_receives(expectation, evidence, unsettled)
    return await _ledger(expectation, evidence)


async def _receives(exp: Receives, evidence: Evidence, steps_end: float) -> ExpectationResult:
    ref = exp.match.event
    since = evidence.refs[ref].at if ref is not None else steps_end
    deadline = since + exp.within_ms / 1000
    wanted = exp.count or 1
    await evidence.collector.wait_until(
        lambda: len(evidence.matching(exp.receives, exp.match)) >= wanted, deadline=deadline
    )
    found = evidence.matching(exp.receives, exp.match)
    in_time = [o for o in found if o.arrived <= deadline]
    summary = f"{exp.receives} receives {describe_match(exp.match)}"
    if exp.count is not None:
        summary += f" exactly {exp.count} time(s)"
    passed = len(in_time) == exp.count if exp.count is not None else bool(in_time)
    if passed:
        latency = (in_time[0].arrived - since) * 1000
        return ExpectationResult(summary, True, [f"arrived after {latency:.0f} ms"])
    expected = f"expected: {summary} within {exp.within_ms} ms"
    if found and not in_time:
        late = (found[0].arrived - since) * 1000
        return ExpectationResult(summary, False, [expected, f"seen: it came after {late:.0f} ms"])
    if found:
        seen = f"seen: {len(in_time)} matching message(s)"
        return ExpectationResult(summary, False, [expected, seen])
    return ExpectationResult(summary, False, [expected, *evidence.seen(exp.receives, exp.match)])


def _not_receives(exp: NotReceives, evidence: Evidence, unsettled: str | None) -> ExpectationResult:
    summary = f"{exp.not_receives} does not receive {describe_match(exp.match)}"
    if unsettled is not None:
        return ExpectationResult(summary, False, [f"cannot tell: {unsettled}"])
    found = evidence.matching(exp.not_receives, exp.match)
    if not found:
        return ExpectationResult(summary, True)
    shown = [f"  {matching.describe(o, evidence.names)}" for o in found]
    lines = [f"expected: {summary}", f"seen: {len(found)} matching message(s):"]
    return ExpectationResult(summary, False, lines + matching.summarise(shown))


async def _ledger(exp: LedgerRowExists | NoLedgerRow, evidence: Evidence) -> ExpectationResult:
    wanted = isinstance(exp, LedgerRowExists)
    match = exp.ledger_row if isinstance(exp, LedgerRowExists) else exp.no_ledger_row
    summary = f"{'a' if wanted else 'no'} ledger row {_ledger_summary(match)}"
    if evidence.store is None:
        detail = ["cannot tell: the provision ledger is only readable in a self-contained run"]
        return ExpectationResult(summary, False, detail)
    rows = [r.as_dict() for r in await evidence.store.provisions()]
    fitting = [r for r in rows if matching.ledger_matches(r, match, evidence.refs)]
    if bool(fitting) == wanted:
        return ExpectationResult(summary, True)
    shown = [f"  {matching.describe_row(r, evidence.names)}" for r in (fitting or rows)]
    what = "matching row(s)" if fitting else "row(s) in the ledger, none matching"
    lines = [f"expected: {summary}", f"seen: {len(fitting or rows)} {what}"]
    return ExpectationResult(summary, False, lines + matching.summarise(shown))


def describe_match(match: Match) -> str:
    """The match in words, for summaries and failure messages."""
    parts = [str(match.type) if match.type else "a message"]
    place = "/".join(x for x in (match.building, match.dwelling) if x) or None
    for label, value in (
        ("from", match.event),
        ("of", place),
        ("reason", match.reason),
        ("rule", match.rule),
    ):
        if value is not None:
            parts.append(f"{label} {value}")
    if match.present:
        parts.append(f"with [{', '.join(match.present)}]")
    if match.absent:
        parts.append(f"without [{', '.join(match.absent)}]")
    parts += [f"{key}={value!r}" for key, value in match.values.items()]
    if match.purposes is not None:
        parts.append(f"purposes = {{{', '.join(sorted(match.purposes))}}}")
    if match.purposes_include:
        parts.append(f"purposes include {{{', '.join(match.purposes_include)}}}")
    if match.purposes_exclude:
        parts.append(f"purposes exclude {{{', '.join(match.purposes_exclude)}}}")
    return " ".join(parts)


def _ledger_summary(match: LedgerMatch) -> str:
    fields: dict[str, Any] = match.model_dump(exclude_defaults=True)
    return ", ".join(f"{key}={value}" for key, value in fields.items()) or "(any)"
