"""A shard broker's bridge to the central broker (docs/scale-out.md).

Building groups may each run a Mosquitto of their own with their own gateway (a
"shard"); partners and the cloud subscribe on one central Mosquitto. Each shard
forwards the gateway's output trees (``accounts.output_filters``) there with a
Mosquitto bridge: a client inside the shard broker that subscribes locally and
publishes remotely. This module renders that bridge section of ``mosquitto.conf``
(``render_bridge``), appended by ``render_config`` after the project's own options.

Why these settings:

- QoS 1 each way (``topic <filter> out 1``): the shard broker keeps every copy until
  the central broker has acknowledged it, and resends what was in flight when the link
  broke. Duplicates are possible (QoS 1); subscribers de-duplicate by event id, as they
  already must for the gateway's own resends.
- ``cleansession false``: the bridge's local subscriptions and queue survive a lost
  link and a restart of the shard broker (with its persistence file), so copies made
  while the central broker is away are delivered when it is back.
- ``remote_clientid bridge.<name>``: the central broker's plugin binds client ids to
  accounts (``<account>`` or ``<account>.<suffix>``), and two shards with one id would
  take over each other's session.
- ``bridge_protocol_version mqttv50`` where the broker has it (Mosquitto 2.0 and
  later): the gateway's user properties (``event_id``, by which subscribers
  de-duplicate) travel only in MQTT 5; an older broker falls back to 3.1.1.
- ``try_private true``: a Mosquitto at the other end knows the client is a bridge.
- ``restart_timeout 1 1``: Mosquitto's default waits 5-30 s before reconnecting; a
  shard whose link is down only queues, so it retries about every 2 s. Measured on
  Mosquitto 2.0.11 against a closed port over 12 s: the backoff form capped at 1 s
  retried every 2 s, the constant form (``restart_timeout 1``) only every 6 s.
- ``notifications_local_only``: the connection state goes to the shard's
  ``$SYS/broker/connection/<id>/state`` only; the central ACL grants the bridge the
  output trees and nothing else.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

from intercom_gateway.broker.accounts import BRIDGE, Credentials, find_binary, output_filters
from intercom_gateway.errors import BrokerError, ConfigError

# Mosquitto 2.0 added MQTT 5 bridges (``bridge_protocol_version mqttv50``).
MQTT5_BRIDGES = (2, 0)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"mosquitto version (\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class Bridge:
    """Where a shard broker forwards the output trees, and as whom.

    ``name`` names the connection and is the suffix of the remote client id, so it
    must be unique among the shards of one central broker.
    """

    name: str
    host: str
    port: int
    password: str
    username: str = BRIDGE
    filters: tuple[str, ...] = output_filters()
    qos: int = 1
    restart_seconds: int = 1

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"bridge name {self.name!r}: use letters, digits, '-' and '_'")
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"bridge QoS {self.qos}: use 0, 1 or 2")

    @property
    def remote_clientid(self) -> str:
        """``bridge.<name>``: the central broker's plugin accepts it for ``bridge``."""
        return f"{self.username}.{self.name}"

    @classmethod
    def to(cls, central: Credentials, *, name: str, host: str, port: int) -> Bridge:
        """A bridge logging in as the central broker's ``bridge`` account."""
        try:
            password = central.passwords[BRIDGE]
        except KeyError:
            raise ConfigError(
                "the central broker has no `bridge` account: generate its credentials"
                " with bridge=True",
                path=str(central.directory),
            ) from None
        return cls(name=name, host=host, port=port, password=password)


def render_bridge(bridge: Bridge, *, protocol: str | None = None) -> str:
    """The ``connection`` section for ``bridge``; ``protocol`` defaults to the best the
    installed Mosquitto supports (``bridge_protocol``)."""
    lines = [
        "# --- Bridge to the central broker (docs/scale-out.md) -------------------------",
        f"connection {bridge.name}",
        f"address {bridge.host}:{bridge.port}",
        f"bridge_protocol_version {protocol or bridge_protocol()}",
        f"remote_clientid {bridge.remote_clientid}",
        f"remote_username {bridge.username}",
        f"remote_password {bridge.password}",
        "cleansession false",
        "try_private true",
        "start_type automatic",
        f"restart_timeout {bridge.restart_seconds} {bridge.restart_seconds}",
        "notifications true",
        "notifications_local_only true",
        *(f"topic {filter_} out {bridge.qos}" for filter_ in bridge.filters),
    ]
    return "\n".join(lines) + "\n"


def bridge_protocol(version: tuple[int, int, int] | None = None) -> str:
    """``mqttv50`` on Mosquitto 2.0 and later, otherwise ``mqttv311``."""
    found = version or mosquitto_version()
    return "mqttv50" if found[:2] >= MQTT5_BRIDGES else "mqttv311"


@functools.cache
def mosquitto_version() -> tuple[int, int, int]:
    """The installed broker's version, from ``mosquitto -h`` (it prints it first)."""
    result = subprocess.run(
        [find_binary("mosquitto"), "-h"], capture_output=True, text=True, check=False
    )
    match = _VERSION.search(result.stdout + result.stderr)
    if match is None:
        raise BrokerError("cannot tell the installed Mosquitto's version from `mosquitto -h`")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch
