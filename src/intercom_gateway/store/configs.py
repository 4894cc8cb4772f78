"""The store's configuration revisions (§10): every change of the policy, the partner
registry or the device registry a gateway decides under, numbered, with who made it and
when. Append-only: "the change is itself recorded", and gateways that start later, or
learn of a change on ``gateway/v1/config``, read the revision from here.

Part of the store (``store.Store``); the value is ``core.configuration.ConfigRecord``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiosqlite

from intercom_gateway.core.configuration import ConfigRecord

# Migration 4 (``schema.MIGRATIONS``).
SCHEMA = """CREATE TABLE IF NOT EXISTS config_revisions (
    revision INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,
    policy_version TEXT NOT NULL, digest TEXT NOT NULL, policy TEXT NOT NULL,
    partners TEXT NOT NULL, registry TEXT NOT NULL);"""

_COLUMNS = "revision, at, actor, policy_version, digest, policy, partners, registry"


class ConfigTable:
    """The configuration revisions, on the store's connection."""

    def __init__(self, db: aiosqlite.Connection, writing: asyncio.Lock) -> None:
        self._db = db
        self._writing = writing  # the store's one transaction at a time

    async def save_config(self, record: ConfigRecord) -> int:
        """Record ``record`` as the next revision, committed; its number."""
        async with self._writing:
            # BEGIN IMMEDIATE: two processes recording at once get two numbers.
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                async with self._db.execute(
                    "SELECT COALESCE(MAX(revision), 0) + 1 FROM config_revisions"
                ) as cursor:
                    row = await cursor.fetchone()
                revision = int(row[0]) if row is not None else 1
                await self._db.execute(
                    f"INSERT INTO config_revisions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        revision,
                        record.at.astimezone(UTC).isoformat(),
                        record.actor,
                        record.policy_version,
                        record.digest,
                        record.policy,
                        record.partners,
                        record.registry,
                    ),
                )
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
        return revision

    async def config(self, revision: int | None = None) -> ConfigRecord | None:
        """Revision ``revision``, or the latest; None if there is none."""
        query = f"SELECT {_COLUMNS} FROM config_revisions"
        if revision is None:
            args: tuple[int, ...] = ()
            query += " ORDER BY revision DESC LIMIT 1"
        else:
            args = (revision,)
            query += " WHERE revision = ?"
        async with self._db.execute(query, args) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return ConfigRecord(
            revision=int(row[0]),
            at=datetime.fromisoformat(row[1]),
            actor=row[2],
            policy_version=row[3],
            digest=row[4],
            policy=row[5],
            partners=row[6],
            registry=row[7],
        )
