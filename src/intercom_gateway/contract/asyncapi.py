"""The AsyncAPI 3.0 document of every topic the system publishes and subscribes to.

Generated, never written by hand: payload schemas come from the pydantic models (via
``schemas.all_schemas``), addresses from the topic grammar (``topics``), the purposes
and categories carried as MQTT 5 user properties from the policy, and one channel per
partner service, with its declared event kinds, from the partner registry. The
document describes the gateway: it *receives* what panels send and *sends* everything
else, so a partner builds its subscriber from the gateway's ``send`` operations.

``docs/asyncapi.yaml`` is this module's output, kept in the repository; a unit test
checks that it is current and valid for the official AsyncAPI parser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from intercom_gateway import __version__
from intercom_gateway.contract.schemas import all_schemas
from intercom_gateway.core import topics
from intercom_gateway.core.models import EventType, RejectReason
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IMAGE_FIELD,
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
    load_partners,
    load_policy,
)
from intercom_gateway.settings import Settings

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING = "0.2.0"
MAX_PACKET = 65_536  # mosquitto.conf max_packet_size
_SCHEMA_NAMES = {"event": "Event", "settings-change": "SettingsChange"}
_DEFS = "#/$defs/"
_COMPONENT = "#/components/schemas/"

Doc = dict[str, Any]


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
            _event_message(et),
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
                    "gatewayMetrics",
                    "Gateway metrics",
                    "Counters, retained, published every 5 s.",
                    "GatewayMetrics",
                ),
            ]
        )
    )
    return messages


def _event_schema(et: EventType) -> str:
    return "".join(part.title() for part in et.value.split("_")) + "Event"


def _event_message(et: EventType) -> str:
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


# --- channels and operations ------------------------------------------------------------


def _param(description: str, *, enum: Iterable[str] = (), examples: Iterable[str] = ()) -> Doc:
    out: Doc = {"description": description}
    if values := list(enum):
        out["enum"] = values
    if samples := list(examples):
        out["examples"] = samples
    return out


BUILDING = _param("building id", examples=["b001"])
DWELLING = _param("dwelling id within the building", examples=["d0101"])
DEVICE = _param("the publishing device's id (its broker account)", examples=["panel-b001-d0101"])


def _event_type(kinds: Iterable[EventType]) -> Doc:
    return _param("event type", enum=[k.value for k in kinds])


def _placeholders(builder: Any, *names: str) -> str:
    """An address from the topic grammar itself, with ``{name}`` in each variable level."""
    return str(builder(*(f"{{{n}}}" for n in names)))


def _channel(
    address: str, messages: list[str], description: str, **parameters: Doc
) -> dict[str, Any]:
    body: Doc = {
        "address": address,
        "description": description,
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
    }
    if parameters:
        body["parameters"] = parameters
    return body


def routable(policy: Policy, kind: DestinationKind) -> list[EventType]:
    """The event types some rule of the policy lets reach destinations of ``kind``."""
    return [et for et in EventType if policy.rule_for(kind, policy.event_types[et].category)]


def channels(policy: Policy, partners: PartnerRegistry) -> dict[str, Any]:
    every = list(EventType)
    found: dict[str, Any] = {
        "panelEvents": _channel(
            _placeholders(topics.panel_events, "building", "device", "eventType"),
            [_event_message(et) for et in every],
            "Events published by dwelling panels, lobby panels and delivery boxes.",
            building=BUILDING,
            device=DEVICE,
            eventType=_event_type(every),
        ),
        "panelSettings": _channel(
            _placeholders(topics.panel_settings, "building", "device"),
            ["settingsChange"],
            "A resident's settings change (consent), from the dwelling panel.",
            building=BUILDING,
            device=DEVICE,
        ),
        "settingsAck": _channel(
            _placeholders(topics.settings_ack, "building", "device"),
            ["settingsAck"],
            "The gateway's answer to a settings change, to the panel that sent it.",
            building=BUILDING,
            device=DEVICE,
        ),
        "receipts": _channel(
            _placeholders(topics.receipts, "building", "device"),
            ["receipt"],
            "The gateway's receipt for a panel's events, once each is decided and its records"
            " committed; a panel sends an event again until a receipt names it.",
            building=BUILDING,
            device=DEVICE,
        ),
        "cloud": _destination(
            topics.cloud,
            "The operator's server (§1(4)).",
            routable(policy, DestinationKind.CLOUD),
        ),
        "cloudImages": _images(
            topics.cloud,
            "Images of the cloud's events, each alone, for resident confirmation (§3(3)).",
            imaged(policy, DestinationKind.CLOUD),
        ),
        "group": _destination(
            topics.group,
            "Joint use within the group (§4): no images.",
            routable(policy, DestinationKind.GROUP),
        ),
    }
    for service in sorted(partners.services, key=lambda s: s.id):
        allowed = routable(policy, service.destination_kind)
        found[f"partner-{service.id}"] = _partner_channel(service, allowed, policy)
        images = [
            et
            for et in imaged(policy, service.destination_kind)
            if IMAGE_FIELD in (service.fields_for(et) or ())
        ]
        if images:
            found[f"partner-{service.id}-images"] = _images(
                functools.partial(topics.partner, service.id),
                f"{service.name}: the images it declared, each alone, for the image purposes"
                f" it shares with the policy's image rule (§3(3)/(4)): "
                f"{', '.join(p for p in service.purposes if _image_purpose(policy, p))}."
                f" Broker account"
                f" `{service.id}` may read only {topics.partner_filter(service.id)}.",
                images,
            )
    found |= {
        "analytics": _channel(
            _placeholders(topics.analytics, "eventType"),
            ["analyticsCopy"],
            "De-identified copies (§5(5)), released per window in shuffled batches.",
            eventType=_event_type(routable(policy, DestinationKind.ANALYTICS)),
        ),
        "statistics": _channel(
            _placeholders(topics.statistics, "building"),
            ["statisticsAggregate"],
            "Aggregates per building and window (§5(2)②).",
            building=BUILDING,
        ),
        "rejected": _channel(
            _placeholders(topics.rejected, "reason"),
            ["rejection"],
            "Rejected input.",
            reason=_param("why", enum=[r.value for r in RejectReason]),
        ),
        "deadletter": _channel(
            topics.DEADLETTER,
            ["rejection"],
            "Input set aside after failing every attempt to handle it (reason dead_letter).",
        ),
        "status": _channel(topics.STATUS, ["gatewayStatus"], "Gateway status, retained."),
        "metrics": _channel(topics.METRICS, ["gatewayMetrics"], "Gateway counters, retained."),
    }
    return found


def _image_purpose(policy: Policy, purpose: str) -> bool:
    found = policy.purposes.get(purpose)
    return found is not None and found.images


def imaged(policy: Policy, kind: DestinationKind) -> list[EventType]:
    """The event types whose image some image rule lets reach destinations of ``kind``."""
    return [
        et
        for et in routable(policy, kind)
        if (image := policy.event_types[et].image_category) and policy.rule_for(kind, image)
    ]


def _images(builder: Any, description: str, kinds: list[EventType]) -> dict[str, Any]:
    """The image topic beside each event topic of ``builder`` (``topics.image``)."""
    return _channel(
        topics.image(_placeholders(builder, "building", "dwelling", "eventType")),
        ["forwardedImage"],
        description,
        building=BUILDING,
        dwelling=DWELLING,
        eventType=_event_type(kinds),
    )


def _destination(builder: Any, description: str, kinds: list[EventType]) -> dict[str, Any]:
    return _channel(
        _placeholders(builder, "building", "dwelling", "eventType"),
        ["forwarded"],
        description,
        building=BUILDING,
        dwelling=DWELLING,
        eventType=_event_type(kinds),
    )


def _partner_channel(
    service: PartnerService, allowed: list[EventType], policy: Policy
) -> dict[str, Any]:
    kinds = [et for et in allowed if et in service.events]
    fields = "; ".join(
        f"{et.value}: {', '.join(f for f in service.events[et] if f != IMAGE_FIELD) or '-'}"
        for et in kinds
    )
    # Image-only purposes (§3(3)/(4)) tag the images' own messages, never these.
    purposes = [
        p for p in service.purposes if p in policy.purposes and not _image_purpose(policy, p)
    ]
    address = topics.partner(service.id, "{building}", "{dwelling}", "{eventType}")
    description = (
        f"{service.name} ({service.kind}, operated by {service.operator or 'n/a'}). Only while "
        f"the dwelling uses the service and has not stopped provision to it (§5(1)②, §8). "
        f"Purposes at most: {', '.join(purposes) or '-'}. Fields beyond the base fields "
        f"({', '.join(BASE_FIELDS)}) per event type: {fields}; never an image (a declared "
        f"image comes on its own channel). Broker account `{service.id}` "
        f"may read only {topics.partner_filter(service.id)}."
    )
    return _channel(
        address,
        ["forwarded"],
        description,
        building=BUILDING,
        dwelling=DWELLING,
        eventType=_event_type(kinds),
    )


def _operation_id(channel: str) -> str:
    words = re.split(r"[-_]", channel)
    return "".join(w[:1].upper() + w[1:] for w in words)


def operations(channel_map: dict[str, Any]) -> dict[str, Any]:
    """The gateway receives what panels publish and sends everything else, at QoS 1."""
    received = {"panelEvents", "panelSettings"}
    retained = {"status", "metrics"}
    out: dict[str, Any] = {}
    for name, channel in channel_map.items():
        action = "receive" if name in received else "send"
        out[f"{action}{_operation_id(name)}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in channel["messages"]],
            "bindings": {
                "mqtt": {"qos": 1, "retain": name in retained, "bindingVersion": MQTT_BINDING}
            },
        }
    return out


# --- the document --------------------------------------------------------------------------


def servers() -> dict[str, Any]:
    security = [{"$ref": "#/components/securitySchemes/userPassword"}]
    bindings = {"mqtt": {"maximumPacketSize": MAX_PACKET, "bindingVersion": MQTT_BINDING}}
    return {
        "local": {
            "host": "127.0.0.1:1883",
            "protocol": "mqtt",
            "protocolVersion": "5.0",
            "description": "Plain MQTT on loopback, for processes on the broker's host "
            "(mosquitto.conf `listener 1883 127.0.0.1`).",
            "security": security,
            "bindings": bindings,
        },
        "local-tls": {
            "host": "localhost:8883",
            "protocol": "secure-mqtt",
            "protocolVersion": "5.0",
            "description": "MQTT over TLS 1.2+ for everything that crosses a network "
            "(mosquitto.conf `listener 8883`); `intercom-gateway tls init` makes a "
            "development CA.",
            "security": security,
            "bindings": bindings,
        },
    }


def document(policy: Policy, partners: PartnerRegistry) -> dict[str, Any]:
    channel_map = channels(policy, partners)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "intercom-gateway",
            "version": __version__,
            "description": (
                "Topics of the apartment-intercom gateway. Panels publish events; the gateway "
                "applies each dwelling's consent and the privacy policy "
                f"(version {policy.version}) and forwards only what a rule allows, tagged "
                "with its purposes as MQTT 5 user properties. Each message is produced "
                "under one rule and its tags hold for everything in it: an event's image "
                "is a message of its own, on the event's topic plus `/image`, tagged for "
                "the image's purposes only. Every publish is QoS 1 (at "
                "least once): de-duplicate by `event_id`. Generated by "
                "`intercom-gateway asyncapi`; do not edit."
            ),
        },
        "defaultContentType": "application/json",
        "servers": servers(),
        "channels": channel_map,
        "operations": operations(channel_map),
        "components": {
            "schemas": component_schemas(),
            "messages": component_messages(policy),
            "securitySchemes": {
                "userPassword": {
                    "type": "userPassword",
                    "description": "One account per panel, partner and consumer; an ACL "
                    "confines each to its own topics (docs/security.md).",
                }
            },
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes shared values out in full: readers should not have to follow YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(policy: Policy, partners: PartnerRegistry) -> str:
    text = yaml.dump(
        document(policy, partners),
        Dumper=_PlainDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return "# Generated by `intercom-gateway asyncapi`; do not edit.\n" + text


def default_document(settings: Settings | None = None) -> str:
    """The document for the configured (by default the packaged) policy and partners."""
    settings = settings or Settings()
    policy = load_policy(settings.policy_path)
    return render(policy, load_partners(settings.partners_path, policy=policy))


def _iter_refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in a document (the tests check none dangles)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _iter_refs(item)
