"""The consent gates: what the dwelling's consent alone withholds, before any rule.

Each gate is one clause, in one function, and both readers of consent call it: ``decide``
for an event, and ``Router.flows`` for the resident's notification of purposes (§8). A
gate returns why it withholds, or None.
"""

from __future__ import annotations

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import EventType
from intercom_gateway.core.outcomes import Reason, Withhold
from intercom_gateway.core.policy import Contractor, PartnerService, Policy

__all__ = [
    "consent_gate",
    "contractor_gate",
    "intercom_app_gate",
    "return_home_gate",
    "service_gate",
    "unlock_gate",
]


def consent_gate(consent: ConsentState, policy: Policy) -> Withhold | None:
    """§7(1)① and §10: nothing of the dwelling flows at all."""
    if not consent.registered:
        return Withhold(Reason.NOT_REGISTERED, "dwelling initialised: nothing is sent", "§7(1)①")
    accepted = consent.accepted_policy_version
    if accepted is None or not policy.known_version(accepted):
        return Withhold(Reason.POLICY_NOT_ACCEPTED, f"no known policy accepted ({accepted})", "§10")
    if policy.requires_reacceptance and accepted != policy.version:
        detail = f"policy {policy.version} must be accepted (accepted: {accepted})"
        return Withhold(Reason.POLICY_NOT_ACCEPTED, detail, "§10")
    return None


def return_home_gate(et: EventType, consent: ConsentState) -> Withhold | None:
    """§7(1)②: return home "off" stops return-home events at the gateway, cloud included."""
    if et is EventType.RETURN_HOME and not consent.return_home_enabled:
        return Withhold(Reason.RETURN_HOME_OFF, "return-home notification is off", "§7(1)②")
    return None


def intercom_app_gate(et: EventType, consent: ConsentState) -> Withhold | None:
    """§7(2): removing the device from the Intercom app stops §2(4): no lobby call is
    collected while the dwelling's handsets are not linked, cloud included. A dwelling
    that never linked them is not linked (fail closed)."""
    if et is EventType.LOBBY_CALL and not consent.intercom_app_linked:
        return Withhold(
            Reason.INTERCOM_APP_UNLINKED, "no handset linked to the Intercom app", "§7(2)"
        )
    return None


def service_gate(service: PartnerService, consent: ConsentState) -> Withhold | None:
    """§8 and §5(1)②: a partner gets a dwelling's events only while the dwelling uses it."""
    if service.id in consent.provision_stopped:
        return Withhold(
            Reason.PROVISION_STOPPED, f"resident stopped provision to {service.id}", "§8"
        )
    if service.id not in consent.services_used:
        return Withhold(Reason.SERVICE_NOT_USED, f"dwelling does not use {service.id}", "§5(1)②")
    return None


def unlock_gate(service: PartnerService, et: EventType, named: object) -> Withhold | None:
    """§3(4): an unlock is the business of the service whose credentials were used."""
    if et is EventType.UNLOCK_MODE and named != service.id:
        return Withhold(Reason.OTHER_UNLOCK_SERVICE, f"unlock mode used by {named}", "§3(4)")
    return None


def contractor_gate(contractor: Contractor, named: object) -> Withhold | None:
    """§5(1)①: a contractor gets only the usage information of its own distributions.

    ``named`` is the contractor the event names (``contractor_id``), checked by the
    gateway against the stored distribution; any other event names none, and then no
    contractor gets it (the policy has no contractor rule for it either).
    """
    if named != contractor.id:
        detail = f"usage information of {named}'s distribution, not {contractor.id}'s"
        return Withhold(Reason.OTHER_CONTRACTOR, detail, "§5(1)①")
    return None
