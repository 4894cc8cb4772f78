"""Is the gateway we expect on this broker? Asked before a command relies on one.

A broker on the configured port is not necessarily ours: Debian's own Mosquitto listens
on 1883, accepts anyone, and would take a consent change that no gateway ever reads.
The gateway keeps a retained status (``topics.STATUS``, ``GatewayStatus``) on the
broker it serves; reading it tells the three cases apart: the broker refuses our
accounts (not the project's), holds no status (no gateway has served it), or holds
another gateway's status or an offline one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from pydantic import ValidationError

from intercom_gateway.bus import BrokerAddress, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import GatewayStatus
from intercom_gateway.errors import BusError, ConnectFailed, NoGateway

CHECK_TIMEOUT = 2.0  # the retained status arrives with the SUBACK; this is the "none" case
HINT = (
    "start one with `intercom-gateway run` (or the dev stack: `intercom-gateway up`)"
    " or point --broker-host/--broker-port at it"
)


def no_gateway(where: str, found: str) -> NoGateway:
    """The one line: where we looked, what we found, what to run."""
    return NoGateway(
        f"no intercom gateway answers on {where} ({found}): {HINT}", where=where, found=found
    )


async def read_status(address: BrokerAddress, *, timeout: float = CHECK_TIMEOUT) -> bytes | None:
    """The retained status payload on the broker at ``address``, or None after ``timeout``.

    A broker that refuses our account is ``NoGateway``; one that cannot be reached stays
    ``ConnectFailed`` ("cannot reach broker ...").
    """
    client_id = address.client_id(f"presence-{uuid.uuid4().hex[:8]}")
    try:
        async with MqttBus(address, client_id=client_id, connect_timeout=timeout) as bus:
            await bus.subscribe(topics.STATUS)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(_first_payload(bus), timeout)
    except ConnectFailed as error:
        raise refusal(address, error) from None
    return None


def refusal(address: BrokerAddress, error: ConnectFailed) -> BusError:
    """A broker that answers but refuses our account is not ours: ``NoGateway``. One that
    does not answer stays as it is ("cannot reach broker ...")."""
    if error.reason_code is None:
        return error
    found = f"the broker refused the project's account {address.username!r}: {error}"
    return no_gateway(f"{address.host}:{address.port}", found)


async def _first_payload(bus: MqttBus) -> bytes | None:
    async for message in bus.messages():
        if message.payload:
            return bytes(message.payload)
    return None


def judge(
    where: str, payload: bytes | None, *, gateway_id: str, offline_ok: bool = False
) -> GatewayStatus:
    """The status if it is ``gateway_id``'s and online (or offline, with ``offline_ok``);
    otherwise ``NoGateway`` saying what was found instead."""
    if payload is None:
        raise no_gateway(where, f"no retained status on {topics.STATUS}")
    try:
        status = GatewayStatus.model_validate_json(payload)
    except ValidationError:
        raise no_gateway(where, f"{topics.STATUS} holds something that is not a status") from None
    if status.gateway_id != gateway_id:
        found = f"the status is of gateway {status.gateway_id!r}, not {gateway_id!r}"
        raise no_gateway(where, found)
    if status.state != "online" and not offline_ok:
        found = f"gateway {gateway_id!r} is {status.state} since {status.since.isoformat()}"
        raise no_gateway(where, found)
    return status


async def expect_gateway(
    address: BrokerAddress,
    *,
    gateway_id: str,
    timeout: float = CHECK_TIMEOUT,
    offline_ok: bool = False,
) -> GatewayStatus:
    """``gateway_id``'s status on the broker at ``address``, online; else ``NoGateway``."""
    payload = await read_status(address, timeout=timeout)
    where = f"{address.host}:{address.port}"
    return judge(where, payload, gateway_id=gateway_id, offline_ok=offline_ok)


async def expect_gateway_or_group(
    address: BrokerAddress, *, gateway_id: str, timeout: float = CHECK_TIMEOUT
) -> None:
    """``expect_gateway``; or, where no single gateway ever kept a status, a group of
    partitioned gateways (``run --partitioned``) with at least one of them online. A
    partition nobody serves at the moment loses nothing: its session queues."""
    from intercom_gateway.gateway.group import read_group

    payload = await read_status(address, timeout=timeout)
    where = f"{address.host}:{address.port}"
    if payload is None:
        group = await read_group(address, timeout=timeout)
        if any(g.get("state") == "online" for g in group):
            return
        if group:
            raise no_gateway(where, "every partitioned gateway of the group is offline")
    judge(where, payload, gateway_id=gateway_id)
