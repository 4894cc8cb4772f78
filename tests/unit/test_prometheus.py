"""The Prometheus exposition (``gateway.metrics``): histogram buckets, the families and
their labels, and the sample Grafana dashboard's expressions against them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from intercom_gateway.gateway.metrics import BUCKETS, Backlog, GatewayCollector, Histogram
from intercom_gateway.gateway.partitioned import _add
from intercom_gateway.gateway.status import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "intercom-gateway.json"
# Small, bounded label sets: never a dwelling, device or partner id.
LABELS = {"kind", "reason", "result", "stage", "le", "gateway_id", "policy_version"}


def test_an_observation_on_a_bound_counts_in_that_bucket() -> None:
    histogram = Histogram()
    for seconds in (BUCKETS[0], BUCKETS[0] * 1.01, BUCKETS[-1] * 2, 0.0):
        histogram.observe(seconds)
    buckets = dict(histogram.buckets())
    assert buckets[str(BUCKETS[0])] == 2  # 0 and the bound itself: le is "<="
    assert buckets[str(BUCKETS[1])] == 3
    assert buckets[str(BUCKETS[-1])] == 3 and buckets["+Inf"] == 4
    assert histogram.total == BUCKETS[0] * 2.01 + BUCKETS[-1] * 2


def test_a_partitioned_process_sums_its_partitions_histograms_and_kinds() -> None:
    one, two = Metrics(), Metrics()
    one.timings.publish.observe(0.001)
    two.timings.publish.observe(0.002)
    two.withheld_by[("partner", "no_rule")] += 1
    total = Metrics()
    for part in (one, two):
        _add(total, part)  # what Partitioned.metrics() does
    assert dict(total.timings.publish.buckets())["+Inf"] == 2
    assert total.withheld_by == {("partner", "no_rule"): 1}
    assert dict(one.timings.publish.buckets())["+Inf"] == 1  # the parts are untouched


def exposition(metrics: Metrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        GatewayCollector(
            gateway_id="gw-1",
            policy_version="2026-04-01",
            publish_window=5000,
            metrics=lambda: metrics,
            backlog=lambda: Backlog(unacked=3, publishing=2, ledger_waiting=1),
        )
    )
    return generate_latest(registry).decode()


def populated() -> Metrics:
    """Counts in every family, so that each has samples."""
    metrics = Metrics(received=5, events=4)
    metrics.forwarded.update(["cloud", "cloud", "partner"])
    metrics.withheld_by.update([("partner", "service_not_used")])
    metrics.rejected["bad_topic"] += 1
    metrics.settings["applied"] += 2
    metrics.timings.end_to_end.observe(0.003)
    return metrics


def test_every_family_has_help_and_bounded_labels() -> None:
    metrics = populated()
    families = {f.name: f for f in text_string_to_metric_families(exposition(metrics))}
    assert all(
        f.name.startswith("intercom_gateway_") and f.documentation for f in families.values()
    )
    labels = {k for f in families.values() for s in f.samples for k in s.labels}
    assert labels <= LABELS
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert values[("intercom_gateway_received_total", ())] == 5
    assert values[("intercom_gateway_forwarded_total", (("kind", "cloud"),))] == 2
    withheld = (("kind", "partner"), ("reason", "service_not_used"))
    assert values[("intercom_gateway_withheld_total", withheld)] == 1
    assert values[("intercom_gateway_consent_changes_total", (("result", "applied"),))] == 2
    assert values[("intercom_gateway_unacked_messages", ())] == 3
    assert values[("intercom_gateway_event_seconds_count", ())] == 1
    assert metrics.withheld == {"service_not_used": 1}  # the retained metrics' view


def test_every_dashboard_expression_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = {
        sample.name
        for family in text_string_to_metric_families(exposition(populated()))
        for sample in family.samples
    }
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {n for e in expressions for n in re.findall(r"\bintercom_gateway_\w+", e)}
    assert expressions and named
    assert named <= exported, named - exported
    # Every family the gateway exports is on the dashboard somewhere.
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in named}
    assert families <= shown, families - shown
