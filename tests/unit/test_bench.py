"""The relay benchmark's statistics: what each reported figure means, and when a run fails."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from bench import relay_bench
from bench.clients import event_id_of
from bench.paths import Bench
from bench.relay_bench import parse
from bench.report import aggregate, comparisons, markdown_table
from bench.stats import (
    Delivery,
    cpu_per_10k,
    latency_summary,
    percentile,
    ratio,
    spread,
    steady_rate,
)
from bench.workload import QUICK, SCENARIOS, Options, prepare


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # interpolated between the middle two
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order of the input does not matter
        ([float(i) for i in range(1, 101)], 99, 99.01),  # numpy's default definition
    ],
)
def test_percentile_interpolates_linearly_between_closest_ranks(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_refuses_a_rank_outside_0_to_100(q: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_summary_reports_p50_p99_and_max() -> None:
    latencies = [1.0] * 98 + [10.0, 50.0]
    summary = latency_summary(latencies)
    assert summary["p50_ms"] == 1.0
    assert summary["p99_ms"] == pytest.approx(10.4)
    assert summary["max_ms"] == 50.0
    assert summary["count"] == 100


def test_spread_gives_median_range_and_width_relative_to_the_median() -> None:
    result = spread([900.0, 1_000.0, 1_100.0, 1_050.0, 950.0])
    assert (result.median, result.low, result.high, result.count) == (1_000.0, 900.0, 1_100.0, 5)
    assert result.spread_pct == pytest.approx(20.0)
    assert result.as_dict()["n"] == 5


def test_spread_of_one_repetition_has_no_width() -> None:
    assert spread([3.0]).spread_pct == 0.0


def test_steady_rate_leaves_out_ramp_up_and_tail() -> None:
    # 1,000 events/s in the middle, a slow first 10% and a slow last 10%.
    arrivals = [i * 10_000_000 for i in range(10)]  # 100/s ramp-up
    arrivals += [arrivals[-1] + i * 1_000_000 for i in range(1, 81)]
    arrivals += [arrivals[-1] + i * 10_000_000 for i in range(1, 11)]
    assert steady_rate(arrivals) == pytest.approx(1_000, rel=0.05)


def test_steady_rate_needs_two_arrivals() -> None:
    with pytest.raises(ValueError):
        steady_rate([1])


def test_delivery_with_a_missing_event_fails_the_run() -> None:
    delivery = Delivery(100, delivered_events=99, expected_copies=100, delivered_copies=99)
    assert delivery.failed
    assert delivery.lost_events == 1
    assert delivery.reason is not None and "lost 1 of 100 events" in delivery.reason


def test_delivery_with_a_missing_copy_to_another_destination_fails_the_run() -> None:
    delivery = Delivery(100, 100, expected_copies=400, delivered_copies=399)
    assert delivery.failed
    assert delivery.lost_copies == 1


def test_duplicates_are_allowed_at_qos_1_and_do_not_hide_a_loss() -> None:
    assert not Delivery(100, 100, 100, 103, duplicates=3).failed
    # 3 duplicates cannot make up for 3 missing events.
    assert Delivery(100, 97, 100, 100, duplicates=3).failed


def test_cpu_per_10k_scales_each_process_to_ten_thousand_events() -> None:
    assert cpu_per_10k({"relay": 2.0, "broker": 0.5}, 5_000) == {"relay": 4.0, "broker": 1.0}
    with pytest.raises(ValueError):
        cpu_per_10k({"relay": 1.0}, 0)


def test_ratio_is_none_when_a_side_has_no_figure() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(None, 4.0) is None
    assert ratio(2.0, None) is None
    assert ratio(2.0, 0.0) is None


def test_event_id_is_read_from_raw_events_and_envelopes_but_not_analytics_copies() -> None:
    event_id = "0b5c8d0e-9f3a-4c1e-8a2b-3c4d5e6f7a8b"
    assert event_id_of(f'{{"schema_version":1,"event_id":"{event_id}","seq":3}}'.encode()) == (
        event_id.encode()
    )
    envelope = f'{{"decision_id":"d","event_id":"{event_id}","event":{{"event_id":"x"}}}}'
    assert event_id_of(envelope.encode()) == event_id.encode()
    assert event_id_of(b'{"decision_id":"d","event_id":null}') is None


def _run(scenario: str, mode: str, *, failed: bool, rate: float, p99: float) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "mode": mode,
        "failed": failed,
        "steady_rate": rate,
        "cpu_per_10k": {"relay": 1.0, "broker": 0.5},
        "latency": {"p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99 * 2},
    }


def test_failed_runs_are_counted_and_left_out_of_the_medians() -> None:
    runs = [
        _run("gateway", "saturation", failed=False, rate=1_000, p99=0),
        _run("gateway", "saturation", failed=True, rate=9_999, p99=0),  # fast because it lost
        _run("gateway", "saturation", failed=False, rate=1_200, p99=0),
        _run("gateway", "latency", failed=False, rate=0, p99=4.0),
    ]
    result = aggregate(runs, "gateway")
    assert result["failed_runs"] == 1
    assert result["events_per_s"]["median"] == 1_100
    assert result["events_per_s"]["max"] == 1_200
    assert result["latency"]["p99_ms"]["median"] == 4.0


def test_a_path_whose_every_run_failed_has_no_figure_and_no_ratio() -> None:
    runs = [
        _run("raw", "saturation", failed=False, rate=4_000, p99=0),
        _run("raw", "latency", failed=False, rate=0, p99=2.0),
        _run("gateway", "saturation", failed=True, rate=9_999, p99=0),
        _run("gateway", "latency", failed=False, rate=0, p99=5.0),
    ]
    scenarios = {name: aggregate(runs, name) for name in ("raw", "gateway")}
    assert "events_per_s" not in scenarios["gateway"]
    ratios = comparisons(scenarios)
    assert ratios["full/raw"] is None
    assert ratios["added_p99_ms"] == pytest.approx(3.0)
    table = markdown_table(
        {"scenarios": scenarios, "comparisons": ratios, "workload": {"latency_rate": 1_000.0}}
    )
    gateway_row = next(line for line in table.splitlines() if line.startswith("| gateway"))
    assert "| failed |" in gateway_row
    assert "1 of 2" in gateway_row


def test_the_entry_point_parses_the_options_it_always_had() -> None:
    assert parse([]) == Options()
    assert parse(["--quick"]) == replace(QUICK, label="quick")
    chosen = parse(
        [
            "--quick",
            "--events=50",
            "--latency-events=40",
            "--rate=250",
            "--repeat=2",
            "--backlog=7",
            "--scenarios=raw,gateway",
            "--no-plot",
        ]
    )
    assert chosen == replace(
        QUICK,
        saturation_events=50,
        latency_events=40,
        rate=250.0,
        repeat=2,
        backlog=7,
        scenarios=("raw", "gateway"),
        plot=False,
        label="quick",
    )
    assert SCENARIOS == (
        "raw",
        "raw-fanout",
        "passthrough",
        "passthrough-fanout",
        "passthrough-paho",
        "gateway",
        "gateway-pg",
    )
    # gateway-pg needs PostgreSQL: measured when named, not by default.
    assert Options().scenarios == SCENARIOS[:-1]


def test_the_entry_point_refuses_an_unknown_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--scenarios", "raw,bogus"])
    assert "unknown scenarios: bogus" in capsys.readouterr().err


def test_the_entry_point_still_names_what_its_callers_import() -> None:
    # intercom-gateway bench (cli/qa.py) imports main; the smoke test, QUICK, SCENARIOS
    # and run; the figures and the paths now live in bench/report.py and bench/paths.py.
    assert relay_bench.aggregate is aggregate
    assert relay_bench.markdown_table is markdown_table
    assert relay_bench.Bench is Bench
    assert relay_bench.prepare is prepare
    assert callable(relay_bench.main) and callable(relay_bench.run)
