"""The topic grammar (topics.py): what it builds, what it parses, how it matches, and that
the core imports no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
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


@pytest.mark.parametrize(
    ("topic", "building"),
    [
        ("intercom/v1/b001/panel-b001-d0001/events/alarm", "b001"),
        ("intercom/v1/b001//events/alarm", "b001"),  # not a panel topic, still b001's
        ("intercom/v1//panel/settings", ""),
        ("intercom/v1/b001", None),
        ("cloud/v1/b001/d0001/alarm", None),
    ],
)
def test_the_building_level_is_read_whether_the_topic_parses_or_not(
    topic: str, building: str | None
) -> None:
    """What the unknown buildings' session tells its partitions' messages by: the
    level their filters (``panel_filters``) fix."""
    assert topics.panel_building(topic) == building


def test_an_image_lives_one_level_below_its_event() -> None:
    event = topics.cloud("b001", "d0001", "visitor")
    assert topics.image(event) == f"{event}/image"
    assert topics.is_image(topics.image(event)) and not topics.is_image(event)
    assert topics.matches("cloud/#", topics.image(event))


def test_the_limits_at_the_door_hold_every_topic_the_grammar_makes() -> None:
    longest = topics.image(topics.partner("p" * 48, "b" * 48, "d" * 48, "device_failure"))
    assert len(longest) <= topics.MAX_TOPIC_LENGTH
    assert longest.count("/") + 1 <= topics.MAX_TOPIC_LEVELS


CORE_DIR = Path(topics.__file__).parent
CORE = sorted(path.stem for path in CORE_DIR.glob("*.py"))
IO = {"asyncio", "aiosqlite", "paho", "sqlite3", "socket"}
# What a core module may import of the package: the core, and the error classes.
ALLOWED = ("intercom_gateway.core", "intercom_gateway.errors")


def _imports(source: str) -> set[str]:
    """Every module a source imports, relative imports made absolute from core/."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from ..errors import y
                package = "intercom_gateway.core".rsplit(".", node.level - 1)[0]
                base = f"{package}.{base}" if base else package
            # `from intercom_gateway import errors` imports the module intercom_gateway.errors
            imported.update(f"{base}.{alias.name}" for alias in node.names)
            imported.add(base)
    return imported


def test_the_core_is_found_by_listing_its_folder() -> None:
    assert {"models", "topics", "policy", "consent", "decide", "router", "ingress"} <= set(CORE)


@pytest.mark.parametrize("module", CORE)
def test_the_pure_core_imports_no_io_and_no_shell(module: str) -> None:
    """style.md: the rules live in plain synchronous functions; no asyncio, SQLite or MQTT,
    and imports go one way: the core knows nothing of the package above it."""
    imported = _imports((CORE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    roots = {name.split(".")[0] for name in imported}
    assert not roots & IO, f"{module} imports {sorted(roots & IO)}"
    ours = {name for name in imported if name.split(".")[0] == "intercom_gateway"}
    outside = {name for name in ours if name != "intercom_gateway" and not name.startswith(ALLOWED)}
    assert not outside, f"core/{module}.py imports {sorted(outside)}"


def test_importing_the_whole_core_loads_nothing_of_the_shell() -> None:
    """The same, transitively, in a fresh interpreter. (``socket`` is left out here: the
    standard library's email.utils imports it under importlib.metadata, for pydantic.)"""
    probe = (
        "import importlib, sys\n"
        f"for name in {[name for name in CORE if name != '__init__']!r}:\n"
        "    importlib.import_module(f'intercom_gateway.core.{name}')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert {name for name in loaded if name.split(".")[0] in IO - {"socket"}} == set()
    ours = {name for name in loaded if name.startswith("intercom_gateway.")}
    assert {name for name in ours if not name.startswith(ALLOWED)} == set()
