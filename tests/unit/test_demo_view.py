"""The demo's view: fits a small terminal, and tells deliberate bad input apart from
rejections of the simulated panels' events."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime

import pytest
from rich.console import Console

from intercom_gateway.bus import Message
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.qa.demo import View
from intercom_gateway.simulators.fleet import iter_events


def _view(width: int, height: int) -> tuple[View, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, force_terminal=True)
    return View(console, live=True), out


def _events(count: int) -> list[Event]:
    fleet = generate_registry(buildings=1, dwellings=3)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    return [e for _, e in zip(range(count), iter_events(fleet, start=start), strict=False)]


def _rejection(reason: str, event_id: str | None) -> Message:
    echoed = json.dumps({"event_id": event_id}) if event_id else None
    body = {"reason": reason, "detail": "-", "topic": "t", "payload": echoed}
    return Message(topics.rejected(reason), json.dumps(body).encode())


@pytest.mark.parametrize(("width", "height"), [(80, 24), (60, 12), (200, 50), (40, 8)])
def test_the_live_view_fits_the_terminal(width: int, height: int) -> None:
    view, out = _view(width, height)
    for event in _events(40):
        view.panel_sent(topics.panel_events(event.building_id, event.device.id, event.type), event)
        view.note(f"a note about {event.type} that is much longer than any small terminal is")
    view.console.print(view.render())
    lines = out.getvalue().splitlines()
    assert len(lines) <= height
    assert all(len(line) <= width for line in _plain(lines))


def _plain(lines: list[str]) -> list[str]:
    import re

    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]


def test_rejections_are_attributed_to_the_simulators_or_the_bad_input() -> None:
    view, _ = _view(80, 24)
    event = _events(1)[0]
    view.panel_sent("t", event)
    view.bad_input_sent("stale")
    view.destination(_rejection("stale", None))  # the deliberate one
    view.destination(_rejection("stale", str(event.event_id)))  # a simulated event
    view.destination(_rejection("future", str(uuid.uuid4())))  # nobody sent it on purpose
    assert view.rejected_on_purpose == {"stale": 1}
    assert view.rejected_by_reason == {"stale": 1, "future": 1}
