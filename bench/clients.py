"""The benchmark's own processes: publisher, subscriber and the minimal pass-through relay.

Each runs as a separate process (``python -m bench.clients <role> <config.json>``) so
that the CPU each one spends can be told apart from the relay's and the broker's. The
publisher and subscriber are measuring instruments and use the lean client of
``bench.wire``: what they cost is taken from the relay under test on a shared machine.
The pass-through relay speaks MQTT through the project's ``MqttBus``, the very
transport the gateway uses, so the difference between it and the gateway is what the
gateway does, not how well its MQTT client was written.

Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every process
of the machine, so a send time in the publisher and an arrival time in the subscriber
can be subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import wire
from intercom_gateway.bus import BrokerAddress, Message, MqttBus
from intercom_gateway.core import topics

_COUNTER = struct.Struct("<Q")
_EVENT_ID = b'"event_id":"'
_UUID_LENGTH = 36
# How often a saturated publisher looks whether the backlog has shrunk.
_BACKLOG_POLL = 0.002


def _address(config: dict[str, Any]) -> BrokerAddress:
    return BrokerAddress(
        host=config["host"],
        port=config["port"],
        username=config["user"],
        password=config["password"],
    )


def event_id_of(payload: bytes) -> bytes | None:
    """The first ``event_id`` of a compact JSON document, without parsing it.

    Raw events and the gateway's envelopes (``decision_id``, then ``event_id``) both
    carry it first at the top level; a de-identified analytics copy has ``null``.
    """
    start = payload.find(_EVENT_ID)
    if start < 0:
        return None
    start += len(_EVENT_ID)
    return payload[start : start + _UUID_LENGTH]


class SharedCounter:
    """A count the subscriber writes and the publisher reads: one mmap'd 8-byte word."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), _COUNTER.size)

    @staticmethod
    def create(path: Path) -> None:
        path.write_bytes(bytes(_COUNTER.size))

    def get(self) -> int:
        return int(_COUNTER.unpack_from(self._map, 0)[0])

    def set(self, value: int) -> None:
        _COUNTER.pack_into(self._map, 0, value)

    def close(self) -> None:
        self._map.close()
        self._file.close()


# --- publisher ---------------------------------------------------------------------------


async def publish(config: dict[str, Any]) -> dict[str, Any]:
    """Send every prepared event once, paced (``rate``) or closed-loop (``backlog``).

    Closed loop: at most ``backlog`` events may be sent and not yet delivered. The
    offered load then follows what the chain delivers, as a fleet of panels would, and
    the publisher never spends the CPU it shares with the relay on running ahead.
    """
    messages = [(topic, payload.encode()) for topic, payload in config["messages"]]
    sent_ns = [0] * len(messages)
    rate: float | None = config.get("rate")
    backlog: int | None = config.get("backlog")
    window: int = config["window"]
    delivered = SharedCounter(Path(config["counter"])) if backlog else None
    client = await _connect(config)
    batch: list[bytes] = []
    cpu_start = time.process_time()
    start = time.monotonic()
    for index, (topic, payload) in enumerate(messages):
        if rate is not None:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif delivered is not None and backlog is not None:
            # The count lives in another process: there is nothing to await but time.
            while index - delivered.get() >= backlog:
                client.write(b"".join(batch))
                batch.clear()
                await asyncio.sleep(_BACKLOG_POLL)
        while index - client.acked >= window:  # 16-bit packet ids: cap what is unacked
            client.write(b"".join(batch))
            batch.clear()
            client.acked_changed.clear()
            await client.acked_changed.wait()
        sent_ns[index] = time.monotonic_ns()
        batch.append(wire.publish_packet(topic, payload, client.next_packet_id()))
        if rate is not None or len(batch) >= 64:
            client.write(b"".join(batch))
            batch.clear()
            await asyncio.sleep(0)
    client.write(b"".join(batch))
    while client.acked < len(messages):
        client.acked_changed.clear()
        await asyncio.wait_for(client.acked_changed.wait(), 30)
    cpu = time.process_time() - cpu_start
    await client.close()
    if delivered is not None:
        delivered.close()
    return {"sent_ns": sent_ns, "cpu_seconds": cpu}


async def _connect(config: dict[str, Any], on_publish: wire.OnPublish | None = None) -> wire.Client:
    return await wire.connect(
        config["host"],
        config["port"],
        client_id=config["client_id"],
        username=config["user"],
        password=config["password"],
        on_publish=on_publish,
    )


# --- subscriber ----------------------------------------------------------------------------


_FIRST_ARRIVAL = 60.0  # seconds to wait for the first copy of a run


class _Tally:
    def __init__(self, expected_events: int, expected_copies: int) -> None:
        self.expected_events = expected_events
        self.expected_copies = expected_copies
        self.seen: set[bytes] = set()
        self.ids: list[str] = []
        self.arrived_ns: list[int] = []
        self.copies: Counter[str] = Counter()
        self.duplicates = 0
        self.last_progress = time.monotonic()

    @property
    def complete(self) -> bool:
        return (
            len(self.seen) >= self.expected_events and self.copies.total() >= self.expected_copies
        )

    def take(self, label: str, primary: bool, payload: bytes, now_ns: int) -> bool:
        """Count one copy under ``label``; True if it was a first primary copy of its event."""
        self.last_progress = time.monotonic()
        self.copies[label] += 1
        if not primary:
            return False
        event_id = event_id_of(payload)
        if event_id is None:
            return False
        if event_id in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(event_id)
        self.ids.append(event_id.decode())
        self.arrived_ns.append(now_ns)
        return True


async def subscribe(config: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Count arrivals until everything expected came, or nothing came for ``idle`` s.

    One connection subscribed to ``filters`` counts copies by the first segment of
    their topic, and an event as delivered when a copy under ``primary`` (a topic
    filter) arrives. With ``connections`` instead, each entry is a connection of its
    own, as a destination that subscribes to the broker directly would have: its
    copies are counted under its ``label``, and every copy it gets is a delivery if
    it is ``primary``.
    """
    tally = _Tally(config["expected_events"], config["expected_copies"])
    counter = SharedCounter(Path(config["counter"]))
    idle: float = config["idle"]
    finished = asyncio.Event()

    def count(label: str, primary: bool, payload: bytes) -> None:
        if tally.take(label, primary, payload, time.monotonic_ns()):
            counter.set(len(tally.seen))
        if tally.complete:
            finished.set()

    def by_topic(primary_filter: str) -> wire.OnPublish:
        def arrived(topic: str, payload: bytes) -> None:
            # An event's image comes in a message of its own: a copy, not a delivery.
            primary = topics.matches(primary_filter, topic) and not topics.is_image(topic)
            count(topic.split("/", 1)[0], primary, payload)

        return arrived

    def by_connection(label: str, primary: bool) -> wire.OnPublish:
        def arrived(topic: str, payload: bytes) -> None:
            count(label, primary, payload)

        return arrived

    clients: list[wire.Client] = []
    if config.get("connections"):
        for number, connection in enumerate(config["connections"]):
            client = await _connect(
                {**config, "client_id": f"{config['client_id']}-{number}"},
                by_connection(connection["label"], connection["primary"]),
            )
            await client.subscribe(connection["filters"])
            clients.append(client)
    else:
        client = await _connect(config, by_topic(config["primary"]))
        await client.subscribe(config["filters"])
        clients.append(client)
    cpu_start = time.process_time()
    ready()
    while not finished.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), 0.25)
        # Idle counts from the first arrival: the relay (a gateway process) may still be
        # starting when this subscriber is ready, and on a loaded machine that took longer
        # than ``idle`` and the run reported every event lost.
        waited = time.monotonic() - tally.last_progress
        if waited > (idle if tally.copies else _FIRST_ARRIVAL):
            break  # nothing more is coming: report what did arrive
    cpu = time.process_time() - cpu_start
    for client in clients:
        await client.close()
    counter.close()
    return {
        "ids": tally.ids,
        "arrived_ns": tally.arrived_ns,
        "copies": dict(tally.copies),
        "duplicates": tally.duplicates,
        "cpu_seconds": cpu,
    }


# --- the minimal pass-through relay ------------------------------------------------------


def _destinations(building: str, dwelling: str, kind: str, names: list[str]) -> list[str]:
    built = []
    for name in names:
        if name == "cloud":
            built.append(topics.cloud(building, dwelling, kind))
        elif name == "group":
            built.append(topics.group(building, dwelling, kind))
        elif name == "analytics":
            built.append(topics.analytics(kind))
        elif name == "app":
            built.append(topics.app(building, dwelling, kind))
        elif name.startswith("partner:"):
            built.append(topics.partner(name.partition(":")[2], building, dwelling, kind))
    return built


async def relay(config: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Parse each panel event as JSON and republish it, acknowledging only after PUBACK.

    The baseline of "any Python gateway": the same bus and the same acknowledgement
    discipline as the real gateway (the inbound message is acknowledged once every
    copy is acknowledged by the broker), but no validation, consent, policy or ledger.
    ``fanout`` maps an event type to the destinations to copy it to; without it every
    event goes to the cloud topic only.
    """
    fanout: dict[str, list[str]] = config.get("fanout") or {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    transport: Any = MqttBus
    if config.get("transport") == "paho":
        # The same relay on paho-mqtt, the tests' reference bus: what ours gains.
        from tests.reference_paho import PahoBus

        transport = PahoBus
    async with transport(
        _address(config),
        client_id=config["client_id"],
        manual_ack=True,
        receive_maximum=config["receive_maximum"],
        publish_window=config["window"],
    ) as bus:
        await bus.subscribe(topics.PANEL_EVENTS_FILTER)
        ready()

        async def consume() -> None:
            async for message in bus.messages():
                document = json.loads(message.payload)
                kind = document["type"]
                targets = _destinations(
                    document["building_id"],
                    document["dwelling_id"],
                    kind,
                    fanout.get(kind, ["cloud"]),
                )
                # Single-threaded loop: a one-element list counts the copies still out.
                left = [len(targets)]

                def done(
                    error: BaseException | None, message: Message = message, left: list[int] = left
                ) -> None:
                    left[0] -= 1
                    if left[0] == 0 and error is None:
                        bus.ack(message)

                for target in targets:
                    await bus.publish(target, message.payload, qos=1, on_done=done)

        task = asyncio.create_task(consume())
        await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()
        task.cancel()
        await bus.drain()
    return {}


# --- entry point ---------------------------------------------------------------------------


def _ready() -> None:
    # The orchestrator waits for this line before it starts the next process.
    print("ready", flush=True)


async def _main(role: str, config: dict[str, Any]) -> dict[str, Any]:
    if role == "publish":
        return await publish(config)
    if role == "subscribe":
        return await subscribe(config, _ready)
    if role == "relay":
        return await relay(config, _ready)
    raise SystemExit(f"unknown role {role!r}")


def main(argv: list[str]) -> None:
    role, config_path = argv
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    if "payloads" in config:
        config["messages"] = json.loads(Path(config["payloads"]).read_text(encoding="utf-8"))
    result = asyncio.run(_main(role, config))
    if config.get("out"):
        Path(config["out"]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
