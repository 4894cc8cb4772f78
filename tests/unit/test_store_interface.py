"""``Store`` is exactly what callers use, both stores (SQLite, PostgreSQL) implement it,
and every method follows the package's naming rule (``intercom_gateway.store``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import intercom_gateway.store
from intercom_gateway.store import Store, base, results
from intercom_gateway.store.postgres import PostgresStore
from intercom_gateway.store.sqlite import SqliteStore

# Pinned: a second backend implements exactly these. Adding one is a decision.
MEMBERS = {
    "record_decision",
    "record_provisions",
    "record_delivered",
    "record_unconfirmed",
    "record_statistic",
    "record_window_published",
    "record_analytics_held",
    "record_analytics_released",
    "record_completed",
    "record_rejection",
    "record_attempt_end",
    "flush",
    "save_intents",
    "save_unconfirmed",
    "save_attempt",
    "pending_notices",
    "recent_completed",
    "statistics_windows",
    "analytics_held",
    "save_registry",
    "save_consent",
    "save_initial_consents",
    "consents",
    "consent",
    "consent_change_seen",
    "consent_history",
    "dwelling_known",
    "dwelling_panel",
    "decision",
    "provisions",
    "rejections",
    "counts",
    "ledger_summary",
    "decision_summary",
    "dwelling_rejections",
    "requests",
    "save_request",
    "erase_dwelling",
    "purge_ledger",
    "prune_completed",
    "save_token",
    "save_revocation",
    "token",
    "hashed_token",
    "tokens",
    "token_audit",
    # §10: configuration revisions (core.configuration, gateway/configs.py).
    "save_config",
    "config",
    "save_distribution",
    "distributions",
}
DELETIONS = ("erase_", "purge_", "prune_")


def _members() -> dict[str, Callable[..., Any]]:
    return {n: m for n, m in vars(Store).items() if not n.startswith("_") and callable(m)}


def test_the_interface_is_pinned() -> None:
    assert set(_members()) == MEMBERS
    assert intercom_gateway.store.__all__ == ["Store", "open_store", "sqlite_path"]


@pytest.mark.parametrize("backend", [SqliteStore, PostgresStore], ids=["sqlite", "postgres"])
def test_each_store_implements_every_member_with_its_signature(backend: type[Any]) -> None:
    for name, member in _members().items():
        implementation = getattr(backend, name)
        assert inspect.signature(implementation) == inspect.signature(member), name
        assert inspect.iscoroutinefunction(implementation) == inspect.iscoroutinefunction(member)


def test_every_member_follows_the_naming_rule() -> None:
    for name, member in _members().items():
        is_async = inspect.iscoroutinefunction(member)
        if name.startswith("record_"):
            assert not is_async and inspect.signature(member).return_annotation == "None", name
        else:
            # save_*, the deletions, flush and the queries: all async.
            assert is_async, name


def test_no_driver_type_leaks_out_of_the_interface() -> None:
    for name, member in _members().items():
        for driver in ("aiosqlite", "asyncpg"):
            assert driver not in str(inspect.signature(member)), name
    for module in (base, results):
        assert "aiosqlite" not in vars(module) and "asyncpg" not in vars(module), module.__name__
    # The connection is the SQLite store's own, for its own file's other tables.
    assert "connection" not in _members() and hasattr(SqliteStore, "connection")
