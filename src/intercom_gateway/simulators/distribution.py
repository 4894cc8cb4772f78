"""A distribution contractor, and residents who read and answer on their panels (§2(1)).

The contractor publishes a notice or a survey on its own topic (``post``) and awaits the
gateway's answer. ``residents`` plays the dwelling panels: each distribution a panel gets
on its own topic is read by most residents (``Habits.read``) after a delay drawn from an
exponential of mean ``Habits.read_after`` (simulated time, so ``acceleration`` makes a
day pass in seconds), and a survey is answered by some of those who read it. They talk to
the gateway over MQTT only, as real panels and contractors would.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from intercom_gateway.bus import Bus
from intercom_gateway.core import topics
from intercom_gateway.core.distributions import (
    Distribution,
    DistributionAck,
    PanelDistribution,
    SurveyChoice,
    SurveyQuestion,
)
from intercom_gateway.core.models import (
    DeviceRef,
    DeviceRole,
    NoticeReadEvent,
    SurveyAnswer,
    SurveyAnswerEvent,
    random_uuid,
    utc_now,
)

__all__ = ["Habits", "notice", "post", "residents", "survey"]

YES_NO = (SurveyChoice(id="yes", label="Yes"), SurveyChoice(id="no", label="No"))


@dataclass(frozen=True, slots=True)
class Habits:
    """How residents treat what their panel shows them."""

    read: float = 0.8  # share who open a distribution at all
    answer: float = 0.5  # share of readers who answer a survey
    read_after: float = 4 * 3600.0  # mean simulated seconds until it is opened
    answer_after: float = 600.0  # mean simulated seconds from reading to answering


def notice(
    distribution_id: str, building: str, dwellings: tuple[str, ...] | None, *, title: str, body: str
) -> Distribution:
    return Distribution(
        distribution_id=distribution_id,
        kind="notice",
        building_id=building,
        dwellings=dwellings,
        title=title,
        body=body,
        sent_at=utc_now(),
    )


def survey(
    distribution_id: str,
    building: str,
    dwellings: tuple[str, ...] | None,
    *,
    title: str,
    body: str,
    questions: tuple[str, ...],
) -> Distribution:
    """A survey of yes/no questions, each with room for a comment."""
    return Distribution(
        distribution_id=distribution_id,
        kind="survey",
        building_id=building,
        dwellings=dwellings,
        title=title,
        body=body,
        questions=tuple(
            SurveyQuestion(id=f"q{i}", text=text, choices=YES_NO, free_text=True)
            for i, text in enumerate(questions, start=1)
        ),
        sent_at=utc_now(),
    )


async def post(
    bus: Bus, contractor_id: str, distribution: Distribution, *, timeout: float = 10.0
) -> DistributionAck:
    """Publish ``distribution`` as ``contractor_id`` and return the gateway's answer."""
    building = distribution.building_id
    ack_topic = topics.contractor_distributions_ack(contractor_id, building)
    await bus.subscribe(ack_topic)

    async def answer() -> DistributionAck:
        async for message in bus.messages():
            if message.topic != ack_topic:
                continue
            ack = DistributionAck.model_validate_json(message.payload)
            if ack.distribution_id == distribution.distribution_id:
                return ack
        raise ConnectionError("the bus closed before the gateway answered")

    waiting = asyncio.ensure_future(answer())
    await bus.publish(
        topics.contractor_distributions(contractor_id, building),
        distribution.model_dump_json().encode(),
    )
    return await asyncio.wait_for(waiting, timeout)


async def residents(
    bus: Bus,
    *,
    seed: int = 0,
    acceleration: float = 3600.0,
    habits: Habits = Habits(),
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> Counter[str]:
    """Read and answer what the panels receive until ``stop``; counts what was sent.
    ``ready`` is set once the panels' topics are subscribed."""
    rng = random.Random(f"residents/{seed}")
    sent: Counter[str] = Counter()
    seqs: Counter[str] = Counter()
    await bus.subscribe(topics.panel_distributions_filter())
    if ready is not None:
        ready.set()
    pending: set[asyncio.Task[None]] = set()

    async def respond(device: str, got: PanelDistribution) -> None:
        if rng.random() >= habits.read:
            return
        await asyncio.sleep(rng.expovariate(1 / habits.read_after) / acceleration)
        await _send(bus, device, got, seqs, sent, answers=None)
        if got.kind == "survey" and rng.random() < habits.answer:
            await asyncio.sleep(rng.expovariate(1 / habits.answer_after) / acceleration)
            await _send(bus, device, got, seqs, sent, answers=_answers(got, rng))

    async def take() -> None:
        async for message in bus.messages():
            device = message.topic.split("/")[3]
            got = PanelDistribution.model_validate_json(message.payload)
            task = asyncio.create_task(respond(device, got))
            pending.add(task)
            task.add_done_callback(pending.discard)

    taking = asyncio.create_task(take())
    await stop.wait()
    taking.cancel()
    for task in (taking, *pending):
        task.cancel()
    await asyncio.gather(taking, *pending, return_exceptions=True)
    return sent


def _answers(got: PanelDistribution, rng: random.Random) -> tuple[SurveyAnswer, ...]:
    return tuple(
        SurveyAnswer(
            question_id=q.id,
            choice_ids=(rng.choice(q.choices).id,) if q.choices else (),
            text="Thank you." if q.free_text and rng.random() < 0.2 else None,
        )
        for q in got.questions
    )


async def _send(
    bus: Bus,
    device: str,
    got: PanelDistribution,
    seqs: Counter[str],
    sent: Counter[str],
    *,
    answers: tuple[SurveyAnswer, ...] | None,
) -> None:
    seqs[device] += 1
    fields: dict[str, Any] = {
        "event_id": random_uuid(),
        "seq": seqs[device],
        "building_id": got.building_id,
        "dwelling_id": got.dwelling_id,
        "device": DeviceRef(id=device, role=DeviceRole.DWELLING_PANEL),
        "occurred_at": _now_ms(),
        "distribution_id": got.distribution_id,
        "contractor_id": got.contractor_id,
    }
    kind: Literal["notice_read", "survey_answer"]
    if answers is None:
        event: NoticeReadEvent | SurveyAnswerEvent = NoticeReadEvent(**fields)
        kind = "notice_read"
    else:
        event = SurveyAnswerEvent(**fields, answers=answers)
        kind = "survey_answer"
    await bus.publish(
        topics.panel_events(got.building_id, device, kind), event.model_dump_json().encode()
    )
    sent[kind] += 1


def _now_ms() -> datetime:
    now = utc_now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # panels stamp ms
