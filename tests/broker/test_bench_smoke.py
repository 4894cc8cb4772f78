"""The relay benchmark end to end in its smallest mode: every path delivers everything.

A few hundred events per path and one repetition: this proves the harness (processes,
counting, loss detection, the result file), not the figures.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from bench.relay_bench import QUICK, SCENARIOS, run


@pytest.mark.timeout(90)
def test_quick_bench_loses_nothing_and_writes_every_field(tmp_path: Path) -> None:
    # Every path, gateway-pg too (its own PostgreSQL; not in the default set).
    options = replace(
        QUICK, saturation_events=200, latency_events=200, rate=2_000.0, scenarios=SCENARIOS
    )
    result = run(options, results=tmp_path, command="pytest")

    written = json.loads(Path(result["files"]["json"]).read_text(encoding="utf-8"))
    assert Path(result["files"]["png"]).stat().st_size > 0
    assert set(written) >= {
        "workload",
        "runs",
        "scenarios",
        "comparisons",
        "machine",
        "command",
        "options",
        "duration_s",
    }
    assert set(written["machine"]) >= {"nproc", "cpu_model", "python", "mosquitto", "paho_mqtt"}
    assert len(written["runs"]) == len(SCENARIOS) * 2
    for each in written["runs"]:
        assert each["delivery"]["lost_events"] == 0, each["delivery"]
        assert each["delivery"]["lost_copies"] == 0, each["delivery"]
        assert not each["failed"]
        assert set(each) >= {"steady_rate", "latency", "cpu_per_10k", "foreign_cores"}
        assert set(each["latency"]) == {"p50_ms", "p99_ms", "max_ms", "count"}
        expected = {"publisher", "subscriber", "broker"} | (
            {"relay"} if not each["scenario"].startswith("raw") else set()
        )
        if each["scenario"] == "gateway-pg":  # the PostgreSQL server, which does the store's work
            expected.add("store")
            assert each["cpu_per_10k"]["store"] > 0
        assert set(each["cpu_per_10k"]) == expected
    # Without a relay, each destination's own connection got its copies from the broker.
    destinations = {d for names in written["workload"]["fanout"].values() for d in names}
    direct = [each for each in written["runs"] if each["scenario"] == "raw-fanout"]
    assert direct
    for each in direct:
        assert set(each["copies_by_prefix"]) == destinations
        assert sum(each["copies_by_prefix"].values()) == each["delivery"]["expected_copies"]
    for name in SCENARIOS:
        scenario = written["scenarios"][name]
        assert scenario["failed_runs"] == 0
        assert set(scenario) >= {"events_per_s", "latency", "cpu_per_10k"}
        assert set(scenario["events_per_s"]) == {"median", "min", "max", "spread_pct", "n"}
    assert set(written["comparisons"]) == {
        "full/raw",
        "full/raw-fanout",
        "raw-fanout/raw",
        "full/passthrough",
        "full/passthrough-fanout",
        "passthrough/raw",
        "lean/paho transport",
        "PostgreSQL/SQLite gateway",
        "added_p99_ms",
    }
    assert all(value is not None for value in written["comparisons"].values())
