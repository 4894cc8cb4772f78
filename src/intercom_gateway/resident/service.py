"""A resident's requests of §8, for one dwelling at a time: the pure parts.

§8 lets a resident ask for: notification of the purposes of use, disclosure of what is
held, disclosure of the records of provision to third parties (APPI, since 2022),
suspension of provision to one third party, suspension of use, and erasure. Each answer
is built from the policy, the dwelling's consent and the store, and every request is
itself recorded with its outcome (``requests`` table).

This module is pure (values in, values out): the kinds of request, the provision records
as CSV, the consent changes a request makes, and what an erasure keeps. The shell is
``resident.desk`` (``ResidentDesk``: reads the store, records the request), and a
consent change reaches the consent in force through a ``resident.channels`` channel.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import SETTINGS_ADAPTER, SettingsChange
from intercom_gateway.core.policy import Policy
from intercom_gateway.errors import PendingChange as PendingChange
from intercom_gateway.errors import UnknownDwelling as UnknownDwelling
from intercom_gateway.errors import UnknownPartner as UnknownPartner


class RequestKind(enum.StrEnum):
    PURPOSES = "purposes"  # §8 notification of purposes
    DISCLOSURE = "disclosure"  # §8 disclosure
    PROVISIONS = "provisions"  # §8 / APPI: disclosure of the provision records
    STOP_PROVISION = "stop_provision"  # §8 suspension of provision to a third party
    STOP_USE = "stop_use"  # §8 suspension of use
    ERASURE = "erasure"  # §8 erasure


# --- provision records (pure) ----------------------------------------------------------

CSV_COLUMNS = (
    "at",
    "recipient",
    "recipient_kind",
    "third_party",
    "building_id",
    "dwelling_id",
    "event_id",
    "event_type",
    "items",
    "image",
    "purposes",
    "rule_id",
    "policy_version",
    "decision_id",
    "part",  # event (its facts) or image (the image alone, its own message and purposes)
    "status",  # delivered, unconfirmed (may or may not have reached it) or intended
)


def provisions_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The records as CSV, lists joined with ';' so a spreadsheet shows one cell each."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "items": ";".join(row["items"]),
                "purposes": ";".join(row["purposes"]),
                "third_party": str(row["third_party"]).lower(),
                "image": str(row["image"]).lower(),
            }
        )
    return out.getvalue()


# --- consent changes ---------------------------------------------------------------


def settings_change(
    building_id: str, dwelling_id: str, body: dict[str, Any], *, now: datetime
) -> SettingsChange:
    # Through JSON, as a panel's message arrives: the models are strict about Python types.
    data = {
        "change_id": str(uuid.uuid4()),
        "building_id": building_id,
        "dwelling_id": dwelling_id,
        "requested_at": now.isoformat(),
        "change": body,
    }
    return SETTINGS_ADAPTER.validate_json(json.dumps(data))


def stop_use_bodies(consent: ConsentState, policy: Policy) -> list[dict[str, Any]]:
    """§8 suspension of use: every purpose that may be suspended, every service stopped."""
    opt_outs = [
        {"kind": "purpose_opt_out", "purpose": p, "opted_out": True}
        for p in sorted(policy.opt_out_purposes - set(consent.opted_out))
    ]
    stops = [{"kind": "service_use", "partner_id": s, "used": False} for s in consent.services_used]
    return opt_outs + stops


# --- erasure ---------------------------------------------------------------------------

# What an erasure leaves in place, and why (§7(1)①: records already held stay).
KEPT_ON_ERASURE: tuple[dict[str, str], ...] = (
    {
        "what": "provision ledger",
        "why": "the record of each provision to a third party must be kept for its "
        "retention period and disclosed on request; it is purged when it expires",
        "clause": "§8; APPI Art. 29; §7(1)① records already held stay",
    },
    {
        "what": "consent state and consent history",
        "why": "the evidence of what the dwelling agreed to, to which policy version and "
        "when; the gateway enforces it for every next event",
        "clause": "§10; §7(1)①; spec item 9",
    },
    {
        "what": "resident requests",
        "why": "every §8 request, this one included, is kept with its outcome",
        "clause": "§8",
    },
    {
        "what": "decision outcome sets",
        "why": "what a destination got and why, stored once for all the events it was the "
        "same for; a set names no dwelling and no event, and the dwelling's decisions that "
        "referred to it are erased",
        "clause": "§8",
    },
    {
        "what": "completed event ids",
        "why": "random ids without the dwelling, kept so a redelivered event is never "
        "provided twice",
        "clause": "spec item 8",
    },
    {
        "what": "device registry entry",
        "why": "needed to accept the panel's settings; removed with the dwelling",
        "clause": "§2(2) server registration",
    },
    {
        "what": "data held by partner services",
        "why": "the partner holds it as its own personal information; ask the partner "
        "(the provision records say which partners received what)",
        "clause": "§5(1)②; §7(3)(4)",
    },
)
