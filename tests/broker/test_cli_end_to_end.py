"""The command line as an operator uses it: real processes against a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from intercom_gateway.broker.accounts import GATEWAY
from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry, dump_registry
from intercom_gateway.gateway.status import status_payload
from tests.broker.conftest import client
from tests.factories import event_dict


def cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "intercom_gateway", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(broker: Mosquitto, fleet_registry: Registry, tmp_path: Path) -> dict[str, str]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(dump_registry(fleet_registry))
    return {
        **os.environ,
        "INTERCOM_BROKER_PORT": str(broker.port),
        "INTERCOM_SECRETS_DIR": str(broker.credentials.directory),
        "INTERCOM_DB_PATH": str(tmp_path / "gateway.sqlite"),
        "INTERCOM_REGISTRY_PATH": str(registry),
        "INTERCOM_GATEWAY_ID": f"gw-cli-{uuid.uuid4().hex[:6]}",
        "INTERCOM_SESSION_EXPIRY": "0",
        "INTERCOM_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def gateway(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "intercom_gateway", "run"], env=env, stdout=log, stderr=log
    )
    try:
        # `health` exits 0 only once the gateway reports itself online.
        for _ in range(100):
            if cli("health", "--timeout", "0.3", env=env).returncode == 0:
                break
        else:
            raise AssertionError((tmp_path / "gateway.log").read_text())
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        log.close()


def test_health_reports_online_then_offline_after_sigterm(
    gateway: subprocess.Popen[bytes], env: dict[str, str]
) -> None:
    result = cli("health", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"]["state"] == "online"
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(30) == 0
    after = cli("health", "--timeout", "2", env=env)
    assert after.returncode == 1
    assert json.loads(after.stdout)["status"]["state"] == "offline"


def test_consent_set_is_acknowledged_and_shown_and_explain_follows_it(
    gateway: subprocess.Popen[bytes], env: dict[str, str]
) -> None:
    result = cli("consent", "set", "b001", "d0001", "--stop", "concierge", env=env)
    assert result.returncode == 0, result.stderr
    ack = json.loads(result.stdout)
    assert ack["applied"] is True and "concierge" in ack["detail"]

    shown = json.loads(cli("consent", "show", "b001", "d0001", env=env).stdout)
    assert "concierge" in shown["current"]["provision_stopped"]
    assert shown["history"][-1]["source"] == "panel:panel-b001-d0001"

    event = json.dumps(event_dict("visitor", dwelling="d0001")).encode()
    explained = cli("explain", "-", env=env, stdin=event)
    assert explained.returncode == 0, explained.stderr
    line = next(x for x in explained.stdout.decode().splitlines() if "partner:concierge" in x)
    assert "withheld" in line


def test_a_refused_setting_exits_non_zero_with_the_reason(
    gateway: subprocess.Popen[bytes], env: dict[str, str]
) -> None:
    result = cli("consent", "set", "b001", "d0002", "--use", "no-such-service", env=env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["applied"] is False


def test_schemas_are_written_for_every_event_kind(tmp_path: Path, env: dict[str, str]) -> None:
    result = cli("schemas", "--out", str(tmp_path / "schemas"), env=env)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "schemas").iterdir()}
    for kind in ("visitor", "return_home", "alarm", "delivery_box", "unlock_mode", "security"):
        assert f"event.{kind}.schema.json" in names
    union = json.loads((tmp_path / "schemas" / "event.schema.json").read_text())
    assert union["discriminator"]["propertyName"] == "type"


def test_explain_of_an_unknown_event_id_says_why_it_may_be_missing(env: dict[str, str]) -> None:
    result = cli("explain", "--event-id", str(uuid.uuid4()), env=env)
    assert result.returncode != 0
    assert b"no store here" in result.stderr or b"no decision" in result.stderr


def test_a_change_no_gateway_acknowledges_is_one_line_and_status_3(
    env: dict[str, str], broker: Mosquitto
) -> None:
    # The gateway says it is online (its retained status) but never answers, as a frozen
    # one would: the change is sent, and waits for an acknowledgement that never comes.
    # With no status at all the command would refuse before sending (test_foreign_broker).
    gateway_id = env["INTERCOM_GATEWAY_ID"]
    asyncio.run(_retain_status(broker, gateway_id, "online"))
    try:
        result = cli(
            "consent", "set", "b001", "d0001", "--stop", "concierge", "--timeout", "0.5", env=env
        )
    finally:
        asyncio.run(_retain_status(broker, gateway_id, "offline"))
    assert result.returncode == 3, result.stderr
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("Error: no acknowledgement of change") and "gateway" in line


async def _retain_status(
    broker: Mosquitto, gateway_id: str, state: Literal["online", "offline"]
) -> None:
    async with client(broker, GATEWAY) as bus:
        await bus.publish(topics.STATUS, status_payload(gateway_id, state), retain=True)


def test_errors_of_a_real_process_are_one_line_with_their_status(
    env: dict[str, str], tmp_path: Path
) -> None:
    invalid = json.dumps(event_dict("visitor", seq="not a number")).encode()
    explained = cli("explain", "-", env=env, stdin=invalid)
    assert explained.returncode == 4
    assert explained.stderr.decode().splitlines() == [
        "Error: not a valid event: visitor.seq: Input should be a valid integer"
    ]
    unreachable = cli("health", "--broker-port", "1", env=env)
    assert unreachable.returncode == 3
    [line] = unreachable.stderr.decode().splitlines()
    assert line.startswith("Error: cannot reach broker 127.0.0.1:1")
