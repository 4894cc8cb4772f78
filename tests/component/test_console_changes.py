"""The dwelling page changes consent as a panel does (issue #19, "Dwellings"): register,
initialise (after a confirming form), return-home, services used, stop provision and
opt-outs, each sent through the desk's ``ConsentChannel`` as the panel's settings
message; the page shows the gateway's acknowledgement (accepted, or refused with its
reason) and the history row that names the change. Who may send what: nobody without a
session, a resident session on its own dwelling only (accept-policy included, §10) and
never register or initialise.

The channel here is the store's (``StoreChannel``, what a panel's change does to consent
while no gateway runs), wrapped to count what the console sent through it.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from intercom_gateway.core.models import SettingsAck, SettingsChange
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.resident.api import create_app
from intercom_gateway.resident.channels import StoreChannel
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store, open_store
from tests.component.test_api_scopes import OPERATOR, _copy, _issue
from tests.component.test_console import populated

__all__ = ["populated"]  # the fixture, reused

PAGE = "/console/dwellings/b001/d0001"


class CountingChannel:
    """The store's channel, remembering every change it was given."""

    def __init__(self, inner: StoreChannel) -> None:
        self.inner = inner
        self.sent: list[SettingsChange] = []

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck:
        self.sent.append(change)
        return await self.inner.submit(change, store=store)


class Page:
    def __init__(self, http: httpx.AsyncClient, channel: CountingChannel, settings: Settings):
        self.http = http
        self.channel = channel
        self.settings = settings

    async def login(self, token: str) -> None:
        assert (await self.http.post("/console/login", data={"token": token})).status_code == 303

    async def change(
        self, action: str, path: str = PAGE, **fields: str
    ) -> tuple[httpx.Response, list[str]]:
        """Post one form; the page and its acknowledgement lines."""
        response = await self.http.post(f"{path}/{action}", data=fields)
        acks = re.findall(r'<li class="(?:accepted|refused)"[^>]*>([^<]*)</li>', response.text)
        return response, [html.unescape(a) for a in acks]

    async def history(self) -> list[tuple[str, str, str]]:
        """The page's consent history, newest first: (change id, change named, applied)."""
        text = (await self.http.get(PAGE)).text
        table = text[text.index('id="history"') :]
        rows = re.findall(
            r'<tr data-change-id="([^"]*)"><td>[^<]*</td><td class="change">([^<]*)</td>'
            r"<td>[^<]*</td><td>([^<]*)</td>",
            table,
        )
        return [(i, html.unescape(named), applied) for i, named, applied in rows]

    async def consent(self) -> dict[str, object]:
        async with open_store(self.settings) as store:
            state = await store.consent("b001", "d0001")
        assert state is not None
        return state.model_dump(mode="json")


@pytest.fixture
async def page(populated: Settings, tmp_path: Path) -> AsyncIterator[Page]:
    settings = _copy(populated, tmp_path)
    policy = load_policy(settings.policy_path)
    channel = CountingChannel(
        StoreChannel(policy, load_partners(settings.partners_path, policy=policy))
    )
    app = create_app(settings, channel=channel)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://console") as http,
    ):
        yield Page(http, channel, settings)


# --- each change, accepted, and named in the history ------------------------------------


@pytest.mark.parametrize(
    ("action", "fields", "said", "named", "field", "value"),
    [
        ("return-home", {"enabled": "off"}, "return-home notification off", "return-home off",
         "return_home_enabled", False),
        ("opt-out", {"purpose": "marketing", "opted_out": "yes"}, "opted out of marketing",
         "opt out of marketing", "opted_out", ["marketing"]),
        ("resume-provision", {"partner": "elder-watch"}, "now using", "service elder-watch: use",
         "services_used", None),
        ("service-use", {"partner": "concierge", "used": "no"}, "provision to",
         "service concierge: stop", "provision_stopped", None),
        ("accept-policy", {}, "accepted policy 2026-04-01", "accept_policy 2026-04-01",
         "accepted_policy_version", "2026-04-01"),
    ],
)  # fmt: skip
async def test_a_change_is_sent_as_the_panels_and_acknowledged_and_named(
    page: Page,
    action: str,
    fields: dict[str, str],
    said: str,
    named: str,
    field: str,
    value: object,
) -> None:
    await page.login(OPERATOR)
    response, acks = await page.change(action, **fields)
    assert response.status_code == 200
    [ack] = acks
    assert ack.startswith("accepted: ") and said in ack
    [sent] = page.channel.sent
    assert (sent.building_id, sent.dwelling_id) == ("b001", "d0001")
    newest = (await page.history())[0]
    assert newest == (str(sent.change_id), named, "yes")
    consent = await page.consent()
    if value is not None:
        assert consent[field] == value
    elif action == "resume-provision":
        assert "elder-watch" in consent["services_used"]  # type: ignore[operator]
    else:
        assert "concierge" in consent["provision_stopped"]  # type: ignore[operator]


async def test_opting_back_in_undoes_an_opt_out(page: Page) -> None:
    await page.login(OPERATOR)
    await page.change("opt-out", purpose="profiling", opted_out="yes")
    _, [ack] = await page.change("opt-out", purpose="profiling", opted_out="no")
    assert ack == "accepted: opted back into profiling"
    assert "profiling" not in (await page.consent())["opted_out"]  # type: ignore[operator]
    assert [n for _, n, _ in (await page.history())[:2]] == [
        "opt back into profiling",
        "opt out of profiling",
    ]


async def test_stop_provision_is_a_section_8_request_and_names_itself(page: Page) -> None:
    await page.login(OPERATOR)
    response, [ack] = await page.change("stop-provision", partner="concierge")
    assert response.status_code == 200 and ack.startswith("accepted: provision to")
    [sent] = page.channel.sent
    assert (await page.history())[0] == (str(sent.change_id), "service concierge: stop", "yes")
    assert "stop_provision" in (await page.http.get(PAGE)).text  # the request log's row


async def test_initialise_asks_first_then_resets_and_register_starts_again(page: Page) -> None:
    await page.login(OPERATOR)
    first, acks = await page.change("initialise")
    assert first.status_code == 200 and acks == []
    assert 'id="confirm-initialise"' in first.text and 'name="confirm" value="yes"' in first.text
    assert page.channel.sent == []  # nothing sent before the second form
    assert (await page.consent())["registered"] is True

    _, [ack] = await page.change("initialise", confirm="yes")
    assert ack == "accepted: initialised: nothing is sent"
    consent = await page.consent()
    assert consent["registered"] is False and consent["services_used"] == []

    _, [ack] = await page.change("register")  # the version in force unless one is named
    assert ack == "accepted: registered under policy 2026-04-01"
    assert (await page.consent())["registered"] is True
    names = [n for _, n, _ in (await page.history())[:2]]
    assert names == ["register 2026-04-01", "initialise"]


# --- refused by the gateway, with its reason ---------------------------------------------


@pytest.mark.parametrize(
    ("action", "fields", "reason", "named"),
    [
        ("register", {}, "already registered; initialise (move out) first", "register 2026-04-01"),
        ("register", {"policy_version": "1999-01-01"}, "already registered", "register 1999-01-01"),
        ("opt-out", {"purpose": "backup", "opted_out": "yes"}, "cannot be opted out of",
         "opt out of backup"),
        ("resume-provision", {"partner": "no-such"}, "unknown partner service 'no-such'",
         "service no-such: use"),
        ("accept-policy", {"policy_version": "2022-06-01"}, "superseded by 2026-04-01",
         "accept_policy 2022-06-01"),
        ("accept-policy", {"policy_version": "1999-01-01"}, "unknown policy version",
         "accept_policy 1999-01-01"),
    ],
)  # fmt: skip
async def test_a_refused_change_shows_the_reason_and_its_history_row(
    page: Page, action: str, fields: dict[str, str], reason: str, named: str
) -> None:
    await page.login(OPERATOR)
    before = await page.consent()
    response, [ack] = await page.change(action, **fields)
    assert response.status_code == 200
    assert ack.startswith("refused: ") and reason in ack
    [sent] = page.channel.sent
    assert (await page.history())[0] == (str(sent.change_id), named, "refused")
    assert await page.consent() == before


async def test_a_form_no_panel_message_could_carry_is_not_sent(page: Page) -> None:
    await page.login(OPERATOR)
    response, acks = await page.change("opt-out", purpose="NOT AN ID")
    assert response.status_code == 422 and acks == []
    assert "not a valid setting" in response.text
    assert page.channel.sent == []


async def test_an_unknown_dwelling_is_not_sent_a_change(page: Page) -> None:
    await page.login(OPERATOR)
    response, _ = await page.change("return-home", "/console/dwellings/b001/d9999", enabled="off")
    assert response.status_code == 404
    assert page.channel.sent == []


# --- who may ------------------------------------------------------------------------------

EVERY = [
    "register",
    "initialise",
    "return-home",
    "service-use",
    "opt-out",
    "resume-provision",
    "accept-policy",
]


@pytest.mark.parametrize("action", EVERY)
async def test_no_session_sends_nothing(page: Page, action: str) -> None:
    response, _ = await page.change(action, confirm="yes", enabled="off", partner="concierge")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    assert page.channel.sent == []


@pytest.mark.parametrize("action", EVERY)
async def test_a_resident_session_changes_no_other_dwelling(page: Page, action: str) -> None:
    tokens, _ = await _issue(page.settings)
    own = tokens["own"]
    assert own is not None
    await page.login(own)
    path = "/console/dwellings/b001/d0002"
    response, _ = await page.change(action, path, confirm="yes", enabled="off")
    assert response.status_code == 403 and "d0002" not in response.text
    assert page.channel.sent == []


@pytest.mark.parametrize("action", ["register", "initialise"])
async def test_a_resident_session_may_not_register_or_initialise(page: Page, action: str) -> None:
    tokens, _ = await _issue(page.settings)
    own = tokens["own"]
    assert own is not None
    await page.login(own)
    response, _ = await page.change(action, confirm="yes")
    assert response.status_code == 403
    assert "move-" in response.json()["detail"]
    assert page.channel.sent == []
    # Its page does not offer them; it offers accepting the policy (§10).
    text = (await page.http.get(PAGE)).text
    assert 'id="register"' not in text and 'id="initialise"' not in text
    assert 'id="accept-policy"' in text


async def test_a_resident_session_changes_its_own_dwellings_settings(page: Page) -> None:
    tokens, _ = await _issue(page.settings)
    own = tokens["own"]
    assert own is not None
    await page.login(own)
    for action, fields in [
        ("return-home", {"enabled": "off"}),
        ("opt-out", {"purpose": "marketing", "opted_out": "yes"}),
        ("service-use", {"partner": "elder-watch", "used": "yes"}),
        ("stop-provision", {"partner": "concierge"}),
        ("accept-policy", {}),  # §10: the dwelling's to accept, so a resident's too
    ]:
        response, [ack] = await page.change(action, **fields)
        assert response.status_code == 200 and ack.startswith("accepted: "), action
    assert len(page.channel.sent) == 5
    assert page.channel.sent[-1].change.kind == "accept_policy"
    consent = await page.consent()
    assert consent["return_home_enabled"] is False and consent["opted_out"] == ["marketing"]
