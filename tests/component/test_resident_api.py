"""The resident-request HTTP API (§8) over a real SQLite store: operator token, one
dwelling per request, each request type, CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from intercom_gateway.core.models import utc_now
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.errors import ConfigError
from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.resident.service import CSV_COLUMNS
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.component.test_resident import _populate

TOKEN = "test-operator-token"
BASE = "/dwellings/b001/d0001"


@pytest.fixture
async def settings(tmp_path: Path, both_stores: str) -> Settings:
    populated = await _populate(tmp_path)
    return populated.model_copy(update={"api_token": SecretStr(TOKEN)})


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    policy = load_policy(settings.policy_path)
    # No gateway runs in these tests, so consent changes go to the store.
    channel = StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    app = create_app(settings, channel=channel)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as http,
    ):
        yield http


async def _consent_of(settings: Settings, dwelling: str) -> object:
    async with open_store(settings) as store:
        return await store.consent("b001", dwelling)


async def test_api_refuses_to_start_without_a_token(settings: Settings) -> None:
    for token in (None, SecretStr(""), SecretStr("  ")):
        with pytest.raises(ConfigError, match="INTERCOM_API_TOKEN"):
            create_app(settings.model_copy(update={"api_token": token}))


ROUTES = [
    ("GET", "/purposes"),
    ("GET", "/disclosure"),
    ("GET", "/provisions"),
    ("POST", "/stop-provision/concierge"),
    ("POST", "/stop-use"),
    ("POST", "/erasure"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "])
async def test_api_without_the_operator_token_is_401_and_changes_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    method: str,
    path: str,
    authorization: str | None,
) -> None:
    before = await _consent_of(settings, "d0001")
    headers = {"Authorization": authorization} if authorization else {}
    client.headers.pop("Authorization")
    response = await client.request(method, BASE + path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert await _consent_of(settings, "d0001") == before
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    disclosure = await client.get(BASE + "/disclosure")
    assert disclosure.status_code == 200, disclosure.text
    assert disclosure.json()["requests"] == []


async def test_api_serves_its_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    prefix = "/dwellings/{building}/{dwelling}"
    assert set(paths) == {prefix + p.replace("concierge", "{partner}") for _, p in ROUTES}
    assert (await client.get("/docs")).status_code == 200


async def test_api_purposes_and_disclosure(client: httpx.AsyncClient) -> None:
    purposes = (await client.get(BASE + "/purposes")).json()
    assert purposes["dwelling_id"] == "d0001" and purposes["stopped"] is None
    assert "partner:concierge" in {d["destination"] for d in purposes["destinations"]}
    disclosure = (await client.get(BASE + "/disclosure")).json()
    assert disclosure["provision_ledger"]["rows"] == 8  # the image is a provision of its own
    assert disclosure["decision_log"]["events"] == 3
    assert [r["kind"] for r in disclosure["requests"]] == ["purposes"]


async def test_api_provisions_never_include_another_dwelling(client: httpx.AsyncClient) -> None:
    mine = (await client.get(BASE + "/provisions")).json()["records"]
    theirs = (await client.get("/dwellings/b001/d0002/provisions")).json()["records"]
    # One row per message: each visitor's image to concierge is a provision of its own.
    assert {r["dwelling_id"] for r in mine} == {"d0001"} and len(mine) == 8
    assert {r["dwelling_id"] for r in theirs} == {"d0002"} and len(theirs) == 5
    assert not {r["event_id"] for r in mine} & {r["event_id"] for r in theirs}
    third = await client.get(BASE + "/provisions", params={"third_party_only": "true"})
    records = third.json()["records"]
    assert len(records) == 5 and all(r["third_party"] for r in records)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/dwellings/b001/d0999/provisions", 404),  # no such dwelling
        ("GET", "/dwellings/b009/d0001/disclosure", 404),
        ("GET", "/dwellings/b001/D0001/provisions", 422),  # not an id
        ("GET", "/dwellings/b001/d0001%25/provisions", 422),
        ("GET", "/dwellings/b001/d0001,d0002/provisions", 422),
        ("POST", "/dwellings/b001/d0003/stop-provision/nobody", 404),
        ("POST", "/dwellings/b001/d0999/erasure", 404),
    ],
)
async def test_api_refuses_what_is_not_one_known_dwelling(
    client: httpx.AsyncClient, settings: Settings, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert "records" not in response.json() and "erased" not in response.json()
    assert (await _consent_of(settings, "d0003")) is not None


async def test_api_provisions_csv_in_a_date_range(client: httpx.AsyncClient) -> None:
    today = utc_now().date()
    params = {"format": "csv", "from": today.isoformat()}
    params["to"] = (today + timedelta(days=1)).isoformat()
    response = await client.get(BASE + "/provisions", params=params)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 8 and {r["dwelling_id"] for r in rows} == {"d0001"}
    params["from"], params["to"] = params["to"], (today + timedelta(days=2)).isoformat()
    empty = await client.get(BASE + "/provisions", params=params)
    assert empty.text.strip() == ",".join(CSV_COLUMNS)


async def test_api_stop_provision_stop_use_and_erasure(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    stopped = (await client.post(BASE + "/stop-provision/parcel-unlock")).json()
    assert stopped["outcome"] == "done"
    consent = await _consent_of(settings, "d0001")
    assert getattr(consent, "provision_stopped", None) == ("parcel-unlock",)
    use = (await client.post("/dwellings/b001/d0002/stop-use")).json()
    assert use["outcome"] == "done" and "§7(1)①" in use["continues"]
    assert getattr(await _consent_of(settings, "d0002"), "services_used", None) == ()
    erased = (await client.post(BASE + "/erasure")).json()
    assert erased["erased"] == {"decisions": 3, "rejections": 1}
    assert {k["what"] for k in erased["kept"]} >= {"provision ledger"}
    disclosure = (await client.get(BASE + "/disclosure")).json()
    # The image is a provision of its own; so is the consent notice of the stop (item 11).
    assert disclosure["provision_ledger"]["rows"] == 9
    recipients = {r["recipient"]: r for r in disclosure["provision_ledger"]["by_recipient"]}
    assert recipients["partner:parcel-unlock"]["intended"] == 1  # published at the next start
    assert disclosure["decision_log"]["events"] == 0
    assert [(r["kind"], r["via"]) for r in disclosure["requests"]] == [
        ("stop_provision", "api"),
        ("erasure", "api"),
    ]
