"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa import runner
from tests.transports import MemoryTransport, MosquittoTransport, Transport

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_SERVICES = ("concierge", "elder-watch", "parcel-unlock")


@pytest.fixture(scope="session")
def fleet_registry() -> Registry:
    """Two buildings of four dwellings, every dwelling using the three sample services."""
    return generate_registry(buildings=2, dwellings=4, services=SAMPLE_SERVICES)


@pytest.fixture(scope="session")
def broker(
    tmp_path_factory: pytest.TempPathFactory, fleet_registry: Registry
) -> Iterator[Mosquitto]:
    """One real Mosquitto per test session, on a free loopback port, running the
    project's own mosquitto.conf with generated credentials. Started only by a test
    that asks for it: the broker tier, and the Mosquitto cases (marked ``broker``) of
    the contract and component tests that run on both buses."""
    workdir = tmp_path_factory.mktemp("mosquitto")
    with runner.start_broker(workdir, fleet_registry, SAMPLE_SERVICES) as mosquitto:
        yield mosquitto


@pytest.fixture(params=["memory", pytest.param("mosquitto", marks=pytest.mark.broker)])
def transport(request: pytest.FixtureRequest) -> Transport:
    """The in-memory broker, then the real Mosquitto: tests written once run on both."""
    if request.param == "memory":
        return MemoryTransport()
    return MosquittoTransport(request.getfixturevalue("broker"))
