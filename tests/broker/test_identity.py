"""Client ids bound to broker accounts, and session takeovers reported (issue 13, item 4).

Mosquitto, left to itself, lets any account connect with any client id and take over
that id's session; a clean start erases the messages queued for it. The broker's
clientid_binding plugin (``data/broker/clientid_binding.c``) refuses every id that is
neither the account's name nor ``<account>.<suffix>``. Everything here runs against a
real Mosquitto with the project's mosquitto.conf.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from structlog.testing import capture_logs

from intercom_gateway.broker.mosquitto import (
    CLOUD,
    DEFAULT_CONFIG,
    FLEET,
    GATEWAY,
    OPERATOR,
    Mosquitto,
)
from intercom_gateway.broker.plugin import build_plugin
from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.cli.security import credentials
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry
from intercom_gateway.errors import BrokerError, ConnectFailed, ConnectionLost, SessionTakenOver
from intercom_gateway.gateway.run import run_gateway
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.qa.testing import publish_as_fleet, running_gateway
from intercom_gateway.settings import Settings
from tests.broker.takeover_server import TakeoverServer
from tests.factories import event_dict, panel_message
from tests.helpers import collect
from tests.reference_paho import PahoBus

NOT_AUTHORISED = 0x87
PANEL = "panel-b001-d0001"
BusFactory = Callable[..., Any]


@pytest.fixture(params=[MqttBus, PahoBus], ids=["lean", "paho"])
def bus_kind(request: pytest.FixtureRequest) -> BusFactory:
    kind: BusFactory = request.param
    return kind


# --- (a) nobody else can take the gateway's session --------------------------------


async def test_no_other_account_can_take_the_stopped_gateways_backlog(
    own_broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> None:
    """With the gateway away and events queued in its session, every other account's
    clean start with the gateway's client id is refused; the gateway comes back to all."""
    gateway_id = f"gw-identity-{uuid.uuid4().hex[:6]}"
    overrides = {"gateway_id": gateway_id, "session_expiry": 3600}
    workdir = tmp_path / "gw"
    async with running_gateway(own_broker, fleet_registry, workdir, **overrides):
        pass  # connected, subscribed with a kept session, then left cleanly
    backlog = [
        panel_message(event_dict("visitor", building="b001", dwelling=f"d000{1 + n % 4}"))
        for n in range(60)
    ]
    assert await publish_as_fleet(own_broker, backlog) == len(backlog)

    gateways_id = own_broker.address(GATEWAY).client_id(gateway_id)
    for account in (CLOUD, OPERATOR, FLEET, "concierge", PANEL):
        with pytest.raises(ConnectFailed) as refused:
            async with MqttBus(own_broker.address(account), client_id=gateways_id):
                pass
        assert refused.value.reason_code == NOT_AUTHORISED, account

    async with running_gateway(own_broker, fleet_registry, workdir, **overrides) as running:
        await running.wait_processed(len(backlog), timeout=30)
        metrics = running.gateway.metrics
        assert metrics.received == len(backlog)
        assert metrics.events == len(backlog)
        assert (metrics.session_takeovers, metrics.sessions_lost) == (0, 0)


# --- (b) which ids an account may use --------------------------------------------------


@pytest.mark.parametrize(
    ("account", "client_id"),
    [
        (CLOUD, "cloud"),
        (CLOUD, "cloud.reader-1"),
        (CLOUD, "cloud.a.b"),
        (GATEWAY, "gateway.gw-1"),
        ("elder-watch", "elder-watch"),
        ("elder-watch", "elder-watch.app-1"),
        (PANEL, PANEL),
        (PANEL, f"{PANEL}.settings-1"),
    ],
)
async def test_an_account_may_use_its_name_and_its_name_dot_anything(
    broker: Mosquitto, account: str, client_id: str
) -> None:
    async with MqttBus(broker.address(account), client_id=client_id) as bus:
        await bus.subscribe(topics.STATUS if account != PANEL else topics.receipts("b001", PANEL))


@pytest.mark.parametrize(
    ("account", "client_id"),
    [
        (CLOUD, "gateway"),  # another account's bare name
        (CLOUD, "gateway.gw-1"),  # the gateway's own id
        ("concierge", "elder-watch.app-1"),
        (FLEET, "operator.x"),
        (PANEL, "panel-b001-d0002"),  # the neighbour's panel
        (PANEL, "panel-b001-d0002.x"),
        (PANEL, f"{PANEL}-x"),  # a prefix without the dot is another name
        (PANEL, f"{PANEL}x"),
        (CLOUD, "cloudy"),
        (GATEWAY, "gw-1"),  # the id the gateway used before the binding
        (OPERATOR, ""),  # an id the broker would assign (auto-...) is no account's
    ],
)
async def test_an_account_is_refused_any_other_id(
    broker: Mosquitto, account: str, client_id: str
) -> None:
    with pytest.raises(ConnectFailed) as refused:
        async with MqttBus(broker.address(account), client_id=client_id):
            pass
    assert refused.value.reason_code == NOT_AUTHORISED


async def test_a_refused_id_does_not_disturb_the_session_it_names(broker: Mosquitto) -> None:
    """The refusal comes before the takeover: the owner stays connected and served."""
    owner_id = broker.address(CLOUD).client_id(f"owner-{uuid.uuid4().hex[:6]}")
    gateway = broker.address(GATEWAY)
    async with (
        MqttBus(broker.address(CLOUD), client_id=owner_id) as owner,
        MqttBus(gateway, client_id=gateway.client_id(uuid.uuid4().hex[:6])) as writer,
    ):
        await owner.subscribe("cloud/#")
        with pytest.raises(ConnectFailed):
            async with MqttBus(broker.address(OPERATOR), client_id=owner_id):
                pass
        topic = topics.cloud("b001", "d0001", "visitor")
        await writer.publish(topic, b"still mine")
        [message] = await collect(owner, 1)
    assert message.payload == b"still mine"


# --- (c) the bus says when its session was taken over ----------------------------------


def _mosquitto_version() -> tuple[int, ...]:
    import subprocess

    from intercom_gateway.broker.mosquitto import find_binary

    words = subprocess.run(
        [find_binary("mosquitto"), "-h"], capture_output=True, text=True, check=False
    ).stdout.split()
    return tuple(int(part) for part in words[words.index("version") + 1].split("."))


async def test_the_same_account_may_take_over_its_own_session(
    broker: Mosquitto, bus_kind: BusFactory
) -> None:
    """A restarted process takes its session back: allowed, and the newcomer finds the
    session present. The old connection fails: with SessionTakenOver where the broker
    says why (DISCONNECT 0x8E, Mosquitto 2.0.15 and later); Debian's 2.0.11 only closes
    the socket, which the buses can only report as a lost connection."""
    address = broker.address(CLOUD)
    session = {
        "client_id": address.client_id(f"takeover-{uuid.uuid4().hex[:6]}"),
        "clean_start": False,
        "session_expiry": 60,
    }
    says_why = _mosquitto_version() >= (2, 0, 15)
    async with bus_kind(address, **session) as first:
        assert first.session_present is False
        await first.subscribe("cloud/#")
        async with bus_kind(address, **session) as second:
            assert second.session_present is True
            with pytest.raises(ConnectionLost) as lost:
                await collect(first, 1)
            assert isinstance(lost.value, SessionTakenOver) is says_why
    async with bus_kind(address, **{**session, "session_expiry": 0}) as last:
        assert last.session_present is True  # the session of `second`, kept 60 s


async def test_the_bus_raises_session_taken_over_on_disconnect_0x8e(bus_kind: BusFactory) -> None:
    async with TakeoverServer(session_present=True).running() as server:
        address = BrokerAddress(port=server.port, username=CLOUD, password="-")
        async with bus_kind(address, client_id=address.client_id("victim")) as bus:
            assert bus.session_present is True
            await bus.subscribe("cloud/#")
            await server.take_over()
            with pytest.raises(SessionTakenOver, match=r"(?i)session taken over"):
                await collect(bus, 1)


# --- the gateway reports a takeover and a lost session --------------------------------


async def test_the_gateway_reports_a_takeover_and_the_session_it_lost(tmp_path: Path) -> None:
    """DISCONNECT 0x8E: an error line and ``session_takeovers``; the reconnect finds no
    session (CONNACK Session Present 0): another error line and ``sessions_lost``."""
    async with TakeoverServer(session_present=False).running() as server:
        settings = Settings().model_copy(
            update={
                "broker_port": server.port,
                "broker_password": SecretStr("-"),
                "db_path": tmp_path / "gateway.sqlite",
                "gateway_id": "gw-takeover",
                "session_expiry": 3600,
                "reconnect_min": 0.05,
                "log_events": False,
            }
        )
        stop = asyncio.Event()
        loaded: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
        with capture_logs() as logs:
            task = asyncio.create_task(run_gateway(settings, stop=stop, ready=loaded.set_result))
            gateway = await asyncio.wait_for(loaded, 20)
            await asyncio.wait_for(gateway.online.wait(), 20)
            assert gateway.metrics.sessions_lost == 0  # the first connection has nothing to lose
            await server.take_over()
            await asyncio.wait_for(server.wait_connects(2), 20)
            await asyncio.wait_for(gateway.online.wait(), 20)
            stop.set()
            metrics = await asyncio.wait_for(task, 20)
    assert (metrics.session_takeovers, metrics.sessions_lost) == (1, 1)
    snapshot = metrics.snapshot()
    assert (snapshot["session_takeovers"], snapshot["sessions_lost"]) == (1, 1)
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"].split(":")[0] for entry in errors] == [
        "session taken over",
        "broker had no session for us",
    ]
    assert {entry["client_id"] for entry in errors} == {"gateway.gw-takeover"}


async def test_the_gateway_reports_a_session_the_broker_no_longer_has(
    own_broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> None:
    """A broker that comes back without its persistence file has no session for us:
    whatever was queued is gone, and the gateway says so."""
    overrides = {"session_expiry": 3600, "reconnect_min": 0.05, "reconnect_max": 0.5}
    async with running_gateway(own_broker, fleet_registry, tmp_path / "gw", **overrides) as running:
        gateway = running.gateway
        with capture_logs() as logs:
            await asyncio.to_thread(own_broker.stop)
            (own_broker.workdir / "data" / "mosquitto.db").unlink()
            await asyncio.to_thread(own_broker.start)
            # The first status after the restart is the gateway's "online", published
            # once it has reconnected (and looked at the CONNACK's session flag).
            async with MqttBus(
                own_broker.address(OPERATOR),
                client_id=own_broker.address(OPERATOR).client_id(uuid.uuid4().hex[:6]),
            ) as operator:
                await operator.subscribe(topics.STATUS)
                [status] = await collect(operator, 1, timeout=20)
        assert b'"online"' in status.payload
        assert gateway.metrics.sessions_lost == 1
        assert gateway.metrics.snapshot()["sessions_lost"] == 1
        errors = [entry["event"] for entry in logs if entry["log_level"] == "error"]
        assert any("no session for us" in text for text in errors), logs


# --- building the plugin ------------------------------------------------------------


def test_the_plugin_is_built_once_and_reused(tmp_path: Path) -> None:
    built = build_plugin(cache=tmp_path)
    assert built.parent == tmp_path and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    assert build_plugin(cache=tmp_path) == built
    assert built.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no scratch left behind


@pytest.mark.parametrize(
    ("cc", "says"),
    [
        ("no-such-compiler-here", "no C compiler (no-such-compiler-here) found"),
        # No header found, as without mosquitto-dev: the compiler's first error line.
        ("cc -nostdinc", "clientid_binding.c:"),
    ],
)
def test_a_plugin_that_cannot_be_built_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cc: str, says: str
) -> None:
    monkeypatch.setenv("CC", cc)
    with pytest.raises(BrokerError) as failed:
        build_plugin(cache=tmp_path)
    message = str(failed.value)
    assert says in message
    assert message.endswith("install gcc and mosquitto-dev (scripts/setup does)")
    assert "\n" not in message


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    occupied = tmp_path / "not-a-folder"
    occupied.write_text("")
    with pytest.raises(BrokerError, match="XDG_CACHE_HOME") as failed:
        build_plugin(cache=occupied / "cache")
    assert "\n" not in str(failed.value)


def test_credentials_plugin_writes_it_where_mosquitto_conf_loads_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(credentials, ["plugin", "--secrets-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    built = tmp_path / "clientid_binding.so"
    assert f"wrote {built}" in result.output
    assert built.read_bytes() == build_plugin().read_bytes()
    assert "plugin .secrets/broker/clientid_binding.so" in DEFAULT_CONFIG.read_text("utf-8")
