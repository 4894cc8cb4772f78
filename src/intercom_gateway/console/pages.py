"""The console's pages other than the live flow: why, dwellings, ledger, rejected input,
health. Each reads what the CLI and the API read (the store, ``explain``, the desk, the
group's retained status), so the console shows nothing they would not.

A consent change goes through the desk and its channel, the path a panel's own change
takes (``resident.channels``): the gateway applies or refuses it and acknowledges, and
the page shows the acknowledgement. Stop provision and stop use are §8 requests,
recorded as made ``via`` the console session; every other setting a panel makes
(``changes``: register, initialise, return-home, services used, opt-outs) is sent as the
panel's own message and recorded in the consent history like any panel change. Who may
send which is ``changes``'s; initialise asks for a second, confirming form first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from intercom_gateway.console import health as console_health
from intercom_gateway.console.changes import CHANGES, OPERATOR_ONLY, body_of, name_change
from intercom_gateway.console.login import form
from intercom_gateway.console.web import (
    PREFIX,
    DataSession,
    PageSession,
    desk_of,
    operator_only,
    own_dwelling,
    page,
    state_of,
)
from intercom_gateway.core.dates import DateBoundError, parse_bound
from intercom_gateway.errors import (
    BusError,
    GatewayError,
    PendingChange,
    UnknownDwelling,
    UnknownPartner,
)
from intercom_gateway.gateway.explain import render_logged
from intercom_gateway.resident.service import provisions_csv, settings_change

IDENT = r"^[a-z0-9][a-z0-9_-]{0,47}$"  # models.Ident, as resident.api checks its paths
Ident = Annotated[str, Path(pattern=IDENT)]
LEDGER_ROWS = 1_000  # rows a ledger page shows at most; the exports have them all
REQUESTS = ("purposes", "disclosure", "provisions")  # the §8 requests a page may run


def router() -> APIRouter:
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)

    @routes.get("/events/{event_id}")
    async def event(request: Request, session: PageSession, event_id: str) -> HTMLResponse:
        store = desk_of(request, session).store
        logged = await store.decision(event_id)
        if logged is None or not session.may_see(logged.building_id, logged.dwelling_id):
            # The same answer for another dwelling's event as for none at all.
            context: dict[str, Any] = {"event_id": event_id}
            return page(request, "event.html", session, context, status_code=404)
        row = logged.as_dict()
        context = {"event_id": event_id, "row": row, "explained": render_logged(row)}
        return page(request, "event.html", session, context)

    @routes.get("/dwellings")
    async def dwellings(request: Request, session: PageSession) -> HTMLResponse:
        if session.dwelling is not None:
            b, d = session.dwelling
            return page(request, "dwellings.html", session, {"dwellings": [(b, d)]})
        feed = state_of(request).feed
        if feed is not None:
            known = await feed.dwellings()
        else:
            known = sorted(await desk_of(request, session).store.consents())
        return page(request, "dwellings.html", session, {"dwellings": known})

    @routes.get("/dwellings/{building}/{dwelling}")
    async def dwelling(
        request: Request, session: PageSession, building: Ident, dwelling: Ident
    ) -> HTMLResponse:
        own_dwelling(session, building, dwelling)
        return await _dwelling_page(request, session, building, dwelling)

    @routes.post("/dwellings/{building}/{dwelling}/{action}")
    async def act(
        request: Request,
        session: PageSession,
        building: Ident,
        dwelling: Ident,
        action: Annotated[
            str,
            Path(
                pattern=r"^(stop-provision|stop-use|purposes|disclosure|provisions|"
                r"register|initialise|return-home|service-use|resume-provision|opt-out|"
                r"accept-policy)$"
            ),
        ],
    ) -> HTMLResponse:
        own_dwelling(session, building, dwelling)
        if action in OPERATOR_ONLY and not session.operator:
            raise HTTPException(403, OPERATOR_ONLY[action])
        fields = await form(request)
        if action == "initialise" and fields.get("confirm") != "yes":
            # It resets the dwelling: nothing is sent until a second form confirms it.
            confirm: dict[str, Any] = {"confirm_initialise": True}
            return await _dwelling_page(request, session, building, dwelling, confirm)
        answer, status = await _act(request, session, building, dwelling, action, fields)
        context = {"action": action, "answer": answer, "acks": answer.get("changes", [])}
        return await _dwelling_page(request, session, building, dwelling, context, status)

    @routes.get("/ledger")
    async def ledger(
        request: Request,
        session: PageSession,
        building: str = "",
        dwelling: str = "",
        recipient: str = "",
        start: Annotated[str, Query(alias="from")] = "",
        end: Annotated[str, Query(alias="to")] = "",
    ) -> HTMLResponse:
        query = _ledger_query(session, building, dwelling, recipient, start, end)
        rows = await _provisions(request, session, query, limit=LEDGER_ROWS)
        qs = urlencode({k: v for k, v in query.items() if v})
        context = {"query": query, "rows": rows, "limit": LEDGER_ROWS, "qs": qs}
        return page(request, "ledger.html", session, context)

    @routes.get("/ledger.{fmt}", response_model=None)
    async def export(
        request: Request,
        session: DataSession,
        fmt: Annotated[str, Path(pattern="^(csv|json)$")],
        building: str = "",
        dwelling: str = "",
        recipient: str = "",
        start: Annotated[str, Query(alias="from")] = "",
        end: Annotated[str, Query(alias="to")] = "",
    ) -> Response:
        query = _ledger_query(session, building, dwelling, recipient, start, end)
        rows = await _provisions(request, session, query, limit=None)
        name = "-".join(["ledger", *(v for k, v in query.items() if v and k != "recipient")])
        disposition = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
        if fmt == "csv":
            csv = provisions_csv(rows)
            return PlainTextResponse(csv, media_type="text/csv", headers=disposition)
        return JSONResponse({"records": rows}, headers=disposition)

    @routes.get("/rejections")
    async def rejections(request: Request, session: PageSession, reason: str = "") -> HTMLResponse:
        operator_only(session)
        kept = await desk_of(request, session).store.rejections(limit=500)
        reasons: dict[str, int] = {}
        for r in kept:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        shown = [r.as_dict() for r in kept if not reason or r.reason == reason]
        context = {"reasons": sorted(reasons.items()), "reason": reason, "rows": shown}
        return page(request, "rejections.html", session, context)

    @routes.get("/health")
    async def health(request: Request, session: PageSession) -> HTMLResponse:
        operator_only(session)
        store = desk_of(request, session).store
        report = await console_health.report(state_of(request).settings, store)
        return page(request, "health.html", session, {"report": report})

    return routes


async def _dwelling_page(
    request: Request,
    session: PageSession,
    building: str,
    dwelling: str,
    extra: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    desk = desk_of(request, session)
    store = desk.store
    if not await store.dwelling_known(building, dwelling):
        context = {"building": building, "dwelling": dwelling, "unknown": True}
        return page(request, "dwelling.html", session, context, status_code=404)
    consent = await store.consent(building, dwelling)
    context = {
        "building": building,
        "dwelling": dwelling,
        "consent": consent.model_dump(mode="json") if consent else None,
        "history": [
            {**c.as_dict(), "named": name_change(c.change)}
            for c in await store.consent_history(building, dwelling)
        ],
        "requests": [r.as_dict() for r in await store.requests(building, dwelling)],
        "partners": [s.id for s in desk.partners.services],
        "opt_out_purposes": sorted(desk.policy.opt_out_purposes),
        "policy_version": desk.policy.version,
        **(extra or {}),
    }
    return page(request, "dwelling.html", session, context, status_code=status_code)


async def _act(
    request: Request,
    session: PageSession,
    building: str,
    dwelling: str,
    action: str,
    fields: dict[str, str],
) -> tuple[dict[str, Any], int]:
    """Run one action of the dwelling page: its answer (the acknowledgements of a change)
    and the status the page is sent with."""
    desk = desk_of(request, session)
    lock = request.app.state.resident_api.lock
    try:
        async with lock:  # the desk serves one request at a time, as the API's routes
            if action == "stop-provision":
                return await desk.stop_provision(building, dwelling, fields.get("partner", "")), 200
            if action == "stop-use":
                return await desk.stop_use(building, dwelling), 200
            if action in CHANGES:
                if not await desk.store.dwelling_known(building, dwelling):
                    raise UnknownDwelling(building, dwelling)
                body = body_of(action, fields, desk.policy)
                change = settings_change(building, dwelling, body, now=desk.clock())
                ack = await desk.channel.submit(change, store=desk.store)
                return {"changes": [ack.model_dump(mode="json")]}, 200
            if action == "purposes":
                return await desk.purposes(building, dwelling), 200
            if action == "disclosure":
                return await desk.disclose(building, dwelling), 200
            return await desk.provisions(building, dwelling, start=None, end=None), 200
    except (UnknownPartner, UnknownDwelling) as error:
        return {"error": str(error)}, 404
    except ValidationError as error:  # a form naming what no panel message can carry
        return {"error": f"not a valid setting: {error.errors()[0]['msg']}"}, 422
    except PendingChange as error:
        return {"pending": str(error), "change_id": str(error.change.change_id)}, 202
    except BusError as error:
        return {"error": str(error)}, 503
    except GatewayError as error:
        return {"error": str(error)}, 400


def _ledger_query(
    session: PageSession, building: str, dwelling: str, recipient: str, start: str, end: str
) -> dict[str, str]:
    if session.dwelling is not None:
        building, dwelling = session.dwelling
    return {
        "building": building,
        "dwelling": dwelling,
        "recipient": recipient,
        "from": start,
        "to": end,
    }


async def _provisions(
    request: Request, session: PageSession, query: dict[str, str], *, limit: int | None
) -> list[dict[str, Any]]:
    bounds: dict[str, datetime | None] = {}
    for name in ("from", "to"):
        try:
            bounds[name] = parse_bound(query[name], name=name) if query[name] else None
        except DateBoundError as error:
            raise HTTPException(422, str(error)) from None
    records = await desk_of(request, session).store.provisions(
        building_id=query["building"] or None,
        dwelling_id=query["dwelling"] or None,
        start=bounds["from"],
        end=bounds["to"],
        limit=None if query["recipient"] else limit,
    )
    rows = [r.as_dict() for r in records]
    if session.dwelling is not None:  # defence in depth, as the desk's own query
        rows = [r for r in rows if (r["building_id"], r["dwelling_id"]) == session.dwelling]
    if query["recipient"]:
        rows = [r for r in rows if r["recipient"] == query["recipient"]]
    return rows if limit is None else rows[:limit]
