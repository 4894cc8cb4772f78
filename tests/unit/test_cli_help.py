"""The command line explains itself: every command and option has help, the README's
commands exist under their names, and `bench --help` is the benchmark's own."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from intercom_gateway.cli.main import main

# README, "Commands": acceptance tests run these names.
DOCUMENTED = {
    "demo", "run", "simulate", "schemas", "explain", "consent", "health", "scenario",
    "credentials", "tls", "load", "asyncapi", "resident", "ledger", "api", "token", "bench",
}  # fmt: skip


def commands(
    command: click.Command = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))


EVERY = list(commands())


def test_the_documented_commands_are_there_and_nothing_else() -> None:
    assert set(main.commands) == DOCUMENTED


@pytest.mark.parametrize(("path", "command"), EVERY, ids=[" ".join(p) or "main" for p, _ in EVERY])
def test_every_command_and_option_explains_itself(
    path: tuple[str, ...], command: click.Command
) -> None:
    assert command.help and len(command.help) > 20, path
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
    if path == ("bench",):
        return  # its own parser answers --help; see below
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output


def test_bench_help_is_the_benchmarks_own_parser() -> None:
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("usage: intercom-gateway bench")
    assert "--quick" in result.output


def test_the_exit_codes_are_in_the_root_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "3 broker or gateway unreachable" in " ".join(result.output.split())
