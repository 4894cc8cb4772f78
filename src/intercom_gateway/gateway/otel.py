"""Optional OpenTelemetry export: the gateway's span of each event, sent over OTLP/HTTP
(the ``[otel]`` extra; ``run --otel-endpoint URL`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``).

The span is the one whose id every identified copy of the event already carries in its
``traceparent`` (``core.trace``): same trace id, same span id, the panel's span as its
parent when the panel sent a valid ``traceparent``. It starts when the gateway took the
message and ends when every copy has its outcome (the PUBACK of the last one), kind
CONSUMER. Sampling follows OpenTelemetry's default, parent-based: a trace the gateway
starts is sampled (its copies then carry flags ``01``, as they promise a span exists);
a panel's trace is exported only when the panel marked it sampled.

What a span carries is bounded and names no one: the event type, the building, how many
destinations the event was forwarded to and withheld from, the policy version. Never a
dwelling, device or event id, nor a field of the payload: a trace backend is not a
destination of the privacy policy (§5), so nothing that identifies a resident or what
they did may reach it; the trace id already ties the span to the copies, which the
ledger records for whoever may see them.

The event path pays for building one ``ReadableSpan`` and enqueueing it: the SDK's
``BatchSpanProcessor`` encodes and posts batches on its own thread. The SDK is imported
only by ``open_spans`` when the export is asked for, so a gateway without it never
imports OpenTelemetry.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from intercom_gateway.core.trace import (
    copy_properties,
    inbound_context,
    new_span_id,
    new_trace_id,
)
from intercom_gateway.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

    from intercom_gateway.core.outcomes import Decision
    from intercom_gateway.gateway.acks import Inbound
    from intercom_gateway.settings import Settings

__all__ = ["ENDPOINT_ENV", "EventSpans", "OpenSpan", "export_endpoint", "open_spans"]

ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_SAMPLED = "01"
_BATCH = 64  # spans per export (the SDK's default is 512)
_DELAY_MS = 100  # between exports at the most (the SDK's default is 5,000)
_MISSING = (
    "OpenTelemetry export needs the [otel] extra: pip install 'intercom-gateway[otel]'"
    " (--otel-endpoint, OTEL_EXPORTER_OTLP_ENDPOINT)"
)


@dataclass(slots=True)
class OpenSpan:
    """An event's span between its start and the outcome of its last copy."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None  # the panel's span, when its traceparent was valid
    flags: str
    received: float  # time.monotonic() when the message was taken
    attributes: dict[str, str | int]


class EventSpans:
    """Starts and ends the span of each event, and hands ended spans to ``processor``
    (a ``BatchSpanProcessor`` in production, a ``SimpleSpanProcessor`` over an
    in-memory exporter in tests)."""

    def __init__(self, processor: SpanProcessor, *, gateway_id: str) -> None:
        from opentelemetry import trace as api
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.processor = processor
        attributes: dict[str, str] = {"service.instance.id": gateway_id}
        if "OTEL_SERVICE_NAME" not in os.environ:
            attributes["service.name"] = "intercom-gateway"
        self._resource = Resource.create(attributes)  # OTEL_RESOURCE_ATTRIBUTES merged in
        self._scope = InstrumentationScope("intercom_gateway")
        self._api = api
        self._readable = ReadableSpan
        self._ok = api.Status(api.StatusCode.UNSET)
        self._failed = api.Status(
            api.StatusCode.ERROR, "not acknowledged: the broker delivers it again"
        )
        # Monotonic seconds to epoch nanoseconds: spans are timed by the clock the
        # gateway already reads per message, and a wall-clock jump cannot make one negative.
        self._epoch_offset = time.time_ns() - int(time.monotonic() * 1e9)

    def start(self, inbound: Inbound, decision: Decision) -> tuple[tuple[str, str], ...]:
        """The trace properties of the copies of ``inbound``'s event, and its span, kept
        on ``inbound`` until every copy has its outcome (none when the panel's trace is
        not sampled: then nothing is recorded)."""
        parent, state = inbound_context(inbound.message.user_properties)
        span_id = new_span_id()
        if parent is None:
            trace_id, parent_id, flags = new_trace_id(), None, _SAMPLED
        else:
            trace_id, parent_id, flags = parent
        properties = copy_properties(trace_id, span_id, flags, state)
        if not int(flags, 16) & 1:
            return properties  # parent-based sampling: the panel did not sample
        forwarded = sum(1 for o in decision.outcomes if o.forwarded)
        event_type = decision.event_type.value
        attributes: dict[str, str | int] = {
            "intercom.event.type": event_type,
            "intercom.building": decision.building_id,
            "intercom.destinations.forwarded": forwarded,
            "intercom.destinations.withheld": len(decision.outcomes) - forwarded,
            "intercom.policy.version": decision.policy_version,
        }
        inbound.span = OpenSpan(
            f"intercom.event {event_type}",
            trace_id,
            span_id,
            parent_id,
            flags,
            inbound.received,
            attributes,
        )
        return properties

    def end(self, span: OpenSpan, *, failed: bool = False) -> None:
        """Every copy has its outcome: the span is enqueued for export. ``failed``: the
        message will be delivered again (a lost connection), so the span is an error."""
        api = self._api
        flags = api.TraceFlags(int(span.flags, 16))
        parent = None
        if span.parent_id is not None:
            parent = api.SpanContext(
                int(span.trace_id, 16), int(span.parent_id, 16), is_remote=True, trace_flags=flags
            )
        offset = self._epoch_offset
        self.processor.on_end(
            self._readable(
                span.name,
                context=api.SpanContext(
                    int(span.trace_id, 16),
                    int(span.span_id, 16),
                    is_remote=False,
                    trace_flags=flags,
                ),
                parent=parent,
                resource=self._resource,
                attributes=span.attributes,
                kind=api.SpanKind.CONSUMER,
                status=self._failed if failed else self._ok,
                start_time=int(span.received * 1e9) + offset,
                end_time=int(time.monotonic() * 1e9) + offset,
                instrumentation_scope=self._scope,
            )
        )

    def shutdown(self) -> None:
        """Export what is queued, then stop the processor's thread."""
        self.processor.shutdown()


def export_endpoint(settings: Settings) -> str | None:
    """Whether export is asked for: the setting's URL, else the standard OTLP variables'."""
    if settings.otel_endpoint:
        return settings.otel_endpoint
    for name in ENDPOINT_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


def open_spans(settings: Settings) -> EventSpans | None:
    """The span export ``settings`` ask for, or None (then OpenTelemetry is not imported).

    ``--otel-endpoint`` is the collector's base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is: spans go to ``<url>/v1/traces``. Without the setting the exporter reads the
    standard variables itself (a ``..._TRACES_ENDPOINT`` is taken as it is).
    """
    if export_endpoint(settings) is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(_MISSING) from None
    exporter: SpanExporter
    if settings.otel_endpoint:
        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces")
    else:
        exporter = OTLPSpanExporter()
    # The export thread holds the GIL while it encodes a batch: the SDK's 512 spans stalled
    # the event loop for milliseconds (relay bench p99 2.2-2.8 → 10.8-11.2 ms); 64 every
    # 100 ms kept it at 2.9-3.0 ms (docs/benchmarks.md: whether smaller batches cost more
    # CPU, these few runs could not tell). The OTEL_BSP_* variables still win.
    env = os.environ
    processor = BatchSpanProcessor(
        exporter,
        max_export_batch_size=None if "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in env else _BATCH,
        schedule_delay_millis=None if "OTEL_BSP_SCHEDULE_DELAY" in env else _DELAY_MS,
    )
    return EventSpans(processor, gateway_id=settings.gateway_id)
