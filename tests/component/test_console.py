"""The operator's console without a browser: who reaches which page (issue #19). Every
page answers 303 to the login page, every stream and export 401, without a valid
session; a forged, tampered or expired cookie is no session; a resident session sees
its own dwelling and gets 403 elsewhere; and what the pages and the stream show is the
store's. Over a store the gateway filled (``test_resident._populate``), SQLite."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import SecretStr

from intercom_gateway.console import live
from intercom_gateway.console.auth import COOKIE, Signer, operator_session, resident_session
from intercom_gateway.console.queries import Filter, Position
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.resident.service import provisions_csv
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.component.test_api_scopes import OPERATOR, _copy, _issue, _routes
from tests.component.test_resident import _populate

# Every route of the console (test_api_scopes leaves them to this module).
PAGES = [
    ("GET", "/console/"),
    ("GET", "/console/events/{event_id}"),
    ("GET", "/console/dwellings"),
    ("GET", "/console/dwellings/b001/d0001"),
    ("POST", "/console/dwellings/b001/d0001/purposes"),
    ("GET", "/console/ledger"),
    ("GET", "/console/rejections"),
    ("GET", "/console/health"),
]
DATA = [
    ("GET", "/console/stream"),
    ("GET", "/console/ledger.csv"),
    ("GET", "/console/ledger.json"),
]
# A listed path -> the route that serves it.
TEMPLATED = {
    "/console/dwellings/b001/d0001": "/console/dwellings/{building}/{dwelling}",
    "/console/dwellings/b001/d0001/purposes": "/console/dwellings/{building}/{dwelling}/{action}",
    "/console/ledger.csv": "/console/ledger.{fmt}",
    "/console/ledger.json": "/console/ledger.{fmt}",
}
PUBLIC = [
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
    ("GET", "/console/static/console.js"),
    ("GET", "/console/static/console.css"),
]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("INTERCOM_STORE", raising=False)
        return asyncio.run(_populate(tmp_path_factory.mktemp("console")))


class Console:
    def __init__(self, http: httpx.AsyncClient, app: FastAPI, settings: Settings) -> None:
        self.http = http
        self.app = app
        self.settings = settings

    async def login(self, token: str) -> httpx.Response:
        return await self.http.post("/console/login", data={"token": token})


@pytest.fixture
async def console(populated: Settings, tmp_path: Path) -> AsyncIterator[Console]:
    settings = _copy(populated, tmp_path)
    policy = load_policy(settings.policy_path)
    channel = StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    app = create_app(settings, channel=channel)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://console") as http,
    ):
        yield Console(http, app, settings)


async def _event_id(settings: Settings, dwelling: str) -> str:
    async with open_store(settings) as store:
        [first, *_] = await store.provisions(building_id="b001", dwelling_id=dwelling)
    return first.event_id


def _path(path: str, event_id: str) -> str:
    return path.replace("{event_id}", event_id)


def test_the_lists_cover_every_route_the_console_registers(populated: Settings) -> None:
    app = create_app(populated.model_copy(update={"api_token": SecretStr(OPERATOR)}))
    registered = {
        (method, route.path)
        for route in _routes(app.routes)
        if isinstance(route, APIRoute) and route.path.startswith("/console/")
        for method in (route.methods or set()) - {"HEAD"}
    }
    listed = {(m, TEMPLATED.get(p, p)) for m, p in PAGES + DATA + PUBLIC}
    assert registered == listed


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PAGES)
async def test_every_page_sends_a_stranger_to_the_login(
    console: Console, method: str, path: str
) -> None:
    event_id = await _event_id(console.settings, "d0001")
    response = await console.http.request(method, _path(path, event_id))
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    assert "d0001" not in response.text


@pytest.mark.parametrize(("method", "path"), DATA)
async def test_every_stream_and_export_answers_401_without_a_login(
    console: Console, method: str, path: str
) -> None:
    response = await console.http.request(method, path)
    assert response.status_code == 401
    assert "b001" not in response.text


async def test_a_wrong_token_is_refused_and_sets_no_cookie(console: Console) -> None:
    response = await console.login("not-the-token")
    assert response.status_code == 401
    assert COOKIE not in response.cookies
    assert "not a valid token" in response.text
    assert (await console.http.get("/console/")).status_code == 303


@pytest.mark.parametrize("kind", ["forged", "tampered", "expired", "garbage"])
async def test_a_cookie_not_signed_now_by_this_app_is_no_session(
    console: Console, kind: str
) -> None:
    ours = console.app.state.console.signer
    past = time.time() - 9 * 3600
    value = {
        "forged": Signer().sign(operator_session()),  # another key
        "tampered": ours.sign(operator_session()).replace(".", "x.", 1),
        "expired": ours.sign(operator_session(now=past)),
        "garbage": "not.a-cookie",
    }[kind]
    console.http.cookies.set(COOKIE, value, domain="console", path="/console")
    assert (await console.http.get("/console/dwellings")).status_code == 303
    assert (await console.http.get("/console/stream")).status_code == 401


# --- the operator -----------------------------------------------------------------------


async def test_the_operator_logs_in_with_a_strict_httponly_cookie_and_out_again(
    console: Console,
) -> None:
    response = await console.login(OPERATOR)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert OPERATOR not in response.headers["set-cookie"]
    page = await console.http.get("/console/dwellings")
    assert page.status_code == 200
    assert "b001/d0001" in page.text and "b001/d0002" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    await console.http.post("/console/logout")
    assert (await console.http.get("/console/dwellings")).status_code == 303


async def test_the_event_page_renders_the_logged_decision(console: Console) -> None:
    await console.login(OPERATOR)
    event_id = await _event_id(console.settings, "d0001")
    async with open_store(console.settings) as store:
        logged = await store.decision(event_id)
    assert logged is not None
    page = await console.http.get(f"/console/events/{event_id}")
    assert page.status_code == 200
    for outcome in logged.outcomes:
        assert f'data-destination="{outcome["destination"]}"' in page.text
        if not outcome["forwarded"]:
            assert outcome["reason"] in page.text
    unknown = await console.http.get("/console/events/no-such-event")
    assert unknown.status_code == 404 and "No decision" in unknown.text


async def test_the_ledger_export_is_what_resident_provisions_gives(console: Console) -> None:
    await console.login(OPERATOR)
    query = {"building": "b001", "dwelling": "d0001"}
    exported = await console.http.get("/console/ledger.csv", params=query)
    assert exported.status_code == 200
    async with open_store(console.settings) as store:
        records = await store.provisions(building_id="b001", dwelling_id="d0001")
    assert exported.text == provisions_csv([r.as_dict() for r in records])
    assert len(list(csv.DictReader(io.StringIO(exported.text)))) == len(records) > 0
    as_json = (await console.http.get("/console/ledger.json", params=query)).json()
    assert as_json["records"] == [r.as_dict() for r in records]


async def test_the_stream_sends_the_latest_decisions_as_server_sent_events(
    console: Console,
) -> None:
    # httpx's ASGI transport waits for a whole body, so the stream is read from its
    # generator here, for one poll; tests/browser follow it live through a real server.
    class OnePoll:
        polls = 0

        async def is_disconnected(self) -> bool:
            self.polls += 1
            return self.polls > 1

    feed = console.app.state.console.feed
    start = await feed.position(back=live.BACKLOG)
    chosen = Filter(dwelling="d0001")
    text = "".join([m async for m in live._messages(OnePoll(), feed, chosen, start)])  # type: ignore[arg-type]
    messages = [m for m in text.split("\n\n") if m.startswith("id: ")]
    assert messages
    for message in messages:
        _, kind, data = message.split("\n")
        item = json.loads(data.removeprefix("data: "))
        assert kind == "event: decision" and item["dwelling_id"] == "d0001"
        assert {o["result"] for o in item["outcomes"]} <= {"forwarded", "withheld"}
    # The id is where a reconnecting browser resumes: after the last one, nothing is new.
    last = Position.parse(messages[-1].split("\n")[0].removeprefix("id: "))
    assert last is not None
    assert [i for i in (await feed.since(last))[0] if chosen.keeps(i)] == []


# --- a resident session -----------------------------------------------------------------


async def test_a_resident_session_reaches_its_own_dwelling_only(console: Console) -> None:
    tokens, _ = await _issue(console.settings)
    own = tokens["own"]
    assert own is not None
    assert (await console.login(own)).status_code == 303
    assert (await console.http.get("/console/dwellings/b001/d0001")).status_code == 200
    for path in ("/console/dwellings/b001/d0002", "/console/dwellings/b999/d0001"):
        refused = await console.http.get(path)
        assert refused.status_code == 403
        assert "d0002" not in refused.text and "b999" not in refused.text
    for path in ("/console/rejections", "/console/health"):
        assert (await console.http.get(path)).status_code == 403
    other = await _event_id(console.settings, "d0002")
    assert (await console.http.get(f"/console/events/{other}")).status_code == 404
    mine = await _event_id(console.settings, "d0001")
    assert (await console.http.get(f"/console/events/{mine}")).status_code == 200
    # Whatever it asks for, the export is its own dwelling's.
    exported = await console.http.get("/console/ledger.json", params={"dwelling": "d0002"})
    records = exported.json()["records"]
    assert records and {(r["building_id"], r["dwelling_id"]) for r in records} == {
        ("b001", "d0001")
    }


async def test_revoking_its_token_ends_a_resident_session(console: Console) -> None:
    tokens, ids = await _issue(console.settings)
    own = tokens["own"]
    assert own is not None
    await console.login(own)
    assert (await console.http.get("/console/dwellings/b001/d0001")).status_code == 200
    book = console.app.state.resident_api.tokens
    from intercom_gateway.core.models import utc_now

    await book.revoke(ids["own"], actor="t", now=utc_now())
    assert (await console.http.get("/console/dwellings/b001/d0001")).status_code == 303


async def test_revoked_and_expired_tokens_do_not_log_in(console: Console) -> None:
    tokens, _ = await _issue(console.settings)
    for who in ("revoked", "expired", "forged", "malformed"):
        token = tokens[who]
        assert token is not None
        assert (await console.login(token)).status_code == 401, who


# --- the stream's filter ------------------------------------------------------------------


def test_the_filter_keeps_what_each_field_names() -> None:
    decision = {
        "kind": "decision",
        "building_id": "b001",
        "dwelling_id": "d0001",
        "event_type": "visitor",
        "outcomes": [{"destination": "cloud"}, {"destination": "partner:concierge"}],
    }
    rejection = {"kind": "rejection"}
    assert Filter().keeps(decision) and Filter().keeps(rejection)
    assert Filter(destination="partner").keeps(decision)
    assert Filter(partner="concierge").keeps(decision)
    assert not Filter(partner="cleaning").keeps(decision)
    assert not Filter(destination="analytics").keeps(decision)
    assert not Filter(dwelling="d0002").keeps(decision)
    assert not Filter(event_type="alarm").keeps(decision)
    assert not Filter(dwelling="d0001").keeps(rejection)


def test_a_resident_streams_its_own_dwelling_whatever_it_asks_for() -> None:
    session = resident_session("0123456789abcdef", "b001", "d0001")
    chosen = live._filter(session, Filter(building="b002", dwelling="d0002"))
    assert (chosen.building, chosen.dwelling) == ("b001", "d0001")
    assert not chosen.keeps({"kind": "rejection"})
    operator = live._filter(operator_session(), Filter())
    assert operator == Filter()


def test_the_console_command_serves_the_apis_app_and_says_where(
    populated: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from intercom_gateway.cli import web
    from intercom_gateway.cli.main import main

    served: list[FastAPI] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    monkeypatch.setattr(web, "_say_if_no_gateway", lambda _: None)
    monkeypatch.setenv("INTERCOM_API_TOKEN", OPERATOR)
    settings = _copy(populated, tmp_path)
    args = ["console", "--db", str(settings.db_path), "--port", "8099"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "console on http://127.0.0.1:8099/console/" in result.output
    [app] = served
    assert app.state.console.settings.db_path == settings.db_path
