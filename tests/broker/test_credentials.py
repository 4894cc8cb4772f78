"""Password rotation against a real Mosquitto (one per test: rotation changes its files)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from intercom_gateway.broker.mosquitto import (
    GATEWAY,
    Mosquitto,
    generate_credentials,
    load_credentials,
    rotate_password,
)
from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.cli.security import credentials as credentials_cli
from intercom_gateway.core import topics
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.errors import ConnectFailed, ConnectionLost
from tests.helpers import collect

PARTNER = "concierge"


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    registry = generate_registry(buildings=1, dwellings=2)
    creds = generate_credentials(tmp_path / "secrets", registry, [PARTNER, "elder-watch"])
    async with Mosquitto(workdir=tmp_path, credentials=creds) as mosquitto:
        yield mosquitto


def bus(address: BrokerAddress) -> MqttBus:
    return MqttBus(address, client_id=address.client_id(str(uuid.uuid4())))


async def disconnected(witness: MqttBus) -> None:
    """Returns once the broker has dropped ``witness``: proof that it reloaded."""
    with pytest.raises(ConnectionLost):
        async with asyncio.timeout(10):
            async for _ in witness.messages():
                pass


async def assert_refused(address: BrokerAddress) -> None:
    with pytest.raises(ConnectFailed) as refused:
        async with bus(address):
            pass
    assert refused.value.reason_code == 0x87


async def assert_receives(broker: Mosquitto, address: BrokerAddress) -> None:
    """``address`` logs in and its partner topic delivers (not just a CONNACK)."""
    assert address.username is not None
    topic = topics.partner(address.username, "b001", "d0001", "visitor")
    async with bus(address) as partner, bus(broker.address(GATEWAY)) as gateway:
        await partner.subscribe(topics.partner_filter(address.username))
        await gateway.publish(topic, b"after rotation")
        [message] = await collect(partner, 1)
        assert message.payload == b"after rotation"


async def test_rotation_refuses_the_old_password_after_reload(own_broker: Mosquitto) -> None:
    directory = own_broker.credentials.directory
    old = own_broker.address(PARTNER)
    async with bus(old) as witness, bus(own_broker.address(GATEWAY)) as bystander:
        new_password = rotate_password(directory, PARTNER)
        # Until the broker rereads its files the old password still logs in.
        async with bus(old):
            pass
        own_broker.reload()
        await disconnected(witness)
        # Only the rotated account is dropped: the gateway's session carries on.
        await bystander.publish(topics.analytics("still-here"), b"1")
    await assert_refused(old)
    new = load_credentials(directory).address(PARTNER, port=own_broker.port)
    assert new.password == new_password != old.password
    await assert_receives(own_broker, new)
    await assert_receives(own_broker, own_broker.address("elder-watch"))


async def test_cli_rotate_with_pid_reloads_the_broker(own_broker: Mosquitto) -> None:
    directory = own_broker.credentials.directory
    old = own_broker.address(PARTNER)
    assert own_broker.process is not None
    async with bus(old) as witness:
        result = CliRunner().invoke(
            credentials_cli,
            [
                "rotate",
                PARTNER,
                "--secrets-dir",
                str(directory),
                "--pid",
                str(own_broker.process.pid),
            ],
        )
        assert result.exit_code == 0, result.output
        await disconnected(witness)
    new = load_credentials(directory).address(PARTNER, port=own_broker.port)
    assert new.password is not None and new.password not in result.output
    await assert_refused(old)
    await assert_receives(own_broker, new)
