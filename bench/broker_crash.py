"""What a broker crash loses, and what bounding it costs, per Mosquitto persistence setting.

Mosquitto 2.0 keeps its queues in memory and writes the whole in-memory database to
its persistence file on a schedule (``autosave_interval`` seconds, or every
``autosave_interval`` changes with ``autosave_on_changes true``) and at a clean
shutdown. A SIGKILL loses what was accepted since the last save. For each setting this
measures, with the project's ``mosquitto.conf`` changed only in its autosave lines:

- **loss**, per seed: a subscriber with a persistent session (QoS 1, clean start off,
  session expiry) subscribes and goes offline, as the gateway does when it is down; a
  publisher sends ``--messages`` at ``--rate`` per second; at a random point of that
  (seeded) the broker is SIGKILLed and started again; the subscriber comes back and
  takes everything up to a sentinel published after the restart. Lost = messages the
  broker had acknowledged (PUBACK) that never arrive.
- **cost**, once per setting: the same backlog without a kill, held ``--hold`` seconds
  after the last publish (so that a 10 s schedule saves at least once); the broker's
  CPU (``/proc/<pid>/stat``) and bytes written to storage (``/proc/<pid>/io``
  ``write_bytes``) over that window, per message.

``python -m bench.broker_crash`` (about 5 minutes on 2 cores with the defaults);
``--help`` lists the options. Prints a table and writes ``bench/results/<stamp>-broker-crash.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intercom_gateway.broker.mosquitto import (
    DEFAULT_CONFIG,
    FLEET,
    GATEWAY,
    Mosquitto,
    generate_credentials,
)
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.errors import BusError

RESULTS = Path("bench/results")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# name -> (autosave_interval, autosave_on_changes)
SETTINGS: dict[str, tuple[int, bool]] = {
    "interval-10s": (10, False),
    "interval-1s": (1, False),
    "changes-1000": (1000, True),
    "changes-100": (100, True),
    "changes-1": (1, True),
}
TOPIC = topics.panel_events("b001", "bench-panel", "visitor")
SENTINEL = topics.panel_events("b001", "bench-panel", "sentinel")
PAD = "x" * 300  # about the size of a visitor event (~390 bytes of JSON)


# --- configuration and the broker's own counters ------------------------------------------


def config_with(template: str, *, interval: int, on_changes: bool) -> str:
    """The project's configuration with only its autosave lines replaced."""
    kept = [
        line
        for line in template.splitlines()
        if line.split()[:1] not in (["autosave_interval"], ["autosave_on_changes"])
    ]
    return "\n".join(
        [
            *kept,
            f"autosave_interval {interval}",
            f"autosave_on_changes {'true' if on_changes else 'false'}",
            "",
        ]
    )


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    write_bytes: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return cls((int(stat[11]) + int(stat[12])) / _CLOCK_TICKS, int(io["write_bytes"]))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.cpu_s - other.cpu_s, self.write_bytes - other.write_bytes)


# --- clients ------------------------------------------------------------------------------


class Publisher:
    """Publishes numbered messages at a steady rate; remembers which the broker acknowledged."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.sent = 0
        self.acked: set[int] = set()

    async def run(self, count: int, rate: float) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(BusError):
            async with MqttBus(
                self.broker.address(FLEET), client_id=f"{FLEET}.pub-{uuid.uuid4().hex[:6]}"
            ) as bus:
                began = loop.time()
                for number in range(count):
                    # Pacing the offered load, not synchronising.
                    await asyncio.sleep(max(0.0, began + number / rate - loop.time()))
                    payload = json.dumps({"n": number, "pad": PAD}).encode()
                    await bus.publish(TOPIC, payload, on_done=self._done(number))
                    self.sent += 1
                await bus.drain()

    def _done(self, number: int) -> Any:
        def done(error: BaseException | None) -> None:
            if error is None:
                self.acked.add(number)

        return done


async def park_subscriber(broker: Mosquitto, client_id: str) -> None:
    """Create the persistent session and its subscription, then go offline.

    The broker is then restarted cleanly, so the session is on disk as a long-standing
    gateway session would be, whatever the autosave schedule.
    """
    async with MqttBus(
        broker.address(GATEWAY), client_id=client_id, clean_start=False, session_expiry=86_400
    ) as bus:
        await bus.subscribe(topics.PANEL_EVENTS_FILTER)
    await asyncio.to_thread(broker.restart)


async def drain_subscriber(broker: Mosquitto, client_id: str, *, timeout: float) -> set[int]:
    """Reconnect the session and take what the broker kept, up to a fresh sentinel."""
    got: set[int] = set()
    async with MqttBus(
        broker.address(GATEWAY), client_id=client_id, clean_start=False, session_expiry=86_400
    ) as bus:
        # As the gateway does on every connection; it also makes the sentinel arrive if a
        # crash took the session itself.
        await bus.subscribe(topics.PANEL_EVENTS_FILTER)
        async with MqttBus(
            broker.address(FLEET), client_id=f"{FLEET}.s-{uuid.uuid4().hex[:6]}"
        ) as pub:
            await pub.publish(SENTINEL, b"{}")

        async def take() -> None:
            async for message in bus.messages():
                if message.topic == SENTINEL:
                    return
                got.add(int(json.loads(message.payload)["n"]))

        await asyncio.wait_for(take(), timeout)
    return got


# --- one run ------------------------------------------------------------------------------


@dataclass
class CrashRun:
    setting: str
    seed: int
    kill_at_s: float
    sent: int
    acked: int
    received: int
    lost: int
    persistence_file_bytes: int

    @property
    def lost_pct(self) -> float:
        return 100.0 * self.lost / self.acked if self.acked else 0.0


@dataclass
class CostRun:
    setting: str
    messages: int
    window_s: float
    cpu_s: float
    write_bytes: int
    persistence_file_bytes: int
    publish_rate: float

    @property
    def cpu_us_per_message(self) -> float:
        return 1e6 * self.cpu_s / self.messages

    @property
    def kib_per_message(self) -> float:
        return self.write_bytes / 1024 / self.messages


class Bench:
    def __init__(self, workdir: Path, *, messages: int, rate: float, hold: float) -> None:
        self.workdir = workdir
        self.messages = messages
        self.rate = rate
        self.hold = hold
        registry = generate_registry(buildings=1, dwellings=1, services=())
        self.credentials = generate_credentials(workdir / "secrets", registry, [])
        self.template = DEFAULT_CONFIG.read_text(encoding="utf-8")

    def broker(self, name: str, run: str) -> Mosquitto:
        interval, on_changes = SETTINGS[name]
        directory = self.workdir / f"{name}-{run}"
        directory.mkdir(parents=True)
        config = directory / "mosquitto.conf.template"
        config.write_text(config_with(self.template, interval=interval, on_changes=on_changes))
        return Mosquitto(workdir=directory / "broker", credentials=self.credentials, config=config)

    async def crash(self, name: str, seed: int) -> CrashRun:
        rng = random.Random(seed)
        broker = self.broker(name, f"seed{seed}")
        await asyncio.to_thread(broker.start)
        try:
            client_id = f"{GATEWAY}.offline-{uuid.uuid4().hex[:6]}"
            await park_subscriber(broker, client_id)
            publisher = Publisher(broker)
            duration = self.messages / self.rate
            kill_at = rng.uniform(0.1, 1.0) * duration  # a random point of the stream
            publishing = asyncio.create_task(publisher.run(self.messages, self.rate))
            await asyncio.sleep(kill_at)  # the crash point, drawn from the seed
            saved = _persistence_size(broker)
            await asyncio.to_thread(broker.stop, kill=True)
            await publishing
            await asyncio.to_thread(broker.start)
            got = await drain_subscriber(broker, client_id, timeout=120)
        finally:
            await asyncio.to_thread(broker.stop)
        lost = len(publisher.acked - got)
        return CrashRun(
            name, seed, round(kill_at, 2), publisher.sent, len(publisher.acked), len(got), lost,
            saved,
        )  # fmt: skip

    async def cost(self, name: str) -> CostRun:
        broker = self.broker(name, "cost")
        await asyncio.to_thread(broker.start)
        try:
            client_id = f"{GATEWAY}.offline-{uuid.uuid4().hex[:6]}"
            await park_subscriber(broker, client_id)
            assert broker.process is not None
            pid = broker.process.pid
            publisher = Publisher(broker)
            before, began = Usage.of(pid), time.monotonic()
            await publisher.run(self.messages, self.rate)
            published = time.monotonic() - began
            await asyncio.sleep(self.hold)  # the backlog sits, as while the gateway is down
            used, window = Usage.of(pid) - before, time.monotonic() - began
            size = _persistence_size(broker)
            got = await drain_subscriber(broker, client_id, timeout=120)
        finally:
            await asyncio.to_thread(broker.stop)
        if len(got) != len(publisher.acked):
            raise SystemExit(f"{name}: cost run delivered {len(got)} of {len(publisher.acked)}")
        return CostRun(
            name, len(publisher.acked), round(window, 2), used.cpu_s, used.write_bytes, size,
            round(len(publisher.acked) / published, 1),
        )  # fmt: skip


def _persistence_size(broker: Mosquitto) -> int:
    path = broker.workdir / "data" / "mosquitto.db"
    return path.stat().st_size if path.exists() else 0


# --- reporting ----------------------------------------------------------------------------


def table(crashes: Sequence[CrashRun], costs: Sequence[CostRun], rate: float) -> str:
    rows = [
        "| setting | lost of acknowledged, per seed | worst | worst in seconds of traffic "
        "| broker CPU µs / message | KiB written / message | persistence file |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cost in costs:
        runs = [c for c in crashes if c.setting == cost.setting]
        per_seed = ", ".join(f"{c.lost}/{c.acked}" for c in runs)
        worst = max((c.lost for c in runs), default=0)
        rows.append(
            f"| {cost.setting} | {per_seed} | {worst} | {worst / rate:.2f} s "
            f"| {cost.cpu_us_per_message:.0f} | {cost.kib_per_message:.1f} "
            f"| {cost.persistence_file_bytes / 1024:.0f} KiB |"
        )
    return "\n".join(rows)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    names = args.settings or list(SETTINGS)
    with tempfile.TemporaryDirectory(prefix="broker-crash-", dir=args.workdir) as tmp:
        bench = Bench(Path(tmp), messages=args.messages, rate=args.rate, hold=args.hold)
        crashes: list[CrashRun] = []
        costs: list[CostRun] = []
        for name in names:
            costs.append(cost := await bench.cost(name))
            print(
                f"{name}: cost {cost.cpu_us_per_message:.0f} µs CPU, "
                f"{cost.kib_per_message:.1f} KiB written per message "
                f"({cost.messages} messages at {cost.publish_rate}/s, {cost.window_s} s window)",
                flush=True,
            )
            for seed in args.seeds:
                crashes.append(run := await bench.crash(name, seed))
                print(
                    f"{name} seed {seed}: killed at {run.kill_at_s} s, lost {run.lost} of "
                    f"{run.acked} acknowledged ({run.lost_pct:.1f}%)",
                    flush=True,
                )
    print(table(crashes, costs, args.rate))
    return {
        "messages": args.messages,
        "rate": args.rate,
        "hold": args.hold,
        "crashes": [asdict(c) | {"lost_pct": c.lost_pct} for c in crashes],
        "costs": [
            asdict(c)
            | {"cpu_us_per_message": c.cpu_us_per_message, "kib_per_message": c.kib_per_message}
            for c in costs
        ],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broker_crash",
        description=(
            "Loss under a broker SIGKILL with a queued backlog, and the broker's CPU and "
            "disk writes per message, for each Mosquitto autosave setting."
        ),
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=list(SETTINGS),
        help=f"which persistence settings (default: all: {', '.join(SETTINGS)})",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[1, 2, 3], help="one crash run per seed"
    )
    parser.add_argument(
        "--messages", type=int, default=6000, help="messages queued per run (default 6000)"
    )
    parser.add_argument(
        "--rate", type=float, default=300.0, help="messages per second offered (default 300)"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=12.0,
        help="seconds the backlog is held after the last publish in the cost run (default 12)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where brokers keep their files (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rate <= 0 or args.hold < 0:
        parser.error("--messages and --rate must be positive and --hold not negative")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    result = asyncio.run(measure(parse_args(argv)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-broker-crash.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"result: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
