"""The scenario file format: valid files load, bad files say what is wrong and on which
line, the library's files all load, and matching decides what it claims to."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest
from click.testing import CliRunner

from intercom_gateway.bus import Message
from intercom_gateway.cli.main import main
from intercom_gateway.cli.qa import LIBRARY
from intercom_gateway.core.models import RejectReason
from intercom_gateway.errors import ConfigError
from intercom_gateway.qa.scenario.loader import (
    ScenarioFileError,
    load_scenarios,
    parse_scenario,
)
from intercom_gateway.qa.scenario.matching import Sent, destination_filters, mismatches, observe
from intercom_gateway.qa.scenario.model import (
    BAD_INPUT_CLASSES,
    Match,
    Receives,
    SendStep,
    scenario_json_schema,
)
from intercom_gateway.simulators.bad_input import GENERATORS

GOOD = """\
name: good
description: "§5(1)②: a partner receives a used dwelling's visitor"
setup:
  fleet: {buildings: 1, dwellings: 2}
  consent:
    d0002: {services: []}
steps:
  - send: {type: visitor, dwelling: d0001, as: v1, fields: {outcome: missed}}
  - wait: {processed: true}
expect:
  - receives: partner:concierge
    match: {event: v1, present: [image]}
  - ledger_row: {event: v1, recipient: partner:concierge}
"""


def load(text: str) -> object:
    return parse_scenario(dedent(text), Path("s.yaml"))


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ScenarioFileError) as caught:
        load(text)
    return [(p.line, p.message) for p in caught.value.problems]


def test_a_good_file_loads_with_its_steps_and_expectations() -> None:
    loaded = parse_scenario(GOOD, Path("good.yaml"))
    step = loaded.scenario.steps[0]
    assert isinstance(step, SendStep)
    assert step.send.name == "v1" and step.send.fields == {"outcome": "missed"}
    assert loaded.lines.line(("expect", 1)) == 13


@pytest.mark.parametrize(
    ("broken", "line", "words"),
    [
        # an unknown event type, deep inside a step
        (GOOD.replace("type: visitor", "type: visiter"), 8, "'visitor'"),
        # an unknown key in a match
        (GOOD.replace("present: [image]", "colour: red"), 12, "Extra inputs"),
        # a step of no known kind
        (GOOD.replace("  - wait: {processed: true}", "  - sleep: 5"), 9, "exactly one of"),
        # a wait with two kinds at once
        (GOOD.replace("{processed: true}", "{processed: true, ms: 5}"), 9, "exactly one of"),
        # a destination that does not exist
        (GOOD.replace("partner:concierge\n", "mars\n"), 11, "destination"),
        # an expectation that names no step
        (GOOD.replace("{event: v1, recipient", "{event: v9, recipient"), 13, "'v9'"),
        # consent of a dwelling: a wrong type
        (GOOD.replace("services: []", "services: 7"), 6, "tuple"),
        # a missing description
        (
            GOOD.replace(
                'description: "§5(1)②: a partner receives a used dwelling\'s visitor"\n', ""
            ),
            1,
            "Field required",
        ),
    ],
)
def test_a_bad_file_names_the_line_of_each_problem(broken: str, line: int, words: str) -> None:
    found = problems(broken)
    assert any(at == line and words in message for at, message in found), found


def test_yaml_syntax_errors_name_their_line() -> None:
    found = problems("name: x\nsteps:\n  - send: {type: visitor\nexpect: []\n")
    assert found[0][0] in {3, 4}


def test_errors_render_as_file_and_line() -> None:
    with pytest.raises(ScenarioFileError) as caught:
        parse_scenario(GOOD.replace("type: visitor", "type: visiter"), Path("x/s.yaml"))
    assert str(caught.value).startswith("x/s.yaml:8: steps[0].send.type:")


def test_a_name_defined_twice_is_an_error() -> None:
    twice = GOOD.replace(
        "  - wait: {processed: true}", "  - send: {type: alarm, dwelling: d0001, as: v1}"
    )
    assert any("used twice" in message for _, message in problems(twice))


def test_every_bad_input_class_is_a_generator_with_the_reason_it_claims() -> None:
    assert set(BAD_INPUT_CLASSES) == {*GENERATORS, "replayed"}


def test_the_schema_describes_steps_and_expectations() -> None:
    schema = scenario_json_schema()
    text = json.dumps(schema)
    for key in ("send", "bad_input", "receives", "not_receives", "ledger_row", '"as"'):
        assert key in text
    assert schema["additionalProperties"] is False


def test_the_library_loads_and_names_a_clause_in_every_description() -> None:
    loaded = load_scenarios([LIBRARY])
    assert len(loaded) >= 20
    for item in loaded:
        assert "§" in item.scenario.description or "item" in item.scenario.description, item.path


# Reasons no panel's input can earn in a scenario, and where they are tested instead.
NOT_IN_THE_LIBRARY = {
    # A scenario's steps publish no MQTT 5 user properties (panels send none of their own).
    RejectReason.TOO_MANY_PROPERTIES: "tests/component/test_gateway_containment.py",
    # A bug of the gateway's own, not something input may cause: a scenario that earned
    # it would be a failing gateway. The fuzz tests assert that it never happens.
    RejectReason.INTERNAL_ERROR: "tests/component/test_fuzz_gateway.py",
    # Handling that failed (or killed the process) max_attempts times: a crash, not input.
    RejectReason.DEAD_LETTER: "tests/broker/test_poison.py",
    # A contractor's distribution, not a panel's input (scenario steps are panels').
    RejectReason.UNKNOWN_CONTRACTOR: "tests/component/test_distribution_component.py",
    RejectReason.BUILDING_NOT_ADDRESSABLE: "tests/component/test_distribution_component.py",
}


def test_the_library_has_a_scenario_for_every_reason_a_panel_can_cause() -> None:
    covered = {
        expectation.match.reason
        for item in load_scenarios([LIBRARY])
        for expectation in item.scenario.expect
        if isinstance(expectation, Receives) and expectation.receives == "rejected"
    }
    assert set(RejectReason) - set(NOT_IN_THE_LIBRARY) - covered == set()
    assert covered.isdisjoint(NOT_IN_THE_LIBRARY)  # else the exception is stale


def test_two_scenarios_of_one_name_are_refused(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(GOOD, encoding="utf-8")
    with pytest.raises(ConfigError, match="used twice: good"):
        load_scenarios([tmp_path])


def test_scenario_check_and_schema_commands(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("type: visitor", "type: visiter"), encoding="utf-8")
    result = CliRunner().invoke(main, ["scenario", "check", str(bad)])
    assert result.exit_code == 1 and f"{bad}:8:" in result.output
    schema = CliRunner().invoke(main, ["scenario", "schema"])
    assert schema.exit_code == 0 and json.loads(schema.output)["title"]


# --- matching ------------------------------------------------------------------------


def forwarded(**event: object) -> Message:
    """A visitor's image as concierge gets it: a message of its own, one rule's purposes."""
    envelope = {
        "event_id": "e-1",
        "purposes": ["resident_confirmation"],
        "rule_id": "partner-images",
        "event": {"type": "visitor", "dwelling_id": "d0001", **event},
    }
    return Message(
        "partners/concierge/v1/b001/d0001/visitor/image",
        json.dumps(envelope).encode(),
        user_properties=(("purpose", "resident_confirmation"),),
    )


REFS = {"v1": Sent("v1", "intercom/v1/b001/panel-b001-d0001/events/visitor", b"{}", "e-1", 0.0)}


@pytest.mark.parametrize(
    ("match", "why"),
    [
        (Match(event="v1", present=["image"]), []),
        (Match(type="alarm"), ["type is 'visitor', not 'alarm'"]),
        (Match(absent=["image"]), ["has field image"]),
        (Match(values={"image.id": "img-2"}), ["image.id is 'img-1', not 'img-2'"]),
        (Match(purposes=["partner_provision"]), ["purposes are"]),
        (Match(purposes_include=["marketing"]), ["purposes lack ['marketing']"]),
        (Match(dwelling="d0002"), ["dwelling_id is 'd0001', not 'd0002'"]),
    ],
)
def test_matching_says_why_a_message_does_not_match(match: Match, why: list[str]) -> None:
    filters = destination_filters(["concierge"])
    observed = observe(forwarded(image={"id": "img-1"}), filters, at=0.0)
    assert observed is not None and observed.destination == "partner:concierge"
    found = mismatches(observed, match, REFS)
    assert len(found) == len(why)
    for text, start in zip(found, why, strict=True):
        assert text.startswith(start)


def test_purposes_in_the_envelope_and_the_user_properties_must_agree() -> None:
    message = forwarded()
    lying = Message(message.topic, message.payload, user_properties=(("purpose", "backup"),))
    observed = observe(lying, destination_filters(["concierge"]), at=0.0)
    assert observed is not None
    [problem] = mismatches(observed, Match(purposes_include=["resident_confirmation"]), REFS)
    assert "differ from the user properties" in problem


def test_a_destination_s_images_are_observed_as_that_destination() -> None:
    filters = destination_filters(["concierge"])
    for topic, destination in [
        ("cloud/v1/b001/d0001/visitor", "cloud"),
        ("cloud/v1/b001/d0001/visitor/image", "cloud"),
        ("group/v1/b001/d0001/visitor/image", "group"),  # never sent: a scenario can say so
        ("partners/concierge/v1/b001/d0001/visitor/image", "partner:concierge"),
    ]:
        observed = observe(Message(topic, b"{}"), filters, at=0.0)
        assert observed is not None and observed.destination == destination
