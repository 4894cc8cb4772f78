"""Run the real thing in tests: Mosquitto with the project's configuration, the gateway,
and clients logged in as panels, partners or the operator.

Used by this project's broker tests and by integrators through the pytest plugin
(``intercom_gateway.qa.pytest_plugin``). Everything is awaited; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intercom_gateway.broker.mosquitto import FLEET, Mosquitto, generate_credentials
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.registry import Registry, dump_registry
from intercom_gateway.gateway.service import Gateway, run_gateway
from intercom_gateway.settings import Settings


def partner_ids(settings: Settings) -> list[str]:
    partners = load_partners(settings.partners_path, policy=load_policy(settings.policy_path))
    return [service.id for service in partners.services]


@contextlib.contextmanager
def start_broker(
    workdir: Path, registry: Registry, partners: Iterable[str]
) -> Any:  # Iterator[Mosquitto]; Any keeps the decorator's typing simple for callers
    """A Mosquitto on a free port, with accounts for the registry's devices and partners."""
    credentials = generate_credentials(workdir / "secrets", registry, partners)
    with Mosquitto(workdir=workdir / "broker", credentials=credentials) as mosquitto:
        yield mosquitto


@dataclass
class RunningGateway:
    broker: Mosquitto
    settings: Settings
    gateway: Gateway
    registry: Registry

    def client(self, user: str, **options: Any) -> MqttBus:
        """A bus logged in as one of the broker's accounts (a device id, a partner id,
        ``operator``, ``analytics``, ``cloud`` or ``fleet``)."""
        address = self.broker.address(user)
        # The broker accepts only "<user>" or "<user>.<suffix>" (broker_plugin).
        client_id = options.pop("client_id", address.client_id(uuid.uuid4().hex[:8]))
        return MqttBus(address, client_id=client_id, **options)

    async def wait_processed(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until the gateway has finished ``count`` inbound messages in all."""
        await asyncio.wait_for(self.gateway.wait_acked(count), timeout)


@contextlib.asynccontextmanager
async def running_gateway(
    broker: Mosquitto, registry: Registry, workdir: Path, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """The gateway in this process, connected to ``broker``, subscribed and online."""
    registry_path = workdir / "registry.yaml"
    await asyncio.to_thread(_write, registry_path, dump_registry(registry))
    settings = Settings().model_copy(
        update={
            "broker_host": broker.host,
            "broker_port": broker.port,
            "secrets_dir": broker.credentials.directory,
            "db_path": workdir / "gateway.sqlite",
            "registry_path": registry_path,
            "gateway_id": f"gw-test-{uuid.uuid4().hex[:8]}",
            "log_events": False,
            # A test gateway's session must not outlive it on a shared broker.
            "session_expiry": 0,
            **overrides,
        }
    )
    stop = asyncio.Event()
    loaded: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_gateway(settings, stop=stop, ready=loaded.set_result))
    try:
        gateway = await asyncio.wait_for(_first(loaded, task), 20)
        await asyncio.wait_for(_first(asyncio.ensure_future(gateway.online.wait()), task), 20)
        yield RunningGateway(broker, settings, gateway, registry)
    finally:
        stop.set()
        await task


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def _first(awaitable: asyncio.Future[Any], guard: asyncio.Task[Any]) -> Any:
    """Await ``awaitable`` unless ``guard`` ends first (then its error surfaces)."""
    done, _ = await asyncio.wait({awaitable, guard}, return_when=asyncio.FIRST_COMPLETED)
    if awaitable in done:
        return awaitable.result()
    awaitable.cancel()
    guard.result()
    raise RuntimeError("the gateway stopped before it was ready")


async def publish_as_fleet(broker: Mosquitto, messages: Iterable[tuple[str, bytes]]) -> int:
    """Publish raw panel messages through the simulator account; returns how many."""
    sent = 0
    address = broker.address(FLEET)
    async with MqttBus(address, client_id=address.client_id(uuid.uuid4().hex[:8])) as bus:
        for topic, payload in messages:
            await bus.publish(topic, payload, on_done=lambda _error: None)  # drained below
            sent += 1
        await bus.drain()
    return sent


async def collect_until_quiet(
    bus: MqttBus, *, sentinel_topic: str, timeout: float = 10.0
) -> list[Message]:
    """Everything ``bus`` receives before a message on ``sentinel_topic``."""
    seen: list[Message] = []

    async def take() -> None:
        async for message in bus.messages():
            if message.topic == sentinel_topic:
                return
            seen.append(message)

    await asyncio.wait_for(take(), timeout)
    return seen


def sentinel_topic(partner_id: str) -> str:
    """A topic in a partner's tree that no dwelling can produce (no building is named so)."""
    return topics.partner(partner_id, "zz-sentinel", "zz-sentinel", "sentinel")
