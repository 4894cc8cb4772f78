"""scripts/mutate names modules as they are laid out now (docs/mutation.md).

Only the naming is tested here, and the --dry-run that prints it: the mutation run
itself takes minutes and is a habit, not a test.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutate"


def _script() -> ModuleType:
    loader = SourceFileLoader("scripts_mutate", str(SCRIPT))
    spec = spec_from_loader("scripts_mutate", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


mutate = _script()


@pytest.mark.parametrize(
    "name",
    [
        "router",
        "router.py",
        "core/router",
        "core.router",
        "intercom_gateway.core.router",
        "src/intercom_gateway/core/router.py",
    ],
)
def test_a_module_is_named_by_path_bare_name_or_dotted(name: str) -> None:
    assert mutate.resolve(name) == "core/router"


def test_a_bare_name_outside_core_is_found_when_one_subpackage_holds_it() -> None:
    assert mutate.resolve("mqtt5") == "bus/mqtt5"


def test_a_bare_name_two_subpackages_hold_is_refused_not_guessed() -> None:
    with pytest.raises(LookupError, match="ambiguous: bus/base, store/base"):
        mutate.resolve("base")


def test_an_unknown_module_is_refused() -> None:
    with pytest.raises(LookupError, match="no module nowhere"):
        mutate.resolve("nowhere")


def test_the_defaults_name_modules_that_exist() -> None:
    for name in (*mutate.CORE, *mutate.MORE):
        assert mutate.resolve(name) == name
    # decision.py before issue #15 is the four modules it became, all in the defaults.
    assert set(mutate.expand("decision")) <= set(mutate.CORE)


def test_dry_run_prints_the_files_mutmut_would_mutate() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--module", "decision", "--module", "tags"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith(
        "mutate: would mutate core/gates, core/router, core/decide, core/outcomes, core/tags"
    )
    assert (
        'only_mutate = ["src/intercom_gateway/core/gates.py", "src/intercom_gateway/core/router.py"'
        in result.stdout
    )


def test_dry_run_refuses_a_module_that_is_not_there() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--module", "nowhere"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "no module nowhere" in result.stderr
