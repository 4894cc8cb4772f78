"""docs/asyncapi.yaml: current with the models and registries, complete, and valid for the
official AsyncAPI parser (@asyncapi/parser, run with Node from tools/asyncapi)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from intercom_gateway.contract import asyncapi
from intercom_gateway.core.models import RejectReason
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
TOOL = ROOT / "tools" / "asyncapi"
NPM_CI_TIMEOUT = 600  # seconds; a fresh CI machine downloads the parser once


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    settings = Settings()
    policy = load_policy(settings.policy_path)
    doc: dict[str, Any] = asyncapi.document(
        policy, load_partners(settings.partners_path, policy=policy)
    )
    return doc


def test_the_committed_document_is_current() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == asyncapi.default_document(), (
        "docs/asyncapi.yaml is stale: run `intercom-gateway asyncapi`"
    )


def test_every_topic_of_the_grammar_has_a_channel(generated: dict[str, Any]) -> None:
    addresses = {c["address"] for c in generated["channels"].values()}
    assert {
        "intercom/v1/{building}/{device}/events/{eventType}",
        "intercom/v1/{building}/{device}/settings",
        "intercom/v1/{building}/{device}/settings/ack",
        "cloud/v1/{building}/{dwelling}/{eventType}",
        "group/v1/{building}/{dwelling}/{eventType}",
        "analytics/v1/{eventType}",
        "statistics/v1/{building}",
        "gateway/v1/rejected/{reason}",
        "gateway/v1/status",
        "gateway/v1/metrics",
    } <= addresses
    for channel in generated["channels"].values():
        named = {p.strip("{}") for p in channel["address"].split("/") if p.startswith("{")}
        assert named == set(channel.get("parameters", {})), channel["address"]
    reasons = generated["channels"]["rejected"]["parameters"]["reason"]["enum"]
    assert reasons == [r.value for r in RejectReason]


def test_one_channel_per_partner_with_only_its_declared_kinds(generated: dict[str, Any]) -> None:
    settings = Settings()
    partners = load_partners(settings.partners_path)
    for service in partners.services:
        channel = generated["channels"][f"partner-{service.id}"]
        assert (
            channel["address"]
            == f"partners/{service.id}/v1/{{building}}/{{dwelling}}/{{eventType}}"
        )
        kinds = set(channel["parameters"]["eventType"]["enum"])
        assert kinds and kinds <= {et.value for et in service.events}
        if service.kind == "partner":
            assert "unlock_mode" not in kinds  # §1(8)


def test_images_have_channels_of_their_own_where_an_image_rule_lets_them_go(
    generated: dict[str, Any],
) -> None:
    channels = generated["channels"]
    cloud = channels["cloudImages"]
    assert cloud["address"] == "cloud/v1/{building}/{dwelling}/{eventType}/image"
    assert cloud["parameters"]["eventType"]["enum"] == ["visitor", "return_home"]  # §3(3)
    assert set(cloud["messages"]) == {"forwardedImage"}
    # A partner gets an image channel only for the images it declared (§3(3)/(4)).
    assert channels["partner-concierge-images"]["parameters"]["eventType"]["enum"] == ["visitor"]
    unlock = channels["partner-parcel-unlock-images"]
    assert unlock["parameters"]["eventType"]["enum"] == ["unlock_mode"]
    assert "partner-elder-watch-images" not in channels  # declared return_home without it
    assert not {"groupImages", "analyticsImages"} & set(channels)  # item 3: never there
    image = generated["components"]["messages"]["forwardedImage"]
    assert "event_id" in image["headers"]["required"]
    assert "joined" not in image["headers"]["properties"]["rule_id"]["description"]


def test_purposes_travel_as_documented_user_properties(generated: dict[str, Any]) -> None:
    messages = generated["components"]["messages"]
    headers = messages["forwarded"]["headers"]
    assert {"purpose", "category", "policy_version", "rule_id", "decision_id", "event_id"} <= set(
        headers["required"]
    )
    assert headers["properties"]["purpose"]["type"] == "array"
    # §5(5): analytics copies name no event.
    assert "event_id" not in messages["analyticsCopy"]["headers"]["properties"]


def test_no_reference_dangles(generated: dict[str, Any]) -> None:
    for ref in asyncapi._iter_refs(generated):
        node: Any = generated
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
    assert "$defs" not in yaml.safe_dump(generated)


def test_the_parser_accepts_the_document() -> None:
    result = _validate(DOCUMENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_the_parser_is_not_a_rubber_stamp(tmp_path: Path, generated: dict[str, Any]) -> None:
    broken = dict(generated)
    broken["operations"] = {
        "sendNowhere": {"action": "send", "channel": {"$ref": "#/channels/nowhere"}}
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False), encoding="utf-8")
    result = _validate(path)
    assert result.returncode == 1, result.stdout + result.stderr


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the AsyncAPI parser cannot run")
    _install_parser()
    return subprocess.run(
        [node, "validate.mjs", str(path), "--strict"],
        cwd=TOOL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _install_parser() -> None:
    """``npm ci`` once on a fresh checkout: CI runs the tests on a clean clone."""
    if (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not: cannot install @asyncapi/parser"
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=TOOL,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
