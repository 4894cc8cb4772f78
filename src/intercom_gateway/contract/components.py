"""The AsyncAPI document's components: every message, and the payload schemas they carry.

Payload schemas come from the pydantic models (via ``schemas.all_schemas``), hoisted
into ``components/schemas``; the purposes and categories carried as MQTT 5 user
properties come from the policy. ``asyncapi.document`` assembles them with the channels.
"""

from __future__ import annotations

from typing import Any

from intercom_gateway.contract.schemas import all_schemas
from intercom_gateway.core.models import EventType, RejectReason
from intercom_gateway.core.policy import BASE_FIELDS, Policy

MQTT_BINDING = "0.2.0"
_SCHEMA_NAMES = {"event": "Event", "settings-change": "SettingsChange"}
_DEFS = "#/$defs/"
_COMPONENT = "#/components/schemas/"


# --- schemas: the models' JSON Schemas, hoisted into components ------------------------


def component_schemas() -> dict[str, Any]:
    """Every model's schema under one name, with ``$defs`` hoisted beside them.

    Each pydantic schema carries its own ``$defs`` and ``#/$defs/...`` references,
    which would resolve against the AsyncAPI document's root; they are moved into
    ``components/schemas`` and the references rewritten to point there.
    """
    found: dict[str, Any] = {}
    for key, schema in all_schemas().items():
        schema = dict(schema)
        for name, definition in schema.pop("$defs", {}).items():
            _add(found, name, _rewrite(definition))
        for meta in ("$schema", "$id"):
            schema.pop(meta, None)  # a nested $id would change how references resolve
        _add(found, _SCHEMA_NAMES.get(key) or schema["title"], _rewrite(schema))
    found["GatewayMetrics"] = _metrics_schema()
    return dict(sorted(found.items()))


def _add(found: dict[str, Any], name: str, schema: Any) -> None:
    if name in found and found[name] != schema:
        raise ValueError(f"two different schemas are both named {name}")
    found[name] = schema


def _rewrite(node: Any) -> Any:
    """References to ``$defs`` become component references; a discriminator object
    (OpenAPI style, as pydantic writes it) becomes the AsyncAPI schema's property name."""
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(_DEFS):
            out[key] = _COMPONENT + value.removeprefix(_DEFS)
        elif key == "discriminator" and isinstance(value, dict):
            out[key] = value["propertyName"]
        else:
            out[key] = _rewrite(value)
    return out


def _metrics_schema() -> dict[str, Any]:
    # The counters are a plain dict in the gateway (no model): described loosely here.
    counter = {"type": "integer", "minimum": 0}
    by_key = {"type": "object", "additionalProperties": counter}
    return {
        "title": "GatewayMetrics",
        "description": "The gateway's counters since it started; retained, every 5 s.",
        "type": "object",
        "required": ["gateway_id"],
        "properties": {
            "gateway_id": {"type": "string"},
            "received": counter,
            "events": counter,
            "duplicates": counter,
            "forwarded": {**by_key, "description": "per destination kind"},
            "withheld": {**by_key, "description": "per withheld reason"},
            "rejected": {**by_key, "description": "per reject reason"},
            "settings": {**by_key, "description": "applied, refused, duplicate"},
            "publish_refused": counter,
            "acked": counter,
            "analytics_held": {
                **counter,
                "description": "analytics copies held for their window, not yet acknowledged",
            },
            "analytics_released": {
                **counter,
                "description": "analytics copies released and acknowledged since start",
            },
        },
        "additionalProperties": True,
    }


# --- user properties, messages ------------------------------------------------------------


def user_property_headers(policy: Policy, *, event_id: bool) -> dict[str, Any]:
    """MQTT 5 user properties of a forwarded message, as AsyncAPI headers.

    A repeated user property (one ``purpose`` per purpose) is an array here.
    """
    properties: dict[str, Any] = {
        "purpose": {
            "type": "array",
            "description": "one `purpose` user property per purpose the message is for",
            "items": {"type": "string", "enum": sorted(policy.purposes)},
        },
        "category": {
            "type": "array",
            "description": "one `category` user property per data category it contains",
            "items": {"type": "string", "enum": sorted(policy.categories)},
        },
        "policy_version": {"type": "string", "examples": [policy.version]},
        "rule_id": {
            "type": "string",
            "description": "the one policy rule that allowed it: an event's image has a"
            " message and a rule of its own",
        },
        "decision_id": {"type": "string", "format": "uuid"},
    }
    required = ["purpose", "category", "policy_version", "rule_id", "decision_id"]
    if event_id:
        properties["event_id"] = {
            "type": "string",
            "format": "uuid",
            "description": "the event's id, for de-duplication (QoS 1 is at least once)",
        }
        required.append("event_id")
        properties["traceparent"] = {
            "type": "string",
            "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context: the event's trace id (the panel's, when its"
            " event carried a valid `traceparent` user property; else a new one), the"
            " gateway's span id for the event (the same on every copy of the event) and"
            " the trace flags (the panel's; when the gateway started the trace, `00`, or"
            " `01` when it exports its spans: `run --otel-endpoint`)",
        }
        properties["tracestate"] = {
            "type": "string",
            "description": "W3C trace context: the panel's `tracestate`, unchanged, when it"
            " came with a valid `traceparent`",
        }
        required.append("traceparent")
    return {
        "type": "object",
        "description": "MQTT 5 user properties (not JSON): the same values as in the envelope.",
        "properties": properties,
        "required": required,
    }


def _message(
    name: str, title: str, summary: str, schema: str, **extra: Any
) -> tuple[str, dict[str, Any]]:
    body = {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": _COMPONENT + schema},
        "bindings": {"mqtt": {"payloadFormatIndicator": 1, "bindingVersion": MQTT_BINDING}},
    }
    return name, {**body, **extra}


def component_messages(policy: Policy) -> dict[str, Any]:
    schemas = component_schemas()
    messages = dict(
        _message(
            event_message(et),
            f"{et.value} event",
            _first_line(schemas[_event_schema(et)].get("description", "")),
            _event_schema(et),
        )
        for et in EventType
    )
    messages.update(
        dict(
            [
                _message(
                    "settingsChange",
                    "Settings change",
                    "A resident's settings change, made on the dwelling panel.",
                    "SettingsChange",
                ),
                _message(
                    "settingsAck",
                    "Settings acknowledgement",
                    "Whether the change was applied, and why.",
                    "SettingsAck",
                ),
                _message(
                    "receipt",
                    "Receipt",
                    "Events of this panel that are decided and on record: it may forget them.",
                    "Receipt",
                ),
                _forwarded("forwarded", "Forwarded event", policy, event_id=True),
                _forwarded(
                    "forwardedImage",
                    "An event's image, alone (§3(3)/(4))",
                    policy,
                    event_id=True,
                    summary="The image reference and the base fields naming its event"
                    f" ({', '.join(BASE_FIELDS)}), under the image rule, tagged with its"
                    " purposes and the image category only. Same event_id and decision_id"
                    " as the event's own message: re-associate them by event id.",
                ),
                _forwarded(
                    "analyticsCopy",
                    "De-identified copy (§5(5))",
                    policy,
                    event_id=False,
                    summary="No event id, dwelling, building, device, image or free text."
                    " Held and released per window (INTERCOM_ANALYTICS_WINDOW, an hour by"
                    " default), all of a window together in shuffled order once it has ended:"
                    " forwarded_at is the window's start, occurred_at is truncated to the window"
                    " or the hour, whichever is longer; decision_id is random per copy. Not"
                    " joinable to the identified copies by field, property or arrival time."
                    " After a crash a copy may come again, the same bytes: de-duplicate by"
                    " decision_id.",
                ),
                _forwarded(
                    "statisticsAggregate",
                    "Aggregate counts (§5(2)②)",
                    policy,
                    event_id=False,
                    summary="Counts per window; counts under the minimum group size suppressed."
                    " A window whose every count was suppressed is published with no counts and"
                    " no categories, under the rule that counted it (statistics-counts).",
                ),
                _rejection(),
                _message(
                    "gatewayStatus",
                    "Gateway status",
                    "online/offline; retained, and the gateway's last will.",
                    "GatewayStatus",
                ),
                _message(
                    "partitionedStatus",
                    "A partitioned gateway's status",
                    "online/offline with the building partitions it serves; retained, and"
                    " its last will (run --partitioned, docs/partitions.md).",
                    "PartitionedStatus",
                ),
                _message(
                    "gatewayMetrics",
                    "Gateway metrics",
                    "Counters, retained, published every 5 s.",
                    "GatewayMetrics",
                ),
                _message(
                    "configNotice",
                    "Configuration notice (§10)",
                    "The revision of the policy, partner and device registries to take up.",
                    "ConfigNotice",
                ),
                _message(
                    "configAck",
                    "Configuration answer (§10)",
                    "applied, in_force or failed, with the revision in force.",
                    "ConfigAck",
                ),
                _message(
                    "consentNotice",
                    "Consent notice (§8, §5(1)②, §7(1)①)",
                    "A dwelling withdrew from the service: nothing more of it comes from"
                    " effective_from; stop receiving and processing its data, delete what"
                    " `delete` names. The same notice_id on every copy: after a crash the"
                    " notice may come again, never a second one for one change.",
                    "ConsentNotice",
                ),
                *_distribution_messages(),
            ]
        )
    )
    return messages


def _distribution_messages() -> list[tuple[str, dict[str, Any]]]:
    """§2(1), §5(1)①: a contractor's notice or survey, the answer, a panel's copy."""
    return [
        _message(
            "distribution",
            "A notice or survey (§2(1))",
            "From a distribution contractor, for a building, some dwellings or one.",
            "Distribution",
        ),
        _message(
            "distributionAck",
            "Distribution acknowledgement",
            "Accepted, and to how many dwelling panels it went; or refused, and why.",
            "DistributionAck",
        ),
        _message(
            "panelDistribution",
            "A distribution, to one dwelling panel",
            "Only to panels of addressed dwellings that are registered (§7(1)①).",
            "PanelDistribution",
        ),
    ]


def _event_schema(et: EventType) -> str:
    return "".join(part.title() for part in et.value.split("_")) + "Event"


def event_message(et: EventType) -> str:
    name = _event_schema(et)
    return name[:1].lower() + name[1:]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _forwarded(
    name: str, title: str, policy: Policy, *, event_id: bool, summary: str = ""
) -> tuple[str, dict[str, Any]]:
    return _message(
        name,
        title,
        summary
        or "An event as forwarded to one destination: only the fields the policy "
        "allows there, tagged with its purposes, categories, rule and policy version.",
        "Forwarded",
        headers=user_property_headers(policy, event_id=event_id),
    )


def _rejection() -> tuple[str, dict[str, Any]]:
    return _message(
        "rejection",
        "Rejected input",
        "Input the gateway refused, with the original payload and a machine-readable reason.",
        "Rejection",
        headers={
            "type": "object",
            "description": "MQTT 5 user properties.",
            "properties": {"reason": {"type": "string", "enum": [r.value for r in RejectReason]}},
            "required": ["reason"],
        },
    )
