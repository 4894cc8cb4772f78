"""Liveness that tells the truth (issue 13): after a crash or a hang the retained status
reads ``offline`` and ``health`` fails; a gateway that leaves on an error has the broker
publish its last will. Real Mosquitto, the gateway as a real process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from intercom_gateway.broker.mosquitto import GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus, Will
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.runner import GatewayProcess, start_broker
from tests.conftest import SAMPLE_SERVICES


@pytest.fixture
def own_broker(tmp_path: Path, fleet_registry: Registry) -> Iterator[Mosquitto]:
    with start_broker(tmp_path, fleet_registry, SAMPLE_SERVICES) as mosquitto:
        yield mosquitto


SETTINGS = {
    "INTERCOM_METRICS_INTERVAL": "0.5",
    "INTERCOM_KEEPALIVE": "2",
    "INTERCOM_RECONNECT_MIN": "0.05",
    "INTERCOM_RECONNECT_MAX": "0.5",
}


class Status:
    """Follows the retained gateway/v1/status of one gateway."""

    def __init__(self, broker: Mosquitto, gateway_id: str) -> None:
        self.broker, self.gateway_id = broker, gateway_id
        self.states: list[str] = []
        self._changed = asyncio.Condition()

    async def follow(self, ready: asyncio.Event) -> None:
        address = self.broker.address(OPERATOR)
        client_id = address.client_id(f"status-{uuid.uuid4().hex[:6]}")
        async with MqttBus(address, client_id=client_id) as bus:
            await bus.subscribe(topics.STATUS)
            ready.set()
            async for message in bus.messages():
                status = json.loads(message.payload)
                if status["gateway_id"] == self.gateway_id:
                    async with self._changed:
                        self.states.append(status["state"])
                        self._changed.notify_all()

    async def reaches(self, state: str, *, timeout: float = 20.0) -> float:
        """Wait until the latest state is ``state``; returns how long it took."""
        start = time.monotonic()
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: bool(self.states) and self.states[-1] == state),
                timeout,
            )
        return time.monotonic() - start


@pytest.fixture
async def gateway(
    own_broker: Mosquitto, tmp_path: Path, fleet_registry: Registry
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Status, dict[str, str]]]:
    running = GatewayProcess(own_broker, tmp_path, env=SETTINGS)
    await running.write_registry(fleet_registry)
    status = Status(own_broker, running.gateway_id)
    ready = asyncio.Event()
    follower = asyncio.create_task(status.follow(ready))
    await asyncio.wait_for(ready.wait(), 10)
    process = await running.launch()
    try:
        await status.reaches("online")
        yield process, status, running.environment()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
        await running.aclose(graceful=False)
        follower.cancel()


async def health(variables: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "intercom_gateway",
        "health",
        "--timeout",
        "2",
        env=variables,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_running_gateway_is_healthy(
    gateway: tuple[asyncio.subprocess.Process, Status, dict[str, str]],
) -> None:
    _, _, variables = gateway
    code, said = await health(variables)
    assert code == 0 and "making progress" in said, said


async def test_after_a_crash_the_status_reads_offline_and_health_fails(
    gateway: tuple[asyncio.subprocess.Process, Status, dict[str, str]],
) -> None:
    process, status, variables = gateway
    process.kill()  # SIGKILL: no chance to say anything; the broker sends the will
    await process.wait()
    took = await status.reaches("offline", timeout=10)
    print(f"\nSIGKILL -> retained offline in {took:.2f} s")
    code, said = await health(variables)
    assert code == 1 and "is offline" in said, said


async def test_a_hung_gateway_reads_offline_within_its_keepalive_and_recovers(
    gateway: tuple[asyncio.subprocess.Process, Status, dict[str, str]],
) -> None:
    """SIGSTOP freezes the process with its connection open: the broker notices the
    silence after 1.5 keepalives (2 s here) and publishes the will."""
    process, status, variables = gateway
    process.send_signal(signal.SIGSTOP)
    took = await status.reaches("offline", timeout=15)
    print(f"\nhung -> retained offline in {took:.2f} s (keepalive 2 s)")
    code, said = await health(variables)
    assert code == 1, said
    process.send_signal(signal.SIGCONT)
    await status.reaches("online", timeout=20)
    code, said = await health(variables)
    assert code == 0, said


async def test_a_client_leaving_on_an_error_has_its_will_published(
    own_broker: Mosquitto,
) -> None:
    """The path of an exception out of the gateway: DISCONNECT 0x04, the will goes out."""
    gateway_id = f"gw-{uuid.uuid4().hex[:6]}"
    status = Status(own_broker, gateway_id)
    ready = asyncio.Event()
    follower = asyncio.create_task(status.follow(ready))
    await asyncio.wait_for(ready.wait(), 10)
    from intercom_gateway.gateway.service import status_payload

    will = Will(topics.STATUS, status_payload(gateway_id, "offline"))
    address = own_broker.address(GATEWAY)
    with pytest.raises(RuntimeError):
        async with MqttBus(
            address, client_id=address.client_id(f"will-{gateway_id}"), will=will
        ) as bus:
            await bus.publish(topics.STATUS, status_payload(gateway_id, "online"), retain=True)
            await status.reaches("online")
            raise RuntimeError("a bug on the way out")
    await status.reaches("offline", timeout=5)
    follower.cancel()
