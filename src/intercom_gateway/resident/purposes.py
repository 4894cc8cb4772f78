"""§8 notification of the purposes of use: what flows where, for which purposes.

Read from the routes and gates ``decide`` itself uses (``Router.flows``), never derived
again from the policy here, so what a resident is told flows is what the gateway
forwards (tests/unit/test_resident_purposes.py holds the two to each other). Pure:
values in, values out; ``ResidentDesk.purposes`` answers and records the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import EventType
from intercom_gateway.core.outcomes import Reason, Withhold
from intercom_gateway.core.policy import DestinationKind, PartnerRegistry, Rule
from intercom_gateway.core.router import Flow, Router, Target

__all__ = ["purposes_in_force"]

# The resident's view of each destination kind that gets events one by one.
_PER_EVENT_KINDS = (
    DestinationKind.CLOUD,
    DestinationKind.GROUP,
    DestinationKind.ANALYTICS,
    DestinationKind.APP,  # §2(4): the Intercom app, while the handsets are linked (§7(2))
)

# How the resident is told of a consent gate, where the gate's own words are not enough.
_STOPPED = {Reason.NOT_REGISTERED: "initialised (moved out): nothing is sent"}


def purposes_in_force(consent: ConsentState, *, router: Router) -> dict[str, Any]:
    """Which destination gets which event kinds for which purposes, under this consent.

    Read from the routes and gates ``decide`` itself uses (``Router.flows``), so what a
    resident is told flows is what the gateway forwards.
    """
    policy, flows = router.policy, router.flows(consent)
    gate: str | None = None
    if isinstance(flows, Withhold):
        gate = f"{_STOPPED.get(flows.reason, flows.detail)} ({flows.clause})"
        destinations = []
    else:
        destinations = _destinations(flows, router.partners)
    used = sorted({p for d in destinations for f in d["flows"] for p in f["purposes"]})
    return {
        "building_id": consent.building_id,
        "dwelling_id": consent.dwelling_id,
        "policy_version": policy.version,
        "accepted_policy_version": consent.accepted_policy_version,
        "stopped": gate,
        "return_home_notification": consent.return_home_enabled,
        "intercom_app_linked": consent.intercom_app_linked,
        "destinations": destinations,
        "purposes": {
            key: policy.purposes[key].model_dump(include={"clause", "description"}) for key in used
        },
        "opted_out": list(consent.opted_out),
        "can_opt_out": sorted(policy.opt_out_purposes - set(consent.opted_out)),
        "provision_stopped": list(consent.provision_stopped),
    }


def _destinations(flows: Iterable[Flow], partners: PartnerRegistry) -> list[dict[str, Any]]:
    by_destination: dict[str, list[Flow]] = {}
    for flow in flows:
        by_destination.setdefault(flow.target.destination, []).append(flow)
    result = [_destination(kind.value, by_destination) for kind in _PER_EVENT_KINDS]
    statistics = _destination("statistics", by_destination)
    # §5(2)②: per building and window, never per event.
    counted = [f.event_type.value for f in by_destination.get("statistics", ())]
    result.append({**statistics, "flows": [], "counted": counted})
    for service in partners.services:
        name = f"partner:{service.id}"
        if name in by_destination:  # §5(1)②, §8: only services the dwelling uses
            entry = _destination(name, by_destination)
            result.append({**entry, "name": service.name, "operator": service.operator})
    for contractor in partners.contractors:  # §5(1)①: usage of its own distributions
        name = f"contractor:{contractor.id}"
        if name in by_destination:
            entry = _destination(name, by_destination)
            result.append({**entry, "name": contractor.name, "operator": contractor.operator})
    return [d for d in result if d["flows"] or d.get("counted")]


def _destination(name: str, by_destination: dict[str, list[Flow]]) -> dict[str, Any]:
    flows = by_destination.get(name, [])
    return {
        "destination": name,
        **(_described(flows[0].target) if flows else {}),
        "flows": [_flow(f) for f in flows],
    }


def _described(target: Target) -> dict[str, Any]:
    return {"kind": target.kind.value, "provision": target.provision.value, "clause": target.clause}


def _flow(flow: Flow) -> dict[str, Any]:
    event, image, rule = flow.parts.event, flow.parts.image, flow.route.base
    assert rule is not None  # a flow's route has a rule
    described: dict[str, Any] = {
        "event_type": flow.event_type.value,
        "rule_id": event.rule_id,
        "clause": event.clause,
        # The event's facts; the image travels in its own message, for its own
        # purposes (spec item 2), told apart as "image_rule".
        "purposes": list(event.purposes),
        "fields": _fields(rule, event.fields),
        "image": image is not None,
    }
    if image is not None:
        described["image_rule"] = {"rule_id": image.rule_id, "purposes": list(image.purposes)}
    if flow.target.service is not None and flow.event_type is EventType.UNLOCK_MODE:
        described["only"] = "unlocks made with this service's credentials (§3(4))"
    if flow.target.contractor is not None:
        described["only"] = "read receipts and answers of its own distributions (§5(1)①)"
    return described


def _fields(rule: Rule, fields: tuple[str, ...]) -> list[str] | str:
    # "all" and "aggregate" are told as such; otherwise the fields the copy carries.
    return rule.fields if rule.fields in ("all", "aggregate") else list(fields)
