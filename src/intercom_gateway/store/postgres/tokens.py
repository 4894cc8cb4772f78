"""The resident-token tables on PostgreSQL: each token's hash and the audit trail.

As on SQLite (``store.tokens``): an issue or a revoke is committed together with its
audit entry; a token id already taken saves nothing.
"""

from __future__ import annotations

from typing import Any

from intercom_gateway.store.results import AuditEntry, TokenInfo

_COLUMNS = "token_id, building_id, dwelling_id, label, created_at, expires_at, revoked_at"
_AUDIT_COLUMNS = "at, action, token_id, building_id, dwelling_id, actor, detail"


class PgTokenTables:
    """The resident tokens and their audit trail."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def save_token(self, info: TokenInfo, *, sha256: str, audit: AuditEntry) -> bool:
        async with self._pool.acquire() as db, db.transaction():
            status = await db.execute(
                f"INSERT INTO api_tokens ({_COLUMNS}, token_sha256)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (token_id) DO NOTHING",
                info.token_id,
                info.building_id,
                info.dwelling_id,
                info.label,
                info.created_at,
                info.expires_at,
                info.revoked_at,
                sha256,
            )
            if status.endswith(" 0"):
                return False
            await _insert_audit(db, audit)
        return True

    async def save_revocation(self, audit: AuditEntry) -> None:
        async with self._pool.acquire() as db, db.transaction():
            await db.execute(
                "UPDATE api_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL",
                audit.at,
                audit.token_id,
            )
            await _insert_audit(db, audit)

    async def token(self, token_id: str) -> TokenInfo | None:
        async with self._pool.acquire() as db:
            row = await db.fetchrow(
                f"SELECT {_COLUMNS} FROM api_tokens WHERE token_id = $1", token_id
            )
        return TokenInfo(*tuple(row)) if row is not None else None

    async def hashed_token(self, token_id: str) -> tuple[TokenInfo, str] | None:
        async with self._pool.acquire() as db:
            row = await db.fetchrow(
                f"SELECT {_COLUMNS}, token_sha256 FROM api_tokens WHERE token_id = $1", token_id
            )
        return (TokenInfo(*tuple(row)[:-1]), str(row[-1])) if row is not None else None

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        where, params = _where(building_id, dwelling_id)
        async with self._pool.acquire() as db:
            rows = await db.fetch(
                f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY created_at, token_id",
                *params,
            )
        return [TokenInfo(*tuple(row)) for row in rows]

    async def token_audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        where, params = _where(building_id, dwelling_id)
        async with self._pool.acquire() as db:
            rows = await db.fetch(
                f"SELECT {_AUDIT_COLUMNS} FROM api_token_audit {where} ORDER BY id", *params
            )
        return [AuditEntry(*tuple(row)) for row in rows]


async def _insert_audit(db: Any, entry: AuditEntry) -> None:
    await db.execute(
        f"INSERT INTO api_token_audit ({_AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        entry.at,
        entry.action,
        entry.token_id,
        entry.building_id,
        entry.dwelling_id,
        entry.actor,
        entry.detail,
    )


def _where(building_id: str | None, dwelling_id: str | None) -> tuple[str, tuple[str, ...]]:
    if building_id is None or dwelling_id is None:
        return "", ()
    return "WHERE building_id = $1 AND dwelling_id = $2", (building_id, dwelling_id)
