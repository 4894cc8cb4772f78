"""The operator's console in a real browser against a real stack (issue #19): Mosquitto
(the session's ``broker``), a gateway process (``intercom-gateway run``) and the API's
app with its console on a loopback port, its consent changes sent over MQTT as a panel
sends them. Debian's Chromium, driven by Playwright, with every request to another host
refused: log in, watch events arrive live, open an event's decision and find why a
partner was withheld, stop a dwelling's provision to a partner and see the next event
withheld, opt a dwelling out of a purpose and see the gateway's acknowledgement and the
history row naming the change, export the ledger and compare it with ``resident provisions``.

A screenshot of each page is written under the test's temporary directory (or
``$INTERCOM_CONSOLE_SCREENSHOTS``): artefacts to look at, never committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Page, expect
from pydantic import SecretStr

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.core.registry import Registry, dump_registry
from intercom_gateway.qa import runner
from intercom_gateway.resident.api import create_app
from intercom_gateway.settings import Settings
from tests.broker.test_cli_end_to_end import cli
from tests.browser.test_api_docs import CHROMIUM, LOOPBACK, browser, offline
from tests.factories import event_dict, panel_message

__all__ = ["browser", "offline"]  # fixtures, reused

pytestmark = [pytest.mark.browser, pytest.mark.broker]

TOKEN = "console-browser-token"
WAIT = 15_000  # ms: the longest a page waits for what the gateway does


@pytest.fixture(scope="module")
def stack_env(
    broker: Mosquitto, fleet_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    home = tmp_path_factory.mktemp("console-stack")
    registry = home / "registry.yaml"
    registry.write_text(dump_registry(fleet_registry))
    # The SQLite store, whatever --store says: the live flow reads SQLite (console/queries.py).
    inherited = {k: v for k, v in os.environ.items() if k != "INTERCOM_STORE"}
    return {
        **inherited,
        "INTERCOM_BROKER_PORT": str(broker.port),
        "INTERCOM_SECRETS_DIR": str(broker.credentials.directory),
        "INTERCOM_DB_PATH": str(home / "gateway.sqlite"),
        "INTERCOM_REGISTRY_PATH": str(registry),
        "INTERCOM_GATEWAY_ID": f"gw-console-{uuid.uuid4().hex[:6]}",
        "INTERCOM_SESSION_EXPIRY": "0",
        "INTERCOM_LOG_LEVEL": "WARNING",
        "INTERCOM_API_TOKEN": TOKEN,
    }


@pytest.fixture(scope="module")
def gateway(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``intercom-gateway run``, online (``health`` says so) before the tests start."""
    log_path = tmp_path_factory.mktemp("console-gateway") / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "intercom_gateway", "run"],
            env=stack_env,
            stdout=log,
            stderr=log,
        )
        try:
            for _ in range(100):
                if cli("health", "--timeout", "0.3", env=stack_env).returncode == 0:
                    break
            else:
                raise AssertionError(log_path.read_text())
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


@pytest.fixture(scope="module")
def console(stack_env: dict[str, str], gateway: None) -> Iterator[str]:
    """The API's app with its console, on a free loopback port; the console's URL."""
    settings = Settings(
        broker_port=int(stack_env["INTERCOM_BROKER_PORT"]),
        secrets_dir=Path(stack_env["INTERCOM_SECRETS_DIR"]),
        db_path=Path(stack_env["INTERCOM_DB_PATH"]),
        store=None,
        registry_path=Path(stack_env["INTERCOM_REGISTRY_PATH"]),
        gateway_id=stack_env["INTERCOM_GATEWAY_ID"],
        api_token=SecretStr(TOKEN),
    )
    app = create_app(settings)  # changes go over MQTT, as a panel's do
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="console")
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{port}/console"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
    assert not thread.is_alive(), "the console did not stop"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("INTERCOM_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(offline: tuple[Page, list[str]], console: str) -> Iterator[Page]:
    """A logged-in operator's page that reaches the loopback only."""
    page, refused = offline
    page.goto(f"{console}/dwellings")
    assert page.url == f"{console}/login"  # a page without a session sends to the login
    page.fill("input[name=token]", TOKEN)
    page.click("#login button")
    page.wait_for_url(f"{console}/")
    yield page
    assert refused == [], "the console asked another host for something"


def publish(broker: Mosquitto, *events: dict[str, Any]) -> None:
    """Publish events as their panels would, from a thread of its own: the synchronous
    Playwright owns this thread's event loop."""

    async def send() -> None:
        for data in events:
            topic, payload = panel_message(data)
            async with runner.client(broker, data["device"]["id"]) as bus:
                await bus.publish(topic, payload, qos=1)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, send()).result(timeout=30)


def test_chromium_is_debians() -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium"


def test_a_wrong_token_stays_on_the_login(offline: tuple[Page, list[str]], console: str) -> None:
    page, refused = offline
    page.goto(f"{console}/login")
    page.fill("input[name=token]", "not-the-token")
    page.click("#login button")
    expect(page.locator("#login-error")).to_have_text("not a valid token")
    assert refused == []


def test_events_arrive_live_and_pause_holds_them(
    page: Page, broker: Mosquitto, console: str, shots: Path
) -> None:
    expect(page.locator("#state")).to_have_text("live", timeout=WAIT)
    events = [event_dict("visitor", building="b001", dwelling=f"d000{d}") for d in (1, 3)]
    publish(broker, *events)
    for data in events:
        row = page.locator(f"tr[data-event-id='{data['event_id']}']")
        expect(row).to_be_visible(timeout=WAIT)
        expect(row.locator(".chip[data-destination='cloud']")).to_have_count(1)
    page.screenshot(path=shots / "live.png", full_page=True)

    page.click("#pause")
    expect(page.locator("#state")).to_contain_text("paused")
    held = event_dict("visitor", building="b001", dwelling="d0001")
    publish(broker, held)
    # Received and counted while paused, not shown; shown on Resume.
    expect(page.locator("#state")).to_have_text("paused (1 held)", timeout=WAIT)
    held_row = page.locator(f"tr[data-event-id='{held['event_id']}']")
    expect(held_row).to_have_count(0)
    page.click("#pause")
    expect(held_row).to_be_visible()
    # Each shown event's latency arrives once its copies are acknowledged.
    expect(page.locator("#latency-now")).to_have_text(re.compile(r"^\d"), timeout=WAIT)


def test_a_filtered_flow_shows_that_dwelling_only(
    page: Page, broker: Mosquitto, console: str
) -> None:
    page.goto(f"{console}/?building=b001&dwelling=d0004")
    expect(page.locator("#state")).to_have_text("live", timeout=WAIT)
    other = event_dict("visitor", building="b001", dwelling="d0003")
    mine = event_dict("visitor", building="b001", dwelling="d0004")
    publish(broker, other, mine)
    expect(page.locator(f"tr[data-event-id='{mine['event_id']}']")).to_be_visible(timeout=WAIT)
    # Sent before it, on the same connection: had the filter let it through, it would be here.
    expect(page.locator(f"tr[data-event-id='{other['event_id']}']")).to_have_count(0)


def test_stop_provision_then_the_next_event_is_withheld_and_its_page_says_why(
    page: Page, broker: Mosquitto, console: str, shots: Path
) -> None:
    page.goto(f"{console}/dwellings/b001/d0002")
    page.select_option("#stop-provision select", "concierge")
    page.click("#stop-provision button")
    answer = page.locator("#answer pre")
    expect(answer).to_contain_text('"applied": true', timeout=WAIT)
    expect(page.locator("#provision-stopped")).to_contain_text("concierge")
    page.screenshot(path=shots / "dwelling.png", full_page=True)

    page.goto(f"{console}/")
    expect(page.locator("#state")).to_have_text("live", timeout=WAIT)
    data = event_dict("visitor", building="b001", dwelling="d0002")
    publish(broker, data)
    row = page.locator(f"tr[data-event-id='{data['event_id']}']")
    chip = row.locator(".chip[data-destination='partner:concierge']")
    expect(chip).to_have_class("chip withheld", timeout=WAIT)

    row.locator("a").click()
    page.wait_for_url(f"{console}/events/{data['event_id']}")
    withheld = page.locator("#decision tr.withheld[data-destination='partner:concierge']")
    expect(withheld).to_have_count(1)
    expect(withheld.locator(".reason")).to_contain_text("provision_stopped")
    expect(page.locator("#explained")).to_contain_text("partner:concierge")
    page.screenshot(path=shots / "event.png", full_page=True)

    # And back: the dwelling uses the service again, through the same path.
    page.goto(f"{console}/dwellings/b001/d0002")
    page.select_option("#resume-provision select", "concierge")
    page.click("#resume-provision button")
    expect(page.locator("#answer pre")).to_contain_text('"applied": true', timeout=WAIT)
    expect(page.locator("#provision-stopped")).to_have_text("-")


def test_an_opt_out_goes_as_the_panels_setting_and_names_itself_in_the_history(
    page: Page, console: str, shots: Path
) -> None:
    page.goto(f"{console}/dwellings/b001/d0003")
    page.select_option("#opt-out select[name=purpose]", "marketing")
    page.select_option("#opt-out select[name=opted_out]", "yes")
    page.click("#opt-out button")
    ack = page.locator("#acks li")
    expect(ack).to_have_text("accepted: opted out of marketing", timeout=WAIT)
    change_id = ack.get_attribute("data-change-id")
    assert change_id
    # The gateway applied it as the panel's own message, and its history row says which.
    row = page.locator(f"#history tr[data-change-id='{change_id}']")
    expect(row.locator(".change")).to_have_text("opt out of marketing")
    expect(row).to_contain_text("panel:panel-b001-d0003")
    expect(page.locator("#consent")).to_contain_text("marketing")
    page.screenshot(path=shots / "dwelling-change.png", full_page=True)


def test_the_ledger_export_is_what_resident_provisions_gives(
    page: Page, broker: Mosquitto, console: str, stack_env: dict[str, str], shots: Path
) -> None:
    data = event_dict("visitor", building="b002", dwelling="d0001")
    publish(broker, data)
    page.goto(f"{console}/ledger?building=b002&dwelling=d0001")
    # The page is read when it loads: reload until the gateway has recorded the event.
    for _ in range(60):
        if page.locator(f"#ledger a[href$='{data['event_id']}']").count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(page.locator(f"#ledger a[href$='{data['event_id']}']").first).to_be_visible()
    page.screenshot(path=shots / "ledger.png", full_page=True)

    def export() -> str:
        with page.expect_download() as download:
            page.click("#export-csv")
        return Path(download.value.path()).read_text(encoding="utf-8")

    def cli_csv() -> str:
        result = cli("resident", "provisions", "b002", "d0001", "--format", "csv", env=stack_env)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()

    # A row is "intended" until its copy is acknowledged: compare once both agree twice.
    for _ in range(20):
        first, exported, last = cli_csv(), export(), cli_csv()
        if first == last:
            break
    assert exported == last
    assert data["event_id"] in exported and "intended" not in exported


def test_rejected_input_and_health_pages(
    page: Page, broker: Mosquitto, console: str, stack_env: dict[str, str], shots: Path
) -> None:
    device = "panel-b001-d0003"

    async def send_malformed() -> None:
        async with runner.client(broker, device) as bus:
            await bus.publish(f"intercom/v1/b001/{device}/events/alarm", b"{broken", qos=1)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, send_malformed()).result(timeout=30)
    for _ in range(60):
        page.goto(f"{console}/rejections")
        if page.locator("#rejections td", has_text="{broken").count():
            break
        page.wait_for_timeout(250)
    expect(page.locator("#rejections pre", has_text="{broken").first).to_be_visible()
    page.screenshot(path=shots / "rejections.png", full_page=True)

    page.goto(f"{console}/health")
    expect(page.locator("#broker")).to_contain_text("connected")
    gateway_id = stack_env["INTERCOM_GATEWAY_ID"]
    expect(page.locator("#gateways tr", has_text=gateway_id)).to_contain_text("online")
    expect(page.locator("#store")).to_contain_text("bytes")
    page.screenshot(path=shots / "health.png", full_page=True)
    assert json.loads(cli("health", env=stack_env).stdout)["status"]["state"] == "online"
