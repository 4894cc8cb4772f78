"""The configuration a gateway decides under: one immutable value, swapped whole (§10).

A ``Configuration`` is the policy, the partner registry and the device registry, with
what is compiled from them (the ``Router`` and its memos, the ``DeviceIndex``) and the
revision that names them. The gateway holds exactly one; a change builds a new one and
the gateway's loop replaces the old between two messages (``gateway/service.py``), so
every event is decided under one (policy, partners, registry), never a mix, and the
router's templates and memos die with their configuration.

Revision 0 is the files a gateway started with when its store has no configuration on
record; revisions 1, 2, ... are the changes recorded in the store (``ConfigRecord``, by
``intercom-gateway config apply`` or a SIGHUP), each naming who made it and when. The
revision travels on every identified copy as the user property ``config_revision``,
beside ``policy_version``: a number shared by every event of a period links nothing.

The control messages on ``gateway/v1/config`` (``ConfigNotice``, retained) and the
gateways' answers on ``gateway/v1/config/ack/{gateway_id}`` (``ConfigAck``) are here too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from intercom_gateway.core.ingress import DeviceIndex
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.router import Router

__all__ = [
    "REVISION_PROPERTY",
    "ConfigAck",
    "ConfigNotice",
    "ConfigRecord",
    "Configuration",
    "digest_of",
]

# The MQTT 5 user property naming the configuration revision a copy was decided under.
REVISION_PROPERTY = "config_revision"


@dataclass(frozen=True, slots=True, eq=False)
class Configuration:
    """Everything a decision depends on but the event and the dwelling's consent."""

    revision: int
    policy: Policy
    partners: PartnerRegistry
    registry: Registry
    router: Router
    devices: DeviceIndex
    property: tuple[str, str]  # (REVISION_PROPERTY, revision), on every identified copy

    @classmethod
    def build(
        cls, policy: Policy, partners: PartnerRegistry, registry: Registry, *, revision: int = 0
    ) -> Configuration:
        """Compile the router and the device index of one (policy, partners, registry)."""
        return cls(
            revision=revision,
            policy=policy,
            partners=partners,
            registry=registry,
            router=Router.compile(policy, partners),
            devices=DeviceIndex.from_registry(registry),
            property=(REVISION_PROPERTY, str(revision)),
        )


def digest_of(policy: Policy, partners: PartnerRegistry, registry: Registry) -> str:
    """SHA-256 of the three as validated (the same content in another layout is equal)."""
    digest = hashlib.sha256()
    for model in (registry, partners, policy):
        digest.update(model.model_dump_json().encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A configuration change on record: who made it, when, and what it is (the three
    validated documents as JSON, read back by every gateway that takes it up)."""

    revision: int
    at: datetime
    actor: str
    policy_version: str
    digest: str
    policy: str
    partners: str
    registry: str

    @classmethod
    def of(
        cls,
        policy: Policy,
        partners: PartnerRegistry,
        registry: Registry,
        *,
        actor: str,
        at: datetime,
        revision: int = 0,
    ) -> ConfigRecord:
        """A record of the three; ``revision`` is given by the store when it saves it."""
        return cls(
            revision=revision,
            at=at,
            actor=actor,
            policy_version=policy.version,
            digest=digest_of(policy, partners, registry),
            policy=policy.model_dump_json(),
            partners=partners.model_dump_json(),
            registry=registry.model_dump_json(),
        )

    def documents(self) -> tuple[Policy, PartnerRegistry, Registry]:
        """The recorded documents, validated again (pydantic errors out)."""
        policy = Policy.model_validate_json(self.policy)
        partners = PartnerRegistry.model_validate_json(self.partners)
        problems = partners.check_against(policy)
        if problems:
            raise ValueError("; ".join(problems))
        return policy, partners, Registry.model_validate_json(self.registry)

    def configuration(self) -> Configuration:
        """The recorded documents, validated again and compiled."""
        policy, partners, registry = self.documents()
        return Configuration.build(policy, partners, registry, revision=self.revision)


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigNotice(_Message):
    """``gateway/v1/config`` (retained): the configuration revision to take up from the
    store. Published by ``config apply`` (the operator account) or a gateway (SIGHUP)."""

    revision: int = Field(ge=1)
    policy_version: str
    digest: str
    actor: str
    at: AwareDatetime


class ConfigAck(_Message):
    """``gateway/v1/config/ack/{gateway_id}``: what a gateway made of a notice.

    ``applied``: it decides under ``revision`` from the next message on; ``in_force``:
    it already did (or holds a newer one, named in ``revision``); ``failed``: it keeps
    ``revision`` and says why in ``detail``.
    """

    gateway_id: str
    asked: int
    revision: int
    policy_version: str
    state: Literal["applied", "in_force", "failed"]
    detail: str = ""
    at: AwareDatetime
