"""The OpenTelemetry export at the broker tier: ``intercom-gateway run``'s gateway on the
real Mosquitto, exporting over OTLP/HTTP to a stand-in collector (``tests/otlp.py``).
The span it posts for an event is the one every copy of the event names."""

from __future__ import annotations

from pathlib import Path

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.testing import collect_until_quiet, running_gateway
from tests.factories import event_dict, panel_message
from tests.otlp import Collector, otlp_collector_fixture  # noqa: F401 (the fixture)

IDENTIFIED = ("cloud/#", "group/#", "partners/#")
SENTINEL = "cloud/v1/zz-sentinel/zz-sentinel/sentinel"  # no dwelling's topic
PANEL_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PANEL_SPAN = "00f067aa0ba902b7"


async def test_the_posted_spans_are_the_ones_the_copies_name(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path, otlp_collector: Collector
) -> None:
    traced = event_dict("visitor", dwelling="d0001")  # cloud, group and the partner
    untraced = event_dict("visitor", dwelling="d0001")
    async with (
        running_gateway(
            broker, fleet_registry, tmp_path / "gw", otel_endpoint=otlp_collector.url
        ) as running,
        running.client(OPERATOR) as operator,
    ):
        await operator.subscribe(*IDENTIFIED)
        async with running.client(traced["device"]["id"]) as panel:
            parent = ("traceparent", f"00-{PANEL_TRACE}-{PANEL_SPAN}-01")
            await panel.publish(*panel_message(traced), user_properties=[parent])
            await panel.publish(*panel_message(untraced))
        await running.wait_processed(2)
        async with running.client(GATEWAY) as gateway_account:
            await gateway_account.publish(SENTINEL, b"{}")
        copies = await collect_until_quiet(operator, sentinel_topic=SENTINEL)
    # The gateway has stopped: its span processor posted what it held on the way out.
    named = {tuple(p.split("-")[1:3]) for m in copies for p in m.properties("traceparent")}
    spans = {(s.trace_id.hex(), s.span_id.hex()): s for s in otlp_collector.spans()}
    assert len(named) == 2 and set(spans) == named
    [continued] = [s for (trace, _), s in spans.items() if trace == PANEL_TRACE]
    assert continued.parent_span_id.hex() == PANEL_SPAN
    assert all(s.name == "intercom.event visitor" for s in spans.values())
