"""Resident API tokens: bearer tokens that reach one dwelling only, with an audit trail.

The operator's token (``INTERCOM_API_TOKEN``) reaches every dwelling. A resident, or a
resident's app, gets a token of its own dwelling instead, issued, listed and revoked
with ``intercom-gateway token``; every issue and revoke is on record (``api_token_audit``).

Token format (65 characters, URL-safe)::

    icrt_<token id: 16 hex digits>_<secret: 43 characters of secrets.token_urlsafe(32)>
    icrt_3f9c2a7b1d0e4c55_Vd3k...

``icrt`` ("intercom resident token") makes a leaked token recognisable to a secret
scanner and to a person. The id is not secret: it names the token in lists, audit
entries and the ``via`` of the requests made with it, and the API finds the row by it
(the primary key: one indexed query). Only the SHA-256 of the whole token is stored and
compared in constant time. A fast hash is enough: the secret has 256 random bits, so
there is nothing for a slow password hash to protect against guessing.

The tables live in the store's SQLite file and are created at first use; nothing else
reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import sqlite3
from datetime import UTC, datetime
from typing import Any, Literal

import aiosqlite

from intercom_gateway.errors import GatewayError
from intercom_gateway.errors import TokenRefused as TokenRefused
from intercom_gateway.errors import UnknownToken as UnknownToken

PREFIX = "icrt_"
_ID_HEX = 16
TOKEN_PATTERN = re.compile(r"^icrt_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY, building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL,
    token_sha256 TEXT NOT NULL, label TEXT NOT NULL, created_at TEXT NOT NULL,
    expires_at TEXT, revoked_at TEXT) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS api_tokens_dwelling
    ON api_tokens (building_id, dwelling_id, created_at)""",
    # Append-only: who issued or revoked which token of which dwelling, and when.
    """CREATE TABLE IF NOT EXISTS api_token_audit (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, action TEXT NOT NULL, token_id TEXT NOT NULL,
    building_id TEXT NOT NULL, dwelling_id TEXT NOT NULL, actor TEXT NOT NULL,
    detail TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS api_token_audit_dwelling
    ON api_token_audit (building_id, dwelling_id, id)""",
)

_COLUMNS = "token_id, building_id, dwelling_id, label, created_at, expires_at, revoked_at"

TokenState = Literal["active", "expired", "revoked"]


@dataclasses.dataclass(frozen=True, slots=True)
class TokenInfo:
    """A resident token as listed: everything but the secret, which is never stored."""

    token_id: str
    building_id: str
    dwelling_id: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def via(self) -> str:
        """How a request made with this token is recorded (``requests.via``)."""
        return f"api:token:{self.token_id}"

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def listed(self, now: datetime) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "label": self.label,
            "state": self.state(now),
            **self.dates(),
        }

    def dates(self) -> dict[str, Any]:
        """Ids and dates only: what a resident's disclosure (§8) shows of the token."""
        return {
            "token_id": self.token_id,
            "created_at": _text(self.created_at),
            "expires_at": _text(self.expires_at),
            "revoked_at": _text(self.revoked_at),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just issued: ``token`` is shown this once and never again."""

    info: TokenInfo
    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    action: Literal["issue", "revoke"]
    token_id: str
    building_id: str
    dwelling_id: str
    actor: str
    detail: str

    def listed(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "action": self.action,
            "token_id": self.token_id,
            "building_id": self.building_id,
            "dwelling_id": self.dwelling_id,
            "actor": self.actor,
            "detail": self.detail,
        }


def token_id_of(text: str) -> str | None:
    """The id a token or token id names, or None if it is neither."""
    text = text.strip()
    if ID_PATTERN.match(text):
        return text
    match = TOKEN_PATTERN.match(text)
    return match["id"] if match else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Compared against when the id is unknown, so both refusals take the same work.
_NOTHING = _digest(PREFIX + "0" * _ID_HEX + "_" + "A" * 43)


class TokenBook:
    """The resident tokens in the store's SQLite file, on the store's own connection."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, connection: aiosqlite.Connection) -> TokenBook:
        """The book, its tables created if this file has none yet."""
        # DDL does not open a transaction (sqlite3's implicit BEGIN is for DML only): with
        # none open the tables are created at once, and a caller's pending work is never
        # committed here (with one open, they are created when it commits).
        for statement in SCHEMA:
            await connection.execute(statement)
        return cls(connection)

    async def issue(
        self,
        building_id: str,
        dwelling_id: str,
        *,
        label: str,
        expires_at: datetime | None,
        actor: str,
        now: datetime,
    ) -> IssuedToken:
        """A new token of the dwelling, stored as its hash, with its audit entry."""
        for _ in range(3):  # a repeated 64-bit id is all but impossible; never overwrite
            token_id = secrets.token_hex(_ID_HEX // 2)
            token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
            info = TokenInfo(token_id, building_id, dwelling_id, label, now, expires_at, None)
            try:
                await self._db.execute(
                    f"INSERT INTO api_tokens ({_COLUMNS}, token_sha256)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_row(info), _digest(token)),
                )
            except sqlite3.IntegrityError:
                continue
            expiry = f"expires {_text(expires_at)}" if expires_at else "no expiry"
            detail = f"label {label!r}, {expiry}"
            await self._audit("issue", info, actor=actor, now=now, detail=detail)
            await self._db.commit()
            return IssuedToken(info, token)
        raise GatewayError("could not draw an unused token id")

    async def revoke(self, token_id: str, *, actor: str, now: datetime) -> TokenInfo:
        """Revoke at once; revoking a revoked token changes nothing and audits nothing."""
        info = await self.get(token_id)
        if info is None:
            raise UnknownToken(token_id)
        if info.revoked_at is not None:
            return info
        await self._db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            (_text(now), token_id),
        )
        revoked = dataclasses.replace(info, revoked_at=now)
        await self._audit("revoke", revoked, actor=actor, now=now, detail="")
        await self._db.commit()
        return revoked

    async def authenticate(self, token: str, *, now: datetime) -> TokenInfo:
        """The token's entry if it is well formed, known, matching, unexpired and unrevoked."""
        match = TOKEN_PATTERN.match(token)
        if match is None:
            raise TokenRefused("not a valid bearer token")
        async with self._db.execute(
            f"SELECT {_COLUMNS}, token_sha256 FROM api_tokens WHERE token_id = ?", (match["id"],)
        ) as cursor:
            row = await cursor.fetchone()
        stored = str(row[-1]) if row is not None else _NOTHING
        if not hmac.compare_digest(_digest(token), stored) or row is None:
            raise TokenRefused("not a valid bearer token")
        # Only a holder of the right secret learns the token's state.
        info = _info(tuple(row)[:-1])
        state = info.state(now)
        if state != "active":
            raise TokenRefused(f"token {info.token_id} is {state}")
        return info

    async def get(self, token_id: str) -> TokenInfo | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE token_id = ?", (token_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _info(tuple(row)) if row is not None else None

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        """Every token, or those of one dwelling, oldest first."""
        where, params = _where(building_id, dwelling_id)
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY created_at, token_id", params
        ) as cursor:
            return [_info(tuple(row)) for row in await cursor.fetchall()]

    async def audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        """The audit trail, or one dwelling's, in the order it was written."""
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

    async def _audit(
        self, action: str, info: TokenInfo, *, actor: str, now: datetime, detail: str
    ) -> None:
        await self._db.execute(
            "INSERT INTO api_token_audit (at, action, token_id, building_id, dwelling_id,"
            " actor, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_text(now), action, info.token_id, info.building_id, info.dwelling_id, actor, detail),
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
    return moment.astimezone(UTC).isoformat() if moment is not None else None
