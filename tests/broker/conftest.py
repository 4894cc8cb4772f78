"""Broker tier: every test here needs the real Mosquitto (the session's ``broker``
fixture, in tests/conftest.py, shared with the contract and component tiers)."""

from __future__ import annotations

import uuid

import pytest

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.bus import MqttBus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/broker/" in str(item.fspath):
            item.add_marker(pytest.mark.broker)


def client(broker: Mosquitto, user: str, **options: object) -> MqttBus:
    """A bus logged in as one of the generated accounts."""
    # A fresh id each time: a reused id would take over the other client's session.
    # "<user>.<suffix>": the broker refuses ids not bound to the account.
    address = broker.address(user)
    client_id = str(options.pop("client_id", address.client_id(uuid.uuid4().hex[:8])))
    return MqttBus(address, client_id=client_id, **options)  # type: ignore[arg-type]
