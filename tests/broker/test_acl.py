"""The ACL matrix, against a real Mosquitto running the project's mosquitto.conf.

Mosquitto grants a forbidden subscription and then silently delivers nothing
(shared/mqtt-pitfalls.md #5), so no row trusts a return code alone. Every row has a
probe published by an account allowed to write its topic and a control subscriber
allowed to read it:

- a forbidden read: the control receives the probe; then a fence, published after the
  probe was acknowledged (so routed), reaches the forbidden reader on a topic it may
  read. Mosquitto queues per client in routing order, so a delivered probe would come
  before the fence: when the fence arrives, the probe's absence is final.
- a forbidden publish is refused with 0x87; then the rightful account publishes on the
  same topic and the control's first message is the rightful one, not the forgery.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import pytest

from intercom_gateway.broker.accounts import APP
from intercom_gateway.broker.mosquitto import ANALYTICS, CLOUD, FLEET, GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.errors import ConnectFailed, PublishFailed, SubscribeRefused
from tests.broker.conftest import client
from tests.helpers import collect, collect_until

NOT_AUTHORIZED = 0x87
PANEL = "panel-b001-d0001"  # the dwelling panel of b001/d0001
OTHER_PANEL = "panel-b001-d0002"  # the panel next door
CONCIERGE, ELDER_WATCH = "concierge", "elder-watch"
KK, EK = "kanri-kumiai-b001", "example-kanri"  # distribution contractors (§5(1)①)

# A topic each reader may read, written by the gateway: the fence of a forbidden read.
FENCES = {
    CONCIERGE: topics.partner(CONCIERGE, "b001", "d0001", "fence"),
    PANEL: topics.settings_ack("b001", PANEL),
    ANALYTICS: topics.analytics("fence"),
    OPERATOR: topics.cloud("b001", "d0001", "fence"),
    APP: topics.app("b001", "d0001", "fence"),
    CLOUD: topics.cloud("b001", "d0001", "fence"),
    KK: topics.contractor(KK, "b001", "d0001", "fence"),
}


@dataclass(frozen=True)
class Read:
    reader: str
    topic_filter: str
    writer: str  # an account allowed to publish ``topic``
    topic: str
    control: str = OPERATOR  # an account allowed to read ``topic``


@dataclass(frozen=True)
class Write:
    writer: str
    topic: str
    rightful: str  # an account allowed to publish ``topic``
    control: str = GATEWAY  # an account allowed to read ``topic``


FORBIDDEN_READS = {
    "partner reads another partner": Read(
        CONCIERGE,
        "partners/elder-watch/#",
        GATEWAY,
        topics.partner(ELDER_WATCH, "b001", "d0001", "alarm"),
    ),
    "partner reads raw panel events": Read(
        CONCIERGE, "intercom/v1/#", PANEL, topics.panel_events("b001", PANEL, "visitor"), GATEWAY
    ),
    "partner reads raw settings": Read(
        CONCIERGE, "intercom/v1/#", PANEL, topics.panel_settings("b001", PANEL), GATEWAY
    ),
    "partner subscribes to # (cloud)": Read(
        CONCIERGE, "#", GATEWAY, topics.cloud("b001", "d0001", "visitor")
    ),
    "partner subscribes to # (other partner)": Read(
        CONCIERGE, "#", GATEWAY, topics.partner(ELDER_WATCH, "b001", "d0001", "security")
    ),
    "partner subscribes to # (raw panel)": Read(
        CONCIERGE, "#", FLEET, topics.panel_events("b002", "lobby-b002", "visitor"), GATEWAY
    ),
    "panel reads partner topics": Read(
        PANEL, "partners/#", GATEWAY, topics.partner(CONCIERGE, "b001", "d0001", "visitor")
    ),
    "panel reads the next door's panel events": Read(
        PANEL,
        topics.PANEL_EVENTS_FILTER,
        OTHER_PANEL,
        topics.panel_events("b001", OTHER_PANEL, "alarm"),
        GATEWAY,
    ),
    "panel reads the next door's settings ack": Read(
        PANEL, "intercom/v1/+/+/settings/ack", GATEWAY, topics.settings_ack("b001", OTHER_PANEL)
    ),
    "analytics reads cloud": Read(
        ANALYTICS, "cloud/#", GATEWAY, topics.cloud("b001", "d0001", "alarm")
    ),
    "analytics reads partner topics": Read(
        ANALYTICS, "partners/#", GATEWAY, topics.partner(CONCIERGE, "b001", "d0001", "visitor")
    ),
    # §2(4): lobby calls are the Intercom app's; its account reads nothing else.
    "app reads cloud": Read(APP, "cloud/#", GATEWAY, topics.cloud("b001", "d0001", "alarm")),
    "app reads partner topics": Read(
        APP, "partners/#", GATEWAY, topics.partner(CONCIERGE, "b001", "d0001", "visitor")
    ),
    "cloud reads the app's lobby calls": Read(
        CLOUD, "app/#", GATEWAY, topics.app("b001", "d0001", "lobby_call")
    ),
    "partner reads the app's lobby calls": Read(
        CONCIERGE, "app/#", GATEWAY, topics.app("b001", "d0001", "lobby_call")
    ),
    "operator reads raw panel events": Read(
        OPERATOR,
        topics.PANEL_EVENTS_FILTER,
        PANEL,
        topics.panel_events("b001", PANEL, "alarm"),
        GATEWAY,
    ),
    # §5(1)①: a contractor gets the usage information of its own distributions only.
    "contractor reads another contractor's usage": Read(
        KK,
        topics.contractor_filter(EK),
        GATEWAY,
        topics.contractor(EK, "b001", "d0001", "notice_read"),
    ),
    "contractor reads panels' distributions": Read(
        KK, topics.panel_distributions_filter(), GATEWAY, topics.panel_distributions("b001", PANEL)
    ),
    "contractor reads partner topics": Read(
        KK, "partners/#", GATEWAY, topics.partner(CONCIERGE, "b001", "d0001", "visitor")
    ),
    "partner reads a contractor's usage": Read(
        CONCIERGE, "contractors/#", GATEWAY, topics.contractor(KK, "b001", "d0001", "survey_answer")
    ),
    "panel reads the next door's distributions": Read(
        PANEL,
        topics.panel_distributions_filter(),
        GATEWAY,
        topics.panel_distributions("b001", OTHER_PANEL),
    ),
}

FORBIDDEN_WRITES = {
    "panel publishes as another device": Write(
        PANEL, topics.panel_events("b001", OTHER_PANEL, "alarm"), OTHER_PANEL
    ),
    "panel publishes another dwelling's settings": Write(
        PANEL, topics.panel_settings("b001", OTHER_PANEL), OTHER_PANEL
    ),
    "panel publishes as another building's lobby": Write(
        PANEL, topics.panel_events("b002", "lobby-b002", "unlock_mode"), "lobby-b002"
    ),
    "lobby panel publishes resident settings": Write(
        "lobby-b001", topics.panel_settings("b001", "lobby-b001"), FLEET
    ),
    "panel forges a gateway output": Write(
        PANEL, topics.cloud("b001", "d0001", "alarm"), GATEWAY, OPERATOR
    ),
    "panel forges its own settings ack": Write(
        PANEL, topics.settings_ack("b001", PANEL), GATEWAY, PANEL
    ),
    "partner publishes as a panel": Write(
        CONCIERGE, topics.panel_events("b001", PANEL, "visitor"), PANEL
    ),
    "app forges a lobby call": Write(
        APP, topics.app("b001", "d0001", "lobby_call"), GATEWAY, OPERATOR
    ),
    "partner publishes on its own topic": Write(
        CONCIERGE, topics.partner(CONCIERGE, "b001", "d0001", "visitor"), GATEWAY, OPERATOR
    ),
    "contractor publishes as another contractor": Write(
        KK, topics.contractor_distributions(EK, "b001"), EK, GATEWAY
    ),
    "contractor forges its own usage information": Write(
        KK, topics.contractor(KK, "b001", "d0001", "notice_read"), GATEWAY, OPERATOR
    ),
    "contractor forges a panel's distribution": Write(
        KK, topics.panel_distributions("b001", PANEL), GATEWAY, PANEL
    ),
    "panel publishes a distribution": Write(
        PANEL, topics.contractor_distributions(KK, "b001"), KK, GATEWAY
    ),
}

ALLOWED_READS = {
    "partner reads its own topics": Read(
        CONCIERGE,
        topics.partner_filter(CONCIERGE),
        GATEWAY,
        topics.partner(CONCIERGE, "b001", "d0001", "visitor"),
    ),
    "second partner reads its own topics": Read(
        ELDER_WATCH,
        topics.partner_filter(ELDER_WATCH),
        GATEWAY,
        topics.partner(ELDER_WATCH, "b002", "d0004", "alarm"),
    ),
    "gateway reads raw panel events": Read(
        GATEWAY,
        topics.PANEL_EVENTS_FILTER,
        FLEET,
        topics.panel_events("b001", "lobby-b001", "visitor"),
    ),
    "panel publishes its own event topic": Read(
        GATEWAY, topics.PANEL_EVENTS_FILTER, PANEL, topics.panel_events("b001", PANEL, "alarm")
    ),
    "lobby panel publishes its own event topic": Read(
        GATEWAY,
        topics.PANEL_EVENTS_FILTER,
        "lobby-b002",
        topics.panel_events("b002", "lobby-b002", "unlock_mode"),
    ),
    "panel publishes its own settings": Read(
        GATEWAY, topics.PANEL_SETTINGS_FILTER, PANEL, topics.panel_settings("b001", PANEL)
    ),
    "panel reads its own settings ack": Read(
        PANEL, topics.settings_ack("b001", PANEL), GATEWAY, topics.settings_ack("b001", PANEL)
    ),
    "analytics reads analytics": Read(
        ANALYTICS, "analytics/#", GATEWAY, topics.analytics("visitor")
    ),
    "cloud reads cloud": Read(CLOUD, "cloud/#", GATEWAY, topics.cloud("b002", "d0003", "security")),
    "app reads the lobby calls": Read(
        APP, topics.app_filter(), GATEWAY, topics.app("b002", "d0003", "lobby_call")
    ),
    "contractor reads its own usage and acks": Read(
        KK, topics.contractor_filter(KK), GATEWAY, topics.contractor_distributions_ack(KK, "b001")
    ),
    "contractor publishes its own distributions": Read(
        GATEWAY,
        topics.CONTRACTOR_DISTRIBUTIONS_FILTER,
        KK,
        topics.contractor_distributions(KK, "b002"),
    ),
    "panel reads its own distributions": Read(
        PANEL,
        topics.panel_distributions("b001", PANEL),
        GATEWAY,
        topics.panel_distributions("b001", PANEL),
    ),
}


def probe() -> bytes:
    return f"probe {uuid.uuid4()}".encode()


@pytest.mark.parametrize("row", FORBIDDEN_READS.values(), ids=FORBIDDEN_READS.keys())
async def test_forbidden_read_delivers_nothing(broker: Mosquitto, row: Read) -> None:
    async with (
        client(broker, row.reader) as reader,
        client(broker, row.control) as control,
        client(broker, row.writer) as writer,
        client(broker, GATEWAY) as fencer,
    ):
        fence = FENCES[row.reader]
        await reader.subscribe(fence)
        # Mosquitto grants it (pitfall 5); were it refused, the outcome would be the same.
        with contextlib.suppress(SubscribeRefused):
            await reader.subscribe(row.topic_filter)
        await control.subscribe(row.topic)
        forbidden = probe()
        await writer.publish(row.topic, forbidden)
        [seen_by_control] = await collect(control, 1)
        assert (seen_by_control.topic, seen_by_control.payload) == (row.topic, forbidden)
        await fencer.publish(fence, probe())
        seen = await collect_until(reader, fence)
        assert [m.topic for m in seen if m.payload == forbidden or m.topic == row.topic] == []


@pytest.mark.parametrize("row", FORBIDDEN_WRITES.values(), ids=FORBIDDEN_WRITES.keys())
async def test_forbidden_publish_is_refused_and_not_delivered(
    broker: Mosquitto, row: Write
) -> None:
    async with (
        client(broker, row.control) as control,
        client(broker, row.writer) as writer,
        client(broker, row.rightful) as rightful,
    ):
        await control.subscribe(row.topic)
        with pytest.raises(PublishFailed) as refused:
            await writer.publish(row.topic, b"forged")
        assert refused.value.reason_code == NOT_AUTHORIZED
        genuine = probe()
        await rightful.publish(row.topic, genuine)
        [first] = await collect(control, 1)
        assert (first.topic, first.payload) == (row.topic, genuine)


@pytest.mark.parametrize("row", ALLOWED_READS.values(), ids=ALLOWED_READS.keys())
async def test_allowed_read_delivers(broker: Mosquitto, row: Read) -> None:
    async with client(broker, row.reader) as reader, client(broker, row.writer) as writer:
        await reader.subscribe(row.topic_filter)
        expected = probe()
        await writer.publish(row.topic, expected)
        [delivered] = await collect(reader, 1)
        assert (delivered.topic, delivered.payload) == (row.topic, expected)


def _credentials(broker: Mosquitto, case: str) -> tuple[str | None, str | None]:
    password = broker.credentials.passwords[CONCIERGE]
    return {
        "anonymous": (None, None),
        "wrong password": (CONCIERGE, password + "x"),
        "another account's password": (ELDER_WATCH, password),
        "unknown account": ("intruder", password),
        "empty password": (CONCIERGE, ""),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "anonymous",
        "wrong password",
        "another account's password",
        "unknown account",
        "empty password",
    ],
)
async def test_connect_refused(broker: Mosquitto, case: str) -> None:
    username, password = _credentials(broker, case)
    address = BrokerAddress(broker.host, broker.port, username=username, password=password)
    with pytest.raises(ConnectFailed) as refused:
        # An id the account may use: the password, not the id, is what is refused here.
        async with MqttBus(address, client_id=address.client_id(f"refused-{uuid.uuid4()}")):
            pass
    # Mosquitto 2.0 answers 0x87 (not authorised) where MQTT 5 also allows 0x86.
    assert refused.value.reason_code in {0x86, NOT_AUTHORIZED}


async def test_the_right_password_connects(broker: Mosquitto) -> None:
    """The control of the refusals above: same host, port and account."""
    async with client(broker, CONCIERGE) as bus:
        await bus.subscribe(topics.partner_filter(CONCIERGE))
