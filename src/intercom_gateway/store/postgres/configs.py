"""The configuration revisions on PostgreSQL (§10), as on SQLite (``store.configs``):
append-only, numbered; several gateways' stores and the CLI may record at once, so the
next number is taken under a transaction-level advisory lock."""

from __future__ import annotations

from typing import Any

from intercom_gateway.core.configuration import ConfigRecord

# pg_advisory_xact_lock's key for numbering revisions ("icgc" in ASCII).
REVISION_LOCK = 0x69636763
_COLUMNS = "revision, at, actor, policy_version, digest, policy, partners, registry"


class PgConfigTable:
    """The configuration revisions."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def save_config(self, record: ConfigRecord) -> int:
        async with self._pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", REVISION_LOCK)
            revision = int(
                await db.fetchval("SELECT COALESCE(MAX(revision), 0) + 1 FROM config_revisions")
            )
            await db.execute(
                f"INSERT INTO config_revisions ({_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                revision,
                record.at,
                record.actor,
                record.policy_version,
                record.digest,
                record.policy,
                record.partners,
                record.registry,
            )
        return revision

    async def config(self, revision: int | None = None) -> ConfigRecord | None:
        async with self._pool.acquire() as db:
            if revision is None:
                row = await db.fetchrow(
                    f"SELECT {_COLUMNS} FROM config_revisions ORDER BY revision DESC LIMIT 1"
                )
            else:
                row = await db.fetchrow(
                    f"SELECT {_COLUMNS} FROM config_revisions WHERE revision = $1", revision
                )
        if row is None:
            return None
        return ConfigRecord(
            revision=int(row["revision"]),
            at=row["at"],
            actor=row["actor"],
            policy_version=row["policy_version"],
            digest=row["digest"],
            policy=row["policy"],
            partners=row["partners"],
            registry=row["registry"],
        )
