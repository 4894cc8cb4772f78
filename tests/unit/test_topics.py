"""The topic grammar (topics.py): what it builds, what it parses, how it matches, and that
the core imports no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.core import topics

LEVEL = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,15}\Z")


@given(LEVEL, LEVEL, LEVEL)
def test_every_panel_topic_it_builds_parses_back(building: str, device: str, kind: str) -> None:
    event = topics.parse_panel_topic(topics.panel_events(building, device, kind))
    assert event == topics.PanelTopic(building, device, kind) and not event.is_settings
    settings = topics.parse_panel_topic(topics.panel_settings(building, device))
    assert settings == topics.PanelTopic(building, device, None) and settings.is_settings
    assert topics.matches(topics.PANEL_EVENTS_FILTER, topics.panel_events(building, device, kind))
    assert topics.matches(topics.RECEIPTS_FILTER, topics.receipts(building, device))


@pytest.mark.parametrize(
    "topic",
    [
        "intercom/v1/b001/panel/events",
        "intercom/v1/b001/panel/events/visitor/extra",
        "intercom/v1/b001/panel/settings/ack",
        "intercom/v1/b001/panel/receipts",
        "intercom/v2/b001/panel/events/visitor",
        "intercom/v1/+/panel/events/visitor",
        "intercom/v1/b001/#/events/visitor",
        "intercom/v1/$sys/panel/events/visitor",
        "intercom/v1//panel/events/visitor",
        "cloud/v1/b001/d0001/visitor",
        "",
    ],
)
def test_what_is_not_a_panel_topic_parses_to_none(topic: str) -> None:
    assert topics.parse_panel_topic(topic) is None


@pytest.mark.parametrize(
    ("filter_", "topic", "matched"),
    [
        ("cloud/#", "cloud/v1/b001/d0001/visitor", True),
        ("cloud/#", "cloud", True),
        ("cloud/+/b001/+/visitor", "cloud/v1/b001/d0001/visitor", True),
        ("cloud/+/b001/+/visitor", "cloud/v1/b001/d0001/visitor/image", False),
        ("cloud/v1/+/+/+", "cloud/v1/b001/d0001", False),
        ("partners/concierge/#", "partners/elder-watch/v1/b001/d0001/alarm", False),
        ("#", "$SYS/broker/uptime", False),
        ("+/v1/status", "gateway/v1/status", True),
        ("$share/g/intercom/v1/+/+/settings", "intercom/v1/b001/p/settings", True),
        ("gateway/v1/status", "gateway/v1/status", True),
        ("gateway/v1/status", "gateway/v1/status/x", False),
    ],
)
def test_matches_follows_mqtt_wildcards(filter_: str, topic: str, matched: bool) -> None:
    assert topics.matches(filter_, topic) is matched


def test_an_image_lives_one_level_below_its_event() -> None:
    event = topics.cloud("b001", "d0001", "visitor")
    assert topics.image(event) == f"{event}/image"
    assert topics.is_image(topics.image(event)) and not topics.is_image(event)
    assert topics.matches("cloud/#", topics.image(event))


def test_the_limits_at_the_door_hold_every_topic_the_grammar_makes() -> None:
    longest = topics.image(topics.partner("p" * 48, "b" * 48, "d" * 48, "device_failure"))
    assert len(longest) <= topics.MAX_TOPIC_LENGTH
    assert longest.count("/") + 1 <= topics.MAX_TOPIC_LEVELS


CORE = (
    *("models", "topics", "policy", "consent", "ingress", "tags", "rejections"),
    *("outcomes", "gates", "router", "decide", "encoding"),
)
IO = {"asyncio", "aiosqlite", "paho", "sqlite3", "socket"}
SHELL = {"bus", "store", "gateway", "mqtt5", "ledger", "broker", "cli", "api", "bus_paho"}


@pytest.mark.parametrize("module", CORE)
def test_the_pure_core_imports_no_io_and_no_shell(module: str) -> None:
    """style.md: the rules live in plain synchronous functions; no asyncio, SQLite or MQTT."""
    source = Path(topics.__file__).with_name(f"{module}.py").read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    ours = {name.split(".")[1] for name in imported if name.startswith("intercom_gateway.")}
    assert not roots & IO, f"{module} imports {sorted(roots & IO)}"
    assert not ours & SHELL, f"{module} imports the shell: {sorted(ours & SHELL)}"
