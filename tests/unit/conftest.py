"""Fixtures of the pure core: the packaged policy and the sample partner registry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from intercom_gateway.policy import PartnerRegistry, Policy, default_policy, sample_partners

NOW = datetime(2026, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return default_policy()


@pytest.fixture(scope="session")
def partners() -> PartnerRegistry:
    return sample_partners()
