"""Fixtures shared by every tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercom_gateway.core.registry import Registry, generate_registry

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_SERVICES = ("concierge", "elder-watch", "parcel-unlock")


@pytest.fixture(scope="session")
def fleet_registry() -> Registry:
    """Two buildings of four dwellings, every dwelling using the three sample services."""
    return generate_registry(buildings=2, dwellings=4, services=SAMPLE_SERVICES)
