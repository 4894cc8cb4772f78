"""The dwelling page's consent changes: every setting a dwelling panel can make, as the
body of the panel's own settings message (``core.models.SettingsChange``), and who may
make which.

A change goes out through the desk's channel (``resident.channels``), the path of
``consent set`` and of a panel: the gateway applies or refuses it, records it in the
dwelling's consent history and acknowledges. The console adds no rule of its own to
what the gateway decides; it only decides who may ask:

- the operator, every change of every dwelling;
- a resident session, its own dwelling's return-home notification (§7(1)②), services
  used (§5(1)②), stop provision (§8) and opt-outs (§8): the settings the policy leaves
  to the people who live there, and which §8 lets them ask for;
- accept-policy (§10), operator and resident session alike: consent is to a version, and
  the policy is accepted for the dwelling by those who live there ("a resident who does
  not accept a new version may lose some services"), so it is theirs to give on their
  own dwelling; the operator relays it as it relays a panel's other settings. Unlike
  register it moves no one in and resets nothing, and the gateway accepts only the
  version in force (an older or unknown one is refused with its reason);
- never register or initialise (§7(1)①, the move-in and move-out setting), which a
  resident session may not send: the policy is agreed per dwelling by everyone living
  there, a resident token belongs to the dwelling rather than to a household and can
  outlive a move-out, and initialising resets the consent the next residents start
  from. The operator makes them on the page (initialise after a second, confirming
  form); residents make them on the panel itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from intercom_gateway.core.policy import Policy

Body = dict[str, Any]
Fields = Mapping[str, str]

# Changes only the operator may send, and why a resident session may not (shown on 403).
OPERATOR_ONLY = {
    "register": "register is the move-in setting (§7(1)①): the operator's, or the panel's",
    "initialise": "initialise is the move-out setting (§7(1)①): the operator's, or the panel's",
}


def _register(fields: Fields, policy: Policy) -> Body:
    # Consent is to a version (§10): the one in force unless the form names another.
    version = fields.get("policy_version", "").strip() or policy.version
    return {"kind": "register", "policy_version": version}


def _accept_policy(fields: Fields, policy: Policy) -> Body:
    # The version in force unless the form names another (which the gateway refuses).
    version = fields.get("policy_version", "").strip() or policy.version
    return {"kind": "accept_policy", "policy_version": version}


def _initialise(_: Fields, __: Policy) -> Body:
    return {"kind": "initialise"}


def _return_home(fields: Fields, _: Policy) -> Body:
    return {"kind": "return_home_notification", "enabled": fields.get("enabled") == "on"}


def _service_use(fields: Fields, _: Policy) -> Body:
    used = fields.get("used", "yes") == "yes"
    return {"kind": "service_use", "partner_id": fields.get("partner", ""), "used": used}


def _opt_out(fields: Fields, _: Policy) -> Body:
    opted_out = fields.get("opted_out", "yes") == "yes"
    return {"kind": "purpose_opt_out", "purpose": fields.get("purpose", ""), "opted_out": opted_out}


# action of the page -> the panel's settings body it sends.
CHANGES: dict[str, Callable[[Fields, Policy], Body]] = {
    "register": _register,
    "initialise": _initialise,
    "return-home": _return_home,
    "service-use": _service_use,
    "resume-provision": _service_use,  # the older form's name: use the service again
    "opt-out": _opt_out,
    "accept-policy": _accept_policy,
}


def body_of(action: str, fields: Fields, policy: Policy) -> Body:
    """The settings body a form asks for; the gateway validates what it names."""
    return CHANGES[action](fields, policy)


def name_change(change: str) -> str:
    """A history row's change in words: what was asked, whether applied or refused."""
    try:
        body = json.loads(change)["change"]
        kind = body["kind"]
    except (ValueError, KeyError, TypeError):
        return "initial consent"  # not a panel's message: the registry's starting state
    match kind:
        case "register" | "accept_policy":
            return f"{kind} {body.get('policy_version')}"
        case "initialise":
            return "initialise"
        case "return_home_notification":
            return f"return-home {'on' if body.get('enabled') else 'off'}"
        case "service_use":
            return f"service {body.get('partner_id')}: {'use' if body.get('used') else 'stop'}"
        case "purpose_opt_out":
            word = "opt out of" if body.get("opted_out") else "opt back into"
            return f"{word} {body.get('purpose')}"
    return str(kind)
