"""Which store the settings name, and the one way to open it: ``open_store(settings)``.

``settings.store`` (``INTERCOM_STORE``, ``--store``) is a URL: ``postgresql://...`` (or
``postgres://...``) for a PostgreSQL database several gateways share, ``sqlite:///path``
for a SQLite file (as SQLAlchemy writes it: ``sqlite:///var/g.sqlite`` is relative,
``sqlite:////srv/g.sqlite`` absolute). Unset, the store is the SQLite file at
``settings.db_path``, the zero-setup default for one gateway. Both open the same way:
made or migrated to the current layout, flushed when they close.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from intercom_gateway.errors import ConfigError

if TYPE_CHECKING:
    from intercom_gateway.settings import Settings
    from intercom_gateway.store.base import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file the settings name; None when the store is PostgreSQL."""
    url = settings.store
    if url is None:
        return settings.db_path
    if url.startswith(POSTGRES_SCHEMES):
        return None
    if url.startswith(SQLITE_SCHEME) and len(url) > len(SQLITE_SCHEME):
        return Path(url[len(SQLITE_SCHEME) :])
    raise ConfigError(
        f"INTERCOM_STORE / --store: {url.split('://')[0]!s}: not a store URL"
        " (postgresql://... or sqlite:///path)"
    )


def describe_store(settings: Settings) -> str:
    """Where the store is, for a message: the SQLite file, or the DSN without password."""
    path = sqlite_path(settings)
    if path is not None:
        return str(path)
    from intercom_gateway.store.postgres.store import redacted

    return redacted(settings.store or "")


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The store the settings name, open: SQLite (``SqliteStore``) or PostgreSQL
    (``PostgresStore``, needs the ``postgres`` extra)."""
    path = sqlite_path(settings)
    if path is not None:
        from intercom_gateway.store.sqlite import SqliteStore

        async with SqliteStore.open(path) as sqlite:
            yield sqlite
        return
    try:
        from intercom_gateway.store.postgres import PostgresStore
    except ImportError as error:
        raise ConfigError(
            f"a PostgreSQL store needs the postgres extra ({error.name} is missing):"
            " pip install 'intercom-gateway[postgres]'"
        ) from error
    async with PostgresStore.open(settings.store or "") as postgres:
        yield postgres
