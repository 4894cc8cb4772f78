"""The resident-request HTTP API (§8): what ``intercom-gateway resident`` does, for a
resident portal or an operator tool. OpenAPI at ``/openapi.json``, docs at ``/docs``.

Every route needs the operator's bearer token (``INTERCOM_API_TOKEN``); without one
configured the app refuses to start. Every route is scoped to the one dwelling in its
path, and the desk queries by that dwelling only.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from intercom_gateway.errors import ConfigError
from intercom_gateway.resident import (
    ConsentChannel,
    PendingChange,
    ResidentDesk,
    UnknownDwelling,
    UnknownPartner,
    mqtt_channel,
    open_desk,
    provisions_csv,
)
from intercom_gateway.settings import Settings

IDENT = r"^[a-z0-9][a-z0-9_-]{0,47}$"  # models.Ident: a path can name nothing else
Building = Annotated[str, Path(pattern=IDENT, description="building id")]
Dwelling = Annotated[str, Path(pattern=IDENT, description="dwelling id")]

_bearer = HTTPBearer(auto_error=False, description="the operator token (INTERCOM_API_TOKEN)")


def _token(settings: Settings) -> bytes:
    secret = settings.api_token.get_secret_value() if settings.api_token else ""
    if not secret.strip():
        raise ConfigError("INTERCOM_API_TOKEN is not set: the API does not start without one")
    return secret.encode()


def _authorise(expected: bytes) -> Any:
    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials.encode() if credentials else b""
        # Constant time, so the token cannot be guessed byte by byte from response times.
        if not secrets.compare_digest(given, expected):
            raise HTTPException(401, "operator token required", {"WWW-Authenticate": "Bearer"})

    return check


class _Desk:
    """The app's one desk; requests take turns so one's writes never interleave another's."""

    def __init__(self) -> None:
        self.desk: ResidentDesk | None = None
        self.lock = asyncio.Lock()


async def _desk(request: Request) -> AsyncIterator[ResidentDesk]:
    holder: _Desk = request.app.state.resident_desk
    assert holder.desk is not None, "the app's lifespan opens the desk"
    async with holder.lock:
        yield holder.desk


Desk = Annotated[ResidentDesk, Depends(_desk)]


def create_app(settings: Settings, *, channel: ConsentChannel | None = None) -> FastAPI:
    """The app; ``channel`` defaults to MQTT to the running gateway."""
    expected = _token(settings)
    holder = _Desk()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        chosen = channel or mqtt_channel(settings)
        async with open_desk(settings, via="api", channel=chosen) as desk:
            holder.desk = desk
            yield

    app = FastAPI(
        title="intercom-gateway resident requests",
        version="1",
        description="A resident's requests of §8 of the privacy policy, for one dwelling.",
        lifespan=lifespan,
    )
    app.state.resident_desk = holder
    app.include_router(_routes(), dependencies=[Depends(_authorise(expected))])
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
        # Accepted, not yet applied: the broker holds it for the gateway.
        body = {"detail": str(error), "change_id": str(error.change.change_id)}
        return JSONResponse(body, status_code=202)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _routes() -> APIRouter:
    router = APIRouter(prefix="/dwellings/{building}/{dwelling}", tags=["resident requests"])

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
        start: Annotated[datetime | None, Query(alias="from", description="inclusive")] = None,
        end: Annotated[datetime | None, Query(alias="to", description="exclusive")] = None,
        fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
        third_party_only: bool = False,
    ) -> dict[str, Any] | Response:
        answer = await desk.provisions(
            building,
            dwelling,
            start=_utc(start),
            end=_utc(end),
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
