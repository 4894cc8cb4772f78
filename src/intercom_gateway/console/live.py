"""The live flow: the page, and its server-sent event stream.

``GET /console/stream`` polls the decision log and the rejected input in the order they
were written (``queries.Feed``), every ``POLL`` seconds, one poller per open stream, and
sends each new entry the filters keep as one SSE message whose id is the position after
it: a browser that reconnects sends it back (``Last-Event-ID``) and misses nothing. A
resident session's stream is its own dwelling's, whatever it asks for, and never shows
rejected input (which names no trusted dwelling).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from intercom_gateway.console.auth import Session
from intercom_gateway.console.queries import Feed, Filter, Position
from intercom_gateway.console.web import HEADERS, PREFIX, DataSession, PageSession, page, state_of

POLL = 0.25  # seconds between two reads of the log
BACKLOG = 20  # decisions a new stream starts with, so the page is not empty
COMPLETES = 30.0  # seconds a shown event is watched for its completion (its latency)
WAITING = 500  # events watched at most: the oldest are given up first
KEEPALIVE = 15.0  # seconds: a comment line keeps proxies from closing an idle stream


def _asked(
    building: str = "",
    dwelling: str = "",
    event_type: Annotated[str, Query(alias="type")] = "",
    destination: str = "",
    partner: str = "",
) -> Filter:
    """The filters the query string asks for: one set of parameters for page and stream."""
    return Filter(building, dwelling, event_type, destination, partner)


Asked = Annotated[Filter, Depends(_asked)]


def _filter(session: Session, asked: Filter) -> Filter:
    """What ``session`` may see of ``asked``: a resident's own dwelling, whatever it asks."""
    if session.dwelling is None:
        return asked
    building, dwelling = session.dwelling
    return dataclasses.replace(asked, building=building, dwelling=dwelling)


def router() -> APIRouter:
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)

    @routes.get("/")
    async def live(request: Request, session: PageSession, asked: Asked) -> HTMLResponse:
        return page(request, "live.html", session, {"filter": _filter(session, asked)})

    @routes.get("/stream")
    async def stream(
        request: Request,
        session: DataSession,
        asked: Asked,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        feed = state_of(request).feed
        assert feed is not None, "the app's lifespan opens the feed"
        chosen = _filter(session, asked)
        start = Position.parse(last_event_id) or await feed.position(back=BACKLOG)
        headers = {**HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _messages(request, feed, chosen, start), media_type="text/event-stream", headers=headers
        )

    return routes


async def _messages(
    request: Request, feed: Feed, chosen: Filter, at: Position
) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    idle = 0.0
    waiting: dict[str, tuple[float, float]] = {}  # event id -> (decided, give up at)
    while not await request.is_disconnected():
        items, moved = await feed.since(at)
        for item in items:
            at = at.after(item)
            if chosen.keeps(item):
                yield f"id: {at.text()}\nevent: {item['kind']}\ndata: {json.dumps(item)}\n\n"
                if item["kind"] == "decision" and item["latency_ms"] is None:
                    waiting[item["event_id"]] = (item["decided"], item["decided"] + COMPLETES)
        at = moved
        if waiting:
            async for message in _completions(feed, waiting):
                yield message
        if items:
            idle = 0.0
            continue  # perhaps a backlog: read on at once
        idle += POLL
        if idle >= KEEPALIVE:
            idle = 0.0
            yield ": still here\n\n"
        await asyncio.sleep(POLL)


async def _completions(feed: Feed, waiting: dict[str, tuple[float, float]]) -> AsyncIterator[str]:
    """A ``completed`` message (no id: it moves no position) for each event shown whose
    completion is now written, with its latency; events that take longer than
    ``COMPLETES`` are given up on (the page shows them without one)."""
    done = await feed.completions(list(waiting)[-WAITING:])
    for event_id, completed in done.items():
        decided, _ = waiting.pop(event_id)
        latency = round((completed - decided) * 1000, 1)
        data = json.dumps({"event_id": event_id, "latency_ms": latency})
        yield f"event: completed\ndata: {data}\n\n"
    now = time.time()
    for event_id in [e for e, (_, give_up) in waiting.items() if give_up < now]:
        del waiting[event_id]
    while len(waiting) > WAITING:
        del waiting[next(iter(waiting))]
