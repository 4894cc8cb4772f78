"""`credentials generate|rotate|show-acl` and `tls init`, through click's test runner."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from intercom_gateway.cli.security import credentials, tls
from intercom_gateway.core.policy import data_path
from intercom_gateway.core.registry import dump_registry, generate_registry

PARTNERS = data_path("partners.sample.yaml")


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(dump_registry(generate_registry(buildings=1, dwellings=2)), encoding="utf-8")
    return path


def run(group: click.Group, *args: str | Path) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args])


def generate(registry_file: Path, secrets: Path, *extra: str) -> Result:
    return run(
        credentials, "generate", "--registry", registry_file, "--partners", PARTNERS,
        "--secrets-dir", secrets, *extra,
    )  # fmt: skip


def passwords(secrets: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((secrets / "credentials.json").read_text())
    return data


def test_cli_py_can_register_both_groups() -> None:
    assert isinstance(credentials, click.Group) and isinstance(tls, click.Group)
    assert set(credentials.commands) == {"generate", "rotate", "show-acl", "plugin"}
    assert set(tls.commands) == {"init"}


def test_generate_writes_hashed_secrets_and_never_prints_them(
    registry_file: Path, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    result = generate(registry_file, secrets)
    assert result.exit_code == 0, result.output
    accounts = passwords(secrets)
    # 6 service accounts, 3 partners, 2 distribution contractors, per building a lobby, a
    # box and 2 dwelling panels.
    assert len(accounts) == 6 + 3 + 2 + 4
    assert {"gateway", "fleet", "concierge", "elder-watch", "panel-b001-d0002"} <= set(accounts)
    assert {"kanri-kumiai-b001", "example-kanri"} <= set(accounts)
    passwd = (secrets / "passwd").read_text()
    for user, password in accounts.items():
        assert password not in result.output
        assert password not in passwd
        assert f"{user}:$7$" in passwd  # mosquitto_passwd's PBKDF2-SHA512 hash
    for name in ("passwd", "acl", "credentials.json"):
        assert str(secrets / name) in result.output
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600


def test_generate_keeps_existing_credentials_unless_forced(
    registry_file: Path, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    assert generate(registry_file, secrets).exit_code == 0
    before = passwords(secrets)
    refused = generate(registry_file, secrets)
    assert refused.exit_code != 0 and "--force" in refused.output
    assert passwords(secrets) == before
    assert generate(registry_file, secrets, "--force").exit_code == 0
    assert passwords(secrets)["gateway"] != before["gateway"]


def test_no_fleet_leaves_out_the_account_that_speaks_for_every_panel(
    registry_file: Path, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    assert generate(registry_file, secrets, "--no-fleet").exit_code == 0
    assert "fleet" not in passwords(secrets)
    assert "user fleet" not in (secrets / "acl").read_text()


def test_show_acl_confines_partners_and_panels(registry_file: Path) -> None:
    result = run(credentials, "show-acl", "--registry", registry_file, "--partners", PARTNERS)
    assert result.exit_code == 0, result.output
    blocks = {b.split("\n", 1)[0]: b for b in result.output.split("\n\n") if b.startswith("user")}
    assert blocks["user concierge"].splitlines()[1:] == ["topic read partners/concierge/#"]
    assert blocks["user panel-b001-d0001"].splitlines()[1:] == [
        "topic write intercom/v1/b001/panel-b001-d0001/events/+",
        "topic read intercom/v1/b001/panel-b001-d0001/receipts",
        "topic write intercom/v1/b001/panel-b001-d0001/settings",
        "topic read intercom/v1/b001/panel-b001-d0001/settings/ack",
        "topic read intercom/v1/b001/panel-b001-d0001/distributions",
    ]
    # §5(1)①: a contractor writes its own distributions and reads its own tree only.
    assert blocks["user kanri-kumiai-b001"].splitlines()[1:] == [
        "topic write contractors/kanri-kumiai-b001/v1/+/distributions",
        "topic read contractors/kanri-kumiai-b001/v1/#",
    ]


def test_rotate_changes_one_account_only(registry_file: Path, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    assert generate(registry_file, secrets).exit_code == 0
    before, hashes = passwords(secrets), (secrets / "passwd").read_text().splitlines()
    result = run(credentials, "rotate", "concierge", "--secrets-dir", secrets)
    assert result.exit_code == 0, result.output
    after = passwords(secrets)
    assert after["concierge"] != before["concierge"] and after["concierge"] not in result.output
    assert {u: p for u, p in after.items() if u != "concierge"} == {
        u: p for u, p in before.items() if u != "concierge"
    }
    changed = set(hashes) ^ set((secrets / "passwd").read_text().splitlines())
    assert {line.split(":", 1)[0] for line in changed} == {"concierge"}
    assert "kill -HUP" in result.output


def test_rotate_unknown_account_fails_cleanly(registry_file: Path, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    assert generate(registry_file, secrets).exit_code == 0
    result = run(credentials, "rotate", "intruder", "--secrets-dir", secrets)
    assert result.exit_code == 1
    assert "no broker account 'intruder'" in result.output


def test_tls_init_writes_a_ca_and_refuses_to_replace_it(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    result = run(tls, "init", "--dir", directory, "--dns", "broker.example", "--ip", "10.0.0.7")
    assert result.exit_code == 0, result.output
    assert "broker.example, 10.0.0.7" in result.output
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    ca = (directory / "ca.crt").read_bytes()
    again = run(tls, "init", "--dir", directory)
    assert again.exit_code != 0 and "--force" in again.output
    assert (directory / "ca.crt").read_bytes() == ca
    assert run(tls, "init", "--dir", directory, "--force").exit_code == 0
    assert (directory / "ca.crt").read_bytes() != ca


def test_tls_init_refuses_a_bad_address(tmp_path: Path) -> None:
    result = run(tls, "init", "--dir", tmp_path / "tls", "--ip", "not-an-ip")
    assert result.exit_code == 1 and "not-an-ip" in result.output
