"""Run Eclipse Mosquitto with the project's ``mosquitto.conf``, and make its accounts.

The demo, the tests, the pytest plugin and the benchmark all start the broker
through ``Mosquitto`` (most of them through ``intercom_gateway.qa.runner``): the same
configuration file, adapted only for the port, the paths and the credentials
(``broker.config.render_config``), with the accounts and ACL of ``broker.accounts``.
The plugin that binds client ids to accounts is built at start (``broker_plugin``) and
named by the ``plugin`` line. The accounts' names are re-exported here for callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from intercom_gateway.broker.accounts import (
    ANALYTICS,
    CLOUD,
    FLEET,
    GATEWAY,
    OPERATOR,
    Credentials,
    acl_text,
    find_binary,
    generate_credentials,
    load_credentials,
    rotate_password,
)
from intercom_gateway.broker.bridge import Bridge
from intercom_gateway.broker.config import render_config
from intercom_gateway.broker.plugin import install_plugin
from intercom_gateway.broker.tls import TlsFiles, generate_dev_pki
from intercom_gateway.bus import BrokerAddress, TlsOptions
from intercom_gateway.errors import BrokerError

__all__ = [
    "ANALYTICS",
    "CLOUD",
    "DEFAULT_CONFIG",
    "FLEET",
    "GATEWAY",
    "OPERATOR",
    "Credentials",
    "Mosquitto",
    "acl_text",
    "find_binary",
    "free_port",
    "generate_credentials",
    "load_credentials",
    "render_config",
    "rotate_password",
]

# Package data, not a repository path: an installed wheel has no checkout around it.
DEFAULT_CONFIG: Traversable = resources.files("intercom_gateway").joinpath(
    "data", "broker", "mosquitto.conf"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _other_free_port(host: str, taken: int) -> int:
    """A free port other than ``taken`` (the OS may hand the same one out twice)."""
    while (port := free_port(host)) == taken:
        pass
    return port


def _mosquitto_user() -> pwd.struct_passwd | None:
    """Mosquitto started as root drops to this user before reading passwd/acl (pitfall 6)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("mosquitto")
    return None


def _hand_over(paths: Iterable[Path]) -> None:
    user = _mosquitto_user()
    if user is None:
        return
    for path in paths:
        grant_traversal(path.resolve().parent, user)
        for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
            os.chown(item, user.pw_uid, user.pw_gid)


def grant_traversal(directory: Path, user: pwd.struct_passwd) -> None:
    """Let ``user`` pass through every ancestor of ``directory`` (search, never list).

    pytest's base temporary directory (and /root) are 0700: Mosquitto, once it has
    dropped to its own user, could not reach files below them and would exit.
    """
    for ancestor in reversed([directory, *directory.parents]):
        mode = ancestor.stat()
        if _searchable(mode, user):
            continue
        os.chmod(ancestor, stat.S_IMODE(mode.st_mode) | stat.S_IXOTH)


def _searchable(mode: os.stat_result, user: pwd.struct_passwd) -> bool:
    if mode.st_uid == user.pw_uid:
        return bool(mode.st_mode & stat.S_IXUSR)
    if mode.st_gid == user.pw_gid:
        return bool(mode.st_mode & stat.S_IXGRP)
    return bool(mode.st_mode & stat.S_IXOTH)


class Mosquitto:
    """One Mosquitto process with the project's configuration.

    ``with`` or ``async with`` starts it. The process methods are synchronous (a start
    takes a few tens of milliseconds) so session-wide test fixtures can use them; async
    code that must not stall calls them through ``asyncio.to_thread``.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        credentials: Credentials,
        port: int | None = None,
        config: Traversable = DEFAULT_CONFIG,
        host: str = "127.0.0.1",
        tls_port: int | None = None,
        tls: TlsFiles | None = None,
        own_session: bool = False,
        bridge: Bridge | None = None,
    ) -> None:
        self.workdir = workdir
        # A shard broker forwards the output trees to a central one (docs/scale-out.md).
        self.bridge = bridge
        # own_session: a session (and process group) of its own, so that a terminal's
        # Ctrl-C or hang-up reaches only the caller, which stops the broker in its turn
        # (the dev stack stops its gateway first, then the broker).
        self.own_session = own_session
        self.credentials = credentials
        self.host = host
        self.port = port or free_port(host)
        self.tls_port = tls_port or _other_free_port(host, self.port)
        # Certificates given are used as they are; otherwise a development CA and a
        # server certificate for localhost/127.0.0.1 are made in the workdir at start.
        self.tls = tls or TlsFiles(workdir / "tls")
        self._make_tls = tls is None
        self.config_template = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    def address(self, user: str) -> BrokerAddress:
        return self.credentials.address(user, host=self.host, port=self.port)

    def tls_address(self, user: str) -> BrokerAddress:
        """``user``'s address on the TLS listener, trusting the broker's CA."""
        plain = self.credentials.address(user, host=self.host, port=self.tls_port)
        return BrokerAddress(
            host=plain.host,
            port=plain.port,
            username=plain.username,
            password=plain.password,
            tls=TlsOptions(ca_file=str(self.tls.ca_cert)),
        )

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Mosquitto:
        # Shielded: a caller cancelled (a signal) while the thread starts the broker must
        # not leave it running; the start is finished, then undone.
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await starting
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        if self._make_tls and not self.tls.exists():
            generate_dev_pki(self.tls.directory)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            render_config(
                self.config_template.read_text(encoding="utf-8"),
                port=self.port,
                data_dir=data_dir,
                credentials=self.credentials,
                plugin=install_plugin(self.workdir),
                host=self.host,
                tls_port=self.tls_port,
                tls=self.tls,
                bridge=self.bridge,
            ),
            encoding="utf-8",
        )
        if self.bridge is not None:
            conf.chmod(0o600)  # it holds the bridge's password on the central broker
        _hand_over([self.workdir, self.credentials.directory, self.tls.directory])
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [find_binary("mosquitto"), "-c", str(conf)],
                stdout=log,
                stderr=log,
                start_new_session=self.own_session,
            )
        self._wait_ready()

    def _wait_ready(self, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        assert self.process is not None
        # Both listeners: Mosquitto opens them one after the other.
        waiting = [self.port, self.tls_port]
        while waiting:
            if self.process.poll() is not None:
                raise BrokerError(f"mosquitto exited at start-up: {self.log_tail()}")
            try:
                socket.create_connection((self.host, waiting[0]), timeout=1).close()
                waiting.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not listen on {waiting[0]}: {self.log_tail()}")
            time.sleep(0.02)  # polling a port: there is no event to await

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (Mosquitto saves its persistence file) or SIGKILL (it does not)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto rereads its password and ACL files."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)
