"""One consent change, applied and put on record with the consent notices it gives.

Both writers of consent use it: the gateway's loop (``gateway.consents``, which then
publishes the notices) and the resident desk's offline channel (``resident.channels``,
whose notices a gateway publishes when it next starts). The change, the new state and the
notices' ledger rows are committed together (spec item 11).
"""

from __future__ import annotations

from datetime import datetime

from intercom_gateway.core.consent import ChangeResult, ConsentState, apply_change
from intercom_gateway.core.models import ConsentNotice, SettingsChange
from intercom_gateway.core.notices import change_notices
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.store.base import Store

__all__ = ["record_change"]


async def record_change(
    store: Store,
    before: ConsentState,
    change: SettingsChange,
    *,
    policy: Policy,
    partners: PartnerRegistry,
    source: str,
    now: datetime,
) -> tuple[ChangeResult, tuple[tuple[ConsentNotice, LedgerRow], ...]]:
    """Apply ``change`` to ``before`` and commit it, refused or not, with its notices."""
    result = apply_change(before, change, policy=policy, partners=partners, now=now)
    notices = change_notices(
        before, result, change, partners=partners, policy_version=policy.version, now=now
    )
    await store.save_consent(
        result.state,
        change=change.model_dump_json(),
        change_id=str(change.change_id),
        source=source,
        applied=result.applied,
        detail=result.detail,
        at=now,
        notices=[row for _, row in notices],
    )
    return result, notices
