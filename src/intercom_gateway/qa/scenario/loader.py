"""Read scenario files so that every error names the line it is about.

PyYAML's ``compose`` keeps each node's position; we build the plain data from the same
node tree and remember, for every path into it, the line it starts on. A pydantic error
location is then walked along that map: the deepest path that exists gives the line
(location parts that are union tags rather than keys are skipped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from intercom_gateway.errors import ConfigError
from intercom_gateway.errors import ScenarioFileError as ScenarioFileError
from intercom_gateway.qa.scenario.model import Scenario, references

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    location: str
    message: str

    def render(self, path: Path | str) -> str:
        where = f" {self.location}:" if self.location else ""
        return f"{path}:{self.line}:{where} {self.message}"


@dataclass
class LineMap:
    lines: dict[Loc, int] = field(default_factory=lambda: {(): 1})

    def line(self, loc: Sequence[str | int]) -> int:
        return self.lines[self._deepest((), tuple(loc))]

    def _deepest(self, path: Loc, rest: Loc) -> Loc:
        """The longest path into the file that ``rest`` describes, skipping the parts
        that are not keys (a union tag may even repeat its key: try both readings)."""
        if not rest:
            return path
        skipped = self._deepest(path, rest[1:])
        candidate = (*path, rest[0])
        if candidate not in self.lines:
            return skipped
        taken = self._deepest(candidate, rest[1:])
        return taken if len(taken) >= len(skipped) else skipped


@dataclass(frozen=True)
class LoadedScenario:
    path: Path
    scenario: Scenario
    lines: LineMap

    @property
    def name(self) -> str:
        return self.scenario.name


def parse_scenario(text: str, path: Path) -> LoadedScenario:
    data, lines = _compose(text, path)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioFileError(path, _problems(error, lines)) from None
    unresolved = references(scenario)
    if unresolved:
        raise ScenarioFileError(
            path, [Problem(lines.line(loc), _dotted(loc), msg) for loc, msg in unresolved]
        )
    return LoadedScenario(path, scenario, lines)


def load_scenario(path: Path) -> LoadedScenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read scenario: {error}", path=str(path)) from error
    return parse_scenario(text, path)


def scenario_files(paths: Sequence[Path]) -> list[Path]:
    """Files given, and the ``*.yaml``/``*.yml`` files of directories given, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        else:
            found.append(path)
    return found


def load_scenarios(paths: Sequence[Path]) -> list[LoadedScenario]:
    """Every scenario, or one error listing the problems of every bad file."""
    loaded: list[LoadedScenario] = []
    errors: list[str] = []
    for path in scenario_files(paths):
        try:
            loaded.append(load_scenario(path))
        except ConfigError as error:
            errors.append(str(error))
    if errors:
        raise ConfigError("\n".join(errors))
    names = [s.name for s in loaded]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"scenario names used twice: {', '.join(twice)}")
    return loaded


# --- YAML with positions -------------------------------------------------------------


def _compose(text: str, path: Path) -> tuple[Any, LineMap]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioFileError(path, [Problem(1, "", "the file is empty")])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        message = f"{error.context or ''} {error.problem or ''}".strip() or "invalid YAML"
        raise ScenarioFileError(path, [Problem(line, "", message)]) from None
    finally:
        loader.dispose()
    lines = LineMap()
    for loc, line in _positions(node, ()):
        lines.lines[loc] = line
    return data, lines


def _positions(node: yaml.Node, loc: Loc) -> Iterator[tuple[Loc, int]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            child = (*loc, _key(key))
            yield child, key.start_mark.line + 1
            yield from _positions(value, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*loc, index)
            yield child, item.start_mark.line + 1
            yield from _positions(item, child)


def _key(node: yaml.ScalarNode) -> str | int:
    # Keys are matched against pydantic locations, which are strings for fields.
    value: str = node.value
    return value


def _problems(error: ValidationError, lines: LineMap) -> list[Problem]:
    items = error.errors(include_url=False, include_input=False)
    # A list whose items failed also "has too few items": the item errors say it better.
    failed_inside = {item["loc"][:1] for item in items if len(item["loc"]) > 1}
    problems = [
        Problem(lines.line(item["loc"]), _dotted(item["loc"]), item["msg"])
        for item in items
        if not (item["type"] == "too_short" and item["loc"] in failed_inside)
    ]
    return sorted(set(problems), key=lambda p: (p.line, p.location))


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for index, part in enumerate(loc):
        if index and loc[index - 1] == part:
            continue  # a union tag repeats the key that chose it: say it once
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
