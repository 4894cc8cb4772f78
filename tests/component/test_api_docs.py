"""The API's documentation pages name no other host (issue 16): Swagger UI and ReDoc
load their scripts, styles and icon from the app, which serves the copies of the
``fastapi-offline`` package. ``tests/browser`` renders them with the network blocked."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import fastapi_offline
import httpx
import pytest
from pydantic import SecretStr

from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.docs import ASSETS
from intercom_gateway.settings import Settings

PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # The pages need no store: no lifespan runs here.
    app = create_app(Settings(api_token=SecretStr("docs-test-token")))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


@pytest.mark.parametrize("page", PAGES)
async def test_a_docs_page_names_no_other_host(http: httpx.AsyncClient, page: str) -> None:
    response = await http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert re.findall(r"(?:https?:)?//[\w.-]+", response.text) == []


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_from_their_own_origin_only(
    http: httpx.AsyncClient, page: str
) -> None:
    # ReDoc's bundle asks a CDN for its maker's logo; this policy keeps the browser from it.
    policy = (await http.get(page)).headers["content-security-policy"]
    assert policy == "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"


async def test_the_pages_load_the_assets_the_app_serves(http: httpx.AsyncClient) -> None:
    swagger = (await http.get("/docs")).text
    redoc = (await http.get("/redoc")).text
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert f"{ASSETS}/{name}" in swagger
    for name in ("redoc.standalone.js", "favicon.png"):
        assert f"{ASSETS}/{name}" in redoc
    assert "'/openapi.json'" in swagger and 'spec-url="/openapi.json"' in redoc


@pytest.mark.parametrize(("name", "media_type"), ASSET_TYPES.items())
async def test_an_asset_is_the_packages_copy(
    http: httpx.AsyncClient, name: str, media_type: str
) -> None:
    response = await http.get(f"{ASSETS}/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    package = Path(fastapi_offline.__file__).parent / "static" / name
    assert response.content == package.read_bytes()


@pytest.mark.parametrize("path", [f"{ASSETS}/", f"{ASSETS}/core.py", f"{ASSETS}/../core.py"])
async def test_nothing_else_of_the_package_is_served(http: httpx.AsyncClient, path: str) -> None:
    assert (await http.get(path)).status_code == 404


async def test_swagger_ui_asks_no_validator(http: httpx.AsyncClient) -> None:
    assert '"validatorUrl": null' in (await http.get("/docs")).text
