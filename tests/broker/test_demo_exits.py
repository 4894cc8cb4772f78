"""`intercom-gateway demo` cleans up however it is stopped: SIGTERM (a supervisor, `kill`)
and SIGHUP (the terminal closed) stop its Mosquitto and gateway and remove its temp
folder, as Ctrl-C always did. It once left its Mosquitto running."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

STARTUP = 60.0  # seconds for Mosquitto, accounts and the gateway on a busy machine


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started, as Linux lists them."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _exists(folder: Path) -> bool:
    return folder.exists()


class Output:
    """Everything the demo prints, read as it comes (a full pipe would block it)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.text = ""
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            async with self._changed:
                self.text += chunk.decode(errors="replace")
                self._changed.notify_all()

    async def matching(self, pattern: str) -> re.Match[str]:
        async with asyncio.timeout(STARTUP), self._changed:
            await self._changed.wait_for(lambda: re.search(pattern, self.text) is not None)
        found = re.search(pattern, self.text)
        assert found is not None
        return found

    async def closed(self) -> str:
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 60)
        except TimeoutError:
            raise AssertionError(f"the demo did not stop; it said:\n{self.text[-3000:]}") from None
        return self.text


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
async def test_the_demo_stops_everything_it_started_on(sig: signal.Signals, tmp_path: Path) -> None:
    started: set[int] = set()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "intercom_gateway",
        "demo",
        "--duration",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its temp folder under tmp_path: a failing run leaves nothing in /tmp.
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert process.stdout is not None
    try:
        output = Output(process.stdout)
        store = await output.matching(r"store (\S+)/gateway\.sqlite")
        folder = Path(store[1])
        await output.matching(r"gateway online")
        started = _children(process.pid)
        assert folder.parent == tmp_path
        assert started, "the demo runs its own Mosquitto"
        assert _exists(folder)

        process.send_signal(sig)
        rest = await output.closed()
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            started |= _children(process.pid)
            process.kill()
            await process.wait()
        survivors = [pid for pid in started if _alive(pid)]
        for pid in survivors:  # not to leave them running if the demo failed
            os.kill(pid, signal.SIGKILL)
    assert code == 0, rest
    assert "stopped" in rest
    assert "Traceback" not in rest, rest
    assert not survivors, "a child outlived the demo"
    assert not _exists(folder)
