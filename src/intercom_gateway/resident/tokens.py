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

The entries and the audit trail are the store's (``Store.save_token`` and its
neighbours); this module draws, hashes and checks the tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from intercom_gateway.errors import GatewayError
from intercom_gateway.errors import TokenRefused as TokenRefused
from intercom_gateway.errors import UnknownToken as UnknownToken
from intercom_gateway.store import Store
from intercom_gateway.store.results import AuditEntry as AuditEntry
from intercom_gateway.store.results import TokenInfo as TokenInfo
from intercom_gateway.store.results import TokenState as TokenState

PREFIX = "icrt_"
_ID_HEX = 16
TOKEN_PATTERN = re.compile(r"^icrt_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just issued: ``token`` is shown this once and never again."""

    info: TokenInfo
    token: str


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
    """The resident tokens, kept by the store (any ``Store``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

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
        expiry = f"expires {_text(expires_at)}" if expires_at else "no expiry"
        detail = f"label {label!r}, {expiry}"
        for _ in range(3):  # a repeated 64-bit id is all but impossible; never overwrite
            token_id = secrets.token_hex(_ID_HEX // 2)
            token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
            info = TokenInfo(token_id, building_id, dwelling_id, label, now, expires_at, None)
            entry = AuditEntry(now, "issue", token_id, building_id, dwelling_id, actor, detail)
            if await self._store.save_token(info, sha256=_digest(token), audit=entry):
                return IssuedToken(info, token)
        raise GatewayError("could not draw an unused token id")

    async def revoke(self, token_id: str, *, actor: str, now: datetime) -> TokenInfo:
        """Revoke at once; revoking a revoked token changes nothing and audits nothing."""
        info = await self.get(token_id)
        if info is None:
            raise UnknownToken(token_id)
        if info.revoked_at is not None:
            return info
        revoked = dataclasses.replace(info, revoked_at=now)
        building_id, dwelling_id = info.building_id, info.dwelling_id
        entry = AuditEntry(now, "revoke", token_id, building_id, dwelling_id, actor, "")
        await self._store.save_revocation(entry)
        return revoked

    async def authenticate(self, token: str, *, now: datetime) -> TokenInfo:
        """The token's entry if it is well formed, known, matching, unexpired and unrevoked."""
        match = TOKEN_PATTERN.match(token)
        if match is None:
            raise TokenRefused("not a valid bearer token")
        found = await self._store.hashed_token(match["id"])
        stored = found[1] if found is not None else _NOTHING
        if not hmac.compare_digest(_digest(token), stored) or found is None:
            raise TokenRefused("not a valid bearer token")
        # Only a holder of the right secret learns the token's state.
        info = found[0]
        state = info.state(now)
        if state != "active":
            raise TokenRefused(f"token {info.token_id} is {state}")
        return info

    async def get(self, token_id: str) -> TokenInfo | None:
        return await self._store.token(token_id)

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        """Every token, or those of one dwelling, oldest first."""
        return await self._store.tokens(building_id, dwelling_id)

    async def audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        """The audit trail, or one dwelling's, in the order it was written."""
        return await self._store.token_audit(building_id, dwelling_id)


def _text(moment: datetime) -> str:
    # As the audit entry's detail has always written it: in UTC.
    return moment.astimezone(UTC).isoformat()
