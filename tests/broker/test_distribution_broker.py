"""Information distribution on the real broker (§2(1), §3(1), §5(1)①, spec item 10).

Two contractors of the same building post notices and surveys as their own accounts;
panels read their own distributions and answer as their own device accounts. Every
assertion is about what arrived: each contractor gets the read receipts and answers of
its own distributions and nothing of the other's (not even through a subscription to
the other's tree, which the ACL leaves empty); a notice for one dwelling reaches that
dwelling's panel only; an initialised dwelling receives nothing and sends nothing; the
answers never appear on a partner, group or analytics topic; and the ledger holds one
row per copy a contractor received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR, Mosquitto
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.cli.main import main
from intercom_gateway.core import topics
from intercom_gateway.core.registry import Registry
from intercom_gateway.qa.testing import RunningGateway, running_gateway
from intercom_gateway.simulators.distribution import Habits, post, residents, survey
from tests.factories import event_dict, panel_message, settings_message

KK, EK = "kanri-kumiai-b001", "example-kanri"  # both may address b001
MARKER = "answer-text-7f3c"  # free text of an answer: must show up at its contractor only


class Recording:
    """Everything one client receives, and a way to await what a test expects."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._grew = asyncio.Condition()

    async def take(self, bus: MqttBus) -> None:
        async for message in bus.messages():
            async with self._grew:
                self.messages.append(message)
                self._grew.notify_all()

    async def wait_for(self, done: Callable[[list[Message]], bool], timeout: float = 15) -> None:
        async with self._grew:
            try:
                await asyncio.wait_for(self._grew.wait_for(lambda: done(self.messages)), timeout)
            except TimeoutError:
                got = [m.topic for m in self.messages]
                raise AssertionError(f"not everything expected arrived: {got}") from None

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]


@contextlib.asynccontextmanager
async def recording(
    running: RunningGateway, user: str, *filters: str
) -> AsyncIterator[tuple[MqttBus, Recording]]:
    record = Recording()
    async with running.client(user) as bus:
        await bus.subscribe(*filters)
        task = asyncio.create_task(record.take(bus))
        try:
            yield bus, record
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def running(
    broker: Mosquitto, fleet_registry: Registry, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(broker, fleet_registry, tmp_path / "gw") as gateway:
        yield gateway


def _distribution(distribution_id: str, kind: str, dwellings: list[str] | None) -> bytes:
    body: dict[str, Any] = {
        "distribution_id": distribution_id,
        "kind": kind,
        "building_id": "b001",
        "dwellings": dwellings,
        "title": f"{kind} {distribution_id}",
        "body": "Please read.",
        "sent_at": "2026-05-01T08:59:00Z",
    }
    if kind == "survey":
        choices = [{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"}]
        body["questions"] = [{"id": "q1", "text": "Agree?", "choices": choices, "free_text": True}]
    return json.dumps(body).encode()


def _panel(dwelling: str) -> str:
    return f"panel-b001-{dwelling}"


def _acked(contractor: str, ids: set[str]) -> Callable[[list[Message]], bool]:
    ack = topics.contractor_distributions_ack(contractor, "b001")
    return lambda seen: (
        ids <= {json.loads(m.payload)["distribution_id"] for m in seen if m.topic == ack}
    )


async def _send_usage(
    running: RunningGateway, dwelling: str, event_type: str, **fields: Any
) -> str:
    data = event_dict(event_type, building="b001", dwelling=dwelling, **fields)
    async with running.client(_panel(dwelling)) as panel:
        await panel.publish(*panel_message(data))
    return str(data["event_id"])


async def test_two_contractors_of_one_building_each_get_only_their_own_usage(
    running: RunningGateway,
) -> None:
    # d0004 moves out before anything is sent: it gets nothing and sends nothing.
    async with running.client(_panel("d0004")) as panel:
        await panel.subscribe(topics.settings_ack("b001", _panel("d0004")))
        await panel.publish(*settings_message({"kind": "initialise"}, dwelling="d0004"))
        await anext(aiter(panel.messages()))
    async with contextlib.AsyncExitStack() as stack:
        kk_bus, kk = await stack.enter_async_context(
            recording(running, KK, topics.contractor_filter(KK), topics.contractor_filter(EK))
        )
        ek_bus, ek = await stack.enter_async_context(
            recording(running, EK, topics.contractor_filter(EK), topics.contractor_filter(KK))
        )
        panels = {
            d: (
                await stack.enter_async_context(
                    recording(running, _panel(d), topics.panel_distributions("b001", _panel(d)))
                )
            )[1]
            for d in ("d0001", "d0002", "d0003", "d0004")
        }
        # A panel's account may not read a neighbour's distributions: granted, never delivered.
        _, nosy = await stack.enter_async_context(
            recording(running, _panel("d0002"), topics.panel_distributions("b001", _panel("d0001")))
        )
        _, wire = await stack.enter_async_context(
            recording(running, OPERATOR, "partners/#", "group/#", "analytics/#", "cloud/#")
        )

        await kk_bus.publish(
            topics.contractor_distributions(KK, "b001"),
            _distribution("kk-notice", "notice", ["d0001"]),
        )
        await kk_bus.publish(
            topics.contractor_distributions(KK, "b001"), _distribution("kk-survey", "survey", None)
        )
        await ek_bus.publish(
            topics.contractor_distributions(EK, "b001"),
            _distribution("ek-survey", "survey", ["d0001", "d0002"]),
        )
        await kk.wait_for(_acked(KK, {"kk-notice", "kk-survey"}))
        await ek.wait_for(_acked(EK, {"ek-survey"}))

        def got(d: str) -> set[str]:
            return {json.loads(m.payload)["distribution_id"] for m in panels[d].messages}

        await panels["d0001"].wait_for(lambda seen: len(seen) >= 3)
        await panels["d0002"].wait_for(lambda seen: len(seen) >= 2)
        await panels["d0003"].wait_for(lambda seen: len(seen) >= 1)
        assert got("d0001") == {"kk-notice", "kk-survey", "ek-survey"}
        assert got("d0002") == {"kk-survey", "ek-survey"}  # the notice went to d0001 only
        assert got("d0003") == {"kk-survey"}

        answer = [{"question_id": "q1", "choice_ids": ["yes"], "text": MARKER}]
        sent = {
            "kk": [
                await _send_usage(
                    running, "d0001", "notice_read", contractor_id=KK, distribution_id="kk-notice"
                ),
                await _send_usage(
                    running,
                    "d0003",
                    "survey_answer",
                    contractor_id=KK,
                    distribution_id="kk-survey",
                    answers=answer,
                ),
            ],
            "ek": [
                await _send_usage(
                    running,
                    "d0002",
                    "survey_answer",
                    contractor_id=EK,
                    distribution_id="ek-survey",
                    answers=answer,
                ),
            ],
        }
        # The initialised dwelling's panel answers anyway (it has no distribution): nothing.
        await _send_usage(
            running,
            "d0004",
            "survey_answer",
            contractor_id=KK,
            distribution_id="kk-survey",
            answers=answer,
        )

        def usage_ids(seen: list[Message]) -> set[str]:
            return {
                json.loads(m.payload)["event_id"]
                for m in seen
                if not m.topic.endswith(("/distributions/ack", "/distributions"))
            }

        await kk.wait_for(lambda seen: set(sent["kk"]) <= usage_ids(seen))
        await ek.wait_for(lambda seen: set(sent["ek"]) <= usage_ids(seen))
        # One more distribution each, answered after everything before it was handled.
        await kk_bus.publish(
            topics.contractor_distributions(KK, "b001"),
            _distribution("kk-last", "notice", ["d0002"]),
        )
        await ek_bus.publish(
            topics.contractor_distributions(EK, "b001"),
            _distribution("ek-last", "notice", ["d0002"]),
        )
        await kk.wait_for(_acked(KK, {"kk-last"}))
        await ek.wait_for(_acked(EK, {"ek-last"}))
        await running.gateway.finish_in_flight()

        assert all(t.startswith(f"contractors/{KK}/") for t in kk.topics()), kk.topics()
        assert all(t.startswith(f"contractors/{EK}/") for t in ek.topics()), ek.topics()
        assert usage_ids(kk.messages) == set(sent["kk"])
        assert usage_ids(ek.messages) == set(sent["ek"])
        assert nosy.messages == [] and panels["d0004"].messages == []
        for message in wire.messages:
            assert MARKER not in message.payload.decode(
                errors="replace"
            ) or message.topic.startswith("cloud/"), message.topic
            assert not message.topic.endswith(
                ("/notice_read", "/survey_answer")
            ) or message.topic.startswith("cloud/"), message.topic

    rows = await running.gateway.store.provisions()
    contractor_rows = sorted(
        (r.recipient, r.event_id) for r in rows if r.recipient_kind == "contractor"
    )
    delivered = sorted(
        [(f"contractor:{KK}", e) for e in sent["kk"]]
        + [(f"contractor:{EK}", e) for e in sent["ek"]]
    )
    assert contractor_rows == delivered
    # d0004 was initialised: its only provisions are the consent notices that sent to the
    # services it used (spec item 11), nothing to a contractor.
    assert {r.event_type for r in rows if r.dwelling_id == "d0004"} <= {"consent_notice"}
    assert running.gateway.metrics.rejected == {"unknown_distribution": 1}


async def test_simulated_residents_read_and_answer_what_a_contractor_posts(
    running: RunningGateway,
) -> None:
    """The simulators: a contractor posts a survey to the whole building; residents (every
    one reading and answering, at a simulated pace) send receipts and answers, which
    reach that contractor."""
    stop, ready = asyncio.Event(), asyncio.Event()
    habits = Habits(read=1.0, answer=1.0)
    async with running.client(FLEET) as panels, running.client(KK) as contractor:
        playing = asyncio.create_task(
            residents(panels, seed=1, acceleration=1e6, habits=habits, stop=stop, ready=ready)
        )
        await ready.wait()
        await contractor.subscribe(topics.contractor(KK, "b001", "+", "+"))
        made = survey("sim-1", "b001", None, title="Bikes", body="Racks?", questions=("A?", "B?"))
        ack = await post(contractor, KK, made)
        assert (ack.accepted, ack.panels) == (True, 4)
        kinds: list[str] = []
        async for message in contractor.messages():
            kind = message.topic.rsplit("/", 1)[1]
            if kind in {"notice_read", "survey_answer"}:  # not the ack, also in the filter
                kinds.append(kind)
            if len(kinds) == 8:
                break
        stop.set()
        sent = await playing
    assert sorted(kinds) == ["notice_read"] * 4 + ["survey_answer"] * 4
    assert sent == {"notice_read": 4, "survey_answer": 4}


async def test_the_distribute_command_posts_as_its_contractor_and_prints_the_answer(
    running: RunningGateway,
) -> None:
    """`intercom-gateway distribute`: the contractor's own account, the gateway's answer
    printed, exit 1 when refused (a building the contractor may not address)."""
    settings = running.settings
    common = [
        "--broker-host", settings.broker_host, "--broker-port", str(settings.broker_port),
        "--secrets-dir", str(settings.secrets_dir),
    ]  # fmt: skip
    env = {"INTERCOM_GATEWAY_ID": settings.gateway_id}
    runner = CliRunner()
    posted = await asyncio.to_thread(
        runner.invoke,
        main,
        ["distribute", *common, "--dwelling", "d0002", "--id", "cli-1", "--title", "Hello"],
        env=env,
    )
    assert posted.exit_code == 0, posted.output
    # The in-process gateway's log lines share the captured output: the answer is indented.
    text = posted.output
    ack = json.loads(text[text.index('{\n  "schema_version"') : text.rindex("}") + 1])
    assert (ack["accepted"], ack["panels"], ack["distribution_id"]) == (True, 1, "cli-1")
    refused = await asyncio.to_thread(
        runner.invoke,
        main,
        ["distribute", *common, "--building", "b002", "--id", "cli-2"],
        env=env,
    )
    assert refused.exit_code == 1, refused.output
    assert '"building_not_addressable"' in refused.output
