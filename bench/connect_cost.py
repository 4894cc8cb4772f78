"""What the client-id binding plugin costs a connection: connect time with and without it.

Two Mosquitto processes with the project's mosquitto.conf, one of them with the
``plugin`` line taken out; sequential connects (TCP, CONNECT, CONNACK, DISCONNECT) with
the lean bus, one to each in turn, so that drift on a busy machine falls on both alike.
Also times a refused connect (a client id of another account).

    .venv/bin/python -m bench.connect_cost --connects 200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from intercom_gateway.broker import mosquitto as broker_module
from intercom_gateway.broker.mosquitto import CLOUD, GATEWAY, Mosquitto, generate_credentials
from intercom_gateway.bus import MqttBus
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.errors import ConnectFailed


@contextlib.contextmanager
def without_plugin() -> Iterator[None]:
    """Render the configuration as usual, then drop its ``plugin`` line."""
    original = broker_module.render_config

    def render(template: str, **options: Any) -> str:
        rendered = original(template, **options)
        return "".join(line for line in rendered.splitlines(True) if not line.startswith("plugin"))

    broker_module.render_config = render
    try:
        yield
    finally:
        broker_module.render_config = original


async def connect_once(mosquitto: Mosquitto, *, refused: bool) -> float:
    address = mosquitto.address(CLOUD)
    # Refused: the gateway account's id, asked for by the cloud account.
    suffix = uuid.uuid4().hex[:8]
    client_id = (
        mosquitto.address(GATEWAY).client_id(suffix) if refused else address.client_id(suffix)
    )
    start = time.perf_counter()
    with contextlib.suppress(ConnectFailed):
        async with MqttBus(address, client_id=client_id, keepalive=0):
            pass
    return time.perf_counter() - start


def summary(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"{label:<26} n={len(times):5d}  median {statistics.median(times) * 1e3:6.3f} ms"
        f"  mean {statistics.fmean(times) * 1e3:6.3f} ms  p95 {p95 * 1e3:6.3f} ms"
    )


async def main(connects: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="connect-cost-") as scratch:
        workdir = Path(scratch)
        registry = generate_registry(buildings=1, dwellings=1)
        credentials = generate_credentials(workdir / "secrets", registry, [])
        with_plugin = Mosquitto(workdir=workdir / "with", credentials=credentials)
        bare = Mosquitto(workdir=workdir / "without", credentials=credentials)
        with_plugin.start()
        with without_plugin():
            bare.start()
        try:
            cases = {
                "accepted, with plugin": (with_plugin, False),
                "accepted, without plugin": (bare, False),
                "refused id, with plugin": (with_plugin, True),
            }
            results: dict[str, list[float]] = {label: [] for label in cases}
            # One connect of each case in turn: drift on a busy machine falls on all alike,
            # and the paired differences cancel it.
            for _ in range(connects * rounds):
                for label, (mosquitto, refused) in cases.items():
                    results[label].append(await connect_once(mosquitto, refused=refused))
            for label, times in results.items():
                print(summary(label, times))
            pairs = zip(
                results["accepted, with plugin"], results["accepted, without plugin"], strict=True
            )
            differences = [with_ - without for with_, without in pairs]
            print(
                f"paired difference with - without: median "
                f"{statistics.median(differences) * 1e6:+.1f} µs a connect"
            )
        finally:
            with_plugin.stop()
            bare.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=200, help="connects per round and case")
    parser.add_argument("--rounds", type=int, default=5, help="times --connects in all")
    options = parser.parse_args()
    asyncio.run(main(options.connects, options.rounds))
