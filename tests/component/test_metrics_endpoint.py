"""The ``/metrics`` endpoint (``gateway.metrics.serving_metrics``) on its own: what it
answers, to whom, and a taken port."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intercom_gateway.errors import ConfigError
from intercom_gateway.gateway.metrics import Backlog, GatewayCollector, serving_metrics
from intercom_gateway.gateway.status import Metrics


def collector(metrics: Metrics) -> GatewayCollector:
    return GatewayCollector(
        gateway_id="gw-1",
        policy_version="v1",
        publish_window=10,
        metrics=lambda: metrics,
        backlog=lambda: Backlog(0, 0, 0),
    )


async def test_off_without_a_port() -> None:
    async with serving_metrics(collector(Metrics()), "127.0.0.1", None) as server:
        assert server is None


async def test_each_scrape_reads_the_counts_of_that_moment() -> None:
    metrics = Metrics(received=1)
    async with (
        serving_metrics(collector(metrics), "127.0.0.1", 0) as server,
        httpx.AsyncClient() as http,
    ):
        assert server is not None
        url = f"http://127.0.0.1:{server.port}/metrics"
        for expected in (1, 7):
            metrics.received = expected
            response = await http.get(url)
            assert response.status_code == 200
            families = {f.name: f for f in text_string_to_metric_families(response.text)}
            assert families["intercom_gateway_received"].samples[0].value == expected
        head = await http.head(url)
        assert head.status_code == 200 and head.content == b""
        assert (await http.get(f"http://127.0.0.1:{server.port}/other")).status_code == 404


async def test_a_client_that_sends_no_request_is_closed_not_answered() -> None:
    async with serving_metrics(collector(Metrics()), "127.0.0.1", 0) as server:
        assert server is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"x" * 10_000)  # past the request limit, with no end of headers
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            async with serving_metrics(collector(Metrics()), "127.0.0.1", port):
                pass
