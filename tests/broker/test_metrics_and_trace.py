"""Issue #19 at the broker tier: ``/metrics`` after a known run, and the W3C trace
context carried from a panel's event onto every copy it causes.

The gateway runs in this process on the real Mosquitto, serving its metrics on a free
port; ``/metrics`` is read over HTTP and parsed with the Prometheus text parser.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import Message
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.trace import valid_traceparent
from intercom_gateway.qa.testing import (
    RunningGateway,
    collect_until_quiet,
    publish_as_fleet,
    running_gateway,
)
from intercom_gateway.simulators.bad_input import all_samples
from tests.factories import event_dict, panel_message

# Every identified copy an event can cause (analytics copies are held per window).
IDENTIFIED = ("cloud/#", "group/#", "partners/#")
SENTINEL = "cloud/v1/zz-sentinel/zz-sentinel/sentinel"  # no dwelling's topic
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
async def running(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(broker, fleet_registry, tmp_path / "gw", metrics_port=0) as gw:
        yield gw


async def scrape(running: RunningGateway) -> dict[str, float]:
    """Every sample of ``/metrics`` by its name and labels, e.g.
    ``intercom_gateway_rejected_total{reason="bad_topic"}``."""
    server = running.gateway.metrics_server
    assert server is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def of(samples: dict[str, float], name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` by the value of its one label ``label``."""
    prefix = f'{name}{{{label}="'
    return {k[len(prefix) : -2]: v for k, v in samples.items() if k.startswith(prefix)}


async def test_metrics_count_what_the_run_did(
    running: RunningGateway, broker: Mosquitto, fleet_registry: Registry
) -> None:
    samples_in = all_samples(fleet_registry, now=utc_now(), seed=19)
    kinds = ["alarm", "visitor", "delivery_box", "return_home", "unlock_mode"]
    valid = [
        event_dict(kinds[i % len(kinds)], dwelling=f"d000{1 + i % 4}")
        for i in range(len(samples_in) + 1)
    ]
    stream: list[tuple[str, bytes]] = []
    for index, sample in enumerate(samples_in):
        stream += [panel_message(valid[index]), (sample.topic, sample.payload)]
    stream.append(panel_message(valid[-1]))
    reasons = Counter(s.reason.value for s in samples_in if s.reason is not None)
    events = len(valid) + sum(1 for s in samples_in if s.reason is None)

    async with running.client(OPERATOR) as operator:
        await operator.subscribe("cloud/#")
        await publish_as_fleet(broker, stream)
        await running.wait_processed(len(stream))
        samples = await scrape(running)
        async with running.client(GATEWAY) as gateway_account:
            await gateway_account.publish(SENTINEL, b"{}")
        cloud = await collect_until_quiet(operator, sentinel_topic=SENTINEL)
    # What reached the cloud, counted by event (an image is a message of its own).
    cloud_events = {json.loads(m.payload)["event_id"] for m in cloud if not _image(m)}

    assert samples["intercom_gateway_received_total"] == len(stream)
    assert samples["intercom_gateway_events_total"] == events
    assert of(samples, "intercom_gateway_rejected_total", "reason") == reasons
    assert samples['intercom_gateway_forwarded_total{kind="cloud"}'] == len(cloud_events)
    # Per destination kind and reason, as the gateway counted them for its retained metrics.
    metrics = running.gateway.metrics
    assert of(samples, "intercom_gateway_forwarded_total", "kind") == metrics.forwarded
    withheld = {
        tuple(part.split('="')[1] for part in key[key.index("{") + 1 : -2].split('",')): value
        for key, value in samples.items()
        if key.startswith("intercom_gateway_withheld_total{")
    }
    assert withheld == metrics.withheld_by and sum(withheld.values()) > 0
    assert samples["intercom_gateway_acked_total"] == len(stream)
    # Every decided event has its end-to-end and stage latencies; nothing waits now.
    assert samples["intercom_gateway_event_seconds_count"] == events
    assert samples['intercom_gateway_event_seconds_bucket{le="+Inf"}'] == events
    for stage in ("validate", "decide_plan", "publish"):
        assert samples[f'intercom_gateway_stage_seconds_count{{stage="{stage}"}}'] == events
    assert samples['intercom_gateway_stage_seconds_count{stage="store_flush"}'] >= 1
    assert samples["intercom_gateway_unacked_messages"] == 0
    assert samples["intercom_gateway_publish_in_flight"] == 0
    gateway_id = running.settings.gateway_id
    version = running.gateway.policy.version
    info = f'intercom_gateway_build_info{{gateway_id="{gateway_id}",policy_version="{version}"}}'
    assert samples[info] == 1


async def test_the_endpoint_serves_only_metrics(running: RunningGateway) -> None:
    server = running.gateway.metrics_server
    assert server is not None
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{server.port}/")).status_code == 404
        assert (await http.post(f"http://127.0.0.1:{server.port}/metrics")).status_code == 405


def _image(message: Message) -> bool:
    return "image" in message.properties("category")


async def publish_traced(
    running: RunningGateway, data: dict[str, Any], properties: list[tuple[str, str]]
) -> None:
    async with running.client(data["device"]["id"]) as panel:
        topic, payload = panel_message(data)
        await panel.publish(topic, payload, user_properties=properties)


async def test_every_copy_carries_the_events_trace(running: RunningGateway) -> None:
    # d0001 uses the concierge: a visitor goes to the cloud, the group and the partner.
    sent = {
        "traced": (
            event_dict("visitor", dwelling="d0001"),
            [
                ("traceparent", TRACEPARENT),
                ("tracestate", "vendor=abc"),
            ],
        ),
        "untraced": (event_dict("visitor", dwelling="d0001"), []),
        "malformed": (
            event_dict("visitor", dwelling="d0001"),
            [
                ("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01"),
                ("tracestate", "vendor=dropped"),
            ],
        ),
    }
    async with running.client(OPERATOR) as operator:
        await operator.subscribe(*IDENTIFIED)
        for data, properties in sent.values():
            await publish_traced(running, data, properties)
        await running.wait_processed(len(sent))
        async with running.client(GATEWAY) as gateway_account:
            await gateway_account.publish(SENTINEL, b"{}")
        copies = await collect_until_quiet(operator, sentinel_topic=SENTINEL)

    by_event: dict[str, list[Message]] = {}
    for message in copies:
        by_event.setdefault(json.loads(message.payload)["event_id"], []).append(message)
    kinds = {m.topic.split("/")[0] for m in copies}
    assert {"cloud", "group", "partners"} <= kinds
    traces: dict[str, set[str]] = {}
    for name, (data, _properties) in sent.items():
        received = by_event[data["event_id"]]
        assert len({m.topic.split("/")[0] for m in received}) >= 3
        parents = {p for m in received for p in m.properties("traceparent")}
        assert all(len(m.properties("traceparent")) == 1 for m in received)
        # One span of the gateway per event: every copy has the same parent id.
        [parent] = parents
        assert valid_traceparent(parent) is not None
        traces[name] = parents
        states = {tuple(m.properties("tracestate")) for m in received}
        assert states == ({("vendor=abc",)} if name == "traced" else {()})
    [traced] = traces["traced"]
    assert traced.startswith(f"00-{TRACE_ID}-") and traced.endswith("-01")
    assert traced != TRACEPARENT  # the gateway's own span id
    for name in ("untraced", "malformed"):
        [started] = traces[name]
        assert TRACE_ID not in started and started.endswith("-00")
    assert traces["untraced"] != traces["malformed"]
