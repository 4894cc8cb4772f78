"""The MQTT transport's own CPU per event, in one process, without a broker or a socket.

The real ``MqttBus`` runs on the event loop with a stand-in for its socket: bytes the
broker would send are handed to it as the socket would (``data_received`` with reads of
up to 64 KiB, packets cut across reads), and what it writes is counted and dropped. Per
event it does what the gateway's transport does: read one inbound QoS 1 PUBLISH, publish
``--copies`` QoS 1 copies with the gateway's kind of user properties (purposes,
categories, policy version, rule id, and a decision id and event id new to each event),
read their PUBACKs and send the inbound's PUBACK once every copy is acknowledged. What
is left is the transport: the codec, the publish window and the writes, nothing of the
gateway's policy or store, nor of the kernel's socket work.

``.venv/bin/python -m bench.transport_bench`` prints µs of CPU per event (median of
``--repeat`` runs, and the range). Timing on a shared machine is noisy; for counts that
repeat, run it under ``valgrind --tool=callgrind`` with ``--events`` of a few thousand
and compare against ``--events 0`` (the start-up alone). ``--profile out.prof`` writes a
cProfile of one more run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from intercom_gateway.bus import mqtt5
from intercom_gateway.bus.base import BrokerAddress, DoneCallback, Message
from intercom_gateway.bus.mqtt import MqttBus
from intercom_gateway.core import topics

READ_SIZE = 65_536  # what one read of the socket hands over at most
BATCH = 200  # inbound events the broker has sent before the copies' PUBACKs come back
KINDS = ("doorbell_pressed", "door_opened", "call_answered", "access_denied")


class _Socket:
    """Where the bus writes: counts the bytes and keeps none."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Event:
    """One inbound event and what the gateway would publish for it."""

    copies: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (topic, properties)


def _events(count: int, copies: int) -> tuple[list[bytes], list[Event]]:
    """The inbound PUBLISHes (QoS 1, no properties, as panels send them) and each
    event's copies with user properties shaped as the gateway's."""
    packets: list[bytes] = []
    events: list[Event] = []
    destinations = ("cloud", "group", "partner-a", "partner-b")[:copies]
    for i in range(count):
        building, dwelling, kind = f"b{i % 20:03d}", f"d{i % 400:04d}", KINDS[i % len(KINDS)]
        document = {
            "schema_version": 1,
            "type": kind,
            "event_id": str(uuid.UUID(int=i)),
            "building_id": building,
            "dwelling_id": dwelling,
            "occurred_at": "2026-11-30T08:00:00.000000Z",
            "details": {f"field_{n}": n for n in range(20)},  # ~400 bytes, as the bench's
        }
        payload = json.dumps(document).encode()
        packet_id = i % mqtt5.MAX_PACKET_ID + 1
        packets.append(
            mqtt5.publish_packet(
                topics.panel_events(building, dwelling, kind),
                payload,
                qos=1,
                retain=False,
                packet_id=packet_id,
            )
        )
        decision_id, event_id = str(uuid.uuid4()), str(uuid.UUID(int=i))
        made = []
        for destination in destinations:
            if destination.startswith("partner"):
                topic = topics.partner(destination, building, dwelling, kind)
            elif destination == "group":
                topic = topics.group(building, dwelling, kind)
            else:
                topic = topics.cloud(building, dwelling, kind)
            properties = (
                ("purpose", "service_delivery"),
                ("purpose", f"{destination}_operations"),
                ("category", "access_events"),
                ("policy_version", "2026-11-01"),
                ("rule_id", f"{destination}-{kind}"),
                ("decision_id", decision_id),
                ("event_id", event_id),
            )
            made.append((topic, properties))
        events.append(Event(tuple(made)))
    return packets, events


def _reads(stream: bytes) -> list[bytes]:
    """``stream`` cut as a socket hands it over: reads of READ_SIZE bytes at most."""
    return [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


def _pubacks(first_id: int, count: int) -> bytes:
    """The broker's PUBACKs for ``count`` publishes from packet id ``first_id`` on."""
    ids = ((first_id - 1 + i) % mqtt5.MAX_PACKET_ID + 1 for i in range(count))
    return b"".join(mqtt5.puback(packet_id) for packet_id in ids)


def _batches(packets: list[bytes], copies: int) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """(inbound reads, PUBACK reads) of each batch; the bus numbers its publishes 1, 2,
    ... and every batch is acknowledged before the next, so their ids are known."""
    next_id = 1
    for start in range(0, len(packets), BATCH):
        batch = packets[start : start + BATCH]
        acks = _pubacks(next_id, len(batch) * copies)
        next_id = (next_id - 1 + len(batch) * copies) % mqtt5.MAX_PACKET_ID + 1
        yield _reads(b"".join(batch)), _reads(acks)


async def run_once(packets: list[bytes], events: list[Event], copies: int) -> float:
    """CPU seconds of the transport's work for every event."""
    bus = MqttBus(BrokerAddress(), client_id="bench", manual_ack=True, publish_window=65_535)
    socket = _Socket()
    bus._transport = cast(asyncio.Transport, socket)
    batches = list(_batches(packets, copies))
    inbox = bus.messages()
    acked = 0

    def acknowledge(message: Message, left: list[int]) -> DoneCallback:
        def done(error: BaseException | None) -> None:
            nonlocal acked
            left[0] -= 1
            if left[0] == 0 and error is None:
                bus.ack(message)
                acked += 1

        return done

    index = 0
    started = time.process_time()
    for inbound, acks in batches:
        for data in inbound:
            bus._received(data)
        for _ in range(min(BATCH, len(events) - index)):
            message = await anext(inbox)
            done = acknowledge(message, [copies])
            for topic, properties in events[index].copies:
                await bus.publish(
                    topic, message.payload, qos=1, user_properties=properties, on_done=done
                )
            index += 1
        await asyncio.sleep(0)  # the loop's turn: the publishes go out in one write
        for data in acks:
            bus._received(data)
        await asyncio.sleep(0)  # and the inbound PUBACKs
    elapsed = time.process_time() - started
    if acked != len(events):
        raise RuntimeError(f"{acked} of {len(events)} events acknowledged")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", help="write a cProfile of one more run to this file")
    options = parser.parse_args()
    packets, events = _events(options.events, options.copies)
    if not options.events:
        return
    runs = []
    for _ in range(options.repeat):
        runs.append(asyncio.run(run_once(packets, events, options.copies)))
        print(f"  {1e6 * runs[-1] / options.events:6.2f} µs/event", flush=True)
    per_event = sorted(1e6 * cpu / options.events for cpu in runs)
    print(
        f"transport: {statistics.median(per_event):.2f} µs CPU/event "
        f"({per_event[0]:.2f}-{per_event[-1]:.2f}), {options.copies} copies, "
        f"{options.events} events x {options.repeat}"
    )
    if options.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(run_once(packets, events, options.copies))
        profiler.disable()
        profiler.dump_stats(options.profile)


if __name__ == "__main__":
    main()
