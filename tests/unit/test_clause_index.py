"""The clause index (README "Where each clause is enforced", and the docstring of
``core/decide.py``) names functions that exist, in the files named, and both agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from intercom_gateway.core import decide

CORE = Path(decide.__file__).parent
README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_rows() -> list[tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Where each clause is enforced") :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].startswith("`"):
            clause, _, function, file = cells
            rows.append((clause, function, file.strip("`")))
    return rows


def _names(cell: str) -> list[str]:
    """`a` (with `B.c`, `x.py`) -> ["a", "B.c"]: the functions a cell names."""
    return [name for name in re.findall(r"`([^`]+)`", cell) if not name.endswith(".py")]


def _defines(path: Path, dotted: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    head, _, method = dotted.partition(".")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == head:
            if not method:
                return True
            return isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == method for item in node.body
            )
    return False


ROWS = _readme_rows()


def test_the_readme_carries_the_index() -> None:
    assert len(ROWS) >= 15
    assert {file for _, _, file in ROWS} <= {p.name for p in CORE.glob("*.py")}


@pytest.mark.parametrize(("clause", "function", "file"), ROWS)
def test_each_function_named_is_defined_where_the_index_says(
    clause: str, function: str, file: str
) -> None:
    first, *others = _names(function)
    assert _defines(CORE / file, first), f"{clause}: {first} is not defined in core/{file}"
    for other in others:  # "(with `Policy.rule_for`)", "(and `Outcome.x`, `outcomes.py`)"
        assert any(_defines(path, other) for path in CORE.glob("*.py")), f"{clause}: {other}"


def test_the_docstring_of_decide_names_the_same_functions() -> None:
    documented = re.findall(r"``(\w+(?:\.\w+)+)``", decide.__doc__ or "")
    documented_functions = {dotted.rsplit(".", 1)[-1] for dotted in documented}
    for clause, function, _ in ROWS:
        first = _names(function)[0].split(".")[-1]
        assert first in documented_functions, f"{clause}: {first} missing from decide.py"
