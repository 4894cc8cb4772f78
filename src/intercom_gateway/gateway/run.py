"""Running the gateway: connect, serve, and reconnect with jittered backoff."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import signal
import time
from collections.abc import Callable, Sequence

import structlog

from intercom_gateway.bus import BrokerAddress, MqttBus, TlsOptions, Will
from intercom_gateway.core import topics
from intercom_gateway.errors import BusError, SessionTakenOver
from intercom_gateway.gateway.metrics import collector_of, serving_metrics
from intercom_gateway.gateway.otel import open_spans
from intercom_gateway.gateway.rejections import describe
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.gateway.status import Metrics, status_payload
from intercom_gateway.settings import Settings
from intercom_gateway.store.opening import open_store

__all__ = ["GEN0_THRESHOLD", "broker_address", "run_gateway", "settle_heap"]

log = structlog.get_logger("intercom_gateway.gateway.service")


# Allocations between two young collections. The default, 700, collected 1,300 times per
# 20,000 events; at 10,000 it is ~65 times and the collector's share of the gateway's CPU
# falls from ~50 to ~25-35 µs an event (docs/benchmarks.md, issue #18). A young
# collection of 10,000 objects takes well under a millisecond.
GEN0_THRESHOLD = 10_000


def settle_heap(_gateway: object = None) -> None:
    """Take what start-up loaded out of the garbage collector's scans, and collect
    young objects less often.

    The policy, registry, consents and modules live as long as the process. Left in
    the oldest generation, every full collection scanned them: 24-27 ms each, a stall
    every few seconds at 1,000 events/s. Frozen, a full collection takes 0.5-1.3 ms
    (docs/benchmarks.md). Only the ``run`` command (and the in-process bench, which
    stands for it) does this; tests share a process.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def broker_address(settings: Settings) -> BrokerAddress:
    from intercom_gateway.broker.mosquitto import load_credentials

    password = settings.broker_password.get_secret_value() if settings.broker_password else None
    if password is None:
        password = load_credentials(settings.secrets_dir).passwords.get(settings.broker_user)
    tls = TlsOptions(ca_file=str(settings.broker_ca_file)) if settings.broker_ca_file else None
    return BrokerAddress(
        host=settings.broker_host,
        port=settings.broker_port,
        username=settings.broker_user,
        password=password,
        tls=tls,
    )


async def run_gateway(
    settings: Settings,
    *,
    stop: asyncio.Event,
    ready: Callable[[Gateway], None] | None = None,
    reload_on_sighup: bool = False,
) -> Metrics:
    """Run until ``stop``; a lost broker connection is retried with jittered backoff.

    ``reload_on_sighup``: SIGHUP records the files as the next configuration revision
    (§10; the ``run`` command's, where no one else handles SIGHUP).

    A session taken over by another connection, or missing when we come back, is
    logged as an error and counted: both mean events queued for us may be gone.
    """
    address = broker_address(settings)
    # The broker accepts only ids of the form <account>.<suffix> (docs/security.md).
    client_id = address.client_id(settings.gateway_id)

    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        spans = open_spans(settings)  # None unless asked for
        gateway.completion.spans = spans
        reloading = _reload_on_sighup(gateway, on=reload_on_sighup)
        try:
            async with serving_metrics(
                collector_of(gateway), settings.metrics_host, settings.metrics_port
            ) as server:
                gateway.metrics_server = server
                if ready is not None:
                    ready(gateway)
                will = Will(topics.STATUS, status_payload(settings.gateway_id, "offline"))
                await serve_connected(gateway, address, client_id=client_id, will=will, stop=stop)
                await gateway.store.flush()
        finally:
            reloading.close()
            if spans is not None:
                # Posts what is queued (a blocking HTTP call): off the event loop.
                await asyncio.to_thread(spans.shutdown)
        return gateway.metrics


class _Reloads:
    """SIGHUP: record the files as the next configuration revision and announce it
    (``reconfigure.reload_files``); the loop takes it up like any notice (§10)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tasks: set[asyncio.Task[None]] = set()
        self.installed = False

    def reload(self) -> None:
        from intercom_gateway.gateway.reconfigure import reload_files

        gateway = self.gateway
        work = reload_files(gateway.settings, gateway.store, gateway.completion.bus())
        task = asyncio.get_running_loop().create_task(work, name="sighup-reload")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        if self.installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def _reload_on_sighup(gateway: Gateway, *, on: bool) -> _Reloads:
    reloads = _Reloads(gateway)
    if not on:
        return reloads
    # Only where signals can be handled (the main thread of a process; not Windows).
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloads.reload)
        reloads.installed = True
    return reloads


async def serve_connected(
    gateway: Gateway,
    address: BrokerAddress,
    *,
    client_id: str,
    stop: asyncio.Event,
    will: Will | None = None,
    filters: Sequence[str] | None = None,
    announce: bool = True,
) -> None:
    """Serve ``gateway`` on the session ``client_id`` until ``stop``, reconnecting with
    jittered backoff; one partition of a partitioned gateway runs one of these.

    ``filters``: the panel topics to take (default: every building's); ``announce``:
    publish the retained status (a partition leaves it to its process).
    """
    settings = gateway.settings
    delay = settings.reconnect_min
    connected_before = False
    while not stop.is_set():
        connected_at: float | None = None
        acked_before = gateway.metrics.acked
        try:
            async with MqttBus(
                address,
                client_id=client_id,
                clean_start=False,  # keep our session: the broker queues while we are away
                session_expiry=settings.session_expiry,
                manual_ack=True,
                receive_maximum=settings.receive_maximum,
                publish_window=settings.publish_window,
                keepalive=settings.keepalive,
                will=will,
            ) as bus:
                connected_at = time.monotonic()
                # With session_expiry 0 no session is kept by design: nothing to report.
                if connected_before and settings.session_expiry and not bus.session_present:
                    gateway.metrics.sessions_lost += 1
                    log.error(
                        "broker had no session for us: messages queued while we were away are gone",
                        client_id=client_id,
                    )
                connected_before = True
                await gateway.serve(bus, stop=stop, filters=filters, announce=announce)
        except* BusError as group:
            error = group.exceptions[0]
            # SessionTakenOver itself, or a ConnectionLost raised from it later.
            taken = group.subgroup(
                lambda e: (
                    isinstance(e, SessionTakenOver) or isinstance(e.__cause__, SessionTakenOver)
                )
            )
            if taken is not None:
                gateway.metrics.session_takeovers += 1
                log.error(
                    "session taken over: another connection with our client id took it",
                    client_id=client_id,
                )
            gateway.reset_in_flight()
            gateway.metrics.reconnects += 1
            # Only a connection that made progress or lived a while resets the
            # backoff: one that fails the same way each time (a publish the broker
            # refuses, a session taken over) must not become a tight reconnect loop.
            lived = connected_at is not None and (
                gateway.metrics.acked > acked_before
                or time.monotonic() - connected_at > settings.reconnect_max
            )
            if lived:
                delay = settings.reconnect_min
            wait = delay * random.uniform(0.5, 1.5)
            log.warning(
                "broker connection lost",
                error=describe(error),
                reconnects=gateway.metrics.reconnects,
                retry_in=round(wait, 2),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            delay = min(delay * 2, settings.reconnect_max)
