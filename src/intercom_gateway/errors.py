"""Every error class of the package, on one page.

One base, a few leaves with structured attributes. The modules that raise them import
them from here (and some re-export them under their old names)::

    GatewayError
    ├── ConfigError ............ a configuration, registry, policy or scenario file is wrong
    │   ├── ScenarioFileError .. a scenario file, with every problem and its line
    │   └── ConfigMismatch ..... a gateway joining a group with other files than its members
    ├── BusError ............... talking to the broker
    │   ├── ConnectFailed
    │   ├── ConnectionLost
    │   │   └── SessionTakenOver
    │   ├── PublishFailed
    │   ├── SubscribeRefused
    │   └── NoGateway .......... the broker answers, but not the gateway we expect
    ├── BrokerError ............ the Mosquitto process would not start or stop
    ├── StoreUnreachable ....... a PostgreSQL store (``--store``) that does not answer
    ├── LeaseError ............. the lease database (several gateways) cannot be used
    │   └── LeaseLost .......... a partition's lease is no longer ours (``.partition``)
    ├── InputRejected .......... a panel's message failed an ingress check (``.reason``)
    ├── UnknownDwelling ........ resident requests
    ├── UnknownPartner
    ├── PendingChange .......... a settings change sent, not yet acknowledged
    ├── TokenRefused ........... resident API tokens
    ├── UnknownToken
    ├── RunnerError ............ QA: a broker or gateway the runner started is not up
    └── StepFailed ............. QA: a scenario step

    ValueError
    ├── MalformedPacket ........ bytes from the broker that are not MQTT 5 (the transport
    │                            turns it into ConnectionLost)
    └── DateBoundError ......... a query date bound out of range (the API and CLI turn it
                                 into a 422 or a usage error)

The two ``ValueError`` leaves are raised by pure parsers and caught where they are
called; they stay ``ValueError`` so that every ``except ValueError`` around those parsers
keeps its meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # type-only: core.models must not import this module back at runtime
    from intercom_gateway.core.models import RejectReason, SettingsChange

__all__ = [
    "BrokerError",
    "BusError",
    "ConfigError",
    "ConfigMismatch",
    "ConnectFailed",
    "ConnectionLost",
    "DateBoundError",
    "GatewayError",
    "InputRejected",
    "LeaseError",
    "LeaseLost",
    "MalformedPacket",
    "NoGateway",
    "PendingChange",
    "PublishFailed",
    "RunnerError",
    "ScenarioFileError",
    "SessionTakenOver",
    "StepFailed",
    "StoreUnreachable",
    "SubscribeRefused",
    "TokenRefused",
    "UnknownDwelling",
    "UnknownPartner",
    "UnknownToken",
]


class GatewayError(Exception):
    """Base of every error this package raises on purpose."""


# --- configuration -------------------------------------------------------------------


class ConfigError(GatewayError):
    """A configuration, registry, policy or scenario file is wrong."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class _Problem(Protocol):
    """One problem of a scenario file (``qa.scenario.loader.Problem``)."""

    @property
    def line(self) -> int: ...

    @property
    def location(self) -> str: ...

    @property
    def message(self) -> str: ...

    def render(self, path: Path | str) -> str: ...


class ScenarioFileError(ConfigError):
    """A scenario file that cannot be used, with every problem and its line."""

    def __init__(self, path: Path, problems: Sequence[_Problem]) -> None:
        self.problems = tuple(problems)
        self.file = path
        super().__init__("\n".join(p.render(path) for p in self.problems))


# --- the broker connection -----------------------------------------------------------


class BusError(GatewayError):
    """Something went wrong talking to the broker."""


class ConnectFailed(BusError):
    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectionLost(BusError):
    """The broker connection dropped; the caller decides whether to reconnect."""


class SessionTakenOver(ConnectionLost):
    """The broker handed our session to another connection with our client id (0x8E).

    Either a second process of ours, or an account allowed to use our client id: the
    messages queued for us went to the newcomer, or were erased by its clean start.
    """


class PublishFailed(BusError):
    def __init__(self, message: str, *, topic: str, reason_code: int | None = None) -> None:
        super().__init__(f"{message} (topic {topic!r})")
        self.topic = topic
        self.reason_code = reason_code


class SubscribeRefused(BusError):
    """The broker refused a subscription (SUBACK reason code >= 0x80)."""

    def __init__(self, topic_filter: str, reason_code: int) -> None:
        super().__init__(f"subscription to {topic_filter!r} refused (reason code {reason_code:#x})")
        self.topic = topic_filter
        self.reason_code = reason_code


class NoGateway(BusError):
    """The broker answers, but not the gateway we expect (``.found``: what it holds
    instead); ``gateway.presence`` raises it before a change is sent."""

    def __init__(self, message: str, *, where: str, found: str) -> None:
        super().__init__(message)
        self.where = where
        self.found = found


class MalformedPacket(ValueError):
    """Bytes from the broker that are not the MQTT 5 the transport understands."""


class BrokerError(GatewayError):
    """The Mosquitto process could not be started or stopped."""


class StoreUnreachable(GatewayError):
    """The shared store (a PostgreSQL DSN) cannot be reached: the CLI exits 3, as for a
    broker it cannot reach."""


# --- partition leases (several gateways) ----------------------------------------------


class LeaseError(GatewayError):
    """The PostgreSQL database that holds the partition leases cannot be used."""


class ConfigMismatch(ConfigError):
    """A gateway joining a group decides with other files than its live members."""


class LeaseLost(LeaseError):
    """A partition's lease moved on: its epoch is not ``epoch`` any more (the fencing check).

    The gateway that gets it must not ack or record anything more for the partition.
    """

    def __init__(self, partition: int, epoch: int) -> None:
        super().__init__(f"the lease of partition {partition} (epoch {epoch}) is lost")
        self.partition = partition
        self.epoch = epoch


# --- ingress -------------------------------------------------------------------------


class InputRejected(GatewayError):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# --- resident requests and their tokens ----------------------------------------------


class UnknownDwelling(GatewayError):
    def __init__(self, building_id: str, dwelling_id: str) -> None:
        super().__init__(f"unknown dwelling {building_id}/{dwelling_id}")
        self.building_id = building_id
        self.dwelling_id = dwelling_id


class UnknownPartner(GatewayError):
    def __init__(self, partner_id: str) -> None:
        super().__init__(f"unknown partner service {partner_id!r}")
        self.partner_id = partner_id


class PendingChange(GatewayError):
    """Sent, not acknowledged in time: the broker keeps it for the gateway's session."""

    def __init__(self, change: SettingsChange, timeout: float) -> None:
        super().__init__(
            f"no acknowledgement of change {change.change_id} in {timeout:g} s: is the gateway"
            " running? The change is queued on the broker and applies when it starts."
        )
        self.change = change


class DateBoundError(ValueError):
    """A bound that cannot be used; the message says which and why, on one line."""


class TokenRefused(GatewayError):
    """A bearer token that does not authenticate; ``reason`` says why (for the 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownToken(GatewayError):
    def __init__(self, token_id: str) -> None:
        super().__init__(f"no resident token with id {token_id!r} (see `token list`)")
        self.token_id = token_id


# --- QA ------------------------------------------------------------------------------


class RunnerError(GatewayError):
    """A broker or gateway the QA runner started did not come up (qa/runner.py)."""


class StepFailed(GatewayError):
    pass
