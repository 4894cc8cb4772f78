"""Live configuration (§10): the gateway's one configuration, swapped between messages.

The policy, the partner registry and the device registry, compiled, are one immutable
``core.configuration.Configuration`` (``Gateway.config``), and the gateway's loop is its
one owner. A change is recorded in the store as a numbered revision (``config apply``, or
``run`` on SIGHUP) and announced on ``gateway/v1/config`` (retained), which every gateway
takes in the same stream as the panels' messages. The loop handles the notice in its turn
(``Reconfigurable._take_config``): it commits the messages before it, reads the revision
from the store, builds the new value (a new router: the old one's templates and memos go
with it), records the registry and the seed consent of dwellings new to it, and replaces
``config`` in one synchronous step (``install``) before it takes the next message. Every
event is therefore checked and decided under exactly one configuration, whose revision
its copies carry (the ``config_revision`` user property, beside ``policy_version``); a
dwelling that must accept a new policy version (``requires_reacceptance``) is withheld by
the consent gate from the first event after the swap. The gateway answers each notice
on ``gateway/v1/config/ack/{gateway_id}`` (``ConfigAck``). A partitioned gateway's
partitions each swap on their own loop (``gateway/partitioned.py``).

At start, the latest revision on record is in force if there is one (the files given are
then only compared with it, and a difference logged); revision 0 is the files.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import structlog
from pydantic import ValidationError

from intercom_gateway.bus import Bus
from intercom_gateway.core import topics
from intercom_gateway.core.configuration import ConfigAck, ConfigNotice, Configuration
from intercom_gateway.core.ingress import DeviceIndex, InputRejected
from intercom_gateway.core.models import RejectReason
from intercom_gateway.core.plan import Publication
from intercom_gateway.core.policy import PartnerRegistry, Policy, load_partners, load_policy
from intercom_gateway.core.registry import Registry, load_registry
from intercom_gateway.core.router import Router
from intercom_gateway.errors import BusError
from intercom_gateway.gateway.acks import Inbound
from intercom_gateway.gateway.consents import seed_consents
from intercom_gateway.gateway.rejections import describe
from intercom_gateway.gateway.status import status_payload
from intercom_gateway.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from intercom_gateway.gateway.completion import Completion
    from intercom_gateway.gateway.consents import Consents
    from intercom_gateway.gateway.distributions import DistributionDesk
    from intercom_gateway.gateway.rejections import Rejections
    from intercom_gateway.gateway.status import StatisticsRelease
    from intercom_gateway.settings import Settings

__all__ = ["Reconfigurable", "configuration_at_start"]

log = structlog.get_logger("intercom_gateway.gateway.service")


async def configuration_at_start(
    settings: Settings, store: Store
) -> tuple[Policy, PartnerRegistry, Registry, int]:
    """What a gateway starts under: the latest revision on record, or the files (0)."""
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    registry = load_registry(settings.registry_path)
    record = await store.config()
    if record is None:
        return policy, partners, registry, 0
    # The documents only: the gateway compiles its one Configuration of them.
    recorded = record.documents()
    if recorded != (policy, partners, registry):
        log.warning(
            "the store's configuration is in force, not the files given:"
            " `intercom-gateway config apply` changes it",
            revision=record.revision,
            recorded_by=record.actor,
        )
    return (*recorded, record.revision)


class Reconfigurable:
    """The gateway's configuration in force, and the handling of a notice to change it
    (a part of ``Gateway``, which provides the attributes declared here).

    ``Gateway._handle_event`` reads ``config`` from the event's check to its plan with
    no ``await`` between, so a swap (only ever made by the loop itself, between two
    messages) cannot fall inside one event either way.
    """

    config: Configuration
    settings: Settings
    store: Store
    completion: Completion
    clock: Callable[[], datetime]
    announce: bool
    _consents: Consents
    _statistics: StatisticsRelease
    _rejections: Rejections
    distributions: DistributionDesk
    # Told of every configuration installed: a partitioned process keeps the fingerprint
    # its group compares (``LeaseBook.config_sha256``) equal to what it decides under.
    installed: Callable[[Configuration], None] | None = None

    # What the configuration in force says; read through it, never kept apart from it.
    @property
    def policy(self) -> Policy:
        return self.config.policy

    @property
    def partners(self) -> PartnerRegistry:
        return self.config.partners

    @property
    def registry(self) -> Registry:
        return self.config.registry

    @property
    def router(self) -> Router:
        return self.config.router

    @property
    def devices(self) -> DeviceIndex:
        return self.config.devices

    def install(self, config: Configuration) -> None:
        """Decide under ``config`` from the next message on (§10). Synchronous: nothing
        else runs between the first assignment and the last, and only the loop calls it
        between two messages (``_take_config``), or before the loop starts."""
        self.config = config
        self._consents.policy = config.policy
        self._consents.partners = config.partners
        self._statistics.policy = config.policy
        self._rejections.devices = config.devices
        self.distributions.partners = config.partners  # its contractors (§2(1))
        self.distributions.devices = config.devices
        if self.installed is not None:
            self.installed(config)

    async def _control(self, bus: Bus, inbound: Inbound) -> None:
        """A configuration notice, handled like any message: never raises but for a lost
        bus, acknowledged in its turn."""
        try:
            try:
                await self._take_config(bus, inbound, self.clock())
            except InputRejected as rejection:
                await self._rejections.reject(bus, inbound, rejection, self.clock())
        except (asyncio.CancelledError, BusError):
            self.completion.handled(inbound, failed=True)
            raise
        except Exception as error:
            await self._rejections.internal_error(bus, inbound, error, self.clock())
        self.completion.handled(inbound)

    async def _take_config(self, bus: Bus, inbound: Inbound, now: datetime) -> None:
        """Take up the configuration revision a notice names, between two messages (§10).

        The messages before it are committed first (as for a consent change), so none of
        them is decided again under the new configuration after a crash. A revision not
        newer than the one in force changes nothing; one that is not in the store, or no
        longer validates, is refused and the configuration in force kept. Either way the
        gateway answers on its ack topic.
        """
        payload = bytes(inbound.message.payload)
        if not payload:
            return  # the retained notice was cleared
        try:
            notice = ConfigNotice.model_validate_json(payload)
        except ValidationError as error:
            detail = f"bad configuration notice: {' '.join(str(error).split())[:300]}"
            raise InputRejected(RejectReason.SCHEMA_VIOLATION, detail) from error
        await self.completion.commit_before(inbound)
        state: Literal["applied", "in_force", "failed"] = "in_force"
        detail = ""
        if notice.revision > self.config.revision:
            try:
                await self._adopt(notice.revision, now)
                state = "applied"
            except (ValidationError, ValueError, LookupError) as error:
                state, detail = "failed", " ".join(describe(error).split())
                log.error("configuration refused", revision=notice.revision, error=detail)
        ack = ConfigAck(
            gateway_id=self.settings.gateway_id,
            asked=notice.revision,
            revision=self.config.revision,
            policy_version=self.policy.version,
            state=state,
            detail=detail,
            at=now,
        )
        # Retained: a gateway's last answer is where it says which revision is in force.
        topic = topics.config_ack(self.settings.gateway_id)
        answer = Publication(topic, ack.model_dump_json().encode(), retain=True)
        await self.completion.send(bus, inbound, answer)
        if state == "applied" and self.announce:
            status = status_payload(self.settings.gateway_id, "online", revision=ack.revision)
            await self.completion.send(
                bus, inbound, Publication(topics.STATUS, status, retain=True)
            )

    async def _adopt(self, revision: int, now: datetime) -> None:
        """Read ``revision`` from the store, record its registry and the seed consent of
        its new dwellings, and install it."""
        record = await self.store.config(revision)
        if record is None:
            raise LookupError(f"configuration revision {revision} is not in this gateway's store")
        config = record.configuration()
        await self.store.save_registry(config.registry)
        await seed_consents(self.store, config.registry, self._consents.states, now=now)
        self.install(config)
        log.info(
            "configuration in force",
            revision=config.revision,
            policy_version=config.policy.version,
            recorded_by=record.actor,
        )
