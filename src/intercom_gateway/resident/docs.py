"""The API's documentation pages, served with no internet.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, so they
render blank on a machine without internet. Here the same pages load their scripts,
styles and icon from the copies the ``fastapi-offline`` package ships (the ``api``
extra), served by the app itself under ``/docs/assets/``: no page names another host.
ReDoc's bundle still shows its maker's logo from their CDN; the pages' Content Security
Policy lets them load from their own origin only, so the browser never asks for it (the
logo hides itself) and never tells another host that someone reads these pages.

Each asset is a route of its own, not a static mount of a folder: the app serves these
four files and nothing else from the package, and every route stays listed in one place
(``tests/component/test_api_scopes.py`` checks who reaches each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = "/docs/assets"
_FOLDER = Path(fastapi_offline.__file__).parent / "static"
# name -> media type: the files the pages load, and nothing else.
_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# Any host but the API's own is refused; inline code and eval stay allowed, as the two
# bundles need them.
_OWN_ORIGIN_ONLY = {
    "Content-Security-Policy": "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"
}
# Swagger UI's validator badge would ask validator.swagger.io about the document.
_SWAGGER_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def serve_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add ``/docs``, its OAuth2 redirect, ``/redoc`` and their assets to ``app``, which
    was made with ``docs_url=None, redoc_url=None``."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's CDN pages are off"
    title = app.title

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=f"{root}{docs_url}/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters or _SWAGGER_PARAMETERS,
        )
        page.headers.update(_OWN_ORIGIN_ONLY)
        return page

    @app.get(f"{docs_url}/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(_OWN_ORIGIN_ONLY)
        return page

    for name, media_type in _FILES.items():
        app.add_api_route(f"{ASSETS}/{name}", _asset(name, media_type), include_in_schema=False)


def _asset(name: str, media_type: str) -> Any:
    path = _FOLDER / name

    async def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    asset.__name__ = f"asset_{name.replace('-', '_').replace('.', '_')}"
    return asset
