"""The one way QA tooling starts the real thing: Mosquitto and the gateway.

Mosquitto runs the project's ``mosquitto.conf`` on a free port with accounts generated
for a registry (``start_broker``, ``started_broker``) or is someone else's
(``Endpoint``). The gateway runs in this process (``running_gateway``) or as a real
process, ``intercom-gateway run`` with its environment (``GatewayProcess``), which can be
stopped, killed and started again. Readiness is awaited, never slept for: the
in-process gateway's ``online`` event, or the process's retained status on
``gateway/v1/status`` (``StatusWatch``). Everything started here is stopped on the way
out, an exception included, so no Mosquitto or gateway outlives its caller.

The demo, the load generator, the scenario runner, the pytest plugin and the broker
tests all start through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from intercom_gateway.broker.mosquitto import (
    OPERATOR,
    Credentials,
    Mosquitto,
    generate_credentials,
    load_credentials,
)
from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry, dump_registry
from intercom_gateway.errors import BusError, RunnerError
from intercom_gateway.gateway.run import run_gateway
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.settings import Settings

STARTUP = 30.0  # seconds a gateway may take to come online


# --- the broker ---------------------------------------------------------------------------


class Broker(Protocol):
    """Where a broker listens and the accounts it knows (a ``Mosquitto`` or an ``Endpoint``)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def credentials(self) -> Credentials: ...

    def address(self, user: str) -> BrokerAddress: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A broker someone else runs, with the accounts ``credentials`` made for it."""

    credentials: Credentials
    host: str
    port: int

    @classmethod
    def load(cls, secrets_dir: Path, *, host: str = "127.0.0.1", port: int) -> Endpoint:
        return cls(load_credentials(secrets_dir), host, port)

    def address(self, user: str) -> BrokerAddress:
        return self.credentials.address(user, host=self.host, port=self.port)


@contextlib.contextmanager
def start_broker(
    workdir: Path, registry: Registry, partners: Iterable[str], contractors: Iterable[str] = ()
) -> Iterator[Mosquitto]:
    """A Mosquitto on a free port, with accounts for the registry's devices and partners
    (and the distribution ``contractors``)."""
    credentials = generate_credentials(
        workdir / "secrets", registry, partners, contractor_ids=contractors
    )
    with Mosquitto(workdir=workdir / "broker", credentials=credentials) as mosquitto:
        yield mosquitto


@contextlib.asynccontextmanager
async def started_broker(
    workdir: Path, registry: Registry, partners: Iterable[str], contractors: Iterable[str] = ()
) -> AsyncIterator[Mosquitto]:
    """``start_broker`` for async callers: the event loop never stalls on it."""
    credentials = await asyncio.to_thread(
        functools.partial(generate_credentials, contractor_ids=list(contractors)),
        workdir / "secrets",
        registry,
        list(partners),
    )
    async with Mosquitto(workdir=workdir / "broker", credentials=credentials) as mosquitto:
        yield mosquitto


def client(broker: Broker, user: str, **options: Any) -> MqttBus:
    """A bus logged in as one of the broker's accounts, with a fresh id bound to it.

    The broker accepts only ``<user>`` or ``<user>.<suffix>`` (broker_plugin); a reused id
    would take over the other client's session.
    """
    address = broker.address(user)
    client_id = options.pop("client_id", address.client_id(uuid.uuid4().hex[:8]))
    return MqttBus(address, client_id=client_id, **options)


async def follow(
    broker: Broker,
    user: str,
    filters: Iterable[str],
    on_message: Callable[[str, bytes, Any], Awaitable[Any]],
    *,
    client_id: str | None = None,
    ready: asyncio.Event | None = None,
    connected: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """A subscriber with a persistent session that survives broker restarts; runs until
    cancelled. ``ready`` is set and ``connected`` awaited after each subscription."""
    client_id = client_id or broker.address(user).client_id(f"follow-{uuid.uuid4().hex[:6]}")
    while True:
        try:
            async with MqttBus(
                broker.address(user), client_id=client_id, clean_start=False, session_expiry=3600
            ) as bus:
                await bus.subscribe(*filters)
                if ready is not None:
                    ready.set()
                if connected is not None:
                    await connected()
                async for message in bus.messages():
                    await on_message(message.topic, message.payload, message)
        except BusError:
            await asyncio.sleep(0.05)  # reconnect pace while the broker restarts


@contextlib.asynccontextmanager
async def following(
    broker: Broker,
    subscriptions: Iterable[tuple[str, Iterable[str]]],
    on_message: Callable[[str, bytes, Any], Awaitable[Any]],
    *,
    prefix: str = "rec",
) -> AsyncIterator[None]:
    """One ``follow`` per (account, filters), all subscribed before the body runs."""
    tasks: list[asyncio.Task[None]] = []
    readies: list[asyncio.Event] = []
    for user, filters in subscriptions:
        readies.append(ready := asyncio.Event())
        client_id = broker.address(user).client_id(f"{prefix}-{uuid.uuid4().hex[:6]}")
        job = follow(broker, user, list(filters), on_message, client_id=client_id, ready=ready)
        tasks.append(asyncio.create_task(job))
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- the gateway in this process ------------------------------------------------------------


@dataclass
class RunningGateway:
    broker: Broker
    settings: Settings
    gateway: Gateway
    registry: Registry

    def client(self, user: str, **options: Any) -> MqttBus:
        """A bus logged in as one of the broker's accounts (a device id, a partner id,
        ``operator``, ``analytics``, ``cloud`` or ``fleet``)."""
        return client(self.broker, user, **options)

    async def wait_processed(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until the gateway has finished ``count`` inbound messages in all."""
        await asyncio.wait_for(self.gateway.wait_acked(count), timeout)


@contextlib.asynccontextmanager
async def running_gateway(
    broker: Broker, registry: Registry, workdir: Path, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """The gateway in this process, connected to ``broker``, subscribed and online."""
    registry_path = workdir / "registry.yaml"
    await save_registry(registry_path, registry)
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


async def save_registry(path: Path, registry: Registry) -> None:
    """``registry`` as YAML at ``path`` (its folder made), off the event loop."""
    await asyncio.to_thread(_write, path, dump_registry(registry))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def _first(awaitable: asyncio.Future[Any], guard: asyncio.Future[Any]) -> Any:
    """Await ``awaitable`` unless ``guard`` ends first (then its error surfaces)."""
    done, _ = await asyncio.wait({awaitable, guard}, return_when=asyncio.FIRST_COMPLETED)
    if awaitable in done:
        return awaitable.result()
    awaitable.cancel()
    guard.result()
    raise RunnerError("the gateway stopped before it was ready")


# --- the gateway as a real process ----------------------------------------------------------


class StatusWatch:
    """Follows the retained ``gateway/v1/status`` of one gateway id, through broker
    restarts: each start of the gateway must be seen to come online."""

    def __init__(self, broker: Broker, gateway_id: str) -> None:
        self.broker = broker
        self.gateway_id = gateway_id
        self.online_count = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusWatch:
        ready = asyncio.Event()
        client_id = self.broker.address(OPERATOR).client_id(f"status-{uuid.uuid4().hex[:6]}")
        self._task = asyncio.create_task(
            follow(
                self.broker, OPERATOR, [topics.STATUS], self._on, client_id=client_id, ready=ready
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _on(self, topic: str, payload: bytes, _message: Any) -> None:
        status = json.loads(payload)
        if status["gateway_id"] == self.gateway_id and status["state"] == "online":
            async with self._changed:
                self.online_count += 1
                self._changed.notify_all()

    async def wait_online(
        self, process: asyncio.subprocess.Process, *, timeout: float = STARTUP
    ) -> None:
        """Until the next "online" of this gateway; fails if ``process`` exits first."""
        target = self.online_count + 1

        async def online() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.online_count >= target)

        waiter = asyncio.create_task(online())
        exited = asyncio.create_task(process.wait())
        done, _ = await asyncio.wait(
            {waiter, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        exited.cancel()
        if waiter not in done:
            why = "exited" if exited in done else f"was not online within {timeout:.0f} s"
            raise RunnerError(f"the gateway {why} (see its log in the work directory)")


@dataclass
class GatewayProcess:
    """``intercom-gateway run`` as a real process on ``broker``, its files in ``workdir``
    (``registry.yaml``, written by ``write_registry``; ``gateway.sqlite``; one
    ``gateway-<n>.log`` per start). ``env`` adds settings (``INTERCOM_*``) to the
    environment, and may be changed between starts."""

    broker: Broker
    workdir: Path
    gateway_id: str = field(default_factory=lambda: f"gw-{uuid.uuid4().hex[:6]}")
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    own_session: bool = False  # see Mosquitto: a terminal's signals reach only the caller

    @property
    def db_path(self) -> Path:
        return self.workdir / "gateway.sqlite"

    @property
    def registry_path(self) -> Path:
        return self.workdir / "registry.yaml"

    async def write_registry(self, registry: Registry) -> None:
        await save_registry(self.registry_path, registry)

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "INTERCOM_BROKER_HOST": self.broker.host,
            "INTERCOM_BROKER_PORT": str(self.broker.port),
            "INTERCOM_SECRETS_DIR": str(self.broker.credentials.directory),
            "INTERCOM_DB_PATH": str(self.db_path),
            "INTERCOM_REGISTRY_PATH": str(self.registry_path),
            "INTERCOM_GATEWAY_ID": self.gateway_id,
            "INTERCOM_LOG_EVENTS": "false",
            "INTERCOM_LOG_LEVEL": "WARNING",
            **self.env,
        }

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, status: StatusWatch, *, timeout: float = STARTUP) -> None:
        """Start it and wait for its retained "online" status (``status`` follows its id)."""
        await status.wait_online(await self.launch(), timeout=timeout)

    async def launch(self) -> asyncio.subprocess.Process:
        """Start it without waiting: the caller awaits readiness its own way."""
        self.starts += 1
        with (self.workdir / f"gateway-{self.starts}.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "intercom_gateway",
                "run",
                env=self.environment(),
                stdout=log,
                stderr=log,
                start_new_session=self.own_session,
            )
        return self.process

    async def stop(self, sig: signal.Signals = signal.SIGTERM, *, timeout: float = 30) -> int:
        """Send ``sig`` (SIGTERM: graceful; SIGKILL: a crash) and return the exit status."""
        process, self.process = self.process, None
        assert process is not None, "the gateway process was not started"
        if process.returncode is None:
            process.send_signal(sig)
        return await asyncio.wait_for(process.wait(), timeout)

    async def kill(self) -> int:
        return await self.stop(signal.SIGKILL)

    async def restart(self, status: StatusWatch, *, sig: signal.Signals = signal.SIGTERM) -> int:
        code = await self.stop(sig)
        await self.start(status)
        return code

    async def aclose(self, *, graceful: bool = True) -> None:
        """Stop it if it still runs: SIGTERM (SIGKILL if it does not end in time) or,
        not ``graceful``, SIGKILL at once (a cleanup after a failure)."""
        process = self.process
        if process is None or process.returncode is not None:
            self.process = None
            return
        try:
            await self.stop(signal.SIGTERM if graceful else signal.SIGKILL)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def gateway_process(
    broker: Broker,
    workdir: Path,
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
    gateway_id: str | None = None,
    timeout: float = STARTUP,
    own_session: bool = False,
) -> AsyncIterator[GatewayProcess]:
    """A gateway process, online, stopped with SIGTERM on the way out."""
    gateway = GatewayProcess(broker, workdir, env=dict(env or {}), own_session=own_session)
    if gateway_id is not None:
        gateway.gateway_id = gateway_id
    await gateway.write_registry(registry)
    try:
        async with StatusWatch(broker, gateway.gateway_id) as status:
            await gateway.start(status, timeout=timeout)
        yield gateway
    finally:
        await gateway.aclose()


async def partitioned_process(
    broker: Broker,
    workdir: Path,
    registry: Registry,
    *,
    gateway_id: str,
    store: str,
    env: Mapping[str, str] | None = None,
) -> GatewayProcess:
    """``run --partitioned`` on ``broker`` with the PostgreSQL ``store`` (a DSN), its
    registry written, not started (``launch``; it reports on its own status topic,
    ``gateway/v1/{gateway_id}/status``, not on the one ``StatusWatch`` follows)."""
    process = GatewayProcess(
        broker,
        workdir,
        gateway_id=gateway_id,
        env={"INTERCOM_STORE": store, "INTERCOM_PARTITIONED": "true", **(env or {})},
    )
    await process.write_registry(registry)
    return process
