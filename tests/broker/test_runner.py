"""qa.runner: the gateway as a real process, started, stopped, killed and restarted, ready
on its retained status; a gateway that cannot start fails fast; nothing outlives the run."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from intercom_gateway.core.registry import generate_registry
from intercom_gateway.errors import RunnerError
from intercom_gateway.qa.runner import (
    Endpoint,
    GatewayProcess,
    StatusWatch,
    gateway_process,
    started_broker,
)

REGISTRY = generate_registry(buildings=1, dwellings=2, services=("concierge",))


async def test_a_gateway_process_starts_stops_and_restarts(tmp_path: Path) -> None:
    async with started_broker(tmp_path, REGISTRY, ["concierge"]) as broker:
        gateway = GatewayProcess(broker, tmp_path)
        await gateway.write_registry(REGISTRY)
        async with StatusWatch(broker, gateway.gateway_id) as status:
            await gateway.start(status)
            assert gateway.alive and status.online_count == 1
            assert await gateway.restart(status, sig=signal.SIGKILL) == -signal.SIGKILL
            assert gateway.alive and status.online_count == 2
            assert await gateway.stop() == 0
            assert not gateway.alive
        assert gateway.starts == 2
        assert (tmp_path / "gateway-2.log").exists()


async def test_an_endpoint_is_a_running_broker_read_from_its_secrets(tmp_path: Path) -> None:
    async with started_broker(tmp_path, REGISTRY, ["concierge"]) as broker:
        endpoint = Endpoint.load(broker.credentials.directory, port=broker.port)
        assert endpoint.address("concierge") == broker.address("concierge")


async def test_gateway_process_stops_it_on_the_way_out_even_on_an_error(tmp_path: Path) -> None:
    async with started_broker(tmp_path, REGISTRY, ["concierge"]) as broker:
        started: list[asyncio.subprocess.Process] = []
        with pytest.raises(ZeroDivisionError):
            async with gateway_process(broker, tmp_path, REGISTRY) as gateway:
                assert gateway.process is not None
                started.append(gateway.process)
                1 / 0  # noqa: B018
        assert started[0].returncode == 0  # SIGTERM: a graceful stop
    assert not broker.running


async def test_a_gateway_that_cannot_start_fails_without_waiting_out_the_timeout(
    tmp_path: Path,
) -> None:
    async with started_broker(tmp_path, REGISTRY, ["concierge"]) as broker:
        gateway = GatewayProcess(broker, tmp_path)  # no registry written: it exits
        async with StatusWatch(broker, gateway.gateway_id) as status:
            with pytest.raises(RunnerError, match="exited"):
                await gateway.start(status, timeout=60)
        assert not gateway.alive
