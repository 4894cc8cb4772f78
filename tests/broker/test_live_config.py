"""§10 on a real Mosquitto: a policy change, a new partner service and a new dwelling are
applied to a running gateway process under a steady stream of events, with no restart
(``intercom-gateway config apply``, ``gateway/configs.py``).

Every copy names the configuration it was decided under (``config_revision``, beside
``policy_version``); the revisions on the wire switch once, from 0 to 1, and every event
the panels sent arrives. ``config apply`` against a broker where no gateway runs says so
in one line and exits 3 (on a broker of the test's own: the retained notice it leaves
must not reach other tests' gateways).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import DeviceRole, Event, parse_event, utc_now
from intercom_gateway.core.policy import PartnerRegistry, Policy, default_policy, sample_partners
from intercom_gateway.core.registry import Device, Dwelling, InitialConsent, Registry
from intercom_gateway.qa.runner import StatusWatch, following
from intercom_gateway.store.sqlite import SqliteStore
from tests.broker.worlds import entitled, make_events, message_of, open_world
from tests.factories import event_dict

NEW_VERSION = "2026-12-01"
NEW_PARTNER = "night-concierge"
NEWCOMER = ("b001", "d0099")


def changed_files(registry: Registry) -> tuple[Policy, PartnerRegistry, Registry]:
    """A new policy version (which still knows the accepted one), one more partner
    service, and one more dwelling that uses it."""
    old = default_policy()
    policy = Policy.model_validate(
        old.model_dump(mode="json")
        | {"version": NEW_VERSION, "supersedes": [old.version, *old.supersedes]}
    )
    concierge = sample_partners().get("concierge")
    assert concierge is not None
    partners = PartnerRegistry(
        services=(*sample_partners().services, concierge.model_copy(update={"id": NEW_PARTNER}))
    )
    first, *rest = registry.buildings
    building, dwelling = NEWCOMER
    assert first.id == building
    consent = InitialConsent(policy_version=old.version, services=(NEW_PARTNER,))
    panel = Device(
        id=f"panel-{building}-{dwelling}", role=DeviceRole.DWELLING_PANEL, dwelling=dwelling
    )
    grown = first.model_copy(
        update={
            "dwellings": (*first.dwellings, Dwelling(id=dwelling, consent=consent)),
            "devices": (*first.devices, panel),
        }
    )
    return policy, partners, Registry(buildings=(grown, *rest))


def write(path: Path, model: Any) -> Path:
    path.write_text(model.model_dump_json(), encoding="utf-8")  # JSON is YAML
    return path


@dataclass
class Wire:
    """Each copy as it arrived: (destination topic, event id, revision, policy version),
    revisions and versions as every property and envelope field of the copy names them
    (several, or none, would show as a tuple of them)."""

    copies: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    grew: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on(self, topic: str, payload: bytes, message: Any) -> None:
        if topics.is_image(topic):
            return
        revisions = message.properties("config_revision")
        versions = {*message.properties("policy_version"), json.loads(payload)["policy_version"]}
        revision = revisions[0] if len(revisions) == 1 else tuple(revisions)
        version = versions.pop() if len(versions) == 1 else tuple(sorted(versions))
        async with self.grew:
            self.copies.append((topic, message.properties("event_id")[0], revision, version))
            self.grew.notify_all()

    def cloud(self) -> list[tuple[str, Any, Any]]:
        return [(e, r, v) for t, e, r, v in self.copies if t.startswith("cloud/")]

    async def until(self, ready: Any, timeout: float = 60) -> None:
        async with self.grew:
            await asyncio.wait_for(self.grew.wait_for(ready), timeout)


def apply_command(policy: Path, partners: Path, registry: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "intercom_gateway",
        "config",
        "apply",
        "--policy",
        str(policy),
        "--partners",
        str(partners),
        "--registry",
        str(registry),
        "--actor",
        "test-operator",
        "--timeout",
        "30",
    ]


def stream(registry: Registry) -> Iterator[Event]:
    """Events of every kind of the registry's dwellings, stamped now, without end."""
    seed = 0
    while True:
        yield from make_events(registry, 50, seed)
        seed += 1


async def test_a_change_under_a_steady_stream_switches_once_with_no_restart_and_no_loss(
    tmp_path: Path,
) -> None:
    async with open_world(tmp_path, dwellings=4) as world:
        files = changed_files(world.registry)
        names = ("policy", "partners", "registry")
        policy, partners, registry = (
            write(tmp_path / f"{n}.yaml", m) for n, m in zip(names, files, strict=True)
        )
        wire = Wire()
        outputs = [(OPERATOR, [topics.cloud_filter(), topics.partners_filter()])]
        async with (
            StatusWatch(world.broker, world.gateway_id) as status,
            following(world.broker, outputs, wire.on),
        ):
            await world.start_gateway(status)
            process = world.process
            assert process is not None
            fleet = world.broker.address(FLEET)
            sent: list[Event] = []
            applied = asyncio.Event()
            async with MqttBus(fleet, client_id=fleet.client_id("live-config")) as panels:

                async def publish(until: asyncio.Event, then: int) -> None:
                    events = stream(world.registry)
                    left = then
                    while left:
                        event = next(events)
                        await panels.publish(*message_of(event))
                        sent.append(event)
                        if until.is_set():
                            left -= 1
                        await asyncio.sleep(0.005)  # pacing the panels, not synchronising

                publishing = asyncio.create_task(publish(applied, then=200))
                await wire.until(lambda: len(wire.cloud()) >= 100)
                command = await asyncio.create_subprocess_exec(
                    *apply_command(policy, partners, registry),
                    env={**os.environ, **world.gateway.environment()},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(command.communicate(), 60)
                applied.set()
                assert command.returncode == 0, err.decode()
                await publishing
                data = event_dict("visitor", building=NEWCOMER[0], dwelling=NEWCOMER[1])
                newcomer = parse_event(json.dumps(data))
                await panels.publish(*message_of(newcomer))
                await panels.drain()
            expected = entitled(sent, world.registry)["cloud"] | {str(newcomer.event_id)}
            await wire.until(lambda: expected <= {e for e, _, _ in wire.cloud()})
            to_partner = f"partners/{NEW_PARTNER}/"
            await wire.until(lambda: any(t.startswith(to_partner) for t, *_ in wire.copies))
            assert process.returncode is None and world.gateway.starts == 1  # no restart
        answer = json.loads(out)
        assert answer["revision"] == 1 and answer["actor"] == "test-operator"
        assert answer["gateways"][world.gateway_id]["state"] == "applied"
    cloud = wire.cloud()
    # Each event once, under one configuration, named consistently on its copy.
    assert len({e for e, _, _ in cloud}) == len(cloud)
    assert {(r, v) for _, r, v in cloud} == {("0", default_policy().version), ("1", NEW_VERSION)}
    # Revisions on the wire switch once, monotonically.
    revisions = [r for _, r, _ in cloud]
    switch = revisions.index("1")
    assert set(revisions[:switch]) == {"0"} and set(revisions[switch:]) == {"1"}
    assert cloud[-1][0] == str(newcomer.event_id)
    # The new partner got the new dwelling's event, under the new configuration.
    assert [(e, r) for t, e, r, _ in wire.copies if t.startswith(f"partners/{NEW_PARTNER}/")] == [
        (str(newcomer.event_id), "1")
    ]
    with sqlite3.connect(world.gateway.db_path) as db:
        rows = db.execute("SELECT revision, actor, policy_version FROM config_revisions").fetchall()
    assert rows == [(1, "test-operator", NEW_VERSION)]


async def test_config_apply_with_no_gateway_running_says_so_in_one_line(
    own_broker: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gateway.sqlite"
    async with SqliteStore.open(db):
        pass  # the store a gateway would have made
    env = {
        **os.environ,
        "INTERCOM_BROKER_PORT": str(own_broker.port),
        "INTERCOM_SECRETS_DIR": str(own_broker.credentials.directory),
        "INTERCOM_DB_PATH": str(db),
        "INTERCOM_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "intercom_gateway", "config", "apply", "--timeout", "1"]
    started = utc_now()
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, timeout=60, check=False
    )
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 3, result.stderr.decode()
    assert len(lines) == 1 and lines[0].startswith("Error: no intercom gateway answers on")
    assert "no gateway confirmed configuration revision 1 within 1 s" in lines[0]
    assert result.stdout == b""
    with sqlite3.connect(db) as connection:
        (at,) = connection.execute("SELECT at FROM config_revisions").fetchone()
    assert at >= started.isoformat()  # recorded: a gateway that starts takes it up


async def test_run_takes_its_files_up_again_on_sighup(tmp_path: Path) -> None:
    """SIGHUP: the files are recorded as the next revision and announced; the gateway
    answers that it applied it, and the new dwelling's events flow."""
    async with open_world(tmp_path, dwellings=2) as world:
        _, _, registry = changed_files(world.registry)
        consent = InitialConsent(policy_version=default_policy().version)
        newcomer = Dwelling(id=NEWCOMER[1], consent=consent)
        first, *rest = registry.buildings
        grown = first.model_copy(
            update={"dwellings": (*first.dwellings[:-1], newcomer)}  # no new partner here
        )
        wire = Wire()
        answers: list[dict[str, Any]] = []
        answered = asyncio.Event()

        async def on_answer(topic: str, payload: bytes, message: Any) -> None:
            answers.append(json.loads(payload))
            answered.set()

        outputs = [(OPERATOR, [topics.cloud_filter()])]
        async with (
            StatusWatch(world.broker, world.gateway_id) as status,
            following(world.broker, outputs, wire.on),
            following(world.broker, [(OPERATOR, [topics.CONFIG_ACKS_FILTER])], on_answer),
        ):
            await world.start_gateway(status)
            await world.gateway.write_registry(Registry(buildings=(grown, *rest)))
            process = world.process
            assert process is not None
            process.send_signal(signal.SIGHUP)
            await asyncio.wait_for(answered.wait(), 30)
            data = event_dict("visitor", building=NEWCOMER[0], dwelling=NEWCOMER[1])
            fleet = world.broker.address(FLEET)
            async with MqttBus(fleet, client_id=fleet.client_id("sighup")) as panels:
                await panels.publish(*message_of(parse_event(json.dumps(data))))
            await wire.until(lambda: any(e == data["event_id"] for e, _, _ in wire.cloud()))
            assert process.returncode is None
    (answer,) = answers
    assert (answer["state"], answer["revision"], answer["gateway_id"]) == (
        "applied",
        1,
        world.gateway_id,
    )
    assert wire.cloud() == [(data["event_id"], "1", default_policy().version)]
