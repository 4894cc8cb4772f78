"""The dev stack's state file: what it provides, and what it never overrides."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from intercom_gateway.errors import ConfigError
from intercom_gateway.qa.stackfile import (
    StackState,
    apply_stack,
    read_stack,
    remove_stack,
    running_stack,
    write_stack,
)
from intercom_gateway.settings import Settings


def _state(folder: Path, *, up_pid: int) -> StackState:
    token = folder / "api-token"
    token.write_text("tok\n")
    return StackState(
        state_dir=folder,
        broker_host="127.0.0.1",
        broker_port=18830,
        tls_port=18831,
        ca_file=folder / "ca.crt",
        secrets_dir=folder / "secrets",
        db_path=folder / "gateway.sqlite",
        registry_path=folder / "registry.yaml",
        gateway_id="gw-dev",
        gateway=True,
        api_token_file=token,
        started=datetime(2026, 11, 30, tzinfo=UTC),
        up_pid=up_pid,
        mosquitto_pid=up_pid,
    )


def test_the_stack_fills_what_neither_the_environment_nor_a_flag_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERCOM_GATEWAY_ID", "gw-mine")
    settings = apply_stack(Settings(), _state(tmp_path, up_pid=os.getpid()))
    assert settings.broker_port == 18830
    assert settings.secrets_dir == tmp_path / "secrets"
    assert settings.db_path == tmp_path / "gateway.sqlite"
    assert settings.gateway_id == "gw-mine", "the environment wins"
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "tok"


def test_a_running_stack_is_read_back_and_a_dead_one_is_stale(tmp_path: Path) -> None:
    write_stack(_state(tmp_path, up_pid=os.getpid()))
    running, note = running_stack(tmp_path)
    assert running is not None and running.gateway_id == "gw-dev" and note is None

    write_stack(_state(tmp_path, up_pid=2**22 + 12345))  # above pid_max: never alive
    running, note = running_stack(tmp_path)
    assert running is None and note is not None and "stale" in note


def test_only_its_writer_removes_the_file(tmp_path: Path) -> None:
    write_stack(_state(tmp_path, up_pid=os.getpid()))
    remove_stack(tmp_path, owner=os.getpid() + 1)
    assert read_stack(tmp_path) is not None
    remove_stack(tmp_path, owner=os.getpid())
    assert read_stack(tmp_path) is None


def test_a_file_that_is_not_a_state_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a dev stack state file"):
        read_stack(tmp_path)
    running, note = running_stack(tmp_path)
    assert running is None and note is not None and note.startswith("ignoring")
