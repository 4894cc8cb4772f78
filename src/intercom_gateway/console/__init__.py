"""The operator's web console (issue #19): the live flow, why each event went where it
went, dwellings and their consent, the ledger and §8 requests, rejected input, health.

Part of the resident-request API's app (``resident.api.create_app``), under
``/console``, behind the same tokens: a login page takes the operator's token (every
dwelling) or a resident token (its own dwelling only) and sets a signed session cookie
(``auth``). Pages are rendered on the server (Jinja2, ``templates/``); one small
hand-written script (``static/console.js``) follows the live stream and draws its
sparklines. Nothing is loaded from another host.

- ``web``: the console's state on the app, sessions, the page helper and its headers;
- ``login``: logging in and out, the static files;
- ``live``: the live flow and its server-sent event stream, read by ``queries`` (SQLite)
  or ``pg_feed`` (PostgreSQL);
- ``pages``: an event's decision, dwellings, ledger and exports, rejected input, health.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from intercom_gateway.console import live, login, pages
from intercom_gateway.console.auth import Signer
from intercom_gateway.console.queries import open_feed
from intercom_gateway.console.web import PREFIX, ConsoleState
from intercom_gateway.settings import Settings

__all__ = ["PREFIX", "ConsoleState", "mount_console", "opened"]


def mount_console(app: FastAPI, settings: Settings) -> ConsoleState:
    """Add the console's routes to ``app``; its lifespan must enter ``opened(state)``."""
    state = ConsoleState(settings=settings, signer=Signer())
    app.state.console = state
    for routes in (login.router(), live.router(), pages.router()):
        app.include_router(routes)
    return state


@asynccontextmanager
async def opened(state: ConsoleState) -> AsyncIterator[None]:
    """The console's read-only view of the store, for as long as the app runs."""
    async with open_feed(state.settings) as feed:
        state.feed = feed
        try:
            yield
        finally:
            state.feed = None
