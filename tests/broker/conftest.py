"""Broker tier: one real Mosquitto per test session, on a free loopback port, running
the project's own mosquitto.conf with generated credentials."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from intercom_gateway.broker.mosquitto import Mosquitto, generate_credentials
from intercom_gateway.bus.mqtt import MqttBus
from intercom_gateway.core.registry import Registry
from tests.conftest import SAMPLE_SERVICES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/broker/" in str(item.fspath):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def broker(
    tmp_path_factory: pytest.TempPathFactory, fleet_registry: Registry
) -> Iterator[Mosquitto]:
    workdir = tmp_path_factory.mktemp("mosquitto")
    credentials = generate_credentials(workdir / "secrets", fleet_registry, SAMPLE_SERVICES)
    with Mosquitto(workdir=workdir, credentials=credentials) as mosquitto:
        yield mosquitto


def client(broker: Mosquitto, user: str, **options: object) -> MqttBus:
    """A bus logged in as one of the generated accounts."""
    # A fresh id each time: a reused id would take over the other client's session.
    # "<user>.<suffix>": the broker refuses ids not bound to the account.
    address = broker.address(user)
    client_id = str(options.pop("client_id", address.client_id(uuid.uuid4().hex[:8])))
    return MqttBus(address, client_id=client_id, **options)  # type: ignore[arg-type]
