"""The error tree on one page: every error class of the package lives in errors.py, is
exported, and is drawn in its docstring under its real parent (httpx ``_exceptions.py``)."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import intercom_gateway
from intercom_gateway import errors

PACKAGE = Path(intercom_gateway.__file__).parent
# A node of the drawing: a root at the margin, or a name after a branch.
NODE = re.compile(r"^    (?:(?P<root>[A-Z]\w+)|(?P<pad>(?:[│ ]   )*)[├└]── (?P<name>[A-Z]\w+))")


def _modules() -> list[str]:
    found = pkgutil.walk_packages([str(PACKAGE)], "intercom_gateway.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


def _drawn_parents() -> dict[str, str | None]:
    """Each class drawn in the docstring, and the class it is drawn under."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        node = NODE.match(line)
        if node is None:
            continue
        depth = 0 if node["root"] else len(node["pad"]) // 4 + 1
        name = node["root"] or node["name"]
        del path[depth:]
        parents[name] = path[-1] if path else None
        path.append(name)
    return parents


def test_every_exception_class_of_the_package_is_defined_in_errors() -> None:
    elsewhere = []
    for name in _modules():
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and module is not errors
            ):
                elsewhere.append(f"{name}.{attribute}")
    assert elsewhere == []


def test_no_exception_class_is_defined_inside_a_function_either() -> None:
    """Module attributes miss classes made in a function body; the source does not."""
    builtin = {n for n, v in vars(builtins).items() if inspect.isclass(v)}
    known = set(errors.__all__) | {
        n for n in builtin if issubclass(getattr(builtins, n), BaseException)
    }
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
                if bases & known or any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert found == []


def test_errors_exports_exactly_its_error_classes() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }
    assert sorted(errors.__all__) == errors.__all__
    assert set(errors.__all__) == defined


def test_the_docstring_draws_every_class_under_its_parent() -> None:
    drawn = _drawn_parents()
    assert set(drawn) - {"ValueError"} == set(errors.__all__)
    for name in errors.__all__:
        cls = getattr(errors, name)
        parent = drawn[name]
        if parent is None:
            assert cls.__bases__ == (Exception,), f"{name} is drawn as a root"
        else:
            assert cls.__bases__[0].__name__ == parent, f"{name} is drawn under {parent}"


def test_every_leaf_of_ours_derives_from_gateway_error_but_the_parser_errors() -> None:
    """The two ValueErrors are raised by pure parsers and caught right where they are called."""
    apart = {
        name
        for name in errors.__all__
        if not issubclass(getattr(errors, name), errors.GatewayError)
    }
    assert apart == {"MalformedPacket", "DateBoundError"}
