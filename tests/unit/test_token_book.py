"""``TokenBook`` needs of a store only what ``Store`` says: the six token members. Here
over a dict (a second backend in miniature), with no SQLite at all."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import secrets
from datetime import timedelta
from typing import cast

import pytest

from intercom_gateway.errors import GatewayError
from intercom_gateway.resident.tokens import AuditEntry, TokenBook, TokenInfo, TokenRefused
from intercom_gateway.store import Store

from .conftest import NOW


class DictTokens:
    """The token members of ``Store`` over two plain containers."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[TokenInfo, str]] = {}
        self.trail: list[AuditEntry] = []

    async def save_token(self, info: TokenInfo, *, sha256: str, audit: AuditEntry) -> bool:
        if info.token_id in self.rows:
            return False
        self.rows[info.token_id] = (info, sha256)
        self.trail.append(audit)
        return True

    async def save_revocation(self, audit: AuditEntry) -> None:
        info, sha256 = self.rows[audit.token_id]
        if info.revoked_at is None:
            self.rows[audit.token_id] = (dataclasses.replace(info, revoked_at=audit.at), sha256)
        self.trail.append(audit)

    async def token(self, token_id: str) -> TokenInfo | None:
        found = self.rows.get(token_id)
        return found[0] if found else None

    async def hashed_token(self, token_id: str) -> tuple[TokenInfo, str] | None:
        return self.rows.get(token_id)

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        return [i for i, _ in self.rows.values() if building_id in (None, i.building_id)]

    async def token_audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        return list(self.trail)


def _book() -> tuple[TokenBook, DictTokens]:
    kept = DictTokens()
    return TokenBook(cast(Store, kept)), kept


async def test_the_book_runs_on_the_token_members_of_store_alone() -> None:
    book, kept = _book()
    issued = await book.issue(
        "b001", "d0001", label="tablet", expires_at=NOW + timedelta(days=1), actor="t", now=NOW
    )
    [(info, sha256)] = kept.rows.values()
    assert info == issued.info and sha256 == hashlib.sha256(issued.token.encode()).hexdigest()
    assert await book.authenticate(issued.token, now=NOW) == issued.info
    revoked = await book.revoke(issued.info.token_id, actor="u", now=NOW)
    assert revoked.revoked_at == NOW and (await book.get(issued.info.token_id)) == revoked
    with pytest.raises(TokenRefused, match="is revoked"):
        await book.authenticate(issued.token, now=NOW)
    assert [(e.action, e.actor) for e in await book.audit()] == [("issue", "t"), ("revoke", "u")]
    assert (
        kept.trail[0].detail == f"label 'tablet', expires {(NOW + timedelta(days=1)).isoformat()}"
    )


async def test_a_taken_id_is_drawn_again_and_never_overwritten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book, kept = _book()
    ids = itertools.chain(["0" * 16, "0" * 16, "1" * 16], itertools.repeat("2" * 16))
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(ids))
    first = await book.issue("b001", "d0001", label="", expires_at=None, actor="t", now=NOW)
    second = await book.issue("b001", "d0002", label="", expires_at=None, actor="t", now=NOW)
    assert (first.info.token_id, second.info.token_id) == ("0" * 16, "1" * 16)
    assert kept.rows["0" * 16][0].dwelling_id == "d0001" and len(kept.trail) == 2
    await book.issue("b001", "d0003", label="", expires_at=None, actor="t", now=NOW)
    with pytest.raises(GatewayError, match="could not draw an unused token id"):
        await book.issue("b001", "d0004", label="", expires_at=None, actor="t", now=NOW)
    assert len(kept.rows) == len(kept.trail) == 3
