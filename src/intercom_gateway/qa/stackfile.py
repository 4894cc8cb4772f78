"""The dev stack's state file: where `intercom-gateway up` runs its broker and gateway.

``up`` writes ``<state dir>/stack.json`` once its Mosquitto and gateway are ready and
removes it when it stops. Every other command reads it at start (``apply_stack``): a
setting that neither the environment (``INTERCOM_*``) nor the command line gives is
taken from the running stack, so `consent set`, `simulate`, `health`, `api`... talk to
the stack's broker, with its accounts and its gateway id, with no flags. A file whose
``up`` process is gone (killed with SIGKILL, say) is stale: it is ignored, with one
line, and the next ``up`` or ``down`` clears it.

This module is read by every command, so it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr, ValidationError

from intercom_gateway.errors import ConfigError
from intercom_gateway.settings import Settings

STATE_FILE = "stack.json"

# Settings a running stack provides; anything else stays as the user set it.
_PROVIDED = ("broker_host", "broker_port", "secrets_dir", "db_path", "registry_path", "gateway_id")


class StackState(BaseModel):
    """What a running dev stack is: where its broker listens, its files, its processes."""

    state_dir: Path
    broker_host: str
    broker_port: int
    tls_port: int
    ca_file: Path
    secrets_dir: Path
    db_path: Path
    registry_path: Path
    gateway_id: str
    gateway: bool  # False: `up --no-gateway`, the developer runs `intercom-gateway run`
    api_token_file: Path
    started: datetime
    up_pid: int
    mosquitto_pid: int
    gateway_pid: int | None = None
    metrics_url: str | None = None  # the stack's gateway's Prometheus metrics

    @property
    def where(self) -> str:
        return f"{self.broker_host}:{self.broker_port}"

    @property
    def running(self) -> bool:
        return pid_alive(self.up_pid)


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def read_stack(state_dir: Path) -> StackState | None:
    """The stack recorded in ``state_dir``; None if there is none."""
    path = state_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        why = f"cannot read the dev stack's state: {error.strerror}"
        raise ConfigError(why, path=str(path)) from None
    try:
        return StackState.model_validate_json(text)
    except ValidationError:
        raise ConfigError(
            "not a dev stack state file: remove it or run `intercom-gateway down`",
            path=str(path),
        ) from None


def write_stack(state: StackState) -> None:
    """Written whole or not at all: a reader never sees half a file."""
    path = state_path(state.state_dir)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state.model_dump(mode="json"), indent=2), encoding="utf-8")
    partial.replace(path)


def remove_stack(state_dir: Path, *, owner: int) -> None:
    """Remove the state file if the ``up`` process ``owner`` wrote it."""
    with contextlib.suppress(ConfigError):
        state = read_stack(state_dir)
        if state is not None and state.up_pid == owner:
            state_path(state_dir).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_stack(state_dir: Path) -> tuple[StackState | None, str | None]:
    """The running stack in ``state_dir`` (or None) and a one-line note about a stale one."""
    try:
        state = read_stack(state_dir)
    except ConfigError as error:
        return None, f"ignoring {error}"
    if state is None:
        return None, None
    if not state.running:
        note = (
            f"ignoring a stale dev stack state in {state_dir} (its `up`, pid {state.up_pid},"
            " is gone): `intercom-gateway down` clears it"
        )
        return None, note
    return state, None


def apply_stack(settings: Settings, state: StackState) -> Settings:
    """``settings`` with what the stack provides wherever the user set nothing.

    The environment wins: a field given as ``INTERCOM_*`` is in ``model_fields_set``.
    Command-line options are applied later, over this (``settings_of``).
    """
    given = settings.model_fields_set
    update = {name: getattr(state, name) for name in _PROVIDED if name not in given}
    if "api_token" not in settings.model_fields_set:
        with contextlib.suppress(OSError):
            token = state.api_token_file.read_text(encoding="utf-8").strip()
            if token:
                update["api_token"] = SecretStr(token)
    return settings.model_copy(update=update) if update else settings
