"""Who is logged in to the console: a signed session cookie, never a token in a URL.

The login form takes the operator's token (``INTERCOM_API_TOKEN``) or a resident token
(``icrt_...``), checked as the API checks them (``resident.api``): the operator's in
constant time, a resident's by its hash (``resident.tokens.TokenBook``). What the cookie
then carries is who it is (``via``), the dwelling a resident session is limited to, and
when it expires, signed with HMAC-SHA256 under a secret drawn per process (``secrets``):
a restart logs everyone out, and nothing secret is ever in the cookie. The cookie is
HttpOnly (no script reads it) and SameSite=Strict (no other site's page can make the
browser send it, so a form posted from elsewhere arrives without a session).

A resident session is checked against its token again on every request, so revoking
the token (``token revoke``) ends the session at once.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

COOKIE = "console_session"
LIFETIME = 8 * 3600  # seconds: a working day, then log in again


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A logged-in console user: the operator (every dwelling) or one dwelling's token."""

    via: str  # "console" (the operator) or "console:token:<id>"
    dwelling: tuple[str, str] | None  # None: every dwelling
    token_id: str | None  # a resident session's token, checked on every request
    expires: int  # Unix seconds

    @property
    def operator(self) -> bool:
        return self.dwelling is None

    def may_see(self, building: str, dwelling: str) -> bool:
        return self.dwelling is None or self.dwelling == (building, dwelling)


def operator_session(*, now: float | None = None) -> Session:
    return Session("console", None, None, _expiry(now))


def resident_session(
    token_id: str, building: str, dwelling: str, *, now: float | None = None
) -> Session:
    return Session(f"console:token:{token_id}", (building, dwelling), token_id, _expiry(now))


def _expiry(now: float | None) -> int:
    return int((time.time() if now is None else now) + LIFETIME)


class Signer:
    """Signs sessions into cookie values and reads them back, refusing anything else."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def sign(self, session: Session) -> str:
        body = _b64(json.dumps(dataclasses.asdict(session), separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def read(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session the value names if it is ours, intact and unexpired; else None."""
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            data: dict[str, Any] = json.loads(_unb64(body))
            dwelling = data["dwelling"]
            session = Session(
                via=str(data["via"]),
                dwelling=(str(dwelling[0]), str(dwelling[1])) if dwelling else None,
                token_id=data["token_id"],
                expires=int(data["expires"]),
            )
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
