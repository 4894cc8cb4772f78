"""Logging in and out, and the console's two static files.

The login form posts the token in the request body, never in a URL (a URL ends up in
history, logs and Referer headers). Forms are read as ``application/x-www-form-urlencoded``
by the standard library: the console needs no multipart parser.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from intercom_gateway.console.auth import (
    COOKIE,
    LIFETIME,
    Session,
    operator_session,
    resident_session,
)
from intercom_gateway.console.web import FOLDER, HEADERS, PREFIX, page, state_of
from intercom_gateway.core.models import utc_now
from intercom_gateway.resident.tokens import PREFIX as RESIDENT_PREFIX
from intercom_gateway.resident.tokens import TokenRefused

# name -> media type: the files the pages load, and nothing else.
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


async def form(request: Request) -> dict[str, str]:
    """A url-encoded form's fields, the first value of each."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def router() -> APIRouter:
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)

    @routes.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", None)

    @routes.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        token = (await form(request)).get("token", "").strip()
        session = await _authenticate(request, token)
        if session is None:
            context = {"error": "not a valid token"}
            return page(request, "login.html", None, context, status_code=401)
        response = RedirectResponse(f"{PREFIX}/", status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            state_of(request).signer.sign(session),
            max_age=LIFETIME,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @routes.post("/logout")
    async def logout() -> RedirectResponse:
        response = RedirectResponse(f"{PREFIX}/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    for name, media_type in STATIC.items():
        routes.add_api_route(f"/static/{name}", _static(name, media_type))
    return routes


async def _authenticate(request: Request, token: str) -> Session | None:
    operator: bytes = request.app.state.resident_api.operator
    # Constant time, so the token cannot be guessed byte by byte from response times.
    if secrets.compare_digest(token.encode(), operator):
        return operator_session()
    if not token.startswith(RESIDENT_PREFIX):
        return None
    try:
        info = await request.app.state.resident_api.tokens.authenticate(token, now=utc_now())
    except TokenRefused:
        return None
    return resident_session(info.token_id, info.building_id, info.dwelling_id)


def _static(name: str, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    path = FOLDER / "static" / name

    async def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers=HEADERS)

    asset.__name__ = f"console_{name.replace('.', '_')}"
    return asset
