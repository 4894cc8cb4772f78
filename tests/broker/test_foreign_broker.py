"""Never silently talk to a foreign broker (issue #16).

A plain Mosquitto that lets anyone in (Debian's own, on 1883) takes our connections and
our changes, and no gateway ever reads them. Every command that relies on a gateway
reads the gateway's retained status first and refuses, in one line and with exit 3,
when it finds none, another gateway's, or an offline one. The positive control runs
the same commands against the project's broker with a gateway online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from intercom_gateway.broker.mosquitto import Mosquitto, free_port
from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.gateway.status import status_payload
from intercom_gateway.resident.api import create_app
from intercom_gateway.settings import Settings
from tests.broker.test_cli_end_to_end import cli, env, gateway
from tests.component.test_resident import _populate

__all__ = ["env", "gateway"]  # fixtures of the CLI tests, reused for the positive control

TOKEN = "foreign-test-token"
HINT = "start one with `intercom-gateway run`"


@pytest.fixture
async def foreign(tmp_path: Path) -> AsyncIterator[int]:
    """A plain Mosquitto, anonymous allowed, on a free loopback port: not our config."""
    async with plain_mosquitto(tmp_path, anonymous=True) as port:
        yield port


@contextlib.asynccontextmanager
async def plain_mosquitto(tmp_path: Path, *, anonymous: bool) -> AsyncIterator[int]:
    port = free_port()
    config = tmp_path / f"foreign-{port}.conf"
    allow = "true" if anonymous else "false"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous {allow}\nlog_dest stderr\n")
    process = await asyncio.create_subprocess_exec(
        "mosquitto", "-c", str(config), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        # Mosquitto says "... running" once it listens.
        async with asyncio.timeout(10):
            while b" running" not in await process.stderr.readline():
                assert process.returncode is None
        yield port
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture
async def settings(tmp_path: Path, foreign: int, broker: Mosquitto) -> Settings:
    """A store with dwellings, and the project's accounts, pointed at the foreign broker."""
    populated = await _populate(tmp_path)
    return populated.model_copy(
        update={
            "broker_port": foreign,
            "secrets_dir": broker.credentials.directory,
            "gateway_id": f"gw-foreign-{uuid.uuid4().hex[:6]}",
            "api_token": SecretStr(TOKEN),
        }
    )


@pytest.fixture
def foreign_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "INTERCOM_BROKER_PORT": str(settings.broker_port),
        "INTERCOM_SECRETS_DIR": str(settings.secrets_dir),
        "INTERCOM_DB_PATH": str(settings.db_path),
        "INTERCOM_REGISTRY_PATH": str(settings.registry_path),
        "INTERCOM_GATEWAY_ID": settings.gateway_id,
        "INTERCOM_LOG_LEVEL": "WARNING",
    }


def refused_line(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 3, (result.stdout, result.stderr)
    [line] = result.stderr.decode().splitlines()
    return line


COMMANDS = [
    ("consent", "set", "b001", "d0001", "--stop", "concierge"),
    ("resident", "stop-provision", "b001", "d0001", "concierge"),
    ("resident", "stop-use", "b001", "d0002"),
    ("health",),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_a_command_refuses_a_broker_with_no_gateway(
    args: tuple[str, ...], foreign_env: dict[str, str]
) -> None:
    line = refused_line(cli(*args, env=foreign_env))
    port = foreign_env["INTERCOM_BROKER_PORT"]
    assert line == (
        f"Error: no intercom gateway answers on 127.0.0.1:{port}"
        f" (no retained status on {topics.STATUS}): {HINT}"
        " (or the dev stack: `intercom-gateway up`) or point --broker-host/--broker-port at it"
    )


async def test_a_command_refuses_another_gateways_status(
    foreign: int, foreign_env: dict[str, str]
) -> None:
    """A status is not enough: it must be the configured gateway's."""
    address = BrokerAddress(port=foreign)
    async with MqttBus(address, client_id="someone-else") as bus:
        await bus.publish(topics.STATUS, status_payload("gw-other", "online"), retain=True)
    for args in COMMANDS[:2]:
        result = await asyncio.to_thread(cli, *args, env=foreign_env)
        line = refused_line(result)
        assert "the status is of gateway 'gw-other', not 'gw-foreign-" in line and HINT in line


async def test_offline_changes_still_need_no_broker(foreign_env: dict[str, str]) -> None:
    args = ("resident", "stop-provision", "b001", "d0001", "concierge", "--offline")
    result = await asyncio.to_thread(cli, *args, env=foreign_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "done"


async def _api_stop(settings: Settings) -> httpx.Response:
    app = create_app(settings)  # the default channel: MQTT to the configured broker
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as http,
    ):
        return await http.post("/dwellings/b001/d0001/stop-provision/concierge")


async def test_the_api_answers_503_not_202_on_a_broker_with_no_gateway(
    settings: Settings,
) -> None:
    response = await _api_stop(settings)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith(f"no intercom gateway answers on 127.0.0.1:{settings.broker_port}")
    assert "\n" not in detail and HINT in detail


# --- the positive control: the project's broker, a gateway online -------------------------


@pytest.fixture
def online(gateway: object, env: dict[str, str]) -> Iterator[dict[str, str]]:
    yield env


def test_with_our_gateway_online_the_same_commands_succeed(online: dict[str, str]) -> None:
    for args in COMMANDS:
        result = cli(*args, env=online)
        assert result.returncode == 0, (args, result.stderr)
    assert json.loads(cli(*COMMANDS[1], env=online).stdout)["outcome"] == "done"


async def test_with_our_gateway_online_the_api_applies_the_change(
    online: dict[str, str],
) -> None:
    settings = Settings(
        broker_port=int(online["INTERCOM_BROKER_PORT"]),
        secrets_dir=Path(online["INTERCOM_SECRETS_DIR"]),
        db_path=Path(online["INTERCOM_DB_PATH"]),
        registry_path=Path(online["INTERCOM_REGISTRY_PATH"]),
        gateway_id=online["INTERCOM_GATEWAY_ID"],
        api_token=SecretStr(TOKEN),
    )
    response = await _api_stop(settings)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "done"


async def test_a_broker_that_refuses_our_accounts_is_not_ours(
    tmp_path: Path, foreign_env: dict[str, str]
) -> None:
    async with plain_mosquitto(tmp_path, anonymous=False) as port:
        strict = foreign_env | {"INTERCOM_BROKER_PORT": str(port)}
        line = refused_line(await asyncio.to_thread(cli, "health", env=strict))
    assert line.startswith(f"Error: no intercom gateway answers on 127.0.0.1:{port}")
    assert "the broker refused the project's account 'operator'" in line and HINT in line
