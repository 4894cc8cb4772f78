"""Consent notices: a service is told when a dwelling withdraws from it (spec item 11).

Pure. A change withdraws a dwelling from a service when the dwelling used the service
before it (``ConsentState.uses``: used, provision not stopped) and not after:
``service_use`` with ``used`` false (§5(1)②; with ``request: stop_provision``, §8) or an
initialisation (§7(1)①: every service used). A refused change, a repeated one, or a
service never used withdraws nothing, so gets no notice.

A notice is a provision to a third party like any other (§8, APPI's record): it has a
ledger row (``notice_row``), written in the same commit as the change it follows. Its
content is a function of the stored change alone (``consent_notice``), so a gateway that
died before publishing it makes the same notice, with the same id, from the store.

What a notice asks (``stop``, ``delete``): nothing more of the dwelling comes from
``effective_from``, and the service stops receiving and processing the dwelling's data
under this consent. It deletes the images it holds of the dwelling, which §3(3)/(4) let
it hold only so the resident can check who came, in a service the dwelling uses; after
an initialisation (move-out, §7(1)①) everything it holds of the dwelling, whose id will
name the next residents. What else it holds as its own personal information (§5(1)②)
is the resident's to ask of it (§7(4)), and the notice does not ask it.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ChangeResult, ConsentState
from intercom_gateway.core.models import (
    SETTINGS_ADAPTER,
    ConsentNotice,
    Initialise,
    ServiceUse,
    SettingsChange,
)
from intercom_gateway.core.policy import PartnerRegistry
from intercom_gateway.core.records import LedgerRow

__all__ = [
    "NOTICE_EVENT_TYPE",
    "NOTICE_ITEMS",
    "NOTICE_PART",
    "NOTICE_PURPOSES",
    "NOTICE_RULE",
    "NoticeChange",
    "change_notices",
    "consent_notice",
    "notice_change",
    "notice_from_record",
    "notice_id",
    "notice_partner",
    "notice_recipient",
    "notice_row",
    "notice_topic",
    "withdrawn",
]


class NoticeChange(enum.StrEnum):
    """What the dwelling did (``ConsentNotice.change``)."""

    SERVICE_STOPPED = "service_stopped"  # §5(1)②: service_use with used false
    PROVISION_STOPPED = "provision_stopped"  # §8: the same, as a stop-provision request
    INITIALISED = "initialised"  # §7(1)①: the panel initialised (move-out)


# The notice's ledger row: its "event type" and part (a row is keyed by event, recipient
# and part), the rule and purpose it is provided under (§8, so the service can honour the
# withdrawal), and the items of the dwelling it names.
NOTICE_EVENT_TYPE = topics.CONSENT_NOTICE_LEVEL
NOTICE_PART = "notice"
NOTICE_RULE = "consent_notice"
NOTICE_PURPOSES = ("partner_provision",)
NOTICE_ITEMS = ("building_id", "dwelling_id", "change", "effective_from", "consent_revision")
_RECIPIENT = "partner:"  # the destination's name (router targets), unlock-mode services too
_NAMESPACE = uuid.UUID("5d0c8f3e-6f7a-4d7e-9a51-c0a5e7e0a11b")  # of notice ids

# Per change: its clause and what the notice asks the service to delete.
_ASKS: dict[NoticeChange, tuple[str, tuple[str, ...]]] = {
    NoticeChange.SERVICE_STOPPED: ("§5(1)②, §3(3)/(4)", ("images",)),
    NoticeChange.PROVISION_STOPPED: ("§8, §3(3)/(4)", ("images",)),
    NoticeChange.INITIALISED: ("§7(1)①, §8", ("all",)),
}
_STOP = ("receiving", "processing")


def withdrawn(before: ConsentState, after: ConsentState) -> tuple[str, ...]:
    """The services the dwelling used under ``before`` and does not under ``after``."""
    return tuple(s for s in before.services_used if before.uses(s) and not after.uses(s))


def notice_change(change: SettingsChange) -> NoticeChange | None:
    """What ``change`` is, as a notice says it; None: it withdraws from nothing."""
    match change.change:
        case Initialise():
            return NoticeChange.INITIALISED
        case ServiceUse(used=False, request="stop_provision"):
            return NoticeChange.PROVISION_STOPPED
        case ServiceUse(used=False):
            return NoticeChange.SERVICE_STOPPED
    return None


def notice_id(change_id: uuid.UUID, partner_id: str) -> uuid.UUID:
    """The same id for every copy of one change's notice to one service."""
    return uuid.uuid5(_NAMESPACE, f"{change_id}/{partner_id}")


def consent_notice(
    change: SettingsChange,
    partner_id: str,
    *,
    revision: int,
    effective_from: datetime,
    policy_version: str,
) -> ConsentNotice | None:
    """The notice ``change`` (applied at ``effective_from``, making consent ``revision``)
    gives ``partner_id``; None if ``change`` withdraws from no service."""
    kind = notice_change(change)
    if kind is None:
        return None
    clause, delete = _ASKS[kind]
    return ConsentNotice.model_validate(
        {
            "notice_id": notice_id(change.change_id, partner_id),
            "partner_id": partner_id,
            "building_id": change.building_id,
            "dwelling_id": change.dwelling_id,
            "change": kind.value,
            "clause": clause,
            "change_id": change.change_id,
            "effective_from": effective_from,
            "consent_revision": revision,
            "stop": _STOP,
            "delete": delete,
            "policy_version": policy_version,
        },
        strict=False,
    )


def change_notices(
    before: ConsentState,
    result: ChangeResult,
    change: SettingsChange,
    *,
    partners: PartnerRegistry,
    policy_version: str,
    now: datetime,
) -> tuple[tuple[ConsentNotice, LedgerRow], ...]:
    """The notices of ``change`` (applied or refused as ``result`` says, at ``now``) to
    every service it withdraws the dwelling from, each with its ledger row."""
    if not result.applied:
        return ()
    made = []
    for partner_id in withdrawn(before, result.state):
        notice = consent_notice(
            change,
            partner_id,
            revision=result.state.revision,
            effective_from=now,
            policy_version=policy_version,
        )
        # Only the changes notice_change names can withdraw a dwelling (tests pin it).
        if notice is not None:
            service = partners.get(partner_id)
            kind = service.kind if service is not None else "partner"
            made.append((notice, notice_row(notice, recipient_kind=kind)))
    return tuple(made)


def notice_from_record(row: LedgerRow, change: str, *, revision: int) -> ConsentNotice | None:
    """The notice whose ledger row is ``row``, made again from the stored ``change`` (its
    JSON) and the consent ``revision`` it made; None if ``row`` is not a notice's."""
    partner_id = notice_partner(row)
    if partner_id is None:
        return None
    return consent_notice(
        SETTINGS_ADAPTER.validate_json(change),
        partner_id,
        revision=revision,
        effective_from=row.at,
        policy_version=row.policy_version,
    )


def notice_topic(notice: ConsentNotice) -> str:
    return topics.consent_notice(notice.partner_id, notice.building_id, notice.dwelling_id)


def notice_recipient(partner_id: str) -> str:
    return f"{_RECIPIENT}{partner_id}"


def notice_partner(row: LedgerRow) -> str | None:
    """The service a notice's ledger row names; None for a row that is not a notice's."""
    if row.event_type != NOTICE_EVENT_TYPE or not row.recipient.startswith(_RECIPIENT):
        return None
    return row.recipient.removeprefix(_RECIPIENT)


def notice_row(notice: ConsentNotice, *, recipient_kind: str) -> LedgerRow:
    """The ledger row of ``notice`` (``recipient_kind``: the service's kind)."""
    return LedgerRow(
        at=notice.effective_from,
        recipient=notice_recipient(notice.partner_id),
        recipient_kind=recipient_kind,
        third_party=True,
        building_id=notice.building_id,
        dwelling_id=notice.dwelling_id,
        event_id=str(notice.notice_id),
        event_type=NOTICE_EVENT_TYPE,
        items=NOTICE_ITEMS,
        image=False,
        purposes=NOTICE_PURPOSES,
        rule_id=NOTICE_RULE,
        policy_version=notice.policy_version,
        decision_id=str(notice.change_id),
        part=NOTICE_PART,
    )
