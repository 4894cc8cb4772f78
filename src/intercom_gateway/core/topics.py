"""The topic grammar: every topic the system uses is built or matched here, nowhere else.

| topic | who publishes | what |
| --- | --- | --- |
| ``intercom/v1/{building}/{device}/events/{event_type}`` | panels | raw events |
| ``intercom/v1/{building}/{device}/settings`` | dwelling panels | resident settings |
| ``intercom/v1/{building}/{device}/settings/ack`` | gateway | settings acknowledgements |
| ``intercom/v1/{building}/{device}/receipts`` | gateway | events decided and on record |
| ``cloud/v1/{building}/{dwelling}/{event_type}`` | gateway | the operator's server |
| ``cloud/v1/{building}/{dwelling}/{event_type}/image`` | gateway | an event's image, alone |
| ``group/v1/{building}/{dwelling}/{event_type}`` | gateway | joint use (§4) |
| ``partners/{partner}/v1/{building}/{dwelling}/{event_type}`` | gateway | partner services |
| ``partners/{partner}/v1/{building}/{dwelling}/{event_type}/image`` | gateway | an event's image |
| ``partners/{partner}/v1/{building}/{dwelling}/consent_notice`` | gateway | a withdrawal (§8) |
| ``analytics/v1/{event_type}`` | gateway | de-identified copies (§5(5)) |
| ``statistics/v1/{building}`` | gateway | aggregates (§5(2)②) |
| ``gateway/v1/rejected/{reason}`` | gateway | rejected input |
| ``gateway/v1/deadletter`` | gateway | input that failed every attempt to handle it |
| ``gateway/v1/status`` | gateway | online/offline, retained, last will |
| ``gateway/v1/metrics`` | gateway | counters, retained, every few seconds |
| ``gateway/v1/config`` | operator, gateway | configuration revision to take up, retained (§10) |
| ``gateway/v1/config/ack/{gateway_id}`` | gateway | what a gateway made of it (§10) |
| ``app/v1/{building}/{dwelling}/{event_type}`` | gateway | the Intercom app (§2(4)) |
| ``contractors/{contractor}/v1/{building}/distributions`` | contractor | a notice or survey |
| ``contractors/{contractor}/v1/{building}/distributions/ack`` | gateway | accepted or refused |
| ``intercom/v1/{building}/{device}/distributions`` | gateway | a distribution, to one panel |
| ``contractors/{contractor}/v1/{building}/{dwelling}/{event_type}`` | gateway | usage (§5(1)①) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PANEL_EVENTS_FILTER = "intercom/v1/+/+/events/+"
PANEL_SETTINGS_FILTER = "intercom/v1/+/+/settings"
STATUS = "gateway/v1/status"
METRICS = "gateway/v1/metrics"
REJECTED_FILTER = "gateway/v1/rejected/#"
DEADLETTER = "gateway/v1/deadletter"
RECEIPTS_FILTER = "intercom/v1/+/+/receipts"
# §10: the configuration revision in force (core.configuration), and the gateways' answers.
CONFIG = "gateway/v1/config"
CONFIG_ACKS_FILTER = "gateway/v1/config/ack/+"
IMAGE_LEVEL = "image"  # the last level of an image's own topic, below its event's
# Limits at the door: a topic longer or deeper than any the grammar makes is refused
# before it is matched, and never echoed whole (a 32 KB level once made the echo
# larger than the broker's packet limit).
MAX_TOPIC_LENGTH = 256
MAX_TOPIC_LEVELS = 8

_LEVEL = r"[^/+#$][^/+#]*"
_PANEL = re.compile(
    rf"^intercom/v1/(?P<building>{_LEVEL})/(?P<device>{_LEVEL})/"
    rf"(?:events/(?P<event_type>{_LEVEL})|(?P<settings>settings))$"
)


@dataclass(frozen=True, slots=True)
class PanelTopic:
    building: str
    device: str
    event_type: str | None  # None for the settings topic

    @property
    def is_settings(self) -> bool:
        return self.event_type is None


def parse_panel_topic(topic: str) -> PanelTopic | None:
    """Match an inbound panel topic; None if it is not one."""
    match = _PANEL.match(topic)
    if match is None:
        return None
    return PanelTopic(match["building"], match["device"], match["event_type"])


def panel_building(topic: str) -> str | None:
    """The building level of a topic under ``intercom/v1/``, whether the rest parses or
    not: the level a building's own filters (``core.partitions.panel_filters``) fix."""
    levels = topic.split("/", 3)
    if len(levels) < 4 or levels[0] != "intercom" or levels[1] != "v1":
        return None
    return levels[2]


def panel_events(building: str, device: str, event_type: str) -> str:
    return f"intercom/v1/{building}/{device}/events/{event_type}"


def panel_settings(building: str, device: str) -> str:
    return f"intercom/v1/{building}/{device}/settings"


def settings_ack(building: str, device: str) -> str:
    return f"intercom/v1/{building}/{device}/settings/ack"


def receipts(building: str, device: str) -> str:
    """Where a panel learns that its events are decided and recorded (it may forget them)."""
    return f"intercom/v1/{building}/{device}/receipts"


def cloud(building: str, dwelling: str, event_type: str) -> str:
    return f"cloud/v1/{building}/{dwelling}/{event_type}"


def group(building: str, dwelling: str, event_type: str) -> str:
    return f"group/v1/{building}/{dwelling}/{event_type}"


def partner(partner_id: str, building: str, dwelling: str, event_type: str) -> str:
    return f"partners/{partner_id}/v1/{building}/{dwelling}/{event_type}"


# The last level of a consent notice's topic: reserved, never an event type.
CONSENT_NOTICE_LEVEL = "consent_notice"


def consent_notice(partner_id: str, building: str, dwelling: str) -> str:
    """Where a service learns that a dwelling withdrew from it (§8, §5(1)②, §7(1)①).

    In the service's own tree, beside the dwelling's events: ``partners/<id>/#`` (the
    ACL's read grant to that service alone) covers it, unlock-mode services included.
    """
    return f"partners/{partner_id}/v1/{building}/{dwelling}/{CONSENT_NOTICE_LEVEL}"


def app(building: str, dwelling: str, event_type: str) -> str:
    """§2(4): the Intercom app's copy of a dwelling's lobby call."""
    return f"app/v1/{building}/{dwelling}/{event_type}"


def image(event_topic: str) -> str:
    """Where the image of an event goes, beside the event's own ``event_topic``.

    An image is allowed under other purposes than its event's facts (§3(3)/(4)), so it
    travels in a message of its own (spec item 2), one level below the event's topic: a
    subscriber to the event topic does not get images by accident, and ``cloud/#`` or
    ``partners/<id>/#`` covers both. Wildcards pass through: ``image(cloud("+", "+", "+"))``
    is the filter of every cloud image.
    """
    return f"{event_topic}/{IMAGE_LEVEL}"


def is_image(topic: str) -> bool:
    """Whether ``topic`` is an image topic (no other output topic ends with this level)."""
    return topic.endswith(f"/{IMAGE_LEVEL}")


def partner_filter(partner_id: str) -> str:
    return f"partners/{partner_id}/#"


def analytics(event_type: str) -> str:
    return f"analytics/v1/{event_type}"


def statistics(building: str) -> str:
    return f"statistics/v1/{building}"


def gateway_status(gateway_id: str) -> str:
    """One gateway's own retained status, with the partitions it serves (partitioned)."""
    return f"gateway/v1/{gateway_id}/status"


def gateway_metrics(gateway_id: str) -> str:
    return f"gateway/v1/{gateway_id}/metrics"


def config_ack(gateway_id: str) -> str:
    """Where a gateway answers a configuration notice (``CONFIG``)."""
    return f"gateway/v1/config/ack/{gateway_id}"


def rejected(reason: str) -> str:
    return f"gateway/v1/rejected/{reason}"


def matches(filter_: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest), for the in-memory bus."""
    if filter_.startswith("$share/"):
        filter_ = filter_.split("/", 2)[2]
    f_levels = filter_.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in {"+", "#"}:
        return False
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels):
            return False
        if level not in {"+", t_levels[index]}:
            return False
    return len(f_levels) == len(t_levels)


# --- filters of whole output trees (subscriptions, the broker's ACL) ---------------------
# Each covers its tree's image topics too (``image`` puts them one level below).


def cloud_filter() -> str:
    """Every cloud copy and image."""
    return "cloud/#"


def group_filter() -> str:
    """Every joint-use (§4) copy and image."""
    return "group/#"


def partners_filter() -> str:
    """Every partner's copies and images (``partner_filter`` is one partner's)."""
    return "partners/#"


def analytics_filter() -> str:
    """Every de-identified analytics copy (§5(5))."""
    return "analytics/#"


def statistics_filter() -> str:
    """Every statistics aggregate (§5(2)②)."""
    return "statistics/#"


def app_filter() -> str:
    """Every Intercom-app (§2(4)) copy."""
    return "app/#"


def gateway_filter() -> str:
    """The gateway's own topics: status, metrics, rejected input, dead letters."""
    return "gateway/#"


def settings_ack_filter() -> str:
    """Every dwelling panel's settings acknowledgements."""
    return settings_ack("+", "+")


def device_events_filter(building: str, device: str) -> str:
    """Every event type one panel may publish."""
    return panel_events(building, device, "+")


def is_rejected(topic: str) -> bool:
    """Whether ``topic`` is one of the gateway's rejection echoes."""
    return matches(REJECTED_FILTER, topic)


# --- information distribution (§2(1), §5(1)①) -------------------------------------------
# A contractor publishes under its own tree, with the building as a level so that a
# partitioned gateway takes the distributions of its own buildings (``partitions``).

CONTRACTOR_DISTRIBUTIONS_FILTER = "contractors/+/v1/+/distributions"
# Everything a (single) gateway takes in: panels' events and settings, contractors'
# distributions (a partition takes its own buildings', ``partitions.panel_filters``).
INBOUND_FILTERS = (PANEL_EVENTS_FILTER, PANEL_SETTINGS_FILTER, CONTRACTOR_DISTRIBUTIONS_FILTER)
DISTRIBUTIONS_LEVEL = "distributions"
_CONTRACTOR_DISTRIBUTIONS = re.compile(
    rf"^contractors/(?P<contractor>{_LEVEL})/v1/(?P<building>{_LEVEL})/{DISTRIBUTIONS_LEVEL}$"
)


@dataclass(frozen=True, slots=True)
class ContractorTopic:
    contractor: str
    building: str


def parse_contractor_distributions(topic: str) -> ContractorTopic | None:
    """Match a contractor's distributions topic; None if it is not one."""
    match = _CONTRACTOR_DISTRIBUTIONS.match(topic)
    if match is None:
        return None
    return ContractorTopic(match["contractor"], match["building"])


def contractor_distributions(contractor_id: str, building: str) -> str:
    """Where a contractor sends a notice or a survey for a building's panels."""
    return f"contractors/{contractor_id}/v1/{building}/{DISTRIBUTIONS_LEVEL}"


def contractor_distributions_ack(contractor_id: str, building: str) -> str:
    """Where the gateway tells the contractor whether a distribution was accepted."""
    return f"{contractor_distributions(contractor_id, building)}/ack"


def contractor(contractor_id: str, building: str, dwelling: str, event_type: str) -> str:
    """The usage information of a contractor's own distributions (§5(1)①)."""
    return f"contractors/{contractor_id}/v1/{building}/{dwelling}/{event_type}"


def contractor_filter(contractor_id: str) -> str:
    """One contractor's whole tree: its usage information and its acks (its ACL's read)."""
    return f"contractors/{contractor_id}/v1/#"


def contractors_filter() -> str:
    """Every contractor's tree."""
    return "contractors/#"


def contractor_usage_filter() -> str:
    """Every contractor's usage information (six levels: no distribution or ack topic)."""
    return contractor("+", "+", "+", "+")


def contractor_acks_filter() -> str:
    return contractor_distributions_ack("+", "+")


def panel_distributions(building: str, device: str) -> str:
    """A dwelling panel's own distributions (notices and surveys addressed to it)."""
    return f"intercom/v1/{building}/{device}/{DISTRIBUTIONS_LEVEL}"


def panel_distributions_filter() -> str:
    return panel_distributions("+", "+")
