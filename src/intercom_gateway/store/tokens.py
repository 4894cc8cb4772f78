"""The store's resident-token tables: each token's entry (its hash, never its secret) and
the append-only audit trail of issues and revokes.

Part of the store (``store.Store``; nothing else speaks this SQL). What a token is, how
it is drawn, hashed and checked is ``resident.tokens``'s: here a token is a
``results.TokenInfo`` and the hex SHA-256 it is stored as. Each issue and revoke is
committed together with its audit entry.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from intercom_gateway.store.results import AuditEntry, TokenInfo

# Made with every other table when the store opens (``schema.create``); the same tables
# the resident desk used to make at its first use, so a file that has them keeps them.
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY, building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL,
    token_sha256 TEXT NOT NULL, label TEXT NOT NULL, created_at TEXT NOT NULL,
    expires_at TEXT, revoked_at TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_tokens_dwelling
    ON api_tokens (building_id, dwelling_id, created_at);
-- Append-only: who issued or revoked which token of which dwelling, and when.
CREATE TABLE IF NOT EXISTS api_token_audit (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, action TEXT NOT NULL, token_id TEXT NOT NULL,
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, actor TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS api_token_audit_dwelling
    ON api_token_audit (building_id, dwelling_id, id);
"""

_COLUMNS = "token_id, building_id, dwelling_id, label, created_at, expires_at, revoked_at"


class TokenTables:
    """The resident tokens and their audit trail, on the store's connection."""

    def __init__(self, db: aiosqlite.Connection, writing: asyncio.Lock) -> None:
        self._db = db
        self._writing = writing  # the store's one transaction at a time

    async def save_token(self, info: TokenInfo, *, sha256: str, audit: AuditEntry) -> bool:
        """The token and its audit entry, in one commit; False if its id is taken."""
        async with self._writing:
            try:
                await self._db.execute(
                    f"INSERT INTO api_tokens ({_COLUMNS}, token_sha256)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_row(info), sha256),
                )
            except sqlite3.IntegrityError:
                return False
            await self._insert_audit(audit)
            await self._db.commit()
            return True

    async def save_revocation(self, audit: AuditEntry) -> None:
        """Revoke ``audit.token_id`` at ``audit.at`` (a revoked one keeps its first date),
        with its audit entry, in one commit."""
        async with self._writing:
            await self._db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (_text(audit.at), audit.token_id),
            )
            await self._insert_audit(audit)
            await self._db.commit()

    async def token(self, token_id: str) -> TokenInfo | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE token_id = ?", (token_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _info(tuple(row)) if row is not None else None

    async def hashed_token(self, token_id: str) -> tuple[TokenInfo, str] | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS}, token_sha256 FROM api_tokens WHERE token_id = ?", (token_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return (_info(tuple(row)[:-1]), str(row[-1])) if row is not None else None

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        where, params = _where(building_id, dwelling_id)
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY created_at, token_id", params
        ) as cursor:
            return [_info(tuple(row)) for row in await cursor.fetchall()]

    async def token_audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        where, params = _where(building_id, dwelling_id)
        async with self._db.execute(
            "SELECT at, action, token_id, building_id, dwelling_id, actor, detail"
            f" FROM api_token_audit {where} ORDER BY id",
            params,
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            AuditEntry(datetime.fromisoformat(r[0]), r[1], *(str(v) for v in tuple(r)[2:]))
            for r in rows
        ]

    async def _insert_audit(self, entry: AuditEntry) -> None:
        await self._db.execute(
            "INSERT INTO api_token_audit (at, action, token_id, building_id, dwelling_id,"
            " actor, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _text(entry.at),
                entry.action,
                entry.token_id,
                entry.building_id,
                entry.dwelling_id,
                entry.actor,
                entry.detail,
            ),
        )


def _where(building_id: str | None, dwelling_id: str | None) -> tuple[str, tuple[str, ...]]:
    if building_id is None or dwelling_id is None:
        return "", ()
    return "WHERE building_id = ? AND dwelling_id = ?", (building_id, dwelling_id)


def _row(info: TokenInfo) -> tuple[Any, ...]:
    return (
        info.token_id,
        info.building_id,
        info.dwelling_id,
        info.label,
        _text(info.created_at),
        _text(info.expires_at),
        _text(info.revoked_at),
    )


def _info(row: tuple[Any, ...]) -> TokenInfo:
    token_id, building_id, dwelling_id, label, created, expires, revoked = row
    return TokenInfo(
        token_id,
        building_id,
        dwelling_id,
        label,
        datetime.fromisoformat(created),
        datetime.fromisoformat(expires) if expires else None,
        datetime.fromisoformat(revoked) if revoked else None,
    )


def _text(moment: datetime | None) -> str | None:
    # As the rows have always been written: UTC, so text order is time order.
    return moment.astimezone(UTC).isoformat() if moment is not None else None
