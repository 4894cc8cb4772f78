"""What a decision says: for one event, every destination's outcome, and why.

``decide.py`` makes these; ``encoding.py`` turns a forwarded outcome's copies into bytes.
A withheld outcome names its ``Reason`` and the clause behind it; a forwarded one holds
one ``Copy`` per rule that allowed a part of the event (spec item 2; ``tags.py``).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from intercom_gateway.core.models import EventType, Forwarded
from intercom_gateway.core.policy import DestinationKind, Provision
from intercom_gateway.core.tags import Copy, Part

__all__ = ["Decision", "Outcome", "Reason", "Withhold"]


class Reason(enum.StrEnum):
    """Why a destination did not get an event."""

    CONSENT_MISMATCH = "consent_mismatch"
    NOT_REGISTERED = "not_registered"
    POLICY_NOT_ACCEPTED = "policy_not_accepted"
    RETURN_HOME_OFF = "return_home_off"
    NO_RULE = "no_rule"
    UNLOCK_MODE_EXCLUDED = "unlock_mode_excluded"
    SERVICE_NOT_USED = "service_not_used"
    PROVISION_STOPPED = "provision_stopped"
    NOT_DECLARED = "not_declared"
    OTHER_UNLOCK_SERVICE = "other_unlock_service"
    PURPOSES_OPTED_OUT = "purposes_opted_out"
    NO_COMMON_PURPOSE = "no_common_purpose"
    # A copy whose tags would not hold for everything in it (tags.untrue_tags): only a
    # policy that skipped the loader's checks can get here, and then nothing is sent.
    UNTRUE_TAGS = "untrue_tags"
    # Part A. §7(2): the dwelling's handsets are not linked to the Intercom app.
    INTERCOM_APP_UNLINKED = "intercom_app_unlinked"
    # §2(5) does not list §2(4) Intercom-app information for partner services.
    INTERCOM_APP_EXCLUDED = "intercom_app_excluded"
    # §5(1)①: a distribution's usage information goes to its own contractor only.
    OTHER_CONTRACTOR = "other_contractor"


@dataclass(frozen=True, slots=True)
class Withhold:
    reason: Reason
    detail: str
    clause: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    destination: str  # "cloud", "group", "partner:<id>", "analytics", ...
    kind: DestinationKind
    provision: Provision  # the ledger records third_party; group is joint_use (§8)
    forwarded: bool
    detail: str
    # Forwarded: what to publish, the event's facts first, then its image when this
    # destination may have it, each a copy under exactly one rule. Empty when withheld.
    copies: tuple[Copy, ...] = ()
    reason: Reason | None = None
    clause: str | None = None  # withheld: the reason's; forwarded: the event copy's rule's
    # Forwarded, but a copy the rules would allow was not produced because its tags
    # would not hold for everything in it (tags.untrue_tags): why. Fail closed.
    untrue: str | None = None

    @property
    def third_party(self) -> bool:
        return self.provision is Provision.THIRD_PARTY

    @property
    def joint_use(self) -> bool:
        return self.provision is Provision.JOINT_USE

    @property
    def event_copy(self) -> Copy | None:
        """The copy of the event's facts (never with the image); None when withheld."""
        return self.copies[0] if self.copies else None

    @property
    def image_copy(self) -> Copy | None:
        """The copy of the event's image alone, when this destination gets one."""
        return self.copies[1] if len(self.copies) > 1 else None

    # The event copy's tags, topic and payload: what the event's facts carry. The image
    # has its own (``image_copy``); nothing here is a union of the two.

    @property
    def topic(self) -> str | None:
        return self.copies[0].topic if self.copies else None

    @property
    def payload(self) -> dict[str, Any] | None:
        return self.copies[0].payload if self.copies else None

    @property
    def rule_id(self) -> str | None:
        return self.copies[0].tags.rule_id if self.copies else None

    @property
    def purposes(self) -> tuple[str, ...]:
        return self.copies[0].tags.purposes if self.copies else ()

    @property
    def categories(self) -> tuple[str, ...]:
        return self.copies[0].tags.categories if self.copies else ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.copies[0].tags.fields if self.copies else ()

    def forwarded_message(
        self, decision: Decision, now: datetime, copy: Copy | None = None
    ) -> Forwarded:
        """The envelope of ``copy`` (default: the event copy) to publish on its topic;
        statistics go via the aggregator."""
        copy = copy or self.event_copy
        if not self.forwarded or copy is None or copy.payload is None:
            raise ValueError(f"{self.destination}: nothing to publish per event")
        tags = copy.tags
        analytics = self.kind is DestinationKind.ANALYTICS
        return Forwarded(
            # §5(5): an analytics copy must not be joinable to the identified copies,
            # so it carries neither the event id nor the shared decision id.
            decision_id=uuid.uuid4() if analytics else decision.decision_id,
            event_id=None if analytics else decision.event_id,
            gateway_id=decision.gateway_id,
            forwarded_at=now,
            destination=self.destination,
            purposes=tags.purposes,
            categories=tags.categories,
            policy_version=decision.policy_version,
            rule_id=tags.rule_id,
            clause=tags.clause,
            event=copy.payload,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: UUID
    gateway_id: str
    decided_at: datetime
    event_id: UUID
    event_type: EventType
    building_id: str
    dwelling_id: str
    policy_version: str
    consent_revision: int
    categories: tuple[str, ...]  # what the event contains, image included
    outcomes: tuple[Outcome, ...]
    # Set when consent itself stops the event (§7(1), §10): then the gateway must not
    # store it either, not just not forward it (spec item 7).
    gate: Withhold | None = None
    # The router's template ``decide`` made this from (``router.Template``): what every
    # decision of its route shares, so ``plan`` works that out once per template. Not an
    # init field, so ``dataclasses.replace`` (a decision changed by hand) drops it.
    template: object | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def forwarded(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.forwarded)

    def outcome(self, destination: str) -> Outcome:
        for candidate in self.outcomes:
            if candidate.destination == destination:
                return candidate
        raise KeyError(destination)

    def messages(self, now: datetime) -> list[tuple[str, Forwarded]]:
        """(topic, envelope) for every per-event publication, in destination order."""
        return [
            (c.topic, o.forwarded_message(self, now, c))
            for o in self.outcomes
            if o.forwarded
            for c in o.copies
            if c.payload is not None and c.topic is not None
        ]

    def explain(self) -> str:
        lines = [
            f"event {self.event_id} ({self.event_type.value}) of "
            f"{self.building_id}/{self.dwelling_id}, policy {self.policy_version}, "
            f"consent revision {self.consent_revision}"
        ]
        lines += [line for o in self.outcomes for line in _explain_lines(o)]
        return "\n".join(lines)


def _explain_lines(o: Outcome) -> list[str]:
    """One line per copy of a forwarded outcome (the image's is its own message)."""
    if not o.forwarded:
        reason = o.reason.value if o.reason else "?"
        clause = f" ({o.clause})" if o.clause else ""
        return [f"  {o.destination:<24} withheld   {reason}{clause}: {o.detail}"]
    lines = []
    for c in o.copies:
        head = f"{o.destination:<24} forwarded " if c.part is Part.EVENT else f"{'':<24} + image   "
        why = f"rule {c.rule_id} ({c.clause}); purposes {', '.join(c.purposes)}"
        lines.append(f"  {head} {why}; fields {', '.join(c.fields) or '-'}")
    if o.untrue:
        lines.append(f"  {'':<24} not sent   {o.untrue}")
    return lines
