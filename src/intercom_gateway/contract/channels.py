"""The AsyncAPI document's channels and operations: one channel per topic of the grammar.

Addresses come from the topic grammar (``topics``), with a ``{name}`` in each variable
level; the event types on each destination from the policy's rules; one channel per
partner service, with its declared event kinds, from the partner registry. The gateway
*receives* what panels send and *sends* everything else, so a partner builds its
subscriber from the gateway's ``send`` operations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from intercom_gateway.contract.components import MQTT_BINDING, event_message
from intercom_gateway.core import topics
from intercom_gateway.core.models import EventType, RejectReason
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IMAGE_FIELD,
    DestinationKind,
    PartnerRegistry,
    PartnerService,
    Policy,
)

Doc = dict[str, Any]


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
            [event_message(et) for et in every],
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
        found[f"partner-{service.id}-consent-notice"] = _notice_channel(service)
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
        "app": _destination(
            topics.app,
            "The Intercom app (§2(4)): a lobby call to the dwelling, only while its handsets"
            " are linked to the app (§7(2)). Broker account `app` may read only"
            f" {topics.app_filter()}.",
            routable(policy, DestinationKind.APP),
        ),
        "status": _channel(topics.STATUS, ["gatewayStatus"], "Gateway status, retained."),
        "metrics": _channel(topics.METRICS, ["gatewayMetrics"], "Gateway counters, retained."),
        "gatewayOwnStatus": _channel(
            _placeholders(topics.gateway_status, "gatewayId"),
            ["partitionedStatus"],
            "One partitioned gateway's status and partitions, retained (health --group).",
            gatewayId=_param("the gateway's id (run --gateway-id)"),
        ),
        "gatewayOwnMetrics": _channel(
            _placeholders(topics.gateway_metrics, "gatewayId"),
            ["gatewayMetrics"],
            "One partitioned gateway's counters over its partitions, retained.",
            gatewayId=_param("the gateway's id (run --gateway-id)"),
        ),
        # §10: live configuration (gateway/configs.py).
        "configNotice": _channel(
            topics.CONFIG,
            ["configNotice"],
            "The configuration revision to take up from the store, retained; published by"
            " `config apply` (operator account) or a gateway on SIGHUP.",
        ),
        "configAck": _channel(
            _placeholders(topics.config_ack, "gatewayId"),
            ["configAck"],
            "A gateway's answer to the last configuration notice, retained: the revision in force.",
            gatewayId=_param("the gateway's id (run --gateway-id)"),
        ),
    }
    return found | _distribution_channels(policy, partners)


CONTRACTOR = _param("the distribution contractor's id (its broker account)", examples=["kanri"])


def _distribution_channels(policy: Policy, partners: PartnerRegistry) -> dict[str, Any]:
    """§2(1), §3(1), §5(1)①: contractors' distributions, panels' copies, and per
    contractor the usage information of its own distributions."""
    found: dict[str, Any] = {
        "contractorDistributions": _channel(
            _placeholders(topics.contractor_distributions, "contractor", "building"),
            ["distribution"],
            "A contractor's notice or survey for one building it may address.",
            contractor=CONTRACTOR,
            building=BUILDING,
        ),
        "contractorDistributionsAck": _channel(
            _placeholders(topics.contractor_distributions_ack, "contractor", "building"),
            ["distributionAck"],
            "The gateway's answer to a distribution: accepted to n panels, or refused.",
            contractor=CONTRACTOR,
            building=BUILDING,
        ),
        "panelDistributions": _channel(
            _placeholders(topics.panel_distributions, "building", "device"),
            ["panelDistribution"],
            "A distribution, to a dwelling panel of an addressed, registered dwelling; the"
            " panel sends notice_read and survey_answer events naming it.",
            building=BUILDING,
            device=DEVICE,
        ),
    }
    usage = routable(policy, DestinationKind.CONTRACTOR)
    for contractor in sorted(partners.contractors, key=lambda c: c.id):
        found[f"contractor-{contractor.id}"] = _channel(
            topics.contractor(contractor.id, "{building}", "{dwelling}", "{eventType}"),
            ["forwarded"],
            f"{contractor.name} ({contractor.kind}, operated by {contractor.operator or 'n/a'};"
            f" buildings {', '.join(contractor.buildings)}): the read receipts and answers of"
            " its own distributions only (§5(1)①), for §3(1) purposes only. Broker account"
            f" `{contractor.id}` may read only {topics.contractor_filter(contractor.id)}.",
            building=BUILDING,
            dwelling=DWELLING,
            eventType=_event_type(usage),
        )
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


def _notice_channel(service: PartnerService) -> dict[str, Any]:
    return _channel(
        _placeholders(functools.partial(topics.consent_notice, service.id), "building", "dwelling"),
        ["consentNotice"],
        f"{service.name}: a dwelling that used the service stopped using it (§5(1)②),"
        " stopped provision to it (§8) or was initialised (§7(1)①). Published before"
        " anything later of the dwelling could be; nothing of it follows. Recorded in the"
        " provision ledger (recipient partner:<id>, event type consent_notice). Broker"
        f" account `{service.id}` may read only {topics.partner_filter(service.id)}.",
        building=BUILDING,
        dwelling=DWELLING,
    )


def _operation_id(channel: str) -> str:
    words = re.split(r"[-_]", channel)
    return "".join(w[:1].upper() + w[1:] for w in words)


def operations(channel_map: dict[str, Any]) -> dict[str, Any]:
    """The gateway receives what panels publish and sends everything else, at QoS 1."""
    received = {"panelEvents", "panelSettings", "configNotice", "contractorDistributions"}
    retained = {"status", "metrics", "configNotice", "configAck"}
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
