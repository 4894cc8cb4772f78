"""The console's plumbing: its state on the app, who is logged in, how a page is sent.

Every page answers 303 to the login page without a valid session, every stream and
export 401; a resident session reaching another dwelling's page gets 403 whether that
dwelling exists or not. Every response carries a Content-Security-Policy that lets the
page load from its own origin only, with no inline script or style: the console works
with no internet and tells no other host that someone looks at it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from intercom_gateway.console.auth import COOKIE, Session, Signer
from intercom_gateway.console.queries import Feed
from intercom_gateway.core.models import utc_now
from intercom_gateway.resident.desk import ResidentDesk
from intercom_gateway.settings import Settings

PREFIX = "/console"
FOLDER = Path(__file__).parent
TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(loader=jinja2.FileSystemLoader(FOLDER / "templates"), autoescape=True)
)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
    " img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'",
    "Cache-Control": "no-store",  # pages hold dwellings' data: never cached
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def pretty(value: Any) -> str:
    """JSON as the pages show an answer."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


TEMPLATES.env.filters["pretty"] = pretty


@dataclasses.dataclass
class ConsoleState:
    """The console's share of the app: settings, the cookie signer, the feed."""

    settings: Settings
    signer: Signer
    feed: Feed | None = None  # set by the app's lifespan


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def desk_of(request: Request, session: Session) -> ResidentDesk:
    desk: ResidentDesk | None = request.app.state.resident_api.desk
    assert desk is not None, "the app's lifespan opens the desk"
    return desk.acting_for(session.via)


async def _session(request: Request) -> Session | None:
    session = state_of(request).signer.read(request.cookies.get(COOKIE))
    if session is None or session.token_id is None:
        return session
    # A resident session lasts as long as its token: revoked or expired, it is over.
    tokens = request.app.state.resident_api.tokens
    info = await tokens.get(session.token_id) if tokens is not None else None
    return session if info is not None and info.state(utc_now()) == "active" else None


async def page_session(request: Request) -> Session:
    """The session of a page: without one, 303 to the login page."""
    session = await _session(request)
    if session is None:
        raise HTTPException(303, "log in first", {"Location": f"{PREFIX}/login"})
    return session


async def data_session(request: Request) -> Session:
    """The session of a stream or an export: without one, 401."""
    session = await _session(request)
    if session is None:
        raise HTTPException(401, "log in to the console first")
    return session


PageSession = Annotated[Session, Depends(page_session)]
DataSession = Annotated[Session, Depends(data_session)]


def operator_only(session: Session) -> None:
    if not session.operator:
        raise HTTPException(403, "the operator's page: a resident session sees its dwelling")


def own_dwelling(session: Session, building: str, dwelling: str) -> None:
    if not session.may_see(building, dwelling):
        # 403, not 404: whether that dwelling exists is none of this session's business.
        raise HTTPException(403, "a resident session reaches its own dwelling only")


def page(
    request: Request,
    name: str,
    session: Session | None,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """A template rendered with the session, under the console's headers."""
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request,
        name,
        {"session": session, "prefix": PREFIX, **(context or {})},
        status_code=status_code,
        headers=HEADERS,
    )
    return response
