"""A PostgreSQL server of our own: ``initdb`` and ``pg_ctl`` on a folder and a free port.

Tests, the bench and QA start one the way they start their own Mosquitto, never using
a server that happens to run on the machine. Debian's ``postgresql`` package provides
the binaries (``/usr/lib/postgresql/<version>/bin``; ``scripts/setup`` installs it).
It listens on loopback TCP only, trusts local connections (a throwaway cluster), and
keeps its unix socket in its own folder. ``with`` starts it; leaving stops it with a
fast shutdown (``pg_ctl stop -m fast``).

``own_database`` makes a database beside the one a DSN names, on any server, and
``own_store`` one beside ``INTERCOM_STORE``'s: for a run that starts several gateways
each needing a fresh store (the scenario runner).

When run as root (CI containers), the cluster belongs to the ``postgres`` user, as
PostgreSQL refuses to run as root: the folder is handed to that user and the commands
run as it (``runuser``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from intercom_gateway.broker.mosquitto import free_port, grant_traversal
from intercom_gateway.errors import BrokerError
from intercom_gateway.settings import Settings
from intercom_gateway.store.opening import POSTGRES_SCHEMES

SEARCH = ("/usr/lib/postgresql",)


def find_bin(name: str) -> str:
    """``name`` from the newest installed PostgreSQL, or from PATH."""
    for root in SEARCH:
        versions = sorted(
            (p for p in Path(root).glob("*/bin") if (p / name).exists()),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        if versions:
            return str(versions[-1] / name)
    found = shutil.which(name)
    if found is None:
        raise BrokerError(
            f"PostgreSQL's {name} is not installed: `apt-get install postgresql` "
            "(scripts/setup does it)"
        )
    return found


class PostgresServer:
    """One throwaway PostgreSQL cluster in ``workdir``; ``dsn`` connects to ``database``."""

    def __init__(self, workdir: Path, *, port: int | None = None, database: str = "intercom"):
        self.workdir = workdir
        self.data = workdir / "data"
        self.socket_dir = workdir / "socket"
        self.log_path = workdir / "postgres.log"
        self.port = port or free_port()
        self.database = database
        self._user = _run_as()

    @property
    def user(self) -> str:
        return self._user.pw_name if self._user else pwd.getpwuid(os.getuid()).pw_name

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pid(self) -> int:
        """The postmaster's process id, while it runs (a benchmark counts the CPU of it
        and its backends)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._user is not None:
            grant_traversal(self.workdir.resolve().parent, self._user)
            for path in (self.workdir, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._call(
                find_bin("initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                self.user,
                "-E",
                "UTF8",
                "--no-sync",  # a throwaway cluster: nothing to keep across a power cut
            )
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._call(
            find_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",  # wait until it accepts connections
            "start",
        )
        self._call(
            find_bin("createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            self.database,
            ok_if="already exists",
        )

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        with contextlib.suppress(BrokerError):
            self._call(find_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def _call(self, *argv: str, ok_if: str | None = None) -> None:
        command = list(argv)
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip()
            if ok_if is not None and ok_if in said:
                return
            name = Path(argv[0]).name
            raise BrokerError(f"PostgreSQL {name} failed: {said} {self.log_tail(5)}")


def _run_as() -> pwd.struct_passwd | None:
    """The ``postgres`` user when we are root (PostgreSQL will not run as root)."""
    if os.getuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise BrokerError("running as root needs a `postgres` user to own the cluster") from None


@contextlib.asynccontextmanager
async def own_database(dsn: str, suffix: str) -> AsyncIterator[str]:
    """A new, empty database ``<db>_<suffix>`` on the server of ``dsn`` (which names
    ``<db>``), made through ``dsn``'s account (it needs CREATEDB); its DSN. Dropped on
    the way out, whoever is still connected to it."""
    import asyncpg  # the postgres extra: only a PostgreSQL store gets here

    parts = urlsplit(dsn)
    base = parts.path.lstrip("/") or parts.username or "postgres"
    name = re.sub(r"[^a-z0-9_]", "_", f"{base}_{suffix}".lower())[:63]

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def own_store(label: str) -> AsyncIterator[str | None]:
    """A store of its own for one of several gateways a run starts that each expect a
    fresh one, as ``running_gateway``'s ``store``: None, the SQLite file in the
    gateway's work folder (also when ``INTERCOM_STORE`` names a SQLite file), or, when
    ``INTERCOM_STORE`` names a PostgreSQL database, a new database on that server
    (``<db>_<label>_<random>``), dropped after."""
    configured = Settings().store
    if configured is None or not configured.startswith(POSTGRES_SCHEMES):
        yield None
        return
    async with own_database(configured, f"{label}_{uuid.uuid4().hex[:8]}") as dsn:
        yield dsn
