"""The bus seam: one ``Bus`` protocol (base.py), the production MQTT transport
(mqtt.py, on the codec of mqtt5.py and what any broker client shares, client.py) and the
in-memory broker for tests (memory.py); both publish through inflight.py."""

from intercom_gateway.bus.base import BrokerAddress, Bus, Message, TlsOptions, Will
from intercom_gateway.bus.memory import MemoryBroker, MemoryBus
from intercom_gateway.bus.mqtt import MqttBus

__all__ = [
    "BrokerAddress",
    "Bus",
    "MemoryBroker",
    "MemoryBus",
    "Message",
    "MqttBus",
    "TlsOptions",
    "Will",
]
