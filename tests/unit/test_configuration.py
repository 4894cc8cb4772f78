"""The configuration value (§10, ``core.configuration``): built whole, named by its
revision, recorded as validated and read back equal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from intercom_gateway.core.configuration import (
    REVISION_PROPERTY,
    ConfigNotice,
    ConfigRecord,
    Configuration,
    digest_of,
)
from intercom_gateway.core.policy import PartnerRegistry, default_policy, sample_partners
from intercom_gateway.core.registry import generate_registry

AT = datetime(2026, 11, 30, tzinfo=UTC)


def test_a_configuration_compiles_its_own_router_and_device_index() -> None:
    registry = generate_registry(buildings=1, dwellings=2)
    first = Configuration.build(default_policy(), sample_partners(), registry, revision=3)
    second = Configuration.build(default_policy(), sample_partners(), registry, revision=3)
    assert first.router is not second.router  # no memo shared between two values
    assert first.property == (REVISION_PROPERTY, "3")
    assert set(first.devices.devices) == {d.id for _, d in registry.devices()}


def test_a_record_reads_back_the_configuration_it_was_made_of() -> None:
    registry = generate_registry(buildings=2, dwellings=3)
    record = ConfigRecord.of(default_policy(), sample_partners(), registry, actor="op", at=AT)
    back = replace(record, revision=5).configuration()
    assert (back.policy, back.partners, back.registry) == (
        default_policy(),
        sample_partners(),
        registry,
    )
    assert back.revision == 5 and record.policy_version == default_policy().version


def test_the_digest_is_of_the_content() -> None:
    registry = generate_registry(buildings=1, dwellings=2)
    digest = digest_of(default_policy(), sample_partners(), registry)
    assert digest == digest_of(default_policy(), sample_partners(), registry)
    assert digest != digest_of(default_policy(), PartnerRegistry(), registry)


def test_a_record_whose_partners_name_an_unknown_purpose_does_not_validate() -> None:
    record = ConfigRecord.of(
        default_policy(), sample_partners(), generate_registry(buildings=1, dwellings=1),
        actor="op", at=AT,
    )  # fmt: skip
    bad = record.partners.replace("partner_provision", "no_such_purpose")
    with pytest.raises(ValueError, match="unknown purpose"):
        replace(record, partners=bad).configuration()


def test_a_notice_names_a_revision_from_one() -> None:
    with pytest.raises(ValidationError):
        ConfigNotice(revision=0, policy_version="v", digest="d", actor="a", at=AT)
