"""A setting that is gone stops the CLI with one line instead of being ignored."""

from __future__ import annotations

from click.testing import CliRunner

from intercom_gateway.cli.main import main
from intercom_gateway.settings import retired_setting


def test_the_transport_setting_in_the_environment_stops_the_cli_in_one_line() -> None:
    """The gateway has one MQTT transport: whoever asks for paho must not get ours."""
    result = CliRunner().invoke(main, ["run", "--help"], env={"INTERCOM_MQTT_CLIENT": "paho"})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: INTERCOM_MQTT_CLIENT is no longer read")
    assert "unset it" in lines[0]


def test_without_it_the_cli_starts() -> None:
    result = CliRunner().invoke(main, ["run", "--help"], env={"INTERCOM_MQTT_CLIENT": None})
    assert result.exit_code == 0, result.output


def test_the_environment_is_read_as_pydantic_settings_reads_it_without_case() -> None:
    assert retired_setting({"intercom_mqtt_client": "lean"}) is not None
    assert retired_setting({"INTERCOM_BROKER_HOST": "localhost"}) is None


def test_the_share_group_is_refused_in_one_line_from_the_environment_and_the_flag() -> None:
    """Issue #17: two gateways in one shared subscription let 20 of 40 events reach a
    partner the dwelling had stopped. The setting is refused, not ignored."""
    result = CliRunner().invoke(main, ["run", "--help"], env={"INTERCOM_SHARE_GROUP": "gws"})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: INTERCOM_SHARE_GROUP is no longer read")
    assert "withdrawn consent" in lines[0]

    flag = CliRunner().invoke(main, ["run", "--share-group", "gws"])
    assert flag.exit_code == 2
    lines = [line for line in flag.output.splitlines() if line.strip()]
    assert lines == [lines[0]] and "--share-group is no longer accepted" in lines[0]
