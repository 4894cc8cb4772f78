"""The scenario runner against the real Mosquitto: the whole library passes, and wrong
expectations fail with a message that says what was expected and what was seen."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from textwrap import dedent

from click.testing import CliRunner

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.cli.main import main
from intercom_gateway.cli.qa import LIBRARY
from intercom_gateway.qa.scenario.loader import LoadedScenario, load_scenarios, parse_scenario
from intercom_gateway.qa.scenario.report import junit_xml
from intercom_gateway.qa.scenario.runner import (
    External,
    ScenarioResult,
    SelfContained,
    run_scenarios,
)
from intercom_gateway.qa.scenario.world import build_world
from intercom_gateway.qa.testing import running_gateway

# Each must fail: (scenario, words its failure must contain).
WRONG = {
    "not-entitled": (
        """\
        name: not-entitled
        description: "wrong on purpose (§5(1)②): elder-watch never declared visitors"
        steps:
          - send: {type: visitor, dwelling: d0001, as: caller}
        expect:
          - receives: partner:elder-watch
            match: {event: caller}
            within_ms: 300
        """,
        ["expected: partner:elder-watch receives a message from caller", "seen: nothing"],
    ),
    "stripped-field": (
        """\
        name: stripped-field
        description: "wrong on purpose (§5(5)): analytics never gets the key nickname"
        steps:
          - send: {type: return_home, dwelling: d0001, as: home}
        expect:
          - receives: analytics
            match: {type: return_home, present: [key_nickname]}
            within_ms: 300
        """,
        ["with [key_nickname]", "return_home", "-- no field key_nickname"],
    ),
    "unlock-to-partner": (
        """\
        name: unlock-to-partner
        description: "wrong on purpose (§1(8)): says a partner must NOT get what it gets"
        steps:
          - send: {type: visitor, dwelling: d0001, as: caller}
        expect:
          - not_receives: partner:concierge
            match: {event: caller}
          - no_ledger_row: {event: caller, recipient: partner:concierge}
        """,
        # Two messages: the visitor's facts, and its image on a topic of its own.
        [
            "seen: 2 matching message(s)",
            "partners/concierge/v1/b001/d0001/visitor",
            "partners/concierge/v1/b001/d0001/visitor/image",
            "from caller",
        ],
    ),
}


def write_wrong(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (text, _) in WRONG.items():
        (directory / f"{name}.yaml").write_text(dedent(text), encoding="utf-8")
    return directory


async def run(
    broker: Mosquitto, scenarios: list[LoadedScenario], tmp_path: Path
) -> list[ScenarioResult]:
    return await run_scenarios(scenarios, SelfContained(broker), workdir=tmp_path)


async def test_the_whole_library_passes_on_one_broker(broker: Mosquitto, tmp_path: Path) -> None:
    results = await run(broker, load_scenarios([LIBRARY]), tmp_path)
    failed = {r.name: [r.error, *(f.detail for f in r.failures)] for r in results if not r.passed}
    assert failed == {}
    assert len(results) >= 25


async def test_wrong_expectations_fail_naming_expected_and_seen(
    broker: Mosquitto, tmp_path: Path
) -> None:
    results = await run(broker, load_scenarios([write_wrong(tmp_path / "wrong")]), tmp_path)
    assert {r.name for r in results} == set(WRONG)
    for result in results:
        assert not result.passed and result.error is None, result.name
        text = "\n".join(line for f in result.failures for line in [f.summary, *f.detail])
        for words in WRONG[result.name][1]:
            assert words in text, (result.name, words, text)
    unlock = next(r for r in results if r.name == "unlock-to-partner")
    assert [f.line for f in unlock.failures] == [6, 8]  # both expectations, by line
    suite = ET.fromstring(junit_xml(results)).find("testsuite")
    assert suite is not None and suite.get("failures") == "3" and suite.get("tests") == "3"


async def test_one_wrong_expectation_fails_a_scenario_whose_others_hold(
    broker: Mosquitto, tmp_path: Path
) -> None:
    text = (LIBRARY / "item3-visitor-image.yaml").read_text(encoding="utf-8")
    # Claim the group gets the image, which §4 forbids.
    wrong = text.replace(
        "match: {event: caller, absent: [image], purposes_exclude",
        "match: {event: caller, present: [image], purposes_exclude",
    )
    assert wrong != text
    loaded = parse_scenario(wrong, tmp_path / "item3.yaml")
    [result] = await run(broker, [loaded], tmp_path)
    [failure] = result.failures
    assert failure.summary.startswith("group receives a message from caller with [image]")
    assert any("-- no field image" in line for line in failure.detail)
    assert sum(e.passed for e in result.expectations) == len(result.expectations) - 1


def test_the_command_exits_non_zero_and_writes_junit_and_json(tmp_path: Path) -> None:
    wrong = write_wrong(tmp_path / "wrong")
    (wrong / "good.yaml").write_text(
        (LIBRARY / "item4-no-unlock-mode-to-partners.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    junit, report = tmp_path / "out.xml", tmp_path / "out.json"
    result = CliRunner().invoke(
        main, ["scenario", "run", str(wrong), "--junit", str(junit), "--json", str(report)]
    )
    assert result.exit_code == 1, result.output
    assert "1 of 4 scenarios passed" in result.output
    assert "expected: partner:elder-watch receives" in result.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("4", "3")
    failures = [str(case.get("name")) for case in suite if case.find("failure") is not None]
    assert sorted(failures) == sorted(WRONG)
    assert '"result": "failed"' in report.read_text(encoding="utf-8")


def test_the_command_exits_zero_when_every_expectation_holds(tmp_path: Path) -> None:
    one = LIBRARY / "item5-partner-declared-share.yaml"
    result = CliRunner().invoke(main, ["scenario", "run", str(one)])
    assert result.exit_code == 0, result.output


async def test_a_scenario_runs_against_a_gateway_someone_else_started(
    broker: Mosquitto, tmp_path: Path
) -> None:
    [loaded] = load_scenarios([LIBRARY / "item5-partner-declared-share.yaml"])
    world = build_world(loaded.scenario, source=loaded.path, workdir=tmp_path / "world")
    async with running_gateway(broker, world.registry, tmp_path / "gw"):
        external = External(
            host=broker.host, port=broker.port, secrets_dir=broker.credentials.directory
        )
        [result] = await run_scenarios([loaded], external, workdir=tmp_path / "run")
    assert result.passed, [result.error, *(f.detail for f in result.failures)]


def test_the_command_shows_progress_and_the_report_but_no_log_lines() -> None:
    # The rejection it provokes would log a warning line between the progress marks.
    one = LIBRARY / "bad-input-bad-topic.yaml"
    result = CliRunner().invoke(main, ["scenario", "run", str(one)])
    assert result.exit_code == 0, result.output
    assert "bad-input-bad-topic" in result.output
    assert [line for line in result.output.splitlines() if '"level"' in line] == []
