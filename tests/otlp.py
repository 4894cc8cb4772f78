"""A stand-in for an OpenTelemetry Collector: a local HTTP server that keeps every POST
(path and body) and decodes the OTLP/HTTP protobuf bodies into spans."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass
class Collector:
    url: str
    requests: list[tuple[str, bytes]] = field(default_factory=list)

    def spans(self) -> list[Span]:
        """Every span posted to /v1/traces."""
        found: list[Span] = []
        for path, body in self.requests:
            if path != "/v1/traces":
                continue
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    found.extend(scope_spans.spans)
        return found


class _Handler(BaseHTTPRequestHandler):
    collector: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.collector.requests.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="otlp_collector")
def otlp_collector_fixture() -> Iterator[Collector]:
    """A collector for the test: import this fixture by its function's name."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    found = Collector(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (_Handler,), {"collector": found})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
