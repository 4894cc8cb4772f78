"""The relay benchmark's figures: medians and spreads over the repetitions, the ratios
between paths, the machine they ran on, and the table and PNG of docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import ratio, spread
from bench.workload import REPO_ROOT


def aggregate(runs: Sequence[dict[str, Any]], scenario: str) -> dict[str, Any]:
    """Median and spread over the repetitions that lost nothing."""
    mine = [r for r in runs if r["scenario"] == scenario]
    good = {
        mode: [r for r in mine if r["mode"] == mode and not r["failed"] and "latency" in r]
        for mode in ("saturation", "latency")
    }
    result: dict[str, Any] = {
        "failed_runs": sum(1 for r in mine if r["failed"]),
        "runs": len(mine),
    }
    saturated = good["saturation"]
    if saturated:
        result["events_per_s"] = spread([r["steady_rate"] for r in saturated]).as_dict()
        processes = sorted({p for r in saturated for p in r["cpu_per_10k"]})
        result["cpu_per_10k"] = {
            p: spread([r["cpu_per_10k"][p] for r in saturated if p in r["cpu_per_10k"]]).as_dict()
            for p in processes
        }
    paced = good["latency"]
    if paced:
        result["latency"] = {
            key: spread([r["latency"][key] for r in paced]).as_dict()
            for key in ("p50_ms", "p99_ms", "max_ms")
        }
    return result


def _median(scenarios: dict[str, Any], scenario: str, *path: str) -> float | None:
    node: Any = scenarios.get(scenario)
    for key in (*path, "median"):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node)


def comparisons(scenarios: dict[str, Any]) -> dict[str, float | None]:
    def rate(name: str) -> float | None:
        return _median(scenarios, name, "events_per_s")

    def p99(name: str) -> float | None:
        return _median(scenarios, name, "latency", "p99_ms")

    full_p99, raw_p99 = p99("gateway"), p99("raw")
    return {
        "full/raw": ratio(rate("gateway"), rate("raw")),
        "full/raw-fanout": ratio(rate("gateway"), rate("raw-fanout")),
        "raw-fanout/raw": ratio(rate("raw-fanout"), rate("raw")),
        "full/passthrough": ratio(rate("gateway"), rate("passthrough")),
        "full/passthrough-fanout": ratio(rate("gateway"), rate("passthrough-fanout")),
        "passthrough/raw": ratio(rate("passthrough"), rate("raw")),
        "lean/paho transport": ratio(rate("passthrough"), rate("passthrough-paho")),
        "PostgreSQL/SQLite gateway": ratio(rate("gateway-pg"), rate("gateway")),
        "added_p99_ms": None if full_p99 is None or raw_p99 is None else full_p99 - raw_p99,
    }


# --- reporting ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mosquitto = subprocess.run(
        ["mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosquitto[0] if mosquitto else "unknown",
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "pydantic": importlib.metadata.version("pydantic"),
        "intercom_gateway": importlib.metadata.version("intercom-gateway"),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cell(node: dict[str, Any] | None, digits: int = 0) -> str:
    if not node:
        return "failed"
    return (
        f"{_fmt(node['median'], digits)} ({_fmt(node['min'], digits)}-{_fmt(node['max'], digits)})"
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The results as the table of docs/benchmarks.md: median (min-max) of the repetitions."""
    processes = ("publisher", "relay", "subscriber", "broker", "store")
    lines = [
        "| path | events/s at saturation | p50 ms | p99 ms | max ms | CPU s / 10k events: "
        + " / ".join(processes)
        + " | failed runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, data in result["scenarios"].items():
        latency = data.get("latency", {})
        cpu = data.get("cpu_per_10k", {})
        lines.append(
            f"| {name} | {_cell(data.get('events_per_s'))} | {_cell(latency.get('p50_ms'), 2)}"
            f" | {_cell(latency.get('p99_ms'), 2)} | {_cell(latency.get('max_ms'), 1)} | "
            + " / ".join(_fmt(cpu[p]["median"], 2) if p in cpu else "-" for p in processes)
            + f" | {data['failed_runs']} of {data['runs']} |"
        )
    ratios = result["comparisons"]
    lines.append("")
    lines.append(
        "Ratios of medians: "
        + ", ".join(
            f"{key} = {_fmt(value, 2)}" for key, value in ratios.items() if key != "added_p99_ms"
        )
        + f"; p99 added by the gateway over raw at {result['workload']['latency_rate']:,.0f}"
        f" events/s = {_fmt(ratios['added_p99_ms'], 2)} ms."
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["scenarios"])
    data = result["scenarios"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    def bars(axis: Any, key: Sequence[str], offset: float, width: float, label: str) -> None:
        medians: list[float] = []
        errors: list[list[float]] = [[], []]
        for name in names:
            node: Any = data[name]
            for part in key:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            median = node.get("median", 0.0)
            medians.append(median)
            errors[0].append(median - node.get("min", median))
            errors[1].append(node.get("max", median) - median)
        positions = [i + offset for i in range(len(names))]
        axis.bar(positions, medians, width, yerr=errors, capsize=4, label=label)

    bars(left, ("events_per_s",), 0, 0.6, "median, min-max")
    left.set_title("Delivered events/s at saturation (QoS 1)")
    bars(right, ("latency", "p50_ms"), -0.2, 0.4, "p50")
    bars(right, ("latency", "p99_ms"), 0.2, 0.4, "p99")
    right.set_title(f"End-to-end latency at {result['workload']['latency_rate']:,.0f} events/s")
    right.set_ylabel("ms, log scale")
    right.set_yscale("log")
    for axis in (left, right):
        axis.set_xticks(range(len(names)), names, rotation=15)
        axis.legend()
    figure.suptitle(f"{result['machine']['cpu_model']}, {result['machine']['nproc']} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
