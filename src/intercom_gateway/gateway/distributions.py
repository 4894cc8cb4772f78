"""Contractors' distributions (§2(1), §5(1)①): check, store, deliver to panels, answer.

A distribution on ``contractors/{c}/v1/{building}/distributions`` is checked
(``core.distributions.check_distribution``), saved with the panels it goes to before
any of them gets it (the store commits it at once), delivered only to the dwelling
panels of addressed dwellings that are registered (§7(1)①), and answered on
``.../distributions/ack`` with how many panels got it. A refused one gets a typed
refusal there, and is rejected like any bad input (counted, kept, echoed). The same
distribution sent again (a redelivery) goes to the same panels again; a panel keeps one
copy per distribution id. Another distribution under an id already used is refused.

The gateway checks every ``notice_read`` and ``survey_answer`` against what was
delivered (``delivered``). Both that check and the one for an id already used read a
distribution this process has not seen from the store, which every process shares: one
stored by another gateway, or before a restart, counts the same (nothing is loaded at
start-up).
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import structlog

from intercom_gateway.bus import Bus
from intercom_gateway.core import topics
from intercom_gateway.core.distributions import (
    Delivered,
    Distribution,
    DistributionAck,
    DistributionRow,
    check_distribution,
    fingerprint,
    for_panel,
    recipients,
)
from intercom_gateway.core.ingress import DeviceIndex, InputRejected, Limits
from intercom_gateway.core.models import Event, NoticeReadEvent, RejectReason, SurveyAnswerEvent
from intercom_gateway.core.plan import Publication
from intercom_gateway.core.policy import PartnerRegistry
from intercom_gateway.gateway.acks import Inbound
from intercom_gateway.gateway.completion import Completion
from intercom_gateway.gateway.consents import Consents
from intercom_gateway.store import Store

__all__ = ["DistributionDesk"]

log = structlog.get_logger("intercom_gateway.gateway.distributions")


class DistributionDesk:
    """The distributions the gateway took, and the handling of a new one."""

    def __init__(
        self,
        store: Store,
        partners: PartnerRegistry,
        devices: DeviceIndex,
        limits: Limits,
        consents: Consents,
        completion: Completion,
    ) -> None:
        self.store = store
        self.partners = partners
        self.devices = devices
        self.limits = limits
        self.registered = consents.registered  # §7(1)①: initialised dwellings get nothing
        self._send = completion.send
        self.known: dict[tuple[str, str], DistributionRow] = {}
        self._delivered: dict[tuple[str, str], Delivered] = {}

    async def delivered(self, event: Event) -> Delivered | None:
        """The stored distribution a usage event names, if any (``check_usage`` judges).

        One this process does not know is looked up in the store: partitioned gateways
        share one, and the building's partition may have moved here since it was sent.
        """
        if not isinstance(event, NoticeReadEvent | SurveyAnswerEvent):
            return None
        key = (event.contractor_id, event.distribution_id)
        found = self._delivered.get(key)
        if found is None:
            row = await self._row(key)
            if row is not None:  # parsed once, not per receipt
                found = self._delivered[key] = row.delivered
        return found

    async def _row(self, key: tuple[str, str]) -> DistributionRow | None:
        """The distribution stored under ``key``: from memory, else from the store, which
        every process shares (one may have stored it since this one started)."""
        row = self.known.get(key)
        if row is None:
            for row in await self.store.distributions(*key):
                self.known[key] = row
        return row

    async def handle(
        self, bus: Bus, inbound: Inbound, topic: topics.ContractorTopic, now: datetime
    ) -> None:
        """Take one distribution; raises ``InputRejected`` (after a refusal to the
        contractor) when it is refused."""
        payload = inbound.message.payload
        try:
            distribution = check_distribution(
                topic, payload, partners=self.partners, devices=self.devices, limits=self.limits
            )
            row = await self._stored(topic, distribution, now)
        except InputRejected as refused:
            if self.partners.contractor(topic.contractor) is not None:
                # A contractor not in the registry has no account to read an answer with.
                ack = _ack(topic, _named_id(payload), now, refused=refused)
                await self._answer(bus, inbound, topic, ack)
            raise
        contractor = self.partners.contractor(topic.contractor)
        assert contractor is not None  # check_distribution refuses unknown contractors
        for dwelling, device in row.panels:
            copy = for_panel(
                distribution,
                contractor_id=contractor.id,
                contractor_name=contractor.name,
                dwelling=dwelling,
            )
            publication = Publication(
                topics.panel_distributions(topic.building, device), copy.model_dump_json().encode()
            )
            await self._send(bus, inbound, publication)
        ack = _ack(topic, distribution.distribution_id, now, panels=len(row.panels))
        await self._answer(bus, inbound, topic, ack)
        log.info(
            "distribution",
            contractor=contractor.id,
            distribution_id=distribution.distribution_id,
            building=topic.building,
            panels=len(row.panels),
        )

    async def _stored(
        self, topic: topics.ContractorTopic, distribution: Distribution, now: datetime
    ) -> DistributionRow:
        key = (topic.contractor, distribution.distribution_id)
        content = distribution.model_dump_json()
        printed = fingerprint(content.encode())
        known = await self._row(key)
        if known is not None:
            if known.fingerprint != printed:
                raise InputRejected(
                    RejectReason.REPLAYED,
                    f"distribution {distribution.distribution_id} was already received"
                    " with other content",
                )
            return known  # sent again: the same panels get it again
        panels = recipients(distribution, devices=self.devices, registered=self.registered)
        row = DistributionRow(
            contractor_id=topic.contractor,
            distribution_id=distribution.distribution_id,
            building_id=topic.building,
            kind=distribution.kind,
            received_at=now,
            fingerprint=printed,
            content=content,
            panels=tuple(panels.items()),
        )
        await self.store.save_distribution(row)
        self.known[key] = row
        return row

    async def _answer(
        self, bus: Bus, inbound: Inbound, topic: topics.ContractorTopic, ack: DistributionAck
    ) -> None:
        answer = topics.contractor_distributions_ack(topic.contractor, topic.building)
        await self._send(bus, inbound, Publication(answer, ack.model_dump_json().encode()))


def _ack(
    topic: topics.ContractorTopic,
    distribution_id: str | None,
    now: datetime,
    *,
    panels: int = 0,
    refused: InputRejected | None = None,
) -> DistributionAck:
    return DistributionAck(
        distribution_id=distribution_id,
        contractor_id=topic.contractor,
        building_id=topic.building,
        accepted=refused is None,
        panels=panels,
        reason=refused.reason if refused is not None else None,
        detail=refused.detail[:512] if refused is not None else "",
        acknowledged_at=now,
    )


_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")  # models.Ident's pattern


def _named_id(payload: bytes) -> str | None:
    """The distribution id a refused payload names, if it names a well-formed one."""
    if len(payload) > 65_536:
        return None
    try:
        named = json.loads(payload).get("distribution_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return named if isinstance(named, str) and _ID.match(named) else None
