"""The bridge section of a shard broker and the central broker's ``bridge`` account
(broker.bridge, docs/scale-out.md); the broker tier runs them in
tests/broker/test_bridged_brokers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercom_gateway.broker.accounts import BRIDGE, acl_text, output_filters
from intercom_gateway.broker.bridge import Bridge, bridge_protocol, render_bridge
from intercom_gateway.broker.mosquitto import DEFAULT_CONFIG, Credentials, render_config
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.errors import ConfigError

BRIDGE_TO_CENTRAL = Bridge(name="shard-a", host="central.example", port=1883, password="pw")


def _options(text: str) -> list[tuple[str, str]]:
    pairs = (line.split(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return [(key, value) for key, value in pairs]


def test_every_output_tree_is_bridged_out_at_qos_1() -> None:
    options = _options(render_bridge(BRIDGE_TO_CENTRAL, protocol="mqttv50"))
    assert [v for k, v in options if k == "topic"] == [f"{f} out 1" for f in output_filters()]
    assert ("cleansession", "false") in options
    assert ("address", "central.example:1883") in options
    assert ("remote_username", BRIDGE) in options
    assert ("remote_password", "pw") in options
    # The first option opens the section: Mosquitto reads the rest as the bridge's own.
    assert options[0] == ("connection", "shard-a")


def test_the_remote_client_id_is_one_the_binding_plugin_accepts_for_the_account() -> None:
    options = dict(_options(render_bridge(BRIDGE_TO_CENTRAL, protocol="mqttv50")))
    assert options["remote_clientid"] == f"{BRIDGE}.shard-a"
    assert options["remote_clientid"].startswith(options["remote_username"] + ".")


@pytest.mark.parametrize(
    ("version", "protocol"),
    [((2, 0, 11), "mqttv50"), ((2, 1, 0), "mqttv50"), ((1, 6, 9), "mqttv311")],
)
def test_mqtt5_bridges_where_the_broker_has_them(
    version: tuple[int, int, int], protocol: str
) -> None:
    assert bridge_protocol(version) == protocol


def test_the_installed_mosquitto_bridges_in_mqtt5() -> None:
    """Debian 12's Mosquitto 2.0.11: the event id (a user property) survives the bridge."""
    assert "bridge_protocol_version mqttv50" in render_bridge(BRIDGE_TO_CENTRAL)


@pytest.mark.parametrize("name", ["", "a b", "shard/a", "x" * 65, "shard.a"])
def test_a_name_that_cannot_be_a_client_id_suffix_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="bridge name"):
        Bridge(name=name, host="h", port=1, password="p")


def test_a_central_broker_without_the_bridge_account_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no `bridge` account"):
        Bridge.to(Credentials(tmp_path, {"cloud": "x"}), name="a", host="h", port=1)


def test_the_bridge_section_comes_after_every_broker_option(tmp_path: Path) -> None:
    rendered = render_config(
        DEFAULT_CONFIG.read_text(encoding="utf-8"),
        port=18830,
        data_dir=tmp_path / "data",
        credentials=Credentials(tmp_path / "secrets", {}),
        plugin=tmp_path / "clientid_binding.so",
        bridge=BRIDGE_TO_CENTRAL,
    )
    before, section = rendered.split("\nconnection shard-a\n")
    assert "persistence true" in before
    assert section.rstrip().endswith("topic statistics/# out 1")


def test_the_bridge_account_may_write_the_output_trees_and_nothing_else() -> None:
    registry = generate_registry(buildings=1, dwellings=1, services=("concierge",))
    text = acl_text(registry, ["concierge"], fleet=False, bridge=True)
    block = text.split(f"user {BRIDGE}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block == [f"topic write {f}" for f in output_filters()]


def test_without_bridge_the_acl_has_no_bridge_account() -> None:
    registry = generate_registry(buildings=1, dwellings=1, services=("concierge",))
    assert f"user {BRIDGE}\n" not in acl_text(registry, ["concierge"], fleet=True)
