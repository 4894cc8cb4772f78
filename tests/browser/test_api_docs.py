"""The API's documentation pages in a real browser with no internet (issue 16): Debian's
headless Chromium, driven by Playwright, loads ``/docs`` and ``/redoc`` from an API on a
loopback port while every request to another host is refused, and finds the resident
routes listed.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium``, which
``scripts/setup`` installs from Debian's packages when it is missing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Route, sync_playwright
from pydantic import SecretStr

from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.settings import Settings
from intercom_gateway.store.sqlite import SqliteStore

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = "127.0.0.1"
PREFIX = "/dwellings/{building}/{dwelling}"
OPERATIONS = {
    ("GET", PREFIX + "/purposes"),
    ("GET", PREFIX + "/disclosure"),
    ("GET", PREFIX + "/provisions"),
    ("POST", PREFIX + "/stop-provision/{partner}"),
    ("POST", PREFIX + "/stop-use"),
    ("POST", PREFIX + "/erasure"),
}


async def _empty_store(path: Path) -> None:
    async with SqliteStore.open(path):
        pass


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API on a free loopback port, in a thread, over an empty store; its base URL."""
    db = tmp_path_factory.mktemp("api") / "gateway.sqlite"
    asyncio.run(_empty_store(db))
    settings = Settings(db_path=db, api_token=SecretStr("browser-test-token"))
    policy = load_policy(settings.policy_path)
    # No gateway runs here: a change would go to the store (none is made).
    channel = StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    app = create_app(settings, channel=channel)
    # Bound and listening before the server starts: the browser's first connection waits
    # in the backlog until the app has started, so nothing polls for readiness.
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen()
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="api")
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
    assert not thread.is_alive(), "the API did not stop"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def offline(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page that reaches 127.0.0.1 only, and the URLs it tried elsewhere."""
    refused: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == LOOPBACK:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context()
    context.route("**/*", loopback_only)
    page = context.new_page()
    try:
        yield page, refused
    finally:
        context.close()


def test_swagger_ui_lists_the_resident_operations_offline(
    api: str, offline: tuple[Page, list[str]]
) -> None:
    page, refused = offline
    page.goto(f"{api}/docs")
    blocks = page.locator(".opblock")
    blocks.nth(len(OPERATIONS) - 1).wait_for()
    listed = {
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").inner_text().strip().replace("\u200b", ""),
        )
        for block in blocks.all()
    }
    assert listed == OPERATIONS
    assert page.locator(".info .title").inner_text().startswith("intercom-gateway")
    assert refused == []


def test_redoc_renders_its_menu_offline(api: str, offline: tuple[Page, list[str]]) -> None:
    page, refused = offline
    page.goto(f"{api}/redoc")
    menu = page.locator("li[data-item-id]")
    menu.filter(has_text="Suspend use").first.wait_for()
    labels = " ".join(menu.all_inner_texts())
    for summary in ("Notification of purposes", "Disclosure of what is held", "Erase"):
        assert summary in labels
    assert refused == []
