"""The resident-request HTTP API (§8): what ``intercom-gateway resident`` does, for a
resident portal, a resident's app or an operator tool.

Two kinds of bearer token (``Authorization: Bearer ...``):

- the operator's token (``INTERCOM_API_TOKEN``) reaches every dwelling; without one
  configured the app refuses to start;
- a resident token (``icrt_...``, issued with ``intercom-gateway token issue``; see
  ``tokens``) reaches the routes of its own dwelling only. Another dwelling's route
  answers 403 whether that dwelling exists or not, and says nothing of it.

A missing, malformed, unknown, expired or revoked token answers 401. Every request is
recorded with ``via`` naming who made it: ``api`` for the operator, ``api:token:<id>``
for a resident token. The OpenAPI document (``/openapi.json``) and its pages
(``/docs``, ``/redoc``, with their assets under ``/docs/assets/``) stay public, as they
were: they describe the routes and hold no dwelling's data. The pages load nothing from
another host (``docs``), so they work with no internet. The operator's console is part
of the same app, under ``/console`` (``intercom_gateway.console``): a login page and a
session cookie instead of a bearer header, the same two kinds of token.

Date bounds are checked (``date_bounds``): outside years 2000..2999, beyond an offset of
±14:00, not ISO 8601, or ``from`` after ``to`` answers 422 with the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from intercom_gateway import console
from intercom_gateway.core.dates import DateBoundError, check_order, parse_bound
from intercom_gateway.core.models import utc_now
from intercom_gateway.errors import (
    BusError,
    ConfigError,
    PendingChange,
    UnknownDwelling,
    UnknownPartner,
)
from intercom_gateway.resident.channels import ConsentChannel, mqtt_channel
from intercom_gateway.resident.desk import ResidentDesk, open_desk
from intercom_gateway.resident.docs import serve_docs
from intercom_gateway.resident.service import provisions_csv
from intercom_gateway.resident.tokens import PREFIX, TokenBook, TokenRefused
from intercom_gateway.settings import Settings

IDENT = r"^[a-z0-9][a-z0-9_-]{0,47}$"  # models.Ident: a path can name nothing else
Building = Annotated[str, Path(pattern=IDENT, description="building id")]
Dwelling = Annotated[str, Path(pattern=IDENT, description="dwelling id")]

# Two schemes on the same header, so the OpenAPI document offers either (a list of
# security requirements is "one of these").
_operator_bearer = HTTPBearer(
    scheme_name="operatorToken",
    auto_error=False,
    description="The operator's token (INTERCOM_API_TOKEN): every dwelling.",
)
_resident_bearer = HTTPBearer(
    scheme_name="residentToken",
    auto_error=False,
    bearerFormat="icrt_<16 hex id>_<43-character secret>",
    description="A resident token (`intercom-gateway token issue B D`): the routes of its "
    "own dwelling only; another dwelling's answers 403.",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: the operator (every dwelling) or one dwelling's token."""

    via: str
    dwelling: tuple[str, str] | None  # None: every dwelling


OPERATOR = Principal(via="api", dwelling=None)


TOKEN_NEEDED = (
    "INTERCOM_API_TOKEN is not set: the API does not start without the operator's token, "
    "a secret you choose (export INTERCOM_API_TOKEN=$(openssl rand -hex 32)); residents "
    "get theirs from `intercom-gateway token issue BUILDING DWELLING`"
)


def has_token(settings: Settings) -> bool:
    """Whether the operator's token is configured (not blank)."""
    return bool(settings.api_token and settings.api_token.get_secret_value().strip())


def _token(settings: Settings) -> bytes:
    if not has_token(settings):
        raise ConfigError(TOKEN_NEEDED)
    assert settings.api_token is not None
    return settings.api_token.get_secret_value().encode()


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, {"WWW-Authenticate": "Bearer"})


class _State:
    """The app's one desk and token book; requests take turns at the desk so one's
    writes never interleave another's."""

    def __init__(self, operator: bytes) -> None:
        self.operator = operator
        self.desk: ResidentDesk | None = None
        self.tokens: TokenBook | None = None
        self.lock = asyncio.Lock()


async def _principal(
    request: Request,
    operator: Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_bearer)],
    resident: Annotated[HTTPAuthorizationCredentials | None, Depends(_resident_bearer)],
) -> Principal:
    state: _State = request.app.state.resident_api
    credentials = operator or resident
    given = credentials.credentials if credentials else ""
    # Constant time, so the token cannot be guessed byte by byte from response times.
    if secrets.compare_digest(given.encode(), state.operator):
        return OPERATOR
    if not given.startswith(PREFIX):
        raise _unauthorised("a bearer token is required: the operator's or a resident token")
    assert state.tokens is not None, "the app's lifespan opens the token book"
    try:
        info = await state.tokens.authenticate(given, now=utc_now())
    except TokenRefused as refused:
        raise _unauthorised(refused.reason) from None
    return Principal(via=info.via, dwelling=(info.building_id, info.dwelling_id))


async def _scope(
    building: Building,
    dwelling: Dwelling,
    principal: Annotated[Principal, Depends(_principal)],
) -> Principal:
    if principal.dwelling is not None and principal.dwelling != (building, dwelling):
        # 403, not 404: whether that dwelling exists is none of this token's business.
        raise HTTPException(403, "a resident token reaches its own dwelling only")
    return principal


async def _desk(
    request: Request, principal: Annotated[Principal, Depends(_scope)]
) -> AsyncIterator[ResidentDesk]:
    state: _State = request.app.state.resident_api
    assert state.desk is not None, "the app's lifespan opens the desk"
    async with state.lock:
        yield state.desk.acting_for(principal.via)


Desk = Annotated[ResidentDesk, Depends(_desk)]


def create_app(settings: Settings, *, channel: ConsentChannel | None = None) -> FastAPI:
    """The app; ``channel`` defaults to MQTT to the running gateway."""
    state = _State(_token(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        chosen = channel or mqtt_channel(settings)
        async with (
            open_desk(settings, via=OPERATOR.via, channel=chosen) as desk,
            console.opened(console_state),
        ):
            state.desk = desk
            state.tokens = TokenBook(desk.store)
            yield

    app = FastAPI(
        title="intercom-gateway resident requests",
        version="1",
        description="A resident's requests of §8 of the privacy policy, for one dwelling. "
        "The operator's token reaches every dwelling, a resident token its own only.",
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: ours do not.
        docs_url=None,
        redoc_url=None,
    )
    serve_docs(app)
    app.state.resident_api = state
    console_state = console.mount_console(app, settings)
    app.include_router(_routes(), dependencies=[Depends(_scope)])
    _errors(app)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(UnknownDwelling)
    async def unknown_dwelling(_: Request, error: UnknownDwelling) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(UnknownPartner)
    async def unknown_partner(_: Request, error: UnknownPartner) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(PendingChange)
    async def pending(_: Request, error: PendingChange) -> Response:
        # Accepted, not yet applied: our gateway was online on the broker when it was
        # sent (the channel checks), and the broker holds it for that gateway.
        body = {"detail": str(error), "change_id": str(error.change.change_id)}
        return JSONResponse(body, status_code=202)

    @app.exception_handler(BusError)
    async def no_gateway(_: Request, error: BusError) -> Response:
        # Not sent: no gateway of ours answers on the broker (or the broker none at all).
        return JSONResponse({"detail": str(error)}, status_code=503)


def _bound(name: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_bound(value, name=name)
        except DateBoundError as error:
            raise PydanticCustomError("date_bound", "{reason}", {"reason": str(error)}) from None

    return parse


Start = Annotated[
    datetime | None,
    BeforeValidator(_bound("from")),
    Query(
        alias="from",
        description="inclusive; ISO 8601 date or date-time, UTC if no zone; "
        "years 2000..2999, offset within ±14:00",
    ),
]
End = Annotated[
    datetime | None,
    BeforeValidator(_bound("to")),
    Query(alias="to", description="exclusive; as `from`, and not before it"),
]


def _ordered(start: datetime | None, end: datetime | None) -> None:
    try:
        check_order(start, end)
    except DateBoundError as error:
        given = start.isoformat() if start else None
        raise RequestValidationError(
            [{"type": "date_order", "loc": ("query", "from"), "msg": str(error), "input": given}]
        ) from None


def _routes() -> APIRouter:
    router = APIRouter(
        prefix="/dwellings/{building}/{dwelling}",
        tags=["resident requests"],
        responses={
            401: {"description": "No token, or a malformed, unknown, expired or revoked one"},
            403: {"description": "A resident token of another dwelling"},
            404: {"description": "No such dwelling (operator), or no such partner service"},
            503: {"description": "A change: no gateway answers on the broker; nothing sent"},
        },
    )

    @router.get("/purposes", summary="Notification of purposes (§8)")
    async def purposes(building: Building, dwelling: Dwelling, desk: Desk) -> dict[str, Any]:
        return await desk.purposes(building, dwelling)

    @router.get("/disclosure", summary="Disclosure of what is held (§8)")
    async def disclosure(building: Building, dwelling: Dwelling, desk: Desk) -> dict[str, Any]:
        return await desk.disclose(building, dwelling)

    @router.get(
        "/provisions",
        summary="Records of provision to third parties (§8, APPI), JSON or CSV",
        response_model=None,
    )
    async def provisions(
        building: Building,
        dwelling: Dwelling,
        desk: Desk,
        start: Start = None,
        end: End = None,
        fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
        third_party_only: bool = False,
    ) -> dict[str, Any] | Response:
        _ordered(start, end)
        answer = await desk.provisions(
            building,
            dwelling,
            start=start,
            end=end,
            third_party_only=third_party_only,
        )
        if fmt == "csv":
            return PlainTextResponse(provisions_csv(answer["records"]), media_type="text/csv")
        return answer

    @router.post("/stop-provision/{partner}", summary="Stop provision to one partner (§8)")
    async def stop_provision(
        building: Building,
        dwelling: Dwelling,
        partner: Annotated[str, Path(pattern=IDENT)],
        desk: Desk,
    ) -> dict[str, Any]:
        return await desk.stop_provision(building, dwelling, partner)

    @router.post("/stop-use", summary="Suspend use (§8)")
    async def stop_use(building: Building, dwelling: Dwelling, desk: Desk) -> dict[str, Any]:
        return await desk.stop_use(building, dwelling)

    @router.post("/erasure", summary="Erase what may be erased; says what is kept and why (§8)")
    async def erasure(building: Building, dwelling: Dwelling, desk: Desk) -> dict[str, Any]:
        return await desk.erase(building, dwelling)

    return router
