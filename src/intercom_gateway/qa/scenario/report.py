"""Scenario results for people (a rich table and the failures spelled out) and for CI
(JUnit XML, one test case per scenario; JSON with every expectation)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from intercom_gateway.qa.scenario.runner import ScenarioResult


def verdict(result: ScenarioResult) -> str:
    if result.error is not None and not result.expectations:
        return "error"
    return "passed" if result.passed else "failed"


_STYLE = {"passed": "green", "failed": "red", "error": "bold red"}


def progress_line(result: ScenarioResult) -> Text:
    state = verdict(result)
    mark = "✓" if state == "passed" else "✗"
    return Text.assemble(
        (f"{mark} ", _STYLE[state]), result.name, (f"  {result.duration:.2f} s", "dim")
    )


def summary_table(results: Sequence[ScenarioResult]) -> Table:
    table = Table(title="Scenarios", show_lines=False)
    table.add_column("scenario")
    table.add_column("result")
    table.add_column("expectations", justify="right")
    table.add_column("time", justify="right")
    for result in results:
        state = verdict(result)
        held = sum(e.passed for e in result.expectations)
        table.add_row(
            result.name,
            Text(state.upper(), _STYLE[state]),
            f"{held}/{result.planned}",
            f"{result.duration:.2f} s",
        )
    passed = sum(r.passed for r in results)
    table.caption = f"{passed} of {len(results)} scenarios passed"
    return table


def failure_text(result: ScenarioResult) -> list[str]:
    """Every failed expectation with its line, what was expected and what was seen."""
    lines = [f"{result.name} ({result.path}): {result.description}"]
    if result.error is not None:
        lines.append(f"  error: {result.error}")
    for failed in result.failures:
        lines.append(f"  {result.path}:{failed.line}: {failed.summary}")
        lines += [f"    {detail}" for detail in failed.detail]
    return lines


def print_report(console: Console, results: Sequence[ScenarioResult]) -> None:
    console.print(summary_table(results))
    for result in results:
        if not result.passed:
            console.print()
            for line in failure_text(result):
                console.print(line, markup=False, highlight=False, soft_wrap=True)


def junit_xml(results: Sequence[ScenarioResult]) -> str:
    failures = sum(verdict(r) == "failed" for r in results)
    errors = sum(verdict(r) == "error" for r in results)
    suite = ET.Element(
        "testsuite",
        name="intercom-gateway scenarios",
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        time=f"{sum(r.duration for r in results):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"scenarios.{result.path.stem}",
            name=result.name,
            file=str(result.path),
            time=f"{result.duration:.3f}",
        )
        state = verdict(result)
        if state != "passed":
            first = result.failures[0].summary if result.failures else result.error or ""
            node = ET.SubElement(case, "failure" if state == "failed" else "error", message=first)
            node.text = "\n".join(failure_text(result))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def json_report(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    return {
        "passed": all(r.passed for r in results),
        "counts": {
            state: sum(verdict(r) == state for r in results)
            for state in ("passed", "failed", "error")
        },
        "scenarios": [
            {
                "name": r.name,
                "file": str(r.path),
                "description": r.description,
                "result": verdict(r),
                "duration_s": round(r.duration, 3),
                "error": r.error,
                "expectations": [
                    {
                        "line": e.line,
                        "summary": e.summary,
                        "passed": e.passed,
                        "detail": e.detail,
                    }
                    for e in r.expectations
                ],
            }
            for r in results
        ],
    }


def write_reports(
    results: Sequence[ScenarioResult], *, junit: Path | None, json_path: Path | None
) -> None:
    if junit is not None:
        junit.write_text(junit_xml(results), encoding="utf-8")
    if json_path is not None:
        text = json.dumps(json_report(results), indent=2, ensure_ascii=False)
        json_path.write_text(text + "\n", encoding="utf-8")
