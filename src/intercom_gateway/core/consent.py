"""A dwelling's consent, and how a resident's settings change it.

Pure: ``apply_change`` takes a state and a settings change and returns the next state
with a sentence saying why it was applied or refused. Storage keeps the history; this
module only knows the rules. The policy is agreed per dwelling (preamble), so consent
is keyed by building and dwelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from intercom_gateway.core.models import (
    AcceptPolicy,
    Ident,
    Initialise,
    IntercomApp,
    PurposeOptOut,
    Register,
    ReturnHomeNotification,
    ServiceUse,
    SettingsAck,
    SettingsChange,
)
from intercom_gateway.core.policy import PartnerRegistry, Policy


class ConsentState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    building_id: Ident
    dwelling_id: Ident
    # §7(1)①: an initialised (moved-out) panel sends nothing; fail closed until registered.
    registered: bool = False
    # §7(1)②: the panel's return-home notification; "off" is a switch, so on is the default.
    return_home_enabled: bool = True
    # §5(1)②: partner and unlock-mode services the dwelling uses (sorted, unique).
    services_used: tuple[Ident, ...] = ()
    # §8: services whose provision the resident stopped; they get nothing until used again.
    provision_stopped: tuple[Ident, ...] = ()
    # §8: suspended uses, only among the purposes the policy marks opt-out-able.
    opted_out: tuple[str, ...] = ()
    # §10: consent is consent to a version.
    accepted_policy_version: str | None = None
    # §7(2): handsets linked to the Intercom app; lobby calls (§2(4)) flow only while
    # true. Off until the panel says otherwise (fail closed); initialising clears it.
    intercom_app_linked: bool = False
    revision: int = Field(default=0, ge=0)
    updated_at: AwareDatetime | None = None

    @field_validator("services_used", "provision_stopped", "opted_out")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Sorted so equal consents compare, store and print the same.
        return tuple(sorted(set(value)))

    @classmethod
    def initial(cls, building_id: str, dwelling_id: str) -> ConsentState:
        """A dwelling the gateway knows nothing about: not registered (fail closed)."""
        return cls(building_id=building_id, dwelling_id=dwelling_id)

    def uses(self, partner_id: str) -> bool:
        return partner_id in self.services_used and partner_id not in self.provision_stopped


@dataclass(frozen=True, slots=True)
class ChangeResult:
    state: ConsentState
    applied: bool
    detail: str
    clause: str | None = None

    def ack(self, change: SettingsChange, *, now: datetime) -> SettingsAck:
        return SettingsAck(
            change_id=change.change_id,
            dwelling_id=change.dwelling_id,
            applied=self.applied,
            detail=self.detail,
            acknowledged_at=now,
        )


def apply_change(
    state: ConsentState,
    change: SettingsChange,
    *,
    policy: Policy,
    partners: PartnerRegistry,
    now: datetime,
) -> ChangeResult:
    """Apply one resident setting; a refused change leaves ``state`` untouched."""
    if (change.building_id, change.dwelling_id) != (state.building_id, state.dwelling_id):
        return _refused(
            state,
            f"change is for {change.building_id}/{change.dwelling_id}, "
            f"consent is for {state.building_id}/{state.dwelling_id}",
        )
    match change.change:
        case Register() as body:
            return _register(state, body, policy=policy, now=now)
        case Initialise():
            return _initialise(state, now=now)
        case ReturnHomeNotification(enabled=enabled):
            word = "on" if enabled else "off"
            return _applied(
                state,
                now,
                f"return-home notification {word}",
                "§7(1)②",
                return_home_enabled=enabled,
            )
        case ServiceUse() as body:
            return _service_use(state, body, partners=partners, now=now)
        case PurposeOptOut() as body:
            return _opt_out(state, body, policy=policy, now=now)
        case AcceptPolicy() as body:
            return _accept(state, body, policy=policy, now=now)
        case IntercomApp(linked=linked):
            word = "linked to" if linked else "removed from"
            return _applied(
                state,
                now,
                f"handsets {word} the Intercom app",
                "§7(2)",
                intercom_app_linked=linked,
            )
    raise AssertionError(f"unhandled settings change {change.change!r}")  # pragma: no cover


def _applied(
    state: ConsentState, now: datetime, detail: str, clause: str, **update: Any
) -> ChangeResult:
    new = state.model_copy(update={**update, "revision": state.revision + 1, "updated_at": now})
    return ChangeResult(new, applied=True, detail=detail, clause=clause)


def _refused(state: ConsentState, detail: str, clause: str | None = None) -> ChangeResult:
    return ChangeResult(state, applied=False, detail=detail, clause=clause)


def _consent_to(
    state: ConsentState,
    version: str,
    *,
    policy: Policy,
    now: datetime,
    detail: str,
    clause: str,
    **update: Any,
) -> ChangeResult:
    """Consent given to policy ``version``: only the version in force can have it (§10)."""
    if version == policy.version:
        return _applied(state, now, detail, clause, accepted_policy_version=version, **update)
    if policy.known_version(version):
        return _refused(state, f"policy version {version} is superseded by {policy.version}", "§10")
    return _refused(
        state, f"unknown policy version {version!r} (in force: {policy.version})", "§10"
    )


def _register(
    state: ConsentState, body: Register, *, policy: Policy, now: datetime
) -> ChangeResult:
    if state.registered:
        return _refused(state, "already registered; initialise (move out) first", "§7(1)①")
    return _consent_to(
        state,
        body.policy_version,
        policy=policy,
        now=now,
        detail=f"registered under policy {body.policy_version}",
        clause="§7(1)①, §10",
        registered=True,
    )


def _initialise(state: ConsentState, *, now: datetime) -> ChangeResult:
    # Move-out: the next residents must not inherit services, opt-outs or acceptance.
    fresh = ConsentState.initial(state.building_id, state.dwelling_id)
    new = fresh.model_copy(update={"revision": state.revision + 1, "updated_at": now})
    return ChangeResult(new, applied=True, detail="initialised: nothing is sent", clause="§7(1)①")


def _service_use(
    state: ConsentState, body: ServiceUse, *, partners: PartnerRegistry, now: datetime
) -> ChangeResult:
    service = partners.get(body.partner_id)
    if service is None:
        return _refused(state, f"unknown partner service {body.partner_id!r}", "§5(1)②")
    used, stopped = set(state.services_used), set(state.provision_stopped)
    if body.used:
        used.add(service.id)
        stopped.discard(service.id)
        detail = f"now using {service.name} ({service.id})"
    else:
        # §8: stopping is also a request to stop provision, remembered as such.
        used.discard(service.id)
        stopped.add(service.id)
        detail = f"provision to {service.name} ({service.id}) stopped"
    return _applied(
        state,
        now,
        detail,
        "§5(1)②, §8",
        services_used=tuple(sorted(used)),
        provision_stopped=tuple(sorted(stopped)),
    )


def _opt_out(
    state: ConsentState, body: PurposeOptOut, *, policy: Policy, now: datetime
) -> ChangeResult:
    if body.purpose not in policy.purposes:
        return _refused(state, f"unknown purpose {body.purpose!r}", "§3")
    if body.purpose not in policy.opt_out_purposes:
        allowed = ", ".join(sorted(policy.opt_out_purposes))
        return _refused(
            state, f"purpose {body.purpose!r} cannot be opted out of (only: {allowed})", "§8"
        )
    opted = set(state.opted_out)
    if body.opted_out:
        opted.add(body.purpose)
    else:
        opted.discard(body.purpose)
    word = "opted out of" if body.opted_out else "opted back into"
    return _applied(state, now, f"{word} {body.purpose}", "§8", opted_out=tuple(sorted(opted)))


def _accept(
    state: ConsentState, body: AcceptPolicy, *, policy: Policy, now: datetime
) -> ChangeResult:
    if not state.registered:
        return _refused(state, "not registered; register with the policy version", "§7(1)①")
    detail = f"accepted policy {body.policy_version}"
    return _consent_to(
        state, body.policy_version, policy=policy, now=now, detail=detail, clause="§10"
    )
