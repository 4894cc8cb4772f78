"""Prometheus metrics of one gateway process, served on ``/metrics``.

The counts are the ones the gateway keeps anyway (``status.Metrics``, also published
retained on MQTT); nothing is counted twice. They are read when Prometheus scrapes, by a
custom collector of the official ``prometheus-client``, so the hot path pays no
Prometheus call at all: an event costs a few clock reads and array increments
(``Timings``), and a scrape turns the counts into metric families. The endpoint is
served on the gateway's own event loop, so a scrape sees the counts between two steps
of the loop, never half-way through one, and no lock is needed. With several gateways
(or a partitioned group) each process serves its own counts; Prometheus sums them
(``sum by (...)``), which is what the dashboard in docs/grafana does.

Labels are small and bounded: a destination kind, a withheld reason, a rejection
reason, a stage. Never a dwelling, a device or a partner id.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from intercom_gateway.errors import ConfigError

if TYPE_CHECKING:
    from intercom_gateway.gateway.service import Gateway
    from intercom_gateway.gateway.status import Metrics

__all__ = [
    "BUCKETS",
    "STAGES",
    "Backlog",
    "GatewayCollector",
    "Histogram",
    "MetricsServer",
    "Timings",
    "backlog_of",
    "collector_of",
    "serving_metrics",
]

log = structlog.get_logger("intercom_gateway.gateway.metrics")

PREFIX = "intercom_gateway"
# Seconds: 100 µs to 10 s, about three buckets per decade. An event's validation takes
# tens of microseconds, its copies' acknowledgement milliseconds, a stuck one seconds.
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# validate: topic, properties and payload checked; decide_plan: the decision and its
# publications; publish: from the plan to the last copy's outcome (PUBACK), the ledger's
# write-ahead commit included; ledger_intent: one group commit of ledger intents;
# store_flush: one store batch committed.
STAGES = ("validate", "decide_plan", "publish", "ledger_intent", "store_flush")


@dataclass(slots=True)
class Histogram:
    """Counts per bucket of ``BUCKETS`` (the last one +Inf) and their sum: one
    ``bisect`` and two additions per observation, on the loop's thread only."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, i.e. Prometheus' "le".
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def update(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as Prometheus wants them."""
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            cumulative += count
            out.append((bound, cumulative))
        return out


@dataclass(slots=True)
class Timings:
    """The latency histograms: the end-to-end one and one per stage (``STAGES``)."""

    end_to_end: Histogram = field(default_factory=Histogram)
    validate: Histogram = field(default_factory=Histogram)
    decide_plan: Histogram = field(default_factory=Histogram)
    publish: Histogram = field(default_factory=Histogram)
    ledger_intent: Histogram = field(default_factory=Histogram)
    store_flush: Histogram = field(default_factory=Histogram)

    def update(self, other: Timings) -> None:
        """Add ``other``'s counts (a partitioned process sums its partitions')."""
        for name in ("end_to_end", *STAGES):
            getattr(self, name).update(getattr(other, name))

    def stage(self, name: str) -> Histogram:
        histogram: Histogram = getattr(self, name)
        return histogram


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits, read at scrape time."""

    unacked: int  # inbound messages taken and not yet acknowledged to the broker
    publishing: int  # copies published and waiting for their PUBACK
    ledger_waiting: int  # copies waiting for their ledger intent's commit

    @classmethod
    def total(cls, parts: Iterable[Backlog]) -> Backlog:
        """The sum of several gateways' (a partitioned process's partitions')."""
        unacked = publishing = waiting = 0
        for part in parts:
            unacked += part.unacked
            publishing += part.publishing
            waiting += part.ledger_waiting
        return cls(unacked, publishing, waiting)


class GatewayCollector(Collector):
    """Turns a gateway process's counts into Prometheus metric families at scrape time.

    ``metrics``: the process's ``status.Metrics`` (summed over its partitions when it
    has several); ``backlog``: what waits now.
    """

    def __init__(
        self,
        *,
        gateway_id: str,
        policy_version: str,
        publish_window: int,
        metrics: Callable[[], Metrics],
        backlog: Callable[[], Backlog],
    ) -> None:
        self.gateway_id = gateway_id
        self.policy_version = policy_version
        self.publish_window = publish_window
        self._metrics = metrics
        self._backlog = backlog

    def collect(self) -> Iterator[Metric]:
        m = self._metrics()
        info = InfoMetricFamily(f"{PREFIX}_build", "The gateway's id and policy version.")
        info.add_metric([], {"gateway_id": self.gateway_id, "policy_version": self.policy_version})
        yield info
        yield _counter(
            "received", "Messages taken from the broker (events, settings, bad input).", m.received
        )
        yield _counter(
            "events", "Valid events decided (first deliveries; not duplicates).", m.events
        )
        yield _counter(
            "duplicates",
            "Events delivered again by the broker and not handled again.",
            m.duplicates,
        )
        yield _labelled(
            "forwarded",
            "Destinations an event was forwarded to, per destination kind.",
            ["kind"],
            [((k,), v) for k, v in m.forwarded.items()],
        )
        yield _labelled(
            "withheld",
            "Destinations an event was withheld from, per destination kind and reason.",
            ["kind", "reason"],
            m.withheld_by.items(),
        )
        yield _labelled(
            "rejected",
            "Messages rejected, per reason.",
            ["reason"],
            [((r,), v) for r, v in m.rejected.items()],
        )
        yield _labelled(
            "consent_changes",
            "Resident settings changes taken, per result (applied, refused, duplicate).",
            ["result"],
            [((r,), v) for r, v in m.settings.items()],
        )
        yield _counter("acked", "Inbound messages acknowledged to the broker.", m.acked)
        yield _counter("publish_refused", "Publishes the broker refused.", m.publish_refused)
        yield _counter("reconnects", "Broker connections lost and retried.", m.reconnects)
        backlog = self._backlog()
        yield _gauge(
            "unacked_messages", "Inbound messages taken and not yet acknowledged.", backlog.unacked
        )
        yield _gauge(
            "publish_in_flight",
            "Copies published and waiting for their PUBACK.",
            backlog.publishing,
        )
        yield _gauge(
            "ledger_waiting",
            "Copies waiting for their ledger intent to be committed.",
            backlog.ledger_waiting,
        )
        yield _gauge(
            "publish_window", "Publishes the gateway keeps in flight at most.", self.publish_window
        )
        timings = m.timings
        e2e = HistogramMetricFamily(
            f"{PREFIX}_event_seconds",
            "From an event's arrival to the outcome (PUBACK) of its last copy.",
        )
        e2e.add_metric([], timings.end_to_end.buckets(), timings.end_to_end.total)
        yield e2e
        stages = HistogramMetricFamily(
            f"{PREFIX}_stage_seconds",
            "Time per stage: validate, decide_plan and publish per event; ledger_intent"
            " per group commit of ledger intents; store_flush per store batch.",
            labels=["stage"],
        )
        for name in STAGES:
            histogram = timings.stage(name)
            stages.add_metric([name], histogram.buckets(), histogram.total)
        yield stages


def backlog_of(gateway: Gateway) -> Backlog:
    """What waits in ``gateway`` now: read by a scrape, O(messages waiting)."""
    acks = gateway.completion.acks
    waiting = gateway.ledger.pending
    # A copy waiting for its ledger intent is counted in its message's publishes too.
    publishing = sum(entry.publishes for entry in acks) - waiting
    return Backlog(unacked=len(acks), publishing=max(publishing, 0), ledger_waiting=waiting)


def collector_of(
    gateway: Gateway,
    metrics: Callable[[], Metrics] | None = None,
    backlog: Callable[[], Backlog] | None = None,
) -> GatewayCollector:
    """The collector of ``gateway`` or, given ``metrics`` and ``backlog``, of the
    partitioned process whose policy and settings it holds."""
    return GatewayCollector(
        gateway_id=gateway.settings.gateway_id,
        policy_version=gateway.policy.version,
        publish_window=gateway.settings.publish_window,
        metrics=metrics or (lambda: gateway.metrics),
        backlog=backlog or (lambda: backlog_of(gateway)),
    )


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)


def _labelled(
    name: str,
    help_text: str,
    labels: list[str],
    values: Iterable[tuple[tuple[str, ...], int]],
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=labels)
    for key, value in sorted(values):
        family.add_metric(list(key), value)
    return family


# --- the endpoint ---------------------------------------------------------------------

_REQUEST_TIMEOUT = 5.0  # seconds a client may take to send its request line and headers
_MAX_REQUEST = 8_192


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 on the gateway's event loop; one response per
    connection. Anything else is 404 (or 405 for another method)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not serving"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=_MAX_REQUEST, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                writer.write(_response(b"405 Method Not Allowed", b"text/plain", b"GET only\n"))
            elif path != b"/metrics":
                writer.write(_response(b"404 Not Found", b"text/plain", b"see /metrics\n"))
            else:
                body = generate_latest(self.registry)
                writer.write(
                    _response(
                        b"200 OK",
                        CONTENT_TYPE_LATEST.encode(),
                        body if method == b"GET" else b"",
                        length=len(body),
                    )
                )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sent no request: nothing to answer
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _response(status: bytes, content_type: bytes, body: bytes, *, length: int = -1) -> bytes:
    size = str(len(body) if length < 0 else length).encode()
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            size,
            b"\r\nConnection: close\r\n\r\n",
            body,
        )
    )


@contextlib.asynccontextmanager
async def serving_metrics(
    collector: GatewayCollector, host: str, port: int | None
) -> AsyncIterator[MetricsServer | None]:
    """Serve ``collector`` on ``http://host:port/metrics`` while the block runs; with
    ``port`` None, nothing is served (None is yielded)."""
    if port is None:
        yield None
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server = MetricsServer(registry)
    try:
        await server.start(host, port)
    except OSError as error:
        # A taken port is the operator's to fix: one line, not a traceback (cli.common).
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
            " (--metrics-port, INTERCOM_METRICS_PORT)"
        ) from None
    log.info("prometheus metrics served", url=f"http://{host}:{server.port}/metrics")
    try:
        yield server
    finally:
        await server.close()
