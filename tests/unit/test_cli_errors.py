"""Every error a command lets through becomes one `Error:` line and a documented status.

The mapping (``cli/common.py``, README "Exit codes"): 1 user or configuration error,
2 usage, 3 broker or gateway unreachable, 4 invalid input, 70 internal error.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from pydantic import BaseModel, ValidationError

from intercom_gateway.cli import common
from intercom_gateway.cli.main import main
from intercom_gateway.core.ingress import InputRejected
from intercom_gateway.core.models import RejectReason
from intercom_gateway.errors import (
    BrokerError,
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    GatewayError,
    SubscribeRefused,
)
from intercom_gateway.resident.service import PendingChange
from tests.factories import event_dict


class Point(BaseModel):
    x: int
    y: int


def _validation_error() -> ValidationError:
    try:
        Point.model_validate({"x": "one"})
    except ValidationError as error:
        return error
    raise AssertionError("valid")


def _wrapped(error: BaseException, outer: GatewayError) -> GatewayError:
    try:
        raise outer from error
    except GatewayError as raised:
        return raised


def _yaml_error() -> yaml.YAMLError:
    try:
        yaml.safe_load("a: [1,\n")
    except yaml.YAMLError as error:
        return error
    raise AssertionError("valid")


def _pending() -> PendingChange:
    change = type("Change", (), {"change_id": uuid.uuid4()})()
    return PendingChange(change, 1.0)


CASES: list[tuple[BaseException, int, str]] = [
    (ConfigError("no such account", path="x.json"), 1, "x.json: no such account"),
    (GatewayError("unknown dwelling b001/d0999"), 1, "unknown dwelling b001/d0999"),
    (BrokerError("mosquitto is not installed"), 1, "mosquitto is not installed"),
    (FileNotFoundError(2, "No such file or directory", "r.yaml"), 1, "r.yaml: No such file"),
    (_yaml_error(), 1, "not valid YAML: line 2, column 1"),
    (ConnectFailed("cannot reach broker 127.0.0.1:1"), 3, "cannot reach broker 127.0.0.1:1"),
    (ConnectionLost("connection lost"), 3, "connection lost"),
    (SubscribeRefused("cloud/#", 0x87), 3, "subscription to 'cloud/#' refused"),
    (ConnectionRefusedError(111, "Connection refused"), 3, "cannot reach the broker"),
    (TimeoutError(), 3, "cannot reach the broker or the gateway"),
    (_pending(), 3, "is the gateway running?"),
    (ExceptionGroup("tasks", [ConnectFailed("no CONNACK")]), 3, "no CONNACK"),
    (_validation_error(), 4, "x: Input should be a valid integer"),
    (_wrapped(_validation_error(), GatewayError("not a valid event")), 4, "not a valid event"),
    (InputRejected(RejectReason.BAD_TOPIC, "too long"), 4, "too long"),
    (RuntimeError("boom"), 70, "internal error: RuntimeError: boom"),
]


@pytest.mark.parametrize(("error", "code", "text"), CASES)
def test_every_known_error_has_its_status_and_one_line(
    error: BaseException, code: int, text: str
) -> None:
    got_code, message = common.describe(error)
    assert (got_code, "\n" in message) == (code, False), message
    assert text in message


def test_a_validation_error_names_the_first_field_and_counts_the_rest() -> None:
    line = common.validation_line(_validation_error())
    assert line == "x: Input should be a valid integer, unable to parse string as an integer" + (
        " (and 1 more)"
    )


def test_a_validation_error_inside_a_message_is_shortened_to_its_first_field() -> None:
    validation = _validation_error()
    error = _wrapped(validation, ConfigError(f"invalid registry: {validation}", path="r.yaml"))
    code, message = common.describe(error)
    assert code == 1
    assert message.startswith("r.yaml: invalid registry: x: Input should be a valid integer")
    assert "errors.pydantic.dev" not in message


# --- through the command line ------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def one_error_line(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ")
    return line


def test_simulate_with_a_broken_registry(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text("buildings: [oops\n", encoding="utf-8")
    line = one_error_line(invoke("simulate", "--registry", str(bad)), 1)
    assert f"{bad}: invalid device registry: line 2, column 1" in line


def test_simulate_with_a_registry_of_the_wrong_shape(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text("buildings: 3\n", encoding="utf-8")
    line = one_error_line(invoke("simulate", "--registry", str(bad)), 1)
    wrong = "buildings: Input should be a valid tuple"
    assert line == f"Error: {bad}: invalid device registry: {wrong}"


def test_explain_of_an_invalid_event_names_the_first_invalid_field() -> None:
    event = event_dict("visitor", seq="not a number")
    line = one_error_line(invoke("explain", "-", stdin=json.dumps(event)), 4)
    assert line == "Error: not a valid event: visitor.seq: Input should be a valid integer"


def test_explain_of_something_not_json() -> None:
    line = one_error_line(invoke("explain", "-", stdin="{not json"), 4)
    assert line.startswith("Error: not a valid event: Invalid JSON")


def test_api_without_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERCOM_STORE", raising=False)  # the SQLite file's check
    env = {"INTERCOM_API_TOKEN": "t" * 32}
    result = invoke("api", "--db", str(tmp_path / "none.sqlite"), "--port", "1", env=env)
    line = one_error_line(result, 1)
    assert line == (
        f"Error: {tmp_path / 'none.sqlite'}: no store here: has the gateway run? "
        "(`run` makes it; --db or INTERCOM_DB_PATH names another)"
    )


def test_api_without_a_token_or_a_store_says_both_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTERCOM_STORE", raising=False)  # the SQLite file's check
    result = invoke("api", "--db", str(tmp_path / "none.sqlite"), env={"INTERCOM_API_TOKEN": ""})
    line = one_error_line(result, 1)
    assert line.startswith("Error: INTERCOM_API_TOKEN is not set")
    assert "token issue" in line
    assert line.endswith(
        f"; and {tmp_path / 'none.sqlite'}: no store here: has the gateway "
        "run? (`run` makes it; --db or INTERCOM_DB_PATH names another)"
    )


def test_api_without_a_token(tmp_path: Path) -> None:
    db = tmp_path / "gateway.sqlite"
    db.touch()
    result = invoke("api", "--db", str(db), env={"INTERCOM_API_TOKEN": ""})
    assert "INTERCOM_API_TOKEN" in one_error_line(result, 1)


def test_an_unreachable_broker_is_status_3(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    assert invoke("credentials", "generate", "--secrets-dir", str(secrets)).exit_code == 0
    result = invoke("health", "--broker-port", "1", "--secrets-dir", str(secrets))
    assert "cannot reach broker 127.0.0.1:1" in one_error_line(result, 3)


def test_missing_broker_accounts_are_a_user_error(tmp_path: Path) -> None:
    result = invoke("health", "--secrets-dir", str(tmp_path))
    assert "no generated credentials" in one_error_line(result, 1)


def test_a_bad_environment_is_one_line(tmp_path: Path) -> None:
    result = invoke("schemas", "--out", str(tmp_path), env={"INTERCOM_BROKER_PORT": "abc"})
    line = one_error_line(result, 1)
    assert line.startswith("Error: bad INTERCOM_* environment: broker_port: Input should be")


def test_usage_errors_are_status_2() -> None:
    assert invoke("explain").exit_code == 2
    assert invoke("run", "--no-such-option").exit_code == 2
    assert invoke("token", "list", "b001").exit_code == 2


def _explode(*_: Any, **__: Any) -> Any:
    raise RuntimeError("boom")


def test_an_internal_error_is_one_line_pointing_at_debug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("intercom_gateway.contract.schemas.write_schemas", _explode)
    monkeypatch.delenv("INTERCOM_DEBUG", raising=False)
    line = one_error_line(invoke("schemas", "--out", str(tmp_path)), 70)
    assert line == (
        "Error: internal error: RuntimeError: boom"
        " (run with --debug (or INTERCOM_DEBUG=1) for the traceback)"
    )


@pytest.mark.parametrize(
    ("args", "env"), [(("--debug",), {}), ((), {"INTERCOM_DEBUG": "1"})], ids=["option", "env"]
)
def test_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    monkeypatch.setattr("intercom_gateway.contract.schemas.write_schemas", _explode)
    result = invoke(*args, "schemas", "--out", str(tmp_path), env=env)
    assert result.exit_code == 70
    assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr
    assert result.stderr.splitlines()[-1] == "Error: internal error: RuntimeError: boom"


def test_a_group_invoked_on_its_own_maps_errors_too(tmp_path: Path) -> None:
    from intercom_gateway.cli.security import credentials

    result = CliRunner().invoke(credentials, ["rotate", "nobody", "--secrets-dir", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: ")
