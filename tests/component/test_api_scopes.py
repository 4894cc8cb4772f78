"""Who reaches which route of the HTTP API: every route `create_app` registers, against
no token, the operator's, a resident token of the route's dwelling, one of another
dwelling, and revoked, expired and forged ones; and extreme dates answered 422, never
500, in the API and the CLI (issue 13, items 8 and 9). Over a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import BaseRoute, Route

from intercom_gateway.cli.main import main
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.resident.tokens import TokenBook
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.component.test_resident import _populate
from tests.stores import Databases, copy_database, store_args

OPERATOR = "test-operator-token"
BASE = "/dwellings/b001/d0001"

# Every route of the app. A route added without a row here fails
# test_the_matrix_covers_every_route_the_app_registers.
DWELLING_ROUTES = [
    ("GET", BASE + "/purposes"),
    ("GET", BASE + "/disclosure"),
    ("GET", BASE + "/provisions"),
    ("POST", BASE + "/stop-provision/concierge"),
    ("POST", BASE + "/stop-use"),
    ("POST", BASE + "/erasure"),
]
# Public, as they were before resident tokens: they describe the API, hold no dwelling's data.
PUBLIC_ROUTES = [
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    # What the pages load, from the package rather than a CDN (resident/docs.py).
    ("GET", "/docs/assets/swagger-ui-bundle.js"),
    ("GET", "/docs/assets/swagger-ui.css"),
    ("GET", "/docs/assets/redoc.standalone.js"),
    ("GET", "/docs/assets/favicon.png"),
]
# Who asks, and what a dwelling route of b001/d0001 answers them.
WHO = {
    "none": 401,
    "operator": 200,
    "own": 200,  # a resident token of b001/d0001
    "other": 403,  # a resident token of b001/d0002
    "revoked": 401,  # of b001/d0001, revoked
    "expired": 401,  # of b001/d0001, expired
    "forged": 401,  # the id of the own token with another secret
    "malformed": 401,
}


@dataclass
class Api:
    http: httpx.AsyncClient
    app: FastAPI
    settings: Settings
    tokens: dict[str, str | None]
    ids: dict[str, str]

    async def ask(self, method: str, path: str, who: str, **kwargs: Any) -> httpx.Response:
        token = self.tokens[who]
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Settings:
    """Filled by the gateway once per module; each test works on its own copy (of the
    SQLite file, or of the PostgreSQL database with ``--store=postgres``)."""
    with pytest.MonkeyPatch.context() as env:
        if request.config.getoption("store") == "postgres":
            databases: Databases = request.getfixturevalue("pg_databases")
            env.setenv("INTERCOM_STORE", databases.create())
        else:
            env.delenv("INTERCOM_STORE", raising=False)
        return asyncio.run(_populate(tmp_path_factory.mktemp("populated")))


def _copy(populated: Settings, into: Path) -> Settings:
    if populated.store is not None:
        return populated.model_copy(
            update={"store": copy_database(populated.store), "api_token": SecretStr(OPERATOR)}
        )
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{populated.db_path}{suffix}")
        if source.exists():
            shutil.copy(source, into / f"gateway.sqlite{suffix}")
    return populated.model_copy(
        update={"db_path": into / "gateway.sqlite", "api_token": SecretStr(OPERATOR)}
    )


async def _issue(settings: Settings) -> tuple[dict[str, str | None], dict[str, str]]:
    now = utc_now()
    async with open_store(settings) as store:
        book = TokenBook(store)
        issued = {
            who: await book.issue(
                "b001", dwelling, label=who, expires_at=now + timedelta(days=1), actor="t", now=now
            )
            for who, dwelling in (("own", "d0001"), ("other", "d0002"), ("revoked", "d0001"))
        }
        past = now - timedelta(days=2)
        issued["expired"] = await book.issue(
            "b001", "d0001", label="", expires_at=past + timedelta(days=1), actor="t", now=past
        )
        await book.revoke(issued["revoked"].info.token_id, actor="t", now=now)
    tokens: dict[str, str | None] = {who: i.token for who, i in issued.items()}
    own = issued["own"]
    tokens |= {"none": None, "operator": OPERATOR, "malformed": "icrt_not-a-token"}
    tokens["forged"] = own.token[: -len("secret")] + "secret"
    return tokens, {who: i.info.token_id for who, i in issued.items()}


@pytest.fixture
async def api(populated: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    settings = _copy(populated, tmp_path)
    tokens, ids = await _issue(settings)
    policy = load_policy(settings.policy_path)
    channel = StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    app = create_app(settings, channel=channel)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        yield Api(http, app, settings, tokens, ids)


async def _state(settings: Settings, dwelling: str) -> tuple[Any, list[dict[str, Any]]]:
    """What a refused request must not have changed: consent and the requests on record."""
    async with open_store(settings) as store:
        requests = [r.as_dict() for r in await store.requests("b001", dwelling)]
        return await store.consent("b001", dwelling), requests


# --- the matrix ----------------------------------------------------------------------------


def _routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # FastAPI 0.165 keeps an included router whole (its routes carry its prefix).
        included = getattr(route, "original_router", None)
        yield from _routes(included.routes) if included is not None else (route,)


def test_the_matrix_covers_every_route_the_app_registers(populated: Settings) -> None:
    app = create_app(populated.model_copy(update={"api_token": SecretStr(OPERATOR)}))
    registered = set()
    for route in _routes(app.routes):
        assert isinstance(route, APIRoute | Route), route
        for method in route.methods or ():
            # HEAD: Starlette's automatic twin of every GET. The console's routes answer
            # a session cookie, not a bearer token: test_console's matrix covers them.
            if method != "HEAD" and not route.path.startswith("/console/"):
                registered.add((method, route.path))
    prefix = "/dwellings/{building}/{dwelling}"
    matrix = {(m, p.replace(BASE, prefix)) for m, p in DWELLING_ROUTES + PUBLIC_ROUTES}
    assert registered == {(m, p.replace("concierge", "{partner}")) for m, p in matrix}


@pytest.mark.parametrize("who", list(WHO))
@pytest.mark.parametrize(("method", "path"), DWELLING_ROUTES)
async def test_a_dwelling_route_answers_by_who_asks(
    api: Api, method: str, path: str, who: str
) -> None:
    before = {d: await _state(api.settings, d) for d in ("d0001", "d0002")}
    response = await api.ask(method, path, who)
    assert response.status_code == WHO[who], response.text
    if WHO[who] == 200:
        assert response.json()["dwelling_id"] == "d0001"
        [*_, recorded] = (await _state(api.settings, "d0001"))[1]
        via = "api" if who == "operator" else f"api:token:{api.ids['own']}"
        assert (recorded["request_id"], recorded["via"]) == (response.json()["request_id"], via)
        return
    # Refused: a reason and nothing else; nothing of the dwelling, nothing changed or recorded.
    assert set(response.json()) == {"detail"}
    assert "d0001" not in response.text and "d0002" not in response.text
    if WHO[who] == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert {d: await _state(api.settings, d) for d in ("d0001", "d0002")} == before


@pytest.mark.parametrize("who", list(WHO))
@pytest.mark.parametrize(("method", "path"), PUBLIC_ROUTES)
async def test_the_api_description_stays_public_to_everyone(
    api: Api, method: str, path: str, who: str
) -> None:
    response = await api.ask(method, path, who)
    assert response.status_code == 200
    assert "icrt_" not in response.text.replace("icrt_<", "")  # the format, never a token


@pytest.mark.parametrize(
    "path",
    [
        "/dwellings/b001/d0002/disclosure",  # a neighbour
        "/dwellings/b001/d0999/disclosure",  # no such dwelling: 403 all the same, not 404
        "/dwellings/b009/d0001/disclosure",  # the same dwelling id in another building
        "/dwellings/b001/d0002/provisions?from=0001-01-01T00:00:00%2B14:00",  # scope first
    ],
)
async def test_a_resident_token_never_learns_whether_another_dwelling_exists(
    api: Api, path: str
) -> None:
    response = await api.ask("GET", path, "own")
    assert response.status_code == 403
    assert response.json() == {"detail": "a resident token reaches its own dwelling only"}
    operator = await api.ask("GET", path.split("?")[0], "operator")
    assert operator.status_code == (200 if "d0002" in path else 404)


async def test_a_resident_token_makes_every_request_of_its_dwelling_recorded_by_its_id(
    api: Api,
) -> None:
    for method, path in DWELLING_ROUTES:
        assert (await api.ask(method, path, "own")).status_code == 200, path
    disclosure = (await api.ask("GET", BASE + "/disclosure", "operator")).json()
    via = f"api:token:{api.ids['own']}"
    kinds = ["purposes", "disclosure", "provisions", "stop_provision", "stop_use", "erasure"]
    assert [(r["kind"], r["via"]) for r in disclosure["requests"]] == [(k, via) for k in kinds]


async def test_the_disclosure_lists_the_dwellings_tokens_by_id_and_dates_only(api: Api) -> None:
    disclosure = (await api.ask("GET", BASE + "/disclosure", "own")).json()
    listed = {t["token_id"]: t for t in disclosure["api_tokens"]}
    assert set(listed) == {api.ids[w] for w in ("own", "revoked", "expired")}  # not d0002's
    assert all(
        set(t) == {"token_id", "created_at", "expires_at", "revoked_at"} for t in listed.values()
    )
    assert listed[api.ids["revoked"]]["revoked_at"] is not None
    assert listed[api.ids["own"]]["revoked_at"] is None
    assert "icrt_" not in json.dumps(disclosure)


async def test_a_token_revoked_from_the_cli_is_refused_by_the_running_api(api: Api) -> None:
    assert (await api.ask("GET", BASE + "/purposes", "own")).status_code == 200
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["token", "revoke", api.ids["own"], *store_args(api.settings)]
    )
    assert result.exit_code == 0, result.output
    refused = await api.ask("GET", BASE + "/purposes", "own")
    assert refused.status_code == 401
    assert refused.json() == {"detail": f"token {api.ids['own']} is revoked"}


async def test_the_openapi_document_describes_both_bearer_tokens(api: Api) -> None:
    document = (await api.ask("GET", "/openapi.json", "none")).json()
    schemes = document["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "operatorToken": ("http", "bearer"),
        "residentToken": ("http", "bearer"),
    }
    assert schemes["residentToken"]["bearerFormat"].startswith("icrt_")
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation["security"] == [{"operatorToken": []}, {"residentToken": []}], path
            assert {"401", "403", "422"} <= set(operation["responses"]), path


# --- dates -----------------------------------------------------------------------------------

BAD_BOUNDS = [
    ({"from": "0001-01-01T00:00:00+14:00"}, "year 1 is outside 2000..2999"),
    ({"to": "9999-12-31T23:59:59-14:00"}, "year 9999 is outside 2000..2999"),
    ({"from": "0001-01-01T00:00:00+00:01"}, "year 1 is outside"),
    ({"from": "1999-12-31T23:59:59+00:00"}, "year 1999 is outside"),
    ({"to": "3000-01-01"}, "year 3000 is outside"),
    ({"from": "2026-04-01T00:00:00+14:01"}, "offset +14:01 is outside ±14:00"),
    ({"to": "2026-04-01T00:00:00-23:59"}, "offset -23:59 is outside ±14:00"),
    ({"from": "garbage"}, "'garbage' is not an ISO 8601 date"),
    ({"from": ""}, "is not an ISO 8601 date"),
    ({"from": "0"}, "'0' is not an ISO 8601 date"),  # not a Unix time either
    ({"from": "2026-04-02", "to": "2026-04-01"}, "from (2026-04-02T00:00:00+00:00) is after to"),
    (
        {"from": "2026-04-01T09:00:00+09:00", "to": "2026-03-31T23:59:59-00:00"},
        "is after to",  # compared as instants, not as text
    ),
]
GOOD_BOUNDS = [
    {"from": "2000-01-01T00:00:00+14:00", "to": "2999-12-31T23:59:59-14:00"},
    {"from": "2026-04-01", "to": "2026-04-01"},  # empty, not an error
    {"from": "2026-04-01T09:00:00+09:00", "to": "2026-04-01T00:00:00Z"},  # the same instant
]


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize(("bounds", "reason"), BAD_BOUNDS)
async def test_api_answers_422_with_the_reason_for_a_bad_date(
    api: Api, bounds: dict[str, str], reason: str, fmt: str
) -> None:
    for who in ("operator", "own"):
        response = await api.ask("GET", BASE + "/provisions", who, params={**bounds, "format": fmt})
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert reason in error["msg"]
        assert error["loc"][0] == "query" and error["loc"][1] in bounds
    _, requests = await _state(api.settings, "d0001")
    assert requests == []  # refused before the desk: not a request made


@pytest.mark.parametrize("bounds", GOOD_BOUNDS)
async def test_api_accepts_the_edges_of_the_range(api: Api, bounds: dict[str, str]) -> None:
    response = await api.ask("GET", BASE + "/provisions", "own", params=bounds)
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert len(records) == (8 if bounds["from"].startswith("2000") else 0)  # image: own row


def _cli(settings: Settings, *options: str) -> Any:
    args = ["resident", "provisions", "b001", "d0001", *options, *store_args(settings)]
    return CliRunner().invoke(main, args)


def _options(bounds: dict[str, str]) -> list[str]:
    return [part for key, value in bounds.items() for part in (f"--{key}", value)]


@pytest.mark.parametrize(("bounds", "reason"), BAD_BOUNDS)
def test_cli_says_one_line_and_exits_2_for_a_bad_date(
    populated: Settings, tmp_path: Path, bounds: dict[str, str], reason: str
) -> None:
    settings = _copy(populated, tmp_path)
    result = _cli(settings, *_options(bounds))
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: --") and reason in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("bounds", GOOD_BOUNDS)
def test_cli_accepts_the_edges_of_the_range(
    populated: Settings, tmp_path: Path, bounds: dict[str, str]
) -> None:
    result = _cli(_copy(populated, tmp_path), *_options(bounds))
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)["records"]
    assert len(records) == (8 if bounds["from"].startswith("2000") else 0)  # image: own row


def test_ledger_purge_refuses_a_retention_past_the_calendar(
    populated: Settings, tmp_path: Path
) -> None:
    db = store_args(_copy(populated, tmp_path))
    huge = CliRunner().invoke(main, ["ledger", "purge", "--older-than-days", "10000000", *db])
    assert huge.exit_code == 2 and "10000000 is not in the range" in huge.output
    env = {"INTERCOM_LEDGER_RETENTION_DAYS": "1000000000"}
    from_env = CliRunner().invoke(main, ["ledger", "purge", *db], env=env)
    assert from_env.exit_code == 2, from_env.output
    assert from_env.output.splitlines() == [
        "Error: INTERCOM_LEDGER_RETENTION_DAYS=1000000000 is more than 36525 days (100 years)"
    ]
