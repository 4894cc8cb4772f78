"""The gateway's log: one JSON line per handled message, with the keys logs.py documents
(style.md: structlog, configured once, one line per processed event, JSON when not on a
terminal). The gateway on the in-memory bus with a real SQLite file."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from intercom_gateway import logs
from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message, settings_message

# The keys of each line, as logs.py documents them.
EVERY_LINE = {"event", "level", "timestamp"}
EVENT_LINE = EVERY_LINE | {"event_id", "type", "dwelling", "forwarded"}
SETTINGS_LINE = EVERY_LINE | {"dwelling", "kind", "applied", "detail", "notices"}
REJECTED_LINE = EVERY_LINE | {"reason", "topic", "detail"}


@pytest.fixture
def stderr_json(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Captured stderr (so not a terminal); structlog's configuration restored after."""
    saved = structlog.get_config()
    yield capsys
    structlog.configure(**saved)


def _configure(capture: pytest.CaptureFixture[str]) -> None:
    """logs.configure as the CLI calls it, within the test: pytest swaps stderr per phase."""
    logs.configure("INFO")  # json is left to logs.py: captured stderr is no terminal
    capture.readouterr()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, MemoryBus]]:
    settings = gateway_settings(tmp_path, log_events=True)
    assert settings.log_events  # the default
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = MemoryBroker().client("gateway")
        gateway._bus = bus  # handle() is driven directly, one message at a time
        yield gateway, bus


def _lines(capture: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out, err = capture.readouterr()
    assert out == ""
    return [json.loads(line) for line in err.splitlines()]


async def test_each_handled_event_is_one_json_line_with_its_decision(
    gateway: tuple[Gateway, MemoryBus], stderr_json: pytest.CaptureFixture[str]
) -> None:
    service, bus = gateway
    _configure(stderr_json)
    events = [
        event_dict("visitor", dwelling="d0001"),
        event_dict("alarm", dwelling="d0002"),
        event_dict("delivery_box", dwelling="d0003"),
    ]
    for mid, data in enumerate(events, start=1):
        await service.handle(bus, Message(*panel_message(data), qos=1, mid=mid))
        [line] = _lines(stderr_json)  # one line, written while the event is handled
        assert line.keys() == EVENT_LINE, line
        assert line["event"] == "event" and line["level"] == "info"
        assert line["event_id"] == data["event_id"] and line["type"] == data["type"]
        assert line["dwelling"] == f"{data['building_id']}/{data['dwelling_id']}"
        assert "cloud" in line["forwarded"] and all(isinstance(d, str) for d in line["forwarded"])
    await service.finish_in_flight()
    assert _lines(stderr_json) == []  # committing and acknowledging add no line
    assert [m.mid for m in bus.acked] == [1, 2, 3]


async def test_a_settings_change_and_a_rejected_message_are_one_line_each(
    gateway: tuple[Gateway, MemoryBus], stderr_json: pytest.CaptureFixture[str]
) -> None:
    service, bus = gateway
    _configure(stderr_json)
    topic, payload = settings_message({"kind": "initialise"}, dwelling="d0001")
    await service.handle(bus, Message(topic, payload, qos=1, mid=1))
    [settings] = _lines(stderr_json)
    assert settings.keys() == SETTINGS_LINE, settings
    assert (settings["event"], settings["applied"]) == ("settings", True)
    topic, _ = panel_message(event_dict("alarm", dwelling="d0002"))
    await service.handle(bus, Message(topic, b"{not json", qos=1, mid=2))
    [rejected] = _lines(stderr_json)
    assert rejected.keys() == REJECTED_LINE, rejected
    assert (rejected["event"], rejected["level"]) == ("rejected", "warning")
    assert rejected["reason"] == "malformed_json" and rejected["topic"] == topic
    await service.finish_in_flight()
    assert _lines(stderr_json) == []


async def test_log_events_off_leaves_handled_events_unlogged(
    gateway: tuple[Gateway, MemoryBus], stderr_json: pytest.CaptureFixture[str]
) -> None:
    service, bus = gateway
    _configure(stderr_json)
    service.settings = service.settings.model_copy(update={"log_events": False})
    await service.handle(
        bus, Message(*panel_message(event_dict("alarm", dwelling="d0001")), qos=1, mid=1)
    )
    await service.finish_in_flight()
    assert _lines(stderr_json) == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_lines_are_for_people(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = structlog.get_config()
    monkeypatch.setattr(sys, "stderr", Terminal())
    try:
        logs.configure("INFO")
        renderer = structlog.get_config()["processors"][-1]
    finally:
        structlog.configure(**saved)
    assert isinstance(renderer, structlog.dev.ConsoleRenderer)
