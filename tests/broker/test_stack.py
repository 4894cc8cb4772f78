"""The dev stack (issue #16): `intercom-gateway up` runs the project's Mosquitto on a port
of its own and a gateway; the other commands, started in the same folder with no flags,
use it; `down`, SIGTERM, SIGHUP and Ctrl-C stop everything it started; a stack whose
`up` was killed is seen as stale and `down` stops what it left behind.

Every command runs as a real process, as a developer would type it, from a folder of
the test's own, with no INTERCOM_* setting in its environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.cli.qa import LIBRARY
from intercom_gateway.qa.stackfile import read_stack
from tests.broker.test_demo_exits import Output, _alive, _children

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")


def _env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERCOM_")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**clean, "TMPDIR": str(tmp_path / "tmp")}


@dataclass
class Done:
    code: int
    out: str
    err: str


async def cli(tmp_path: Path, *args: str) -> Done:
    """One command, as typed in the stack's folder."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "intercom_gateway",
        *args,
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


@dataclass
class Up:
    process: asyncio.subprocess.Process
    output: Output
    port: int
    children: set[int]


@asynccontextmanager
async def up(tmp_path: Path, *args: str) -> AsyncIterator[Up]:
    """`up --port 0` in ``tmp_path``, ready; killed with its children if a test fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "intercom_gateway",
        "up",
        "--port",
        "0",
        *args,
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = Output(process.stdout)
    children: set[int] = set()
    try:
        found = await output.matching(r"broker +mqtt://127\.0\.0\.1:(\d+)")
        await output.matching(r"subscribe partners/parcel-unlock/#")
        state = read_stack(tmp_path / "var" / "stack")
        assert state is not None
        children = {state.mosquitto_pid} | ({state.gateway_pid} if state.gateway_pid else set())
        yield Up(process, output, int(found[1]), children)
    finally:
        if process.returncode is None:
            children |= _children(process.pid)
            process.kill()
            await process.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _left(stack: Up) -> list[int]:
    return [pid for pid in stack.children if _alive(pid)]


def _password(tmp_path: Path, account: str) -> str:
    credentials = tmp_path / "var" / "stack" / "secrets" / "credentials.json"
    password: str = json.loads(credentials.read_text())[account]
    return password


async def test_up_serves_the_other_commands_until_down(tmp_path: Path) -> None:
    async with up(tmp_path) as stack:
        assert stack.port != 1883
        assert len(stack.children) == 2, "a broker and a gateway"

        status = await cli(tmp_path, "status", "--json")
        assert status.code == 0, status
        assert json.loads(status.out)["healthy"] is True

        # No flags: the stack's broker, accounts and gateway id come from its state file.
        changed = await cli(tmp_path, "consent", "set", "b001", "d0101", "--stop", "concierge")
        assert changed.code == 0, changed.err
        assert json.loads(changed.out)["applied"] is True
        health = await cli(tmp_path, "health")
        assert health.code == 0, health.err
        sent = await cli(tmp_path, "simulate", "--events", "5", "--seed", "3")
        assert sent.code == 0, sent.err
        assert "5 confirmed" in sent.out
        # Its gateway's Prometheus metrics, where `up` said (issue #19).
        url = re.search(r"metrics +(http://\S+/metrics)", stack.output.text)
        assert url is not None
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(url[1])).text
        families = {f.name: f for f in text_string_to_metric_families(scraped)}
        assert families["intercom_gateway_events"].samples[0].value == 5

        # Its own run, said so: a scenario run never silently picks one of two systems.
        scenario = LIBRARY / "bad-input-bad-topic.yaml"
        own = await cli(tmp_path, "scenario", "run", str(scenario))
        assert own.code == 0, own.err
        assert "Note: scenario run starts its own broker and gateway" in own.err

        # A partner connects with what `up` printed: its account, its password, its topics.
        printed = re.search(r"parcel-unlock +password (\S+) +subscribe (\S+)", stack.output.text)
        assert printed is not None
        assert printed[1] == _password(tmp_path, "parcel-unlock")
        address = BrokerAddress("127.0.0.1", stack.port, "parcel-unlock", printed[1])
        async with MqttBus(address, client_id="parcel-unlock.test") as partner:
            await partner.subscribe(printed[2])

        # Nothing starts on top of it: a second stack, a second gateway with its id.
        again = await cli(tmp_path, "up", "--port", "0")
        assert again.code == 1
        assert "already runs" in again.err and len(again.err.strip().splitlines()) == 1
        second = await cli(tmp_path, "run")
        assert second.code == 1
        assert "already runs gateway 'gw-1'" in second.err

        down = await cli(tmp_path, "down")
        assert down.code == 0, down.err
        assert "stopped the dev stack" in down.err
        assert await asyncio.wait_for(stack.process.wait(), 30) == 0
        assert not _left(stack)
    assert not (tmp_path / "var" / "stack" / "stack.json").exists()
    assert (tmp_path / "var" / "stack" / "gateway" / "gateway.sqlite").exists(), "state stays"
    after = await cli(tmp_path, "status")
    assert after.code == 1
    assert "no dev stack runs here" in after.out
    nothing = await cli(tmp_path, "down")
    assert nothing.code == 0 and "nothing to stop" in nothing.err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
async def test_up_stops_everything_it_started_on(sig: signal.Signals, tmp_path: Path) -> None:
    async with up(tmp_path) as stack:
        stack.process.send_signal(sig)
        text = await stack.output.closed()
        code = await asyncio.wait_for(stack.process.wait(), 30)
        assert code == 0, text
        assert f"stopped by {sig.name}" in text
        assert "Traceback" not in text
        assert not _left(stack), "a child outlived `up`"
    assert not (tmp_path / "var" / "stack" / "stack.json").exists()
    assert not any((tmp_path / "tmp").iterdir()), "a temp folder was left behind"


async def test_a_killed_up_is_stale_and_down_stops_what_it_left(tmp_path: Path) -> None:
    async with up(tmp_path) as stack:
        stack.process.kill()  # SIGKILL: `up` cannot clean up
        await stack.process.wait()
        assert all(_alive(pid) for pid in stack.children), "its children run on"

        status = await cli(tmp_path, "status")
        assert status.code == 1
        assert "stale" in status.out
        health = await cli(tmp_path, "health", "--timeout", "1")
        assert "ignoring a stale dev stack state" in health.err

        down = await cli(tmp_path, "down")
        assert down.code == 0, down.err
        assert not _left(stack)
    assert not (tmp_path / "var" / "stack" / "stack.json").exists()


async def test_without_a_gateway_run_picks_the_broker_up(tmp_path: Path) -> None:
    async with up(tmp_path, "--no-gateway") as stack:
        assert len(stack.children) == 1
        refused = await cli(tmp_path, "health", "--timeout", "1")
        assert refused.code == 3, "no gateway has served the stack's broker yet"
        gateway = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "intercom_gateway",
            "run",
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert gateway.stderr is not None
        try:
            said = b""
            async with asyncio.timeout(60):
                while b"gateway online" not in (line := await gateway.stderr.readline()):
                    said += line
                    assert line, f"`run` exited: {said.decode()[-2000:]}"
            changed = await cli(
                tmp_path, "consent", "set", "b001", "d0102", "--stop", "elder-watch"
            )
            assert changed.code == 0, changed.err
        finally:
            gateway.send_signal(signal.SIGTERM)
            await asyncio.wait_for(gateway.communicate(), 30)
        assert (await cli(tmp_path, "down")).code == 0


async def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await cli(tmp_path, "up", "--port", str(port))
    assert result.code == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.err
    assert len(result.err.strip().splitlines()) == 1
