"""Residents changing their consent settings on the dwelling panel.

Each helper builds one ``models.SettingsChange``; ``send_settings`` publishes it on the
panel's settings topic, where the gateway applies it and acknowledges. Ids default to
uuid4 because a settings change is a one-off the tests and the demo make on purpose;
pass ``change_id`` to make one reproducible.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from intercom_gateway.bus import Bus
from intercom_gateway.core import topics
from intercom_gateway.core.models import (
    AcceptPolicy,
    Initialise,
    PurposeOptOut,
    Register,
    ReturnHomeNotification,
    ServiceUse,
    SettingsChange,
    SettingsChangeBody,
    utc_now,
)


def settings_change(
    building: str,
    dwelling: str,
    change: SettingsChangeBody,
    *,
    change_id: uuid.UUID | None = None,
    requested_at: datetime | None = None,
) -> SettingsChange:
    return SettingsChange(
        change_id=change_id or uuid.uuid4(),
        building_id=building,
        dwelling_id=dwelling,
        requested_at=requested_at or utc_now(),
        change=change,
    )


def register(
    building: str, dwelling: str, *, policy_version: str, change_id: uuid.UUID | None = None
) -> SettingsChange:
    """Move-in: the dwelling registers with the server under a policy version."""
    body = Register(policy_version=policy_version)
    return settings_change(building, dwelling, body, change_id=change_id)


def initialise(
    building: str, dwelling: str, *, change_id: uuid.UUID | None = None
) -> SettingsChange:
    """Move-out: initialisation stops all collection for the dwelling."""
    return settings_change(building, dwelling, Initialise(), change_id=change_id)


def return_home_notification(
    building: str, dwelling: str, *, enabled: bool, change_id: uuid.UUID | None = None
) -> SettingsChange:
    body = ReturnHomeNotification(enabled=enabled)
    return settings_change(building, dwelling, body, change_id=change_id)


def service_use(
    building: str,
    dwelling: str,
    *,
    partner_id: str,
    used: bool,
    change_id: uuid.UUID | None = None,
) -> SettingsChange:
    """Start or stop using a partner or unlock-mode service."""
    body = ServiceUse(partner_id=partner_id, used=used)
    return settings_change(building, dwelling, body, change_id=change_id)


def purpose_opt_out(
    building: str,
    dwelling: str,
    *,
    purpose: str,
    opted_out: bool,
    change_id: uuid.UUID | None = None,
) -> SettingsChange:
    body = PurposeOptOut(purpose=purpose, opted_out=opted_out)
    return settings_change(building, dwelling, body, change_id=change_id)


def accept_policy(
    building: str, dwelling: str, *, policy_version: str, change_id: uuid.UUID | None = None
) -> SettingsChange:
    body = AcceptPolicy(policy_version=policy_version)
    return settings_change(building, dwelling, body, change_id=change_id)


async def send_settings(bus: Bus, building: str, device: str, change: SettingsChange) -> None:
    """Publish a change from the dwelling panel ``device`` and wait for the broker's PUBACK."""
    payload = change.model_dump_json().encode()
    await bus.publish(topics.panel_settings(building, device), payload, qos=1)
