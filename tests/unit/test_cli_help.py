"""The command line explains itself: every command and option has help, the README's
commands exist under their names, and `bench` is a command like the others that hands
its options to the benchmark's own parser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import click
import pytest
from bench import relay_bench
from bench.workload import QUICK, SCENARIOS, Options
from click.testing import CliRunner

from intercom_gateway.cli.bench import BENCH_PATHS
from intercom_gateway.cli.main import main

# README, "Commands": acceptance tests run these names.
DOCUMENTED = {
    "demo", "run", "simulate", "schemas", "explain", "consent", "health", "scenario",
    "credentials", "tls", "load", "asyncapi", "resident", "ledger", "api", "console", "token",
    "bench", "up", "down", "status", "config", "distribute",
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
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output


def test_bench_declares_the_benchmarks_options_with_its_defaults() -> None:
    result = CliRunner().invoke(main, ["bench", "--help"], prog_name="intercom-gateway")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: intercom-gateway bench [OPTIONS]")
    text = " ".join(result.output.split())
    parser_options = {"--quick", "--events", "--latency-events", "--rate", "--repeat"}
    parser_options |= {"--backlog", "--scenarios", "--no-plot"}
    for option in parser_options:
        assert f" {option} " in text, option
    full = Options()
    for words in (
        f"[default: {full.saturation_events}; --quick: {QUICK.saturation_events}]",
        f"[default: {full.latency_events}; --quick: {QUICK.latency_events}]",
        f"[default: {full.rate:g}]",
        f"[default: {full.repeat}; --quick: {QUICK.repeat}]",
        f"[default: {full.backlog}]",
        f"Smoke run: {QUICK.saturation_events} events, {QUICK.repeat} repetition,",
    ):
        assert words in text, words
    assert BENCH_PATHS == SCENARIOS


def test_the_benchmarks_own_parser_has_the_same_options_all_explained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        relay_bench.parse(["--help"])  # python -m bench.relay_bench --help
    out = capsys.readouterr().out
    entries = out.split("\noptions:\n", 1)[1].split("\n  --")[1:]
    options = {"--" + entry.split()[0] for entry in entries}
    bench = next(c for p, c in EVERY if p == ("bench",))
    # --gateways runs the other benchmark (bench/gateways_bench.py), which has its own.
    ours = {o for param in bench.params for o in param.opts} - {"-h", "--help", "--gateways"}
    assert options == ours
    for entry in entries:
        words = entry.split()
        # "--events EVENTS events per ...": more than the option and its metavar.
        assert len(words) > 2, f"--{entry.strip()} has no help"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], Options()),
        (["--quick"], replace(QUICK, label="quick")),
        (
            [
                "--quick",
                "--events",
                "50",
                "--latency-events",
                "40",
                "--rate",
                "250",
                "--repeat",
                "2",
                "--backlog",
                "7",
                "--scenarios",
                "raw,gateway",
                "--no-plot",
            ],
            replace(
                QUICK,
                saturation_events=50,
                latency_events=40,
                rate=250.0,
                repeat=2,
                backlog=7,
                scenarios=("raw", "gateway"),
                plot=False,
                label="quick",
            ),
        ),
    ],
)
def test_bench_hands_its_options_to_the_benchmark(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], expected: Options
) -> None:
    handed: list[list[str]] = []
    monkeypatch.setattr(relay_bench, "main", handed.append)
    result = CliRunner().invoke(main, ["bench", *arguments])
    assert result.exit_code == 0, result.output
    [argv] = handed
    assert relay_bench.parse(argv) == expected


def test_bench_refuses_an_unknown_path_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[Any] = []
    monkeypatch.setattr(relay_bench, "main", called.append)
    result = CliRunner().invoke(main, ["bench", "--scenarios", "raw,bogus"])
    assert result.exit_code == 2 and called == []
    assert "Invalid value for '--scenarios': unknown: bogus" in result.output


def test_the_exit_codes_are_in_the_root_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "3 broker or gateway unreachable" in " ".join(result.output.split())
