"""``intercom-gateway demo``: Mosquitto, the gateway and simulated panels, shown live.

Starts a Mosquitto with the project's configuration on a free port (unless a broker
is given), generates its accounts, runs the gateway and the panel simulators in this
process, and shows what the panels send and what arrives on which topic, with its
purposes. Now and then it sends bad input and a resident's settings change, so the
rejected topic and a consent change show too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from intercom_gateway.broker.mosquitto import FLEET, OPERATOR
from intercom_gateway.bus import Message, MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.distributions import USAGE_EVENTS
from intercom_gateway.core.models import Event, EventType, utc_now
from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.registry import Registry, load_registry
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.qa.runner import Broker, Endpoint, client, running_gateway, started_broker
from intercom_gateway.settings import Settings
from intercom_gateway.simulators.clock import window_for

DEFAULT_SECRETS = Path(".secrets/broker")
MAX_PACKET = 65_536  # mosquitto.conf max_packet_size
OUTPUT_FILTERS = (
    topics.cloud_filter(),
    topics.group_filter(),
    topics.partners_filter(),
    topics.app_filter(),  # §2(4): lobby calls of the dwellings linked to the Intercom app
    topics.analytics_filter(),
    topics.statistics_filter(),
    topics.REJECTED_FILTER,
    topics.settings_ack_filter(),
)


@dataclass
class View:
    """What the demo has seen; rendered live on a terminal, as lines otherwise.

    Rejections are told apart: of the simulated panels' events (there should be none)
    and of the bad input the demo sends on purpose (one of each class).
    """

    console: Console
    live: bool
    sent: deque[str] = field(default_factory=lambda: deque(maxlen=PANE_ROWS))
    arrived: deque[str] = field(default_factory=lambda: deque(maxlen=PANE_ROWS))
    sent_by_type: Counter[str] = field(default_factory=Counter)
    arrived_by_kind: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    bad_input_by_reason: Counter[str] = field(default_factory=Counter)
    rejected_on_purpose: Counter[str] = field(default_factory=Counter)
    simulated_ids: set[str] = field(default_factory=set)

    def panel_sent(self, topic: str, event: Event) -> None:
        self.sent_by_type[event.type] += 1
        self.simulated_ids.add(str(event.event_id))
        line = (
            f"{event.occurred_at:%a %H:%M} {event.type:<14} {event.building_id}/{event.dwelling_id}"
        )
        self._add(self.sent, f"[cyan]panel[/]  {line}  via {topic}")

    def bad_input_sent(self, reason: str) -> None:
        self.bad_input_by_reason[reason] += 1
        self._add(self.sent, f"[yellow]bad input on purpose[/] {reason}")

    def note(self, text: str) -> None:
        self._add(self.sent, f"[magenta]{text}[/]")

    def destination(self, message: Message) -> None:
        kind = message.topic.split("/", 1)[0]
        purposes = ",".join(message.properties("purpose"))
        if topics.is_rejected(message.topic):
            reason = message.topic.rsplit("/", 1)[1]
            if self._on_purpose(reason, message.payload):
                self.rejected_on_purpose[reason] += 1
                self._add(self.arrived, f"[yellow]rejected[/] {reason} (bad input on purpose)")
            else:
                self.rejected_by_reason[reason] += 1
                self._add(self.arrived, f"[red]rejected[/] {reason} (simulated event)")
            return
        if message.topic.endswith("/settings/ack"):
            ack = json.loads(message.payload)
            self._add(self.arrived, f"[magenta]settings ack[/] {ack['detail']}")
            return
        self.arrived_by_kind[kind] += 1
        self._add(self.arrived, f"[green]{message.topic}[/]  [dim]{purposes}[/]")

    def _on_purpose(self, reason: str, payload: bytes) -> bool:
        """A rejection of an event the simulators sent is theirs; any other is of the
        bad input, as long as some of that reason was sent on purpose."""
        with contextlib.suppress(ValueError, TypeError, KeyError):
            echoed = json.loads(json.loads(payload)["payload"])
            if str(echoed.get("event_id")) in self.simulated_ids:
                return False
        return self.rejected_on_purpose[reason] < self.bad_input_by_reason[reason]

    def _add(self, lines: deque[str], text: str) -> None:
        lines.append(text)
        if not self.live:
            self.console.print(text, highlight=False)

    def render(self) -> Group:
        """Both panes stacked, cut to the terminal's height (on a very small one only the
        destinations); lines are cut, not wrapped."""
        height = self.console.size.height
        rows = min(PANE_ROWS, (height - CHROME_ROWS) // 2)
        status = Text(self.status(), no_wrap=True, overflow="ellipsis")
        if rows < 1:
            rows = max(1, height - CHROME_ROWS // 2 - 1)
            return Group(_pane("Gateway → destinations", self.arrived, rows), status)
        panes = [
            _pane("Panels → Mosquitto", self.sent, rows),
            _pane("Gateway → destinations (purposes)", self.arrived, rows),
        ]
        return Group(*panes, status)

    def status(self) -> str:
        return (
            f"sent {sum(self.sent_by_type.values())}, bad input on purpose "
            f"{sum(self.bad_input_by_reason.values())}, arrived "
            f"{sum(self.arrived_by_kind.values())}, simulated rejected "
            f"{sum(self.rejected_by_reason.values())}"
        )

    def totals(self) -> Table:
        table = Table(title="Totals", expand=True)
        table.add_column("sent by panels")
        table.add_column("arrived per destination")
        table.add_column("simulated events rejected")
        table.add_column("bad input sent on purpose")
        on_purpose = "\n".join(
            f"{reason}: {sent} sent, {self.rejected_on_purpose[reason]} rejected"
            for reason, sent in sorted(self.bad_input_by_reason.items())
        )
        table.add_row(
            _counts(self.sent_by_type),
            _counts(self.arrived_by_kind),
            _counts(self.rejected_by_reason),
            on_purpose or "-",
        )
        return table


# Lines per pane at most, and the rows around them: two titled boxes and a status line.
PANE_ROWS = 12
CHROME_ROWS = 7


def _pane(title: str, lines: deque[str], rows: int) -> Table:
    table = Table(title=title, expand=True, show_header=False)
    table.add_column(no_wrap=True, overflow="ellipsis")
    for line in list(lines)[-rows:]:
        table.add_row(line)
    return table


def _counts(counter: Counter[str]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in sorted(counter.items())) or "-"


async def run_demo(
    *,
    console: Console,
    workdir: Path,
    duration: float | None,
    seed: int,
    acceleration: float,
    broker_port: int | None = None,
    secrets_dir: Path | None = None,
    stop: asyncio.Event | None = None,
) -> View:
    """Run the demo for ``duration`` seconds (None: until ``stop`` is set or it is
    cancelled); stopping it, too, stops what it started and prints the totals."""
    stop = stop or asyncio.Event()
    defaults = Settings()
    registry = load_registry(defaults.registry_path)
    partners = load_partners(defaults.partners_path, policy=load_policy(defaults.policy_path))
    view = View(console, live=console.is_terminal)
    partner_ids = [s.id for s in partners.services]
    # A broker given, or one of our own for the time of the demo.
    target: contextlib.AbstractAsyncContextManager[Broker] = (
        contextlib.nullcontext(Endpoint.load(secrets_dir or DEFAULT_SECRETS, port=broker_port))
        if broker_port is not None
        else started_broker(workdir, registry, partner_ids)
    )
    try:
        async with target as broker:
            console.print(
                f"Mosquitto on {broker.host}:{broker.port} (project mosquitto.conf), "
                f"store {workdir / 'gateway.sqlite'}",
                highlight=False,
                soft_wrap=True,  # the path in one piece, to copy or match
            )
            live = Live(view.render(), console=console, refresh_per_second=4) if view.live else None
            async with (
                client(
                    broker, OPERATOR, client_id=broker.address(OPERATOR).client_id("demo")
                ) as observer,
                client(broker, FLEET, client_id=broker.address(FLEET).client_id("demo")) as fleet,
                asyncio.TaskGroup() as tasks,
            ):
                await observer.subscribe(*OUTPUT_FILTERS, topics.STATUS)
                watcher = tasks.create_task(_watch(observer, view))
                # running_gateway returns once the gateway is online: its subscriptions exist
                # before any panel speaks (a first session has nothing queued for earlier ones).
                with live or contextlib.nullcontext():
                    refresher = tasks.create_task(_refresh(live, view)) if live else None
                    async with running_gateway(
                        broker,
                        registry,
                        workdir,
                        partners_path=defaults.partners_path,
                        gateway_id=f"demo-{uuid.uuid4().hex[:6]}",
                        statistics_window=10.0,
                        # Analytics copies come out in a batch when their window ends (§5(5)).
                        analytics_window=3.0,
                    ) as running:
                        sent = await _drive(
                            fleet,
                            registry,
                            view,
                            seed=seed,
                            acceleration=acceleration,
                            duration=duration,
                            max_event_age=defaults.max_event_age,
                            stop=stop,
                        )
                        if not stop.is_set():
                            await _settle(running.gateway, sent)
                    watcher.cancel()
                    if refresher:
                        refresher.cancel()
    finally:  # once, also when the demo is stopped
        console.print(view.totals())
    return view


async def _watch(bus: MqttBus, view: View) -> None:
    async for message in bus.messages():
        if message.topic == topics.STATUS:
            view.note(f"gateway {json.loads(message.payload)['state']}")
            continue
        view.destination(message)


async def _refresh(live: Live | None, view: View) -> None:
    while live is not None:
        live.update(view.render())
        await asyncio.sleep(0.25)  # screen refresh period


async def _drive(
    fleet: MqttBus,
    registry: Registry,
    view: View,
    *,
    seed: int,
    acceleration: float,
    duration: float | None,
    max_event_age: float,
    stop: asyncio.Event,
) -> int:
    """A tour of every event kind, then the panel simulators, with every class of bad
    input and one settings change on the way."""
    from intercom_gateway.simulators.bad_input import all_samples
    from intercom_gateway.simulators.fleet import run_fleet
    from intercom_gateway.simulators.settings import return_home_notification, send_settings

    async def extras() -> int:
        await asyncio.sleep(2)  # let some normal traffic show first
        view.note("resident of b001/d0104 switches return-home notification off (§7(1)②)")
        await send_settings(
            fleet,
            "b001",
            "panel-b001-d0104",
            return_home_notification("b001", "d0104", enabled=False),
        )
        # Over the broker's max_packet_size, a message never reaches the gateway: Mosquitto
        # disconnects the sender. The demo shows what the gateway itself rejects. The
        # one valid sample is the original of the replayed pair: it goes first, so its
        # copy is the replay it is meant to be.
        bad = [
            s
            for s in all_samples(registry, now=utc_now(), seed=seed, properties=True)
            if len(s.payload) < MAX_PACKET
        ]
        for sample in bad:
            await asyncio.sleep(0.5)  # spread them out so they can be read
            if sample.reason is None:
                view.note("sent: the original of a pair the next line replays")
            else:
                view.bad_input_sent(sample.reason.value)
            await fleet.publish(sample.topic, sample.payload, user_properties=sample.properties)
        return len(bad) + 1

    toured = await _tour(fleet, registry, view, seed=seed)
    extra = asyncio.create_task(extras())
    # Panels stamp events with simulated time that slides with the wall clock, inside
    # the window the gateway accepts (neither stale nor future), however long the run.
    panels = asyncio.ensure_future(
        run_fleet(
            fleet,
            registry,
            seed=seed,
            acceleration=acceleration,
            duration=duration,
            window=window_for(max_event_age),
            on_event=view.panel_sent,
        )
    )
    halt = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({panels, halt}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the demo is stopped: the panels and extras end with it
        for task in (halt, panels, extra):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if panels.cancelled():
        return toured
    published = panels.result().published + toured
    return published if extra.cancelled() else published + extra.result()


# Dwellings of the sample registry that use partner services, so a tour shows them too.
TOUR_DWELLINGS = frozenset({("b001", "d0101"), ("b002", "d0201")})


async def _tour(fleet: MqttBus, registry: Registry, view: View, *, seed: int) -> int:
    """One event of every kind first, so each shows however short the run (some are rare)."""
    from intercom_gateway.simulators.panels import iter_events

    now = utc_now()
    # Read receipts and answers follow a contractor's distribution: not in the tour.
    missing = set(EventType) - USAGE_EVENTS
    toured = len(missing)
    for event in iter_events(registry, seed=seed, start=now):
        kind = EventType(event.type)
        if kind not in missing or (event.building_id, event.dwelling_id) not in TOUR_DWELLINGS:
            continue
        missing.discard(kind)
        event = event.model_copy(update={"occurred_at": utc_now()})
        topic = topics.panel_events(event.building_id, event.device.id, event.type)
        view.panel_sent(topic, event)
        await fleet.publish(topic, event.model_dump_json().encode())
        if not missing:
            return toured
    raise AssertionError("unreachable: the simulator's stream is endless")


async def _settle(gateway: Gateway, sent: int, *, limit: float = 30.0) -> None:
    """Wait until the gateway has taken and finished everything the demo sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # The gateway is in-process and its counter is the signal; a demo may poll it.
    while gateway.metrics.received < sent and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await gateway.finish_in_flight()
    # The analytics copies held for the last window come out when it ends.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gateway.wait_analytics_released(), max(0.0, deadline - loop.time()))
