"""Files the package reads are package data, found with importlib.resources.

An installed wheel has no repository around it (issue 16: the pytest plugin, demo,
`scenario run` and `load` failed on `.../lib/python3.11/mosquitto.conf`). The wheel
itself is checked by scripts/wheel-check; these are the cheap invariants.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from intercom_gateway.broker.mosquitto import DEFAULT_CONFIG
from intercom_gateway.cli.qa import LIBRARY
from intercom_gateway.core.registry import load_registry, sample_registry_path
from intercom_gateway.settings import DATA, Settings

PACKAGE = Path(str(resources.files("intercom_gateway")))


def test_the_broker_configuration_ships_inside_the_package() -> None:
    config = Path(str(DEFAULT_CONFIG))
    assert config.is_relative_to(PACKAGE)
    assert "listener 1883 127.0.0.1" in DEFAULT_CONFIG.read_text(encoding="utf-8")


def test_every_default_data_file_is_inside_the_package_and_exists() -> None:
    settings = Settings()
    paths = [
        DATA,
        settings.registry_path,
        settings.policy_path,
        settings.partners_path,
        sample_registry_path(),
        LIBRARY,
    ]
    for path in paths:
        assert path.is_relative_to(PACKAGE), path
        assert path.exists(), path
    assert load_registry(sample_registry_path()).buildings
    assert sorted(LIBRARY.glob("*.yaml"))


def test_no_module_finds_files_relative_to_the_repository() -> None:
    """Only `bench` (a developer tool, cli/bench.py) may look for the checkout around it."""
    offenders = []
    for module in sorted(PACKAGE.rglob("*.py")):
        for line in module.read_text(encoding="utf-8").splitlines():
            if re.search(r"REPO_ROOT|parents\[", line):
                offenders.append(f"{module.relative_to(PACKAGE)}: {line.strip()}")
    assert offenders == ["cli/bench.py: checkout = Path(__file__).resolve().parents[3]"]


def test_the_consoles_templates_and_files_ship_inside_the_package() -> None:
    from intercom_gateway.console.login import STATIC
    from intercom_gateway.console.web import FOLDER

    assert FOLDER.is_relative_to(PACKAGE)
    for name in STATIC:
        assert (FOLDER / "static" / name).exists(), name
    templates = FOLDER / "templates"
    used = set()
    for module in FOLDER.glob("*.py"):
        used |= set(re.findall(r'"(\w+\.html)"', module.read_text(encoding="utf-8")))
    assert used and all((templates / name).exists() for name in used), used
