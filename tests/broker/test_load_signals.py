"""``intercom-gateway load`` stopped by SIGTERM or SIGHUP (a ``kill``, a closed terminal)
stops the Mosquitto and the gateway it started and removes its work folder."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
async def test_a_signal_stops_load_and_leaves_nothing_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    temp = tmp_path / "tmp"  # its temporary folders go here, to be seen gone
    temp.mkdir()
    load = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "intercom_gateway", "load", "--buildings", "1"),
        *("--dwellings", "10", "--rate", "20", "--duration", "600"),
        *("--out", str(tmp_path / "out")),
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines = await asyncio.wait_for(_lines_until(load, "sending:"), 180)
        workdir = Path(next(x for x in lines if x.startswith("work folder: ")).split(": ", 1)[1])
        assert workdir.parent == temp
        assert _left_behind([], temp) == [workdir]  # its folder, while it runs
        started = _descendants(load.pid)
        assert len(started) >= 2, started  # Mosquitto and the gateway, at least

        load.send_signal(sig)
        code = await asyncio.wait_for(load.wait(), 90)
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()

    assert code == 128 + sig
    assert _left_behind(started, temp) == []


def _left_behind(pids: list[int], temp: Path) -> list[int | Path]:
    """The processes of ``pids`` still running and whatever is in ``temp``."""
    return [pid for pid in pids if _running(pid)] + sorted(temp.iterdir())


async def _lines_until(process: asyncio.subprocess.Process, prefix: str) -> list[str]:
    """Its stderr lines up to the first that starts with ``prefix``."""
    assert process.stderr is not None
    lines: list[str] = []
    while not (lines and lines[-1].startswith(prefix)):
        line = await process.stderr.readline()
        assert line, f"load exited before {prefix!r}: {lines}"
        lines.append(line.decode().strip())
    return lines


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _descendants(pid: int) -> list[int]:
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be collected
