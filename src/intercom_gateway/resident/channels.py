"""How a resident's consent change reaches the consent in force.

A change does not go to the store directly while a gateway runs: the gateway holds
consent in memory and would overwrite it. ``MqttChannel`` sends it over MQTT on the
dwelling panel's settings topic, so the gateway applies it in order before its next
message (spec item 9). ``StoreChannel`` writes to the store instead, for when no gateway
is running (it loads consent from the store when it starts).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Protocol

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import SettingsAck, SettingsChange, utc_now
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.errors import GatewayError, PendingChange
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store
from intercom_gateway.store.changes import record_change


class ConsentChannel(Protocol):
    """How a resident's change reaches the consent in force."""

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck: ...


class StoreChannel:
    """Apply the change to the store directly: only while no gateway runs on it.

    A running gateway keeps consent in memory and writes its own state back on the
    next panel change, so a change written here would be lost; it reads the store
    only when it starts.
    """

    def __init__(self, policy: Policy, partners: PartnerRegistry) -> None:
        self.policy = policy
        self.partners = partners

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck:
        now = utc_now()
        key = (change.building_id, change.dwelling_id)
        state = await store.consent(*key) or ConsentState.initial(*key)
        # Spec item 11: the notices go on record with the change; the gateway publishes
        # them when it next starts (gateway.notices).
        result, _ = await record_change(
            store,
            state,
            change,
            policy=self.policy,
            partners=self.partners,
            source="resident-request",
            now=now,
        )
        return result.ack(change, now=now)


class MqttChannel:
    """Publish the change as the dwelling panel would, and await the gateway's ack.

    The gateway applies it before the next message it takes and records it in the
    consent history (source ``panel:<device>``; the ``requests`` table links the
    change id to this request).
    """

    def __init__(
        self, *, host: str, port: int, secrets_dir: Path, timeout: float, gateway_id: str
    ) -> None:
        self.host = host
        self.port = port
        self.secrets_dir = secrets_dir
        self.timeout = timeout
        self.gateway_id = gateway_id

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck:
        building = change.building_id
        device = await store.dwelling_panel(building, change.dwelling_id)
        if device is None:
            raise GatewayError(f"no dwelling panel for {building}/{change.dwelling_id}")
        await self.expect_gateway()
        return await send_as_panel(
            change,
            device=device,
            host=self.host,
            port=self.port,
            secrets_dir=self.secrets_dir,
            timeout=self.timeout,
        )

    async def expect_gateway(self) -> None:
        """``NoGateway`` unless our gateway is online on this broker: a change sent to a
        broker no gateway reads would wait there for nobody."""
        from intercom_gateway.broker.mosquitto import OPERATOR, load_credentials
        from intercom_gateway.gateway.presence import expect_gateway

        address = load_credentials(self.secrets_dir).address(
            OPERATOR, host=self.host, port=self.port
        )
        await expect_gateway(address, gateway_id=self.gateway_id)


async def send_as_panel(
    change: SettingsChange,
    *,
    device: str,
    host: str,
    port: int,
    secrets_dir: Path,
    timeout: float,
) -> SettingsAck:
    """Publish a settings change as the dwelling's panel and await the gateway's ack."""
    from intercom_gateway.broker.mosquitto import load_credentials
    from intercom_gateway.bus import MqttBus

    building = change.building_id
    address = load_credentials(secrets_dir).address(device, host=host, port=port)
    async with MqttBus(
        address, client_id=address.client_id(f"settings-{uuid.uuid4().hex[:6]}")
    ) as bus:
        await bus.subscribe(topics.settings_ack(building, device))
        await bus.publish(
            topics.panel_settings(building, device), change.model_dump_json().encode()
        )
        try:
            return await asyncio.wait_for(_ack_for(bus, change), timeout)
        except TimeoutError:
            raise PendingChange(change, timeout) from None


async def _ack_for(bus: Any, change: SettingsChange) -> SettingsAck:
    async for message in bus.messages():
        ack = SettingsAck.model_validate_json(message.payload)
        if ack.change_id == change.change_id:
            return ack
    raise GatewayError("connection closed before the acknowledgement")


def mqtt_channel(settings: Settings, *, timeout: float = 10.0) -> MqttChannel:
    """The channel to a running gateway, as configured."""
    return MqttChannel(
        host=settings.broker_host,
        port=settings.broker_port,
        secrets_dir=settings.secrets_dir,
        timeout=timeout,
        gateway_id=settings.gateway_id,
    )
