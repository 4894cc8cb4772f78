"""Broker tier: one real Mosquitto per test session, on a free loopback port, running
the project's own mosquitto.conf with generated credentials (``qa.runner``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import Credentials, Mosquitto
from intercom_gateway.bus.mqtt import MqttBus
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa import runner
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
    with runner.start_broker(workdir, fleet_registry, SAMPLE_SERVICES) as mosquitto:
        yield mosquitto


@pytest.fixture
async def own_broker(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[Mosquitto]:
    """A broker of this test's own with the shared one's accounts, for tests that stop or
    freeze it, or whose sessions (kept for an hour) must stay out of the shared one."""
    credentials = Credentials(broker.credentials.directory, broker.credentials.passwords)
    async with Mosquitto(workdir=tmp_path / "own", credentials=credentials) as own:
        yield own


def client(broker: Mosquitto, user: str, **options: Any) -> MqttBus:
    """A bus logged in as one of the generated accounts, with a fresh id bound to it."""
    return runner.client(broker, user, **options)
