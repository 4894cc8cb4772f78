"""The OpenTelemetry export (``gateway.otel``): the span of each event is the one its
copies name in their ``traceparent``, it names no one, and it reaches an OTLP/HTTP
endpoint; without the export asked for, OpenTelemetry is never imported, and asked for
without the ``[otel]`` extra it is a one-line configuration error.

The gateway runs on the in-memory bus with a SQLite store; spans go to the SDK's
``InMemorySpanExporter``, or to a small HTTP server standing in for a collector.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from intercom_gateway.bus import MemoryBroker, MemoryBus, Message
from intercom_gateway.cli.main import main
from intercom_gateway.core.trace import valid_traceparent
from intercom_gateway.errors import ConfigError
from intercom_gateway.gateway.otel import EventSpans, OpenSpan, open_spans
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.factories import event_dict, gateway_settings, panel_message
from tests.otlp import Collector, otlp_collector_fixture  # noqa: F401 (the fixture)

PANEL_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PANEL_SPAN = "00f067aa0ba902b7"
ATTRIBUTES = {
    "intercom.event.type",
    "intercom.building",
    "intercom.destinations.forwarded",
    "intercom.destinations.withheld",
    "intercom.policy.version",
}

World = tuple[Gateway, MemoryBus, list[Message], InMemorySpanExporter]
_mids = iter(range(1, 1_000_000))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = gateway_settings(tmp_path)
    broker = MemoryBroker()
    exporter = InMemorySpanExporter()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        gateway.completion.spans = EventSpans(
            SimpleSpanProcessor(exporter),
            gateway_id=settings.gateway_id,
        )
        bus = broker.client("gateway")
        gateway._bus = bus
        seen: list[Message] = []
        observer = broker.client("observer")
        observer.deliver = seen.append  # type: ignore[method-assign,assignment]
        await observer.subscribe("#")
        yield gateway, bus, seen, exporter


async def send(
    gateway: Gateway, bus: MemoryBus, data: dict[str, Any], *properties: tuple[str, str]
) -> None:
    topic, payload = panel_message(data)
    message = Message(topic, payload, qos=1, mid=next(_mids), user_properties=properties)
    await gateway.handle(bus, message)
    await gateway.finish_in_flight()


def parents(seen: list[Message]) -> set[str]:
    return {p for m in seen for p in m.properties("traceparent")}


def ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def test_the_span_is_the_one_the_copies_name_and_names_no_one(world: World) -> None:
    gateway, bus, seen, exporter = world
    data = event_dict("visitor", dwelling="d0002")
    await send(gateway, bus, data)
    [span] = exporter.get_finished_spans()
    [traceparent] = parents(seen)  # every identified copy carries the same one
    _, trace_id, span_id, flags = traceparent.split("-")
    # The gateway started this trace and records it: the copies say it is sampled.
    assert ids(span) == (trace_id, span_id) and flags == "01"
    assert span.parent is None
    assert span.kind is SpanKind.CONSUMER and span.name == "intercom.event visitor"
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    attributes = dict(span.attributes or {})
    assert set(attributes) == ATTRIBUTES
    assert attributes["intercom.event.type"] == "visitor"
    assert attributes["intercom.building"] == data["building_id"]
    assert attributes["intercom.policy.version"] == gateway.policy.version
    forwarded = attributes["intercom.destinations.forwarded"]
    withheld = attributes["intercom.destinations.withheld"]
    assert isinstance(forwarded, int) and isinstance(withheld, int)
    assert forwarded > 0 and forwarded + withheld == len(gateway.router.targets)
    # Nothing of the resident: no dwelling, device or event id, no payload field.
    exported = json.dumps([span.name, attributes, dict(span.resource.attributes)])
    for value in (data["dwelling_id"], data["device"]["id"], data["event_id"], data["call_id"]):
        assert value not in exported


async def test_a_panels_sampled_trace_is_continued_under_its_span(world: World) -> None:
    gateway, bus, seen, exporter = world
    await send(
        gateway,
        bus,
        event_dict("alarm", dwelling="d0001"),
        ("traceparent", f"00-{PANEL_TRACE}-{PANEL_SPAN}-01"),
        ("tracestate", "vendor=1"),
    )
    [span] = exporter.get_finished_spans()
    [traceparent] = parents(seen)
    assert valid_traceparent(traceparent) == (PANEL_TRACE, "01")
    assert ids(span) == (PANEL_TRACE, traceparent.split("-")[2])
    assert span.parent is not None and span.parent.is_remote
    assert (f"{span.parent.trace_id:032x}", f"{span.parent.span_id:016x}") == (
        PANEL_TRACE,
        PANEL_SPAN,
    )
    assert {p for m in seen for p in m.properties("tracestate")} == {"vendor=1"}


async def test_a_trace_the_panel_did_not_sample_is_not_recorded(world: World) -> None:
    gateway, bus, seen, exporter = world
    await send(
        gateway,
        bus,
        event_dict("alarm", dwelling="d0001"),
        ("traceparent", f"00-{PANEL_TRACE}-{PANEL_SPAN}-00"),
    )
    assert exporter.get_finished_spans() == ()
    [traceparent] = parents(seen)
    assert valid_traceparent(traceparent) == (PANEL_TRACE, "00")


async def test_rejected_input_has_no_span(world: World) -> None:
    gateway, bus, _, exporter = world
    topic, _payload = panel_message(event_dict("alarm", dwelling="d0001"))
    await gateway.handle(bus, Message(topic, b"{not json", qos=1, mid=next(_mids)))
    await gateway.finish_in_flight()
    assert gateway.metrics.rejected and exporter.get_finished_spans() == ()


# --- the OTLP/HTTP exporter, against a stand-in collector --------------------------------


async def test_spans_are_posted_to_the_endpoints_v1_traces(
    tmp_path: Path, otlp_collector: Collector
) -> None:
    url, received = otlp_collector.url, otlp_collector.requests
    settings = gateway_settings(tmp_path, otel_endpoint=url)
    broker = MemoryBroker()
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        spans = open_spans(settings)
        assert spans is not None
        gateway.completion.spans = spans
        bus = broker.client("gateway")
        gateway._bus = bus
        seen: list[Message] = []
        observer = broker.client("observer")
        observer.deliver = seen.append  # type: ignore[method-assign,assignment]
        await observer.subscribe("#")
        for dwelling in ("d0001", "d0002", "d0003"):
            await send(gateway, bus, event_dict("alarm", dwelling=dwelling))
        await asyncio.to_thread(spans.shutdown)  # what `run` does on its way out
    assert received and {path for path, _ in received} == {"/v1/traces"}
    posted = {(s.trace_id.hex(), s.span_id.hex()) for s in otlp_collector.spans()}
    on_copies = {tuple(p.split("-")[1:3]) for p in parents(seen)}
    assert len(posted) == 3 and posted == on_copies


# --- off, and asked for without the extra --------------------------------------------------


def test_without_the_export_opentelemetry_is_never_imported() -> None:
    code = (
        "import sys\n"
        "import intercom_gateway.cli.main, intercom_gateway.gateway.run\n"
        "import intercom_gateway.gateway.service, intercom_gateway.gateway.otel\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_off_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert open_spans(Settings(db_path=tmp_path / "x.sqlite")) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    spans = open_spans(Settings(db_path=tmp_path / "x.sqlite"))
    assert spans is not None
    spans.shutdown()


MISSING = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def test_asked_for_without_the_extra_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, MISSING, None)  # what an absent package looks like
    settings = Settings(db_path=tmp_path / "x.sqlite", otel_endpoint="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"needs the \[otel\] extra"):
        open_spans(settings)


def test_run_without_the_extra_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, MISSING, None)
    env = {
        "INTERCOM_DB_PATH": str(tmp_path / "gateway.sqlite"),
        "INTERCOM_BROKER_PASSWORD": "unused",
        "INTERCOM_STATE_DIR": str(tmp_path / "stack"),
    }
    result = CliRunner().invoke(main, ["run", "--otel-endpoint", "http://127.0.0.1:9"], env=env)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: OpenTelemetry export needs the [otel] extra")


def test_partitioned_with_the_export_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {
        "INTERCOM_DB_PATH": str(tmp_path / "gateway.sqlite"),
        "INTERCOM_STATE_DIR": str(tmp_path / "stack"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    }
    result = CliRunner().invoke(main, ["run", "--partitioned"], env=env)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert "not built for --partitioned" in line


def test_a_span_whose_message_is_delivered_again_is_an_error() -> None:
    exporter = InMemorySpanExporter()
    spans = EventSpans(SimpleSpanProcessor(exporter), gateway_id="gw-1")
    span = OpenSpan("intercom.event alarm", PANEL_TRACE, PANEL_SPAN, None, "01", 0.0, {})
    spans.end(span, failed=True)
    [ended] = exporter.get_finished_spans()
    assert ended.status.status_code is StatusCode.ERROR
