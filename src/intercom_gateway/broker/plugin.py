"""The broker plugin that binds client ids to accounts, built from its C source on demand.

Mosquitto lets any authenticated account connect with any client id and take over
that id's session (with a clean start, erasing the messages queued for it). The
plugin ``data/broker/clientid_binding.c`` refuses a connection whose client id is
neither the account's name nor ``<account>.<suffix>``, and leaves the password to
Mosquitto's ``password_file`` (docs/security.md, "Client ids").

It ships as C source because a compiled plugin is tied to the machine's libc and
broker build. The first broker start compiles it with the system C compiler against
Debian's ``mosquitto-dev`` headers into a cache folder keyed by the source's hash;
later starts reuse it. Nothing is built at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from intercom_gateway.errors import BrokerError

SOURCE = "clientid_binding.c"
_INSTALL_HINT = "install gcc and mosquitto-dev (scripts/setup does)"


def source_text() -> bytes:
    return resources.files("intercom_gateway").joinpath("data", "broker", SOURCE).read_bytes()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/intercom-gateway``, or ``~/.cache/intercom-gateway``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "intercom-gateway"


def build_plugin(*, cache: Path | None = None) -> Path:
    """The compiled plugin, built into ``cache`` unless a build of this source is there.

    Raises ``BrokerError`` with one actionable line when it cannot be built.
    """
    source = source_text()
    digest = hashlib.sha256(source).hexdigest()[:16]
    directory = cache or cache_dir()
    target = directory / f"clientid_binding-{digest}.so"
    if target.is_file():
        return target
    compiler = _compiler()
    try:
        return _compile(source, compiler, directory, target)
    except OSError as error:
        raise BrokerError(
            f"cannot build the client-id binding plugin in {directory}: {error.strerror or error}"
            " (set XDG_CACHE_HOME to a writable folder)"
        ) from error


def _compile(source: bytes, compiler: list[str], directory: Path, target: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clientid-build-", dir=directory) as scratch:
        c_file, built = Path(scratch) / SOURCE, Path(scratch) / "plugin.so"
        c_file.write_bytes(source)
        argv = [*compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(built), str(c_file)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(
                "cannot build the client-id binding plugin: "
                f"{_first_error(result.stderr.replace(str(c_file), SOURCE))}; {_INSTALL_HINT}"
            )
        built.chmod(0o755)
        # Atomic: broker starts in parallel processes may build at once; one rename wins.
        os.replace(built, target)
    return target


def install_plugin(directory: Path, *, cache: Path | None = None) -> Path:
    """A copy of the built plugin in ``directory``, the broker's own working folder.

    Mosquitto loads plugins after dropping to user ``mosquitto`` (pitfall 6): a copy
    beside its other files is handed over with them, where the cache (under a 0700
    home) would need the home folder opened to other users.
    """
    built = build_plugin(cache=cache)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "clientid_binding.so"
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    shutil.copyfile(built, target)
    target.chmod(0o755)
    return target


def _compiler() -> list[str]:
    """``$CC`` (it may carry flags), or ``cc``."""
    argv = shlex.split(os.environ.get("CC") or "cc") or ["cc"]
    found = shutil.which(argv[0])
    if found is None:
        raise BrokerError(
            f"cannot build the client-id binding plugin: no C compiler ({argv[0]}) found; "
            f"{_INSTALL_HINT}"
        )
    return [found, *argv[1:]]


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = next((line for line in lines if "error" in line), lines[0] if lines else "")
    return chosen or "the compiler failed without a message"
