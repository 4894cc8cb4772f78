"""The policy file and the partner registry: loading, and refusing what the spec forbids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from intercom_gateway.core.models import EventType
from intercom_gateway.core.policy import (
    DEFAULT_POLICY_FILE,
    DestinationKind,
    PartnerRegistry,
    Policy,
    Provision,
    data_path,
    load_partners,
    load_policy,
)
from intercom_gateway.errors import ConfigError


def _policy_data() -> dict[str, Any]:
    data = yaml.safe_load(data_path(DEFAULT_POLICY_FILE).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_default_policy_is_version_2026_04_01(policy: Policy) -> None:
    assert policy.version == "2026-04-01"
    assert policy.known_version("2022-06-01")
    assert not policy.known_version("2030-01-01")


def test_every_event_type_has_a_category(policy: Policy) -> None:
    """§2: every event is classified."""
    assert set(policy.event_types) == set(EventType)
    assert policy.event_types[EventType.UNLOCK_MODE].category == "unlock_mode_operation"
    assert policy.event_types[EventType.VISITOR].image_category == "visitor_image"


def test_every_rule_names_a_clause(policy: Policy) -> None:
    for rule in policy.rules:
        assert rule.clause.startswith("§"), rule.id


def test_provision_kinds(policy: Policy) -> None:
    """§8: the ledger records third-party provisions; group is joint use (§4)."""
    kinds = {k: d.provision for k, d in policy.destinations.items()}
    assert kinds[DestinationKind.PARTNER] is Provision.THIRD_PARTY
    assert kinds[DestinationKind.UNLOCK_SERVICE] is Provision.THIRD_PARTY
    assert kinds[DestinationKind.GROUP] is Provision.JOINT_USE


def test_only_marketing_style_purposes_can_be_opted_out_of(policy: Policy) -> None:
    assert policy.opt_out_purposes == {"marketing", "direct_mail", "profiling"}


def test_default_deny_has_no_rule_for_unlisted_pairs(policy: Policy) -> None:
    assert policy.rule_for(DestinationKind.ANALYTICS, "unlock_mode_operation") is None
    assert policy.rule_for(DestinationKind.CONTRACTOR, "mobile_security_event") is None


def _rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    rules: list[dict[str, Any]] = data["rules"]
    return next(r for r in rules if r["id"] == rule_id)


def _image_to_analytics(data: dict[str, Any]) -> None:
    data["rules"].append(
        {
            "id": "leak",
            "clause": "§0",
            "destination": "analytics",
            "categories": ["visitor_image"],
            "purposes": ["resident_confirmation"],
            "fields": ["image"],
        }
    )


def _unlock_to_partner(data: dict[str, Any]) -> None:
    _rule(data, "partner-events")["categories"].append("unlock_mode_operation")


def _identifier_to_analytics(data: dict[str, Any]) -> None:
    _rule(data, "analytics-operation-history")["fields"].append("dwelling_id")


def _analytics_all_fields(data: dict[str, Any]) -> None:
    _rule(data, "analytics-operation-history")["fields"] = "all"


def _image_for_marketing(data: dict[str, Any]) -> None:
    _rule(data, "cloud-images")["purposes"].append("marketing")


def _unknown_purpose(data: dict[str, Any]) -> None:
    _rule(data, "cloud-events")["purposes"].append("surveillance")


def _two_rules_one_pair(data: dict[str, Any]) -> None:
    data["rules"].append({**_rule(data, "cloud-events"), "id": "cloud-again"})


def _missing_event_type(data: dict[str, Any]) -> None:
    del data["event_types"]["alarm"]


def _extra_key(data: dict[str, Any]) -> None:
    _rule(data, "cloud-events")["everything"] = True


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(_image_to_analytics, "images may not go to analytics", id="item3-images"),
        pytest.param(_unlock_to_partner, "never receive unlock mode", id="item4-§1(8)"),
        pytest.param(_identifier_to_analytics, "may not keep ['dwelling_id']", id="item6"),
        pytest.param(_analytics_all_fields, "analytics rules list the fields", id="item6-all"),
        pytest.param(_image_for_marketing, "image purposes only", id="§3(3)-marketing"),
        pytest.param(_unknown_purpose, "unknown purpose 'surveillance'", id="unknown-purpose"),
        pytest.param(_two_rules_one_pair, "already covers", id="ambiguous"),
        pytest.param(_missing_event_type, "without a category", id="§2-unclassified"),
        pytest.param(_extra_key, "Extra inputs are not permitted", id="extra-forbidden"),
    ],
)
def test_policy_file_breaking_a_guarantee_is_refused(
    tmp_path: Path, edit: Any, message: str
) -> None:
    data = _policy_data()
    edit(data)
    path = _write(tmp_path, "policy.yaml", data)
    with pytest.raises(ConfigError, match=r"policy\.yaml") as caught:
        load_policy(path)
    assert message in str(caught.value)


def test_unedited_copy_of_the_policy_loads(tmp_path: Path, policy: Policy) -> None:
    """The refusals above are caused by the edits, not by the round trip."""
    assert load_policy(_write(tmp_path, "policy.yaml", _policy_data())) == policy


def test_unreadable_policy_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("rules: [", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_policy(path)


# --- Partner registry ---------------------------------------------------------------


def _service(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "watch",
        "name": "Watch",
        "kind": "partner",
        "purposes": ["partner_provision"],
        "events": {"alarm": ["kind"]},
        **overrides,
    }


def test_sample_registry_has_two_partners_and_an_unlock_service(
    partners: PartnerRegistry,
) -> None:
    kinds = sorted(s.kind for s in partners.services)
    assert kinds == ["partner", "partner", "unlock_service"]
    needs = {s.id: set(s.events) for s in partners.services if s.kind == "partner"}
    assert len({frozenset(n) for n in needs.values()}) == 2  # different needs


def test_partner_declaring_unlock_mode_is_refused_naming_file_and_partner(
    tmp_path: Path,
) -> None:
    """§1(8) / spec item 4: partner services exclude unlock-mode services."""
    bad = _service(id="sneaky", events={"unlock_mode": ["result"]})
    path = _write(tmp_path, "partners.yaml", {"services": [bad]})
    with pytest.raises(ConfigError) as caught:
        load_partners(path)
    text = str(caught.value)
    assert "partners.yaml" in text
    assert "'sneaky'" in text
    assert "§1(8)" in text


def test_unlock_service_may_declare_unlock_mode(tmp_path: Path) -> None:
    ok = _service(kind="unlock_service", events={"unlock_mode": ["result", "image"]})
    registry = load_partners(_write(tmp_path, "partners.yaml", {"services": [ok]}))
    service = registry.get("watch")
    assert service is not None
    assert service.destination_kind is DestinationKind.UNLOCK_SERVICE
    assert service.fields_for(EventType.UNLOCK_MODE) == ("result", "image")
    assert service.fields_for(EventType.ALARM) is None


@pytest.mark.parametrize(
    ("services", "message"),
    [
        pytest.param([_service(events={"alarm": ["colour"]})], "no field", id="unknown-field"),
        pytest.param([_service(), _service()], "duplicate partner ids", id="duplicate"),
        pytest.param([_service(kind="bank")], "kind", id="unknown-kind"),
    ],
)
def test_bad_registry_is_refused(tmp_path: Path, services: list[Any], message: str) -> None:
    path = _write(tmp_path, "partners.yaml", {"services": services})
    with pytest.raises(ConfigError, match=message):
        load_partners(path)


def test_registry_purposes_checked_against_the_policy(tmp_path: Path, policy: Policy) -> None:
    path = _write(tmp_path, "partners.yaml", {"services": [_service(purposes=["resale"])]})
    assert load_partners(path).get("watch") is not None  # without a policy: not checked
    with pytest.raises(ConfigError, match="unknown purpose 'resale'"):
        load_partners(path, policy=policy)
