"""``explain``: why an event goes where it goes, before the fact or after it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError

from intercom_gateway.core.configuration import Configuration
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import parse_event, utc_now
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.registry import load_registry
from intercom_gateway.errors import ConfigError, GatewayError
from intercom_gateway.settings import Settings
from intercom_gateway.store.opening import open_store, sqlite_path


async def _stored_consent(settings: Settings, building: str, dwelling: str) -> ConsentState | None:
    path = sqlite_path(settings)
    if path is not None and not path.exists():
        return None
    async with open_store(settings) as store:
        return (await store.consents()).get((building, dwelling))


def _registry_consent(settings: Settings, building: str, dwelling: str) -> ConsentState | None:
    from intercom_gateway.gateway.consents import consent_from_registry

    registry = load_registry(settings.registry_path)
    for b, d in registry.dwellings():
        if (b.id, d.id) == (building, dwelling) and d.consent is not None:
            return consent_from_registry(b.id, d, now=utc_now())
    return None


async def _in_force(settings: Settings) -> Configuration:
    """The configuration a gateway on this store decides under (§10): the latest
    revision on record, or the files (revision 0)."""
    path = sqlite_path(settings)
    record = None
    if path is None or path.exists():
        async with open_store(settings) as store:
            record = await store.config()
    if record is not None:
        return record.configuration()
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    return Configuration.build(policy, partners, load_registry(settings.registry_path))


async def explain_event(
    settings: Settings, event_json: bytes, consent_json: bytes | None, *, as_json: bool = False
) -> str:
    """Decide an event now, under the given consent, the stored one or the registry's."""
    try:
        event = parse_event(event_json)
    except ValidationError as error:
        raise GatewayError(f"not a valid event: {error}") from None
    if consent_json is not None:
        try:
            consent = ConsentState.model_validate_json(consent_json)
        except ValidationError as error:
            raise ConfigError(f"not a valid consent state: {error}") from None
    else:
        b, d = event.building_id, event.dwelling_id
        consent = (
            await _stored_consent(settings, b, d)
            or _registry_consent(settings, b, d)
            or ConsentState.initial(b, d)
        )
    config = await _in_force(settings)
    decision = decide(
        event,
        consent,
        router=config.router,
        gateway_id=settings.gateway_id,
        decision_id=uuid.uuid4(),
        now=utc_now(),
    )
    if as_json:
        from intercom_gateway.core.plan import decision_outcomes

        outcomes = decision_outcomes(decision)
        answer = {"event_id": str(event.event_id), "config_revision": config.revision}
        return json.dumps({**answer, "outcomes": outcomes}, indent=2)
    return f"configuration revision {config.revision}\n{decision.explain()}"


async def explain_logged(settings: Settings, event_id: str, *, as_json: bool = False) -> str:
    """Where a past event went, and why not elsewhere, from the decision log."""
    path = sqlite_path(settings)
    if path is not None and not path.exists():
        raise ConfigError("no store here", path=str(path))
    async with open_store(settings) as store:
        logged = await store.decision(event_id)
    row = logged.as_dict() if logged else None
    if row is None:
        raise GatewayError(
            f"no decision for event {event_id}: never received, rejected, or stopped by"
            " consent at the gateway (initialised dwelling §7(1)①, return-home"
            " notification off §7(1)②): such events are neither forwarded nor stored"
        )
    if as_json:
        return json.dumps(row, indent=2)
    return render_logged(row)


def render_logged(row: dict[str, Any]) -> str:
    lines = [
        f"event {row['event_id']} ({row['event_type']}) of {row['building_id']}/"
        f"{row['dwelling_id']}, decided {row['decided_at']}, policy {row['policy_version']},"
        f" consent revision {row['consent_revision']}, decision {row['decision_id']}"
    ]
    for o in row["outcomes"]:
        if o["forwarded"]:
            lines += _forwarded_lines(o)
        else:
            clause = f" ({o['clause']})" if o.get("clause") else ""
            lines.append(
                f"  {o['destination']:<24} withheld   {o['reason']}{clause}: {o['detail']}"
            )
    return "\n".join(lines)


def _forwarded_lines(o: dict[str, Any]) -> list[str]:
    """One line per message the destination got: the event's facts, then its image on
    its own (spec item 2). Entries logged before the split name one message, the
    destination's own tags."""
    messages = o.get("messages") or [{**o, "part": "event"}]
    lines = []
    for m in messages:
        head = (
            f"{o['destination']:<24} forwarded " if m["part"] == "event" else f"{'':<24} + image   "
        )
        lines.append(
            f"  {head} rule {m['rule_id']} ({m['clause']}); purposes {', '.join(m['purposes'])};"
            f" fields {', '.join(m['fields']) or '-'}"
        )
    if o.get("untrue"):
        lines.append(f"  {'':<24} not sent   {o['untrue']}")
    return lines
