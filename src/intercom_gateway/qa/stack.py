"""The dev stack: the project's Mosquitto and a gateway, kept in a state folder.

``serve_stack`` (``intercom-gateway up``) starts Mosquitto with the project's
configuration on a port of its own (18830 unless asked: Debian's Mosquitto has 1883),
accounts generated for the registry and the partners (kept across restarts, so a
partner's password stays the same), and the gateway as a real process; it writes the
state file (``stackfile``) once both are ready and serves until it is cancelled (a
signal, or ``down``), then stops the gateway (it drains), the broker, and removes the
state file. Both children run in sessions of their own: a terminal's Ctrl-C or hang-up
reaches ``up`` only, which stops them in that order.

Everything lives in the state folder, which outlives the stack on purpose: the store
(consent, ledger), the broker's persistence, the accounts, the logs::

    <state>/stack.json         while it runs (stackfile.StackState)
    <state>/secrets/           broker accounts (credentials.json, 0600), api-token
    <state>/broker/            mosquitto.conf, persistence, mosquitto.log, tls/ca.crt
    <state>/gateway/           gateway.sqlite, registry.yaml, gateway-<n>.log
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from intercom_gateway.broker.mosquitto import (
    Mosquitto,
    free_port,
    generate_credentials,
    load_credentials,
)
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.registry import Registry, load_registry
from intercom_gateway.errors import ConfigError, RunnerError
from intercom_gateway.qa.runner import GatewayProcess, gateway_process, save_registry
from intercom_gateway.qa.stackfile import (
    StackState,
    pid_alive,
    read_stack,
    remove_stack,
    state_path,
    write_stack,
)
from intercom_gateway.settings import Settings

DEFAULT_PORT = 18830
STOP_TIMEOUT = 60.0  # seconds `down` waits for `up` to stop its gateway and broker


@dataclass(frozen=True, slots=True)
class StackOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port
    tls_port: int = 0  # 0: any free port
    gateway: bool = True


async def serve_stack(
    settings: Settings, options: StackOptions, *, ready: Callable[[StackState], None]
) -> None:
    """Run the stack until cancelled; ``ready`` is called once it serves.

    Ends with ``RunnerError`` if the broker or the gateway exits on its own.
    """
    state_dir = options.state_dir
    await asyncio.to_thread(clear_stale, state_dir)
    port = options.port or free_port(options.host)
    # The stack's gateway serves Prometheus metrics: INTERCOM_METRICS_PORT, else any free port.
    metrics_port = (
        (settings.metrics_port or free_port(settings.metrics_host)) if options.gateway else None
    )
    _check_port(options.host, port, "--port")
    if options.tls_port:
        _check_port(options.host, options.tls_port, "--tls-port")
    registry = load_registry(settings.registry_path)
    policy = load_policy(settings.policy_path)
    registered = load_partners(settings.partners_path, policy=policy)
    partners = [s.id for s in registered.services]
    contractors = [c.id for c in registered.contractors]  # §5(1)①: an account each
    secrets_dir = state_dir / "secrets"
    kept = _kept_passwords(secrets_dir)
    credentials = await asyncio.to_thread(
        functools.partial(generate_credentials, keep=kept, contractor_ids=contractors),
        secrets_dir,
        registry,
        partners,
    )
    token_file = _api_token(secrets_dir)
    # The gateway's registry, also for one the developer runs (`up --no-gateway`).
    registry_path = state_dir / "gateway" / "registry.yaml"
    await save_registry(registry_path, registry)
    mosquitto = Mosquitto(
        workdir=state_dir / "broker",
        credentials=credentials,
        port=port,
        host=options.host,
        tls_port=options.tls_port or None,
        own_session=True,
    )
    gateway_run = _gateway(mosquitto, state_dir, registry, settings, options, metrics_port)
    async with mosquitto, gateway_run as gateway:
        assert mosquitto.process is not None
        state = StackState(
            state_dir=state_dir,
            broker_host=options.host,
            broker_port=port,
            tls_port=mosquitto.tls_port,
            ca_file=mosquitto.tls.ca_cert,
            secrets_dir=secrets_dir,
            db_path=state_dir / "gateway" / "gateway.sqlite",
            registry_path=registry_path,
            gateway_id=settings.gateway_id,
            gateway=options.gateway,
            api_token_file=token_file,
            started=utc_now(),
            up_pid=os.getpid(),
            mosquitto_pid=mosquitto.process.pid,
            gateway_pid=gateway.process.pid if gateway and gateway.process else None,
            metrics_url=(
                None
                if metrics_port is None
                else f"http://{settings.metrics_host}:{metrics_port}/metrics"
            ),
        )
        try:
            await asyncio.to_thread(write_stack, state)
            ready(state)
            await _until_a_child_exits(mosquitto, gateway)
        finally:
            remove_stack(state_dir, owner=os.getpid())


@contextlib.asynccontextmanager
async def _gateway(
    broker: Mosquitto,
    state_dir: Path,
    registry: Registry,
    settings: Settings,
    options: StackOptions,
    metrics_port: int | None,
) -> AsyncIterator[GatewayProcess | None]:
    if not options.gateway:
        yield None
        return
    env = {
        "INTERCOM_METRICS_PORT": str(metrics_port),
        "INTERCOM_METRICS_HOST": settings.metrics_host,
        "INTERCOM_LOG_LEVEL": settings.log_level,
        "INTERCOM_LOG_EVENTS": "true",
        "INTERCOM_POLICY_PATH": str(settings.policy_path),
        "INTERCOM_PARTNERS_PATH": str(settings.partners_path),
    }
    async with gateway_process(
        broker,
        state_dir / "gateway",
        registry,
        env=env,
        gateway_id=settings.gateway_id,
        own_session=True,
    ) as gateway:
        yield gateway


async def _until_a_child_exits(mosquitto: Mosquitto, gateway: GatewayProcess | None) -> None:
    """Wait (on the processes themselves, not a poll of their state) until one exits."""
    assert mosquitto.process is not None
    broker_exit = asyncio.ensure_future(asyncio.to_thread(mosquitto.process.wait))
    waits = {broker_exit}
    if gateway is not None and gateway.process is not None:
        waits.add(asyncio.ensure_future(gateway.process.wait()))
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    if broker_exit in done:
        raise RunnerError(f"the broker exited (log: {mosquitto.log_path})")
    assert gateway is not None
    log = gateway.workdir / f"gateway-{gateway.starts}.log"
    raise RunnerError(f"the gateway exited (log: {log})")


def _kept_passwords(secrets_dir: Path) -> dict[str, str]:
    if not (secrets_dir / "credentials.json").exists():
        return {}
    try:
        return dict(load_credentials(secrets_dir).passwords)
    except ConfigError:
        return {}


def _api_token(secrets_dir: Path) -> Path:
    """The operator's API token of the stack: made once, kept (0600)."""
    path = secrets_dir / "api-token"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
    return path


def _check_port(host: str, port: int, option: str) -> None:
    """One line if the port is taken, rather than Mosquitto's log tail."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            why = "in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
            raise ConfigError(
                f"port {port} on {host} is {why}: choose another with {option}"
                f" ({option} 0 takes any free port)"
            ) from None


# --- status and stopping, from another process ----------------------------------------------


def describe_stack(state_dir: Path) -> dict[str, object]:
    """What runs from ``state_dir``, for `status`: ``healthy`` if the stack runs and its
    gateway (if it has one) says it is online on the stack's broker."""
    from intercom_gateway.broker.mosquitto import OPERATOR
    from intercom_gateway.errors import GatewayError
    from intercom_gateway.gateway.presence import expect_gateway

    state = read_stack(state_dir)
    if state is None or not state.running:
        note = "no dev stack runs here: `intercom-gateway up` starts one"
        if state is not None:
            note = (
                f"stale: its `up` (pid {state.up_pid}) is gone; `intercom-gateway down` clears it"
            )
        return {"state_dir": str(state_dir), "running": False, "healthy": False, "note": note}
    report: dict[str, object] = {
        "state_dir": str(state_dir),
        "running": True,
        "since": state.started.isoformat(),
        "broker": f"mqtt://{state.where} (pid {state.mosquitto_pid}, TLS on {state.tls_port})",
        "accounts": str(state.secrets_dir / "credentials.json"),
    }
    healthy = pid_alive(state.mosquitto_pid)
    if state.gateway:
        address = load_credentials(state.secrets_dir).address(
            OPERATOR, host=state.broker_host, port=state.broker_port
        )
        try:
            status = asyncio.run(expect_gateway(address, gateway_id=state.gateway_id))
            gateway = f"{state.gateway_id} online since {status.since.isoformat()}"
        except GatewayError as error:
            gateway, healthy = f"{state.gateway_id}: {error}", False
        report["gateway"] = f"{gateway} (pid {state.gateway_pid}, store {state.db_path})"
        if state.metrics_url is not None:
            report["metrics"] = state.metrics_url
    else:
        report["gateway"] = "none (--no-gateway)"
    report["healthy"] = healthy
    return report


def clear_stale(state_dir: Path) -> None:
    """Refuse if a stack runs from ``state_dir``; stop what a dead ``up`` left behind."""
    state = read_stack(state_dir)
    if state is None:
        return
    if state.running:
        raise ConfigError(
            f"a dev stack already runs from {state_dir} (pid {state.up_pid}, broker"
            f" {state.where}): `intercom-gateway down` stops it"
        )
    _stop_orphans(state)
    state_path(state_dir).unlink(missing_ok=True)


def stop_stack(state_dir: Path, *, timeout: float = STOP_TIMEOUT) -> StackState | None:
    """Stop the stack running from ``state_dir``; None if none was recorded there.

    A live ``up`` gets SIGTERM and stops its gateway and broker itself; this waits for
    it to exit. A dead one's children (a SIGKILLed ``up``) are stopped here.
    """
    state = read_stack(state_dir)
    if state is None:
        return None
    if state.running:
        os.kill(state.up_pid, signal.SIGTERM)
        if not _wait_exit(state.up_pid, timeout):
            raise RunnerError(
                f"the dev stack (pid {state.up_pid}) did not stop within {timeout:.0f} s"
            )
    _stop_orphans(state)
    state_path(state_dir).unlink(missing_ok=True)
    return state


def _stop_orphans(state: StackState) -> None:
    """SIGTERM, then SIGKILL, to the recorded children still alive and still ours."""
    for pid, name in ((state.gateway_pid, "intercom_gateway"), (state.mosquitto_pid, "mosquitto")):
        if pid is None or not _is(pid, name):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if not _wait_exit(pid, 30):
                os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 10)


def _is(pid: int, name: str) -> bool:
    """``pid`` still runs ``name`` (a recycled pid belongs to someone else)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return name.encode() in command


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` to end, on a pidfd (it becomes readable at exit), not a poll."""
    import select

    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([descriptor], [], [], timeout)
    finally:
        os.close(descriptor)
    if readable:
        # A child of ours (a test) stays a zombie until reaped; the pid is gone either way.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return True
    return not pid_alive(pid)
