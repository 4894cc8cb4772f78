"""Changing the configuration of running gateways (§10): record, announce, confirm.

``apply_config`` is what ``intercom-gateway config apply`` does once the files are
validated: it connects to the broker as the operator (a broker that refuses the account
or does not answer stops it before anything is recorded), records the change in the
store as the next revision (who, when, what: the change is itself recorded), publishes
the retained notice on ``gateway/v1/config``, and waits for the gateways' answers on
``gateway/v1/config/ack/+``. Which gateways it waits for: every one whose retained
status says online (``gateway/v1/status``, and ``gateway/v1/{id}/status`` of partitioned
ones); with none online, the first answer. No answer in time is ``NoGateway``: one line,
exit 3; the revision stays recorded and gateways take it up when they (re)start.

``reload_files`` is ``run``'s SIGHUP: the same record and notice, from the files the
gateway was started with, published on the gateway's own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime

import structlog
from pydantic import ValidationError

from intercom_gateway.bus import BrokerAddress, Bus, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.configuration import ConfigAck, ConfigNotice, ConfigRecord
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.policy import PartnerRegistry, Policy, load_partners, load_policy
from intercom_gateway.core.registry import Registry, load_registry
from intercom_gateway.errors import ConnectFailed
from intercom_gateway.gateway.presence import no_gateway, refusal
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store

__all__ = ["Applied", "apply_config", "load_files", "record_and_notice", "reload_files"]

log = structlog.get_logger("intercom_gateway.gateway.service")

_GROUP_STATUS = topics.gateway_status("+")


def load_files(settings: Settings) -> tuple[Policy, PartnerRegistry, Registry]:
    """The three files of ``settings``, validated fully (``ConfigError``: one line)."""
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    return policy, partners, load_registry(settings.registry_path)


async def record_and_notice(
    store: Store,
    files: tuple[Policy, PartnerRegistry, Registry],
    *,
    actor: str,
    at: datetime,
) -> ConfigNotice:
    """Record ``files`` as the next revision; the notice that announces it."""
    record = ConfigRecord.of(*files, actor=actor, at=at)
    revision = await store.save_config(record)
    return ConfigNotice(
        revision=revision,
        policy_version=record.policy_version,
        digest=record.digest,
        actor=actor,
        at=at,
    )


async def publish_notice(bus: Bus, notice: ConfigNotice) -> None:
    """Retained: a gateway that connects later still learns of it."""
    await bus.publish(topics.CONFIG, notice.model_dump_json().encode(), retain=True)


class Applied:
    """What ``apply_config`` did: the notice, and each gateway's answer."""

    def __init__(
        self, notice: ConfigNotice, answers: dict[str, ConfigAck], online: set[str]
    ) -> None:
        self.notice = notice
        self.answers = answers
        self.missing = sorted(online - set(answers))  # online, but no answer in time

    @property
    def failed(self) -> list[ConfigAck]:
        return [a for a in self.answers.values() if a.state == "failed"]


async def apply_config(
    address: BrokerAddress,
    store: Store,
    files: tuple[Policy, PartnerRegistry, Registry],
    *,
    actor: str,
    timeout: float,
) -> Applied:
    """Record, announce and wait for the running gateways' answers (module docstring)."""
    where = f"{address.host}:{address.port}"
    client_id = address.client_id(f"config-{uuid.uuid4().hex[:8]}")
    try:
        async with MqttBus(address, client_id=client_id, connect_timeout=timeout) as bus:
            await bus.subscribe(topics.STATUS, _GROUP_STATUS, topics.CONFIG_ACKS_FILTER)
            notice = await record_and_notice(store, files, actor=actor, at=utc_now())
            await publish_notice(bus, notice)
            answers: dict[str, ConfigAck] = {}
            online: set[str] = set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_answers(bus, notice.revision, answers, online), timeout)
    except ConnectFailed as error:
        raise refusal(address, error) from None
    if not answers:
        raise no_gateway(
            where,
            f"no gateway confirmed configuration revision {notice.revision} within"
            f" {timeout:g} s; it is recorded in the store, and a gateway takes it up when"
            " it starts",
        )
    return Applied(notice, answers, online)


async def _answers(
    bus: MqttBus, revision: int, answers: dict[str, ConfigAck], online: set[str]
) -> None:
    """Collect answers to ``revision`` until every gateway seen ``online`` has answered
    (with none seen online: until the first answer)."""
    async for message in bus.messages():
        if not message.payload:
            continue
        if topics.matches(topics.CONFIG_ACKS_FILTER, message.topic):
            with contextlib.suppress(ValidationError):
                ack = ConfigAck.model_validate_json(message.payload)
                if ack.asked >= revision or ack.revision >= revision:
                    answers[ack.gateway_id] = ack
        else:  # a status, single (GatewayStatus) or partitioned (PartitionedStatus)
            with contextlib.suppress(ValueError):
                status = json.loads(message.payload)
                gateway_id, state = str(status["gateway_id"]), status["state"]
                (online.add if state == "online" else online.discard)(gateway_id)
        if answers and online <= set(answers):
            return


async def reload_files(settings: Settings, store: Store, bus: Bus | None) -> None:
    """SIGHUP: record the files as the next revision and announce it on ``bus``; a file
    that does not validate is logged and nothing changes."""
    try:
        files = load_files(settings)
    except Exception as error:
        log.error("SIGHUP: configuration files refused, nothing changed", error=str(error))
        return
    if bus is None:
        log.error("SIGHUP: not connected to the broker, nothing changed")
        return
    notice = await record_and_notice(
        store, files, actor=f"sighup:{settings.gateway_id}", at=utc_now()
    )
    await publish_notice(bus, notice)
    log.info("SIGHUP: configuration recorded and announced", revision=notice.revision)
