"""The consent in force for every dwelling: restored at start, changed by residents.

The in-memory state changes before the gateway takes its next message, so no later
event is decided under the old consent (spec item 9); every change is committed to the
store before its acknowledgement is published, with the ledger rows of the consent
notices it gives the services it withdraws the dwelling from (spec item 11,
``core.notices``; published by the gateway, ``gateway.notices``).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import structlog

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import ConsentNotice, SettingsChange
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.core.registry import Dwelling, InitialConsent, Registry
from intercom_gateway.gateway.status import Metrics
from intercom_gateway.store import Store
from intercom_gateway.store.changes import record_change

__all__ = ["Applied", "Consents", "consent_from_registry", "seed_consents"]

log = structlog.get_logger("intercom_gateway.gateway.service")


class Consents:
    """Every dwelling's consent state, by (building, dwelling)."""

    def __init__(
        self,
        states: dict[tuple[str, str], ConsentState],
        *,
        store: Store,
        policy: Policy,
        partners: PartnerRegistry,
        metrics: Metrics,
    ) -> None:
        self.states = states
        self.store = store
        self.policy = policy
        self.partners = partners
        self.metrics = metrics

    def state(self, building_id: str, dwelling_id: str) -> ConsentState:
        state = self.states.get((building_id, dwelling_id))
        return state if state is not None else ConsentState.initial(building_id, dwelling_id)

    def registered(self, building_id: str, dwelling_id: str) -> bool:
        # Ids from a rejected payload may be anything: look them up, never build on them.
        state = self.states.get((building_id, dwelling_id))
        return state is not None and state.registered

    async def apply(self, change: SettingsChange, *, source: str, now: datetime) -> Applied:
        """Apply and durably record one resident setting, with the ledger rows of the
        consent notices it gives (spec item 11); returns the ack and notices to publish."""
        key = (change.building_id, change.dwelling_id)
        result, notices = await record_change(
            self.store,
            self.state(*key),
            change,
            policy=self.policy,
            partners=self.partners,
            source=source,
            now=now,
        )
        if result.applied:
            self.states[key] = result.state
        self.metrics.settings["applied" if result.applied else "refused"] += 1
        log.info(
            "settings",
            dwelling=f"{key[0]}/{key[1]}",
            kind=change.change.kind,
            applied=result.applied,
            detail=result.detail,
            notices=[n.partner_id for n, _ in notices],
        )
        ack = result.ack(change, now=now).model_dump_json().encode()
        return Applied(ack, notices)


class Applied(NamedTuple):
    """A settings change on record: its acknowledgement, and its consent notices with
    their ledger rows (committed with the change)."""

    ack: bytes
    notices: tuple[tuple[ConsentNotice, LedgerRow], ...] = ()


async def seed_consents(
    store: Store,
    registry: Registry,
    consents: dict[tuple[str, str], ConsentState],
    *,
    now: datetime,
) -> None:
    """Dwellings the store knows nothing about start with the registry's consent."""
    entries = []
    for building, dwelling in registry.dwellings():
        key = (building.id, dwelling.id)
        if key in consents or dwelling.consent is None:
            continue
        state = consent_from_registry(building.id, dwelling, now=now)
        entries.append((state, dwelling.consent.model_dump_json()))
        consents[key] = state
    if entries:
        await store.save_initial_consents(
            entries, source="registry", detail="initial consent from the device registry", at=now
        )


def consent_from_registry(building_id: str, dwelling: Dwelling, *, now: datetime) -> ConsentState:
    initial = dwelling.consent or InitialConsent(registered=False)
    return ConsentState(
        building_id=building_id,
        dwelling_id=dwelling.id,
        registered=initial.registered,
        return_home_enabled=initial.return_home_enabled,
        services_used=initial.services,
        intercom_app_linked=initial.intercom_app,
        accepted_policy_version=initial.policy_version,
        revision=1,
        updated_at=now,
    )
