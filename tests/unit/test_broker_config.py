"""render_config: the project's mosquitto.conf with the client-id binding plugin's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercom_gateway.broker.mosquitto import DEFAULT_CONFIG, Credentials, render_config
from intercom_gateway.errors import ConfigError


def _render(template: str, plugin: Path, tmp_path: Path) -> str:
    credentials = Credentials(tmp_path / "secrets", {})
    return render_config(
        template, port=18830, data_dir=tmp_path / "data", credentials=credentials, plugin=plugin
    )


def test_the_plugin_line_points_at_the_built_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "broker" / "clientid_binding.so"
    rendered = _render(DEFAULT_CONFIG.read_text(encoding="utf-8"), plugin, tmp_path)
    plugin_lines = [line for line in rendered.splitlines() if line.startswith("plugin")]
    assert plugin_lines == [f"plugin {plugin}"]


def test_a_configuration_without_the_plugin_is_refused(tmp_path: Path) -> None:
    template = "allow_anonymous false\nlistener 1883 127.0.0.1\n"
    with pytest.raises(ConfigError, match="plugin"):
        _render(template, tmp_path / "clientid_binding.so", tmp_path)
