"""The layout stays readable: no module of the package or the benchmarks grows past
about 450 lines (issue #15); a module that needs more is two responsibilities."""

from __future__ import annotations

from pathlib import Path

import pytest

import intercom_gateway

PACKAGE = Path(intercom_gateway.__file__).parent
BENCH = Path(__file__).resolve().parents[2] / "bench"
LIMIT = 450


def _modules() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    if BENCH.is_dir():  # a checkout; an installed wheel has no bench/
        found += sorted(BENCH.glob("*.py"))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda path: path.name)
def test_no_module_passes_the_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= LIMIT, f"{path}: {lines} lines; split it by responsibility"
