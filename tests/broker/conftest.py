"""Broker tier: every test here needs the real Mosquitto (the session's ``broker``
fixture, in tests/conftest.py, started through ``qa.runner`` and shared with the
contract and component tiers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.broker.mosquitto import Credentials, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.qa import runner


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/broker/" in str(item.fspath):
            item.add_marker(pytest.mark.broker)


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
