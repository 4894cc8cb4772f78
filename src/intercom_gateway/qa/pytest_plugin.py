"""pytest fixtures for integrators: a real Mosquitto with the project's configuration,
the gateway, simulated panels and a partner's own subscription, in a few lines.

Installed with the package and registered as the ``pytest11`` entry point
``intercom_gateway``, so a partner's test suite gets the fixtures without a conftest::

    async def test_my_subscriber(intercom_panels, intercom_partner):
        partner = await intercom_partner("concierge")
        await intercom_panels.send("visitor", dwelling="d0001", outcome="missed")
        envelope = await partner.next()
        assert envelope.event["outcome"] == "missed"
        image = await partner.next_image()  # the visitor's image, a message of its own
        assert image.event_id == envelope.event_id

The async fixtures are ``pytest_asyncio.fixture``s, so they work with pytest-asyncio in
``auto`` mode and in ``strict`` mode (there, mark the tests ``@pytest.mark.asyncio``).
The broker is session-scoped and synchronous, so no event loop outlives a test; the
gateway, panels and partner clients are per test, with a fresh store each.

The broker binds client ids to accounts, as the production broker does: a partner
logged in as ``concierge`` must connect with the client id ``concierge`` or
``concierge.<anything>`` (``concierge.app-1``, ``concierge.tests``); any other id is
refused with CONNACK 0x87, so a test that connects its own client sees what production
would do. ``BrokerAddress.client_id("app-1")`` makes such an id.

Override ``intercom_registry`` (the buildings, dwellings and their starting consent),
``intercom_partners_file`` (the partner services) or ``intercom_gateway_settings``
(gateway setting overrides) in a conftest to change the world the tests run in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import (
    ConsentNotice,
    EventType,
    Forwarded,
    SettingsChangeBody,
    utc_now,
)
from intercom_gateway.core.policy import default_policy, load_partners
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa.runner import RunningGateway, running_gateway, start_broker
from intercom_gateway.qa.scenario.model import EventSpec, SettingsSpec
from intercom_gateway.qa.scenario.world import World, event_message, settings_message
from intercom_gateway.settings import DATA
from intercom_gateway.simulators.outbox import Outbox, ResendPolicy, keep

try:
    from pytest_asyncio import fixture as _fixture
except ImportError:  # pragma: no cover - another asyncio plugin must then run them
    _fixture = pytest.fixture  # type: ignore[assignment]  # same use, other overloads

F = TypeVar("F", bound=Callable[..., Any])


def async_fixture(func: F) -> F:
    """pytest-asyncio's fixture decorator, which both of its modes accept."""
    return cast(F, _fixture(func))


class Panels:
    """Simulated panels: each event is published by its own device's broker account.

    They follow the panel protocol (README, "Panel protocol"): each device subscribes to
    its receipts topic, keeps every event it sent until the gateway's receipt names it
    and sends it again, identical, after ``resend`` (``intercom_panel_resend``).
    """

    def __init__(
        self, running: RunningGateway, world: World, *, resend: ResendPolicy | None = None
    ) -> None:
        self.running = running
        self.world = world
        self.sent = 0  # messages the gateway will consume
        self.outbox = Outbox(resend)
        self._clients: dict[str, MqttBus] = {}
        self._stack = contextlib.AsyncExitStack()
        self._keeping: list[asyncio.Task[None]] = []

    async def send(
        self,
        event_type: str,
        *,
        dwelling: str,
        building: str | None = None,
        device: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Publish a complete event of ``event_type`` (``fields`` override the defaults);
        returns the event as sent, ``event_id`` included."""
        spec = EventSpec(
            type=EventType(event_type),
            dwelling=dwelling,
            building=building,
            device=device,
            fields=fields,
        )
        now = utc_now()
        out = event_message(spec, self.world, now=now, start=now)
        event: dict[str, Any] = json.loads(out.payload)
        await self._publish(out.topic, out.payload, event_id=str(event["event_id"]))
        return event

    async def change_settings(
        self, change: SettingsChangeBody, *, dwelling: str, building: str | None = None
    ) -> None:
        """A resident's change on the dwelling panel (consent, services, return home)."""
        spec = SettingsSpec(dwelling=dwelling, building=building, change=change)
        out = settings_message(spec, self.world)
        await self._publish(out.topic, out.payload)

    async def processed(self, *, timeout: float = 10.0) -> None:
        """Wait until the gateway has handled everything these panels sent."""
        await self.running.wait_processed(self.sent, timeout=timeout)

    async def confirmed(self, *, timeout: float = 10.0) -> None:
        """Wait until a receipt has named every event these panels sent."""
        if not await self.outbox.wait_empty(timeout):
            raise AssertionError(f"{len(self.outbox)} event(s) still without a receipt")

    async def _publish(self, topic: str, payload: bytes, *, event_id: str | None = None) -> None:
        panel = topics.parse_panel_topic(topic)
        device = panel.device if panel is not None else "fleet"
        client = self._clients.get(device) or await self._connect(device, panel)
        if event_id is not None:
            await self.outbox.put(event_id, topic, payload)
        await client.publish(topic, payload)
        self.sent += 1

    async def _connect(self, device: str, panel: topics.PanelTopic | None) -> MqttBus:
        client = await self._stack.enter_async_context(self.running.client(device))
        self._clients[device] = client
        if panel is not None:
            # Subscribed before its first event, so no receipt can be missed.
            await client.subscribe(topics.receipts(panel.building, device))
            self._keeping.append(asyncio.create_task(keep(client, self.outbox)))
        return client

    async def close(self) -> None:
        for task in self._keeping:
            task.cancel()
        await asyncio.gather(*self._keeping, return_exceptions=True)
        self._keeping.clear()
        await self._stack.aclose()
        self._clients.clear()


class PartnerClient:
    """A partner service's own subscription to its topics (``partners/<id>/#``).

    An event's image comes in a message of its own, on the event's topic plus
    ``/image``, tagged for the image's purposes only (README, "Topics"): ``next()``
    returns the next event, ``next_image()`` the next image and ``next_notice()`` the
    next consent notice, each setting the other kinds aside for their own calls, so none
    depends on which came first.
    """

    def __init__(self, partner_id: str, bus: MqttBus) -> None:
        self.partner_id = partner_id
        self.bus = bus
        self._messages = bus.messages()
        self._set_aside: deque[Message] = deque()

    async def next_message(self, *, timeout: float = 5.0) -> Message:
        """The next message of either kind, in arrival order."""
        return await self._take(lambda message: True, timeout)

    async def next(self, *, timeout: float = 5.0) -> Forwarded:
        """The next event the gateway forwarded to this partner (never an image)."""
        message = await self._take(lambda m: _kind(m.topic) == "event", timeout)
        return Forwarded.model_validate_json(message.payload)

    async def next_notice(self, *, timeout: float = 5.0) -> ConsentNotice:
        """The next consent notice: a dwelling withdrew from this service (spec item 11)."""
        message = await self._take(lambda m: _kind(m.topic) == "notice", timeout)
        return ConsentNotice.model_validate_json(message.payload)

    async def next_image(self, *, timeout: float = 5.0) -> Forwarded:
        """The next image: ``event["image"]`` and the base fields naming its event."""
        message = await self._take(lambda m: _kind(m.topic) == "image", timeout)
        return Forwarded.model_validate_json(message.payload)

    async def _take(self, wanted: Callable[[Message], bool], timeout: float) -> Message:
        for message in self._set_aside:
            if wanted(message):
                self._set_aside.remove(message)
                return message
        async with asyncio.timeout(timeout):
            while True:
                message = await anext(self._messages)
                if wanted(message):
                    return message
                self._set_aside.append(message)


def _kind(topic: str) -> str:
    if topic.endswith(f"/{topics.CONSENT_NOTICE_LEVEL}"):
        return "notice"
    return "image" if topics.is_image(topic) else "event"


@pytest.fixture(scope="session")
def intercom_partners_file() -> Path:
    """The partner services the gateway knows; default: the sample registry."""
    return DATA / "partners.sample.yaml"


@pytest.fixture(scope="session")
def intercom_registry(intercom_partners_file: Path) -> Registry:
    """One building b001 of dwellings d0001-d0004, each using every partner service."""
    partners = load_partners(intercom_partners_file, policy=default_policy())
    services = tuple(s.id for s in partners.services)
    return generate_registry(buildings=1, dwellings=4, services=services)


@pytest.fixture
def intercom_gateway_settings() -> dict[str, Any]:
    """Gateway setting overrides (``Settings`` field names)."""
    return {}


@pytest.fixture(scope="session")
def intercom_broker(
    tmp_path_factory: pytest.TempPathFactory,
    intercom_registry: Registry,
    intercom_partners_file: Path,
) -> Iterator[Mosquitto]:
    """Mosquitto with the project's mosquitto.conf and an account per device and partner."""
    partners = load_partners(intercom_partners_file, policy=default_policy())
    workdir = tmp_path_factory.mktemp("intercom-broker")
    with start_broker(workdir, intercom_registry, [s.id for s in partners.services]) as broker:
        yield broker


@async_fixture
async def intercom_gateway(
    intercom_broker: Mosquitto,
    intercom_registry: Registry,
    intercom_partners_file: Path,
    intercom_gateway_settings: dict[str, Any],
    tmp_path: Path,
) -> AsyncIterator[RunningGateway]:
    """The gateway, running in the test's event loop, with a fresh store."""
    overrides = {"partners_path": intercom_partners_file, **intercom_gateway_settings}
    async with running_gateway(
        intercom_broker, intercom_registry, tmp_path / "intercom-gateway", **overrides
    ) as running:
        yield running


@pytest.fixture
def intercom_panel_resend() -> ResendPolicy:
    """When the panels resend an event no receipt named: after 10 s, doubling up to 120 s,
    at most 10,000 events kept per test (at the bound ``send`` waits for room)."""
    return ResendPolicy()


@async_fixture
async def intercom_panels(
    intercom_gateway: RunningGateway, intercom_panel_resend: ResendPolicy
) -> AsyncIterator[Panels]:
    """``await intercom_panels.send("visitor", dwelling="d0001", outcome="missed")``."""
    partners = load_partners(intercom_gateway.settings.partners_path, policy=default_policy())
    world = World(intercom_gateway.registry, partners, intercom_gateway.settings.partners_path, {})
    panels = Panels(intercom_gateway, world, resend=intercom_panel_resend)
    try:
        yield panels
    finally:
        await panels.close()


@async_fixture
async def intercom_partner(
    intercom_gateway: RunningGateway,
) -> AsyncIterator[Callable[[str], Awaitable[PartnerClient]]]:
    """``partner = await intercom_partner("concierge")``: subscribed as that partner."""
    async with contextlib.AsyncExitStack() as stack:

        async def subscribe(partner_id: str) -> PartnerClient:
            # The broker accepts only the partner's own ids: "<partner_id>.<anything>".
            address = intercom_gateway.broker.address(partner_id)
            client_id = address.client_id(f"test-{uuid.uuid4().hex[:8]}")
            bus = await stack.enter_async_context(
                intercom_gateway.client(partner_id, client_id=client_id)
            )
            await bus.subscribe(topics.partner_filter(partner_id))
            return PartnerClient(partner_id, bus)

        yield subscribe
