"""Run a simulated fleet of panels against a bus, paced in accelerated simulated time.

The panels' behaviour lives in ``simulators.panels`` (pure, ``iter_events``); this is
the thin I/O shell around it: it waits until each event is due, publishes it at QoS 1
on its panel topic, tells ``on_event`` (the demo shows events live) and sums up the run.
With an ``Outbox`` (``simulators.outbox``) the panels keep each event until the
gateway's receipt names it and send it again after a timeout, as the panel protocol
asks (README, "Panel protocol"). The simulators talk to the gateway only over MQTT, as
real panels would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from intercom_gateway.bus import Bus
from intercom_gateway.core import topics
from intercom_gateway.core.models import Event, utc_now
from intercom_gateway.core.registry import Registry
from intercom_gateway.simulators.clock import SlidingClock
from intercom_gateway.simulators.outbox import Outbox, keep
from intercom_gateway.simulators.panels import iter_events
from intercom_gateway.simulators.rates import DEFAULT_RATES, Rates
from intercom_gateway.simulators.settings import send_settings, settings_change

__all__ = [
    "FleetSummary",
    "Outbox",
    "Rates",
    "iter_events",
    "run_fleet",
    "send_settings",
    "settings_change",
]


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """What a run published."""

    by_type: dict[str, int]
    by_building: dict[str, int]
    first_occurred_at: datetime | None
    last_occurred_at: datetime | None
    published: int
    wall_seconds: float
    # With an outbox: events a receipt named, resends made, events still unconfirmed.
    confirmed: int | None = None
    resent: int = 0
    unconfirmed: int = 0

    def render(self) -> str:
        if self.first_occurred_at is None or self.last_occurred_at is None:
            return f"Published no events in {self.wall_seconds:.1f} s."
        span_hours = (self.last_occurred_at - self.first_occurred_at).total_seconds() / 3600
        lines = [
            f"Published {self.published} events from {len(self.by_building)} building(s)"
            f" in {self.wall_seconds:.1f} s of wall time.",
            f"Simulated {self.first_occurred_at:%Y-%m-%d %H:%M} to"
            f" {self.last_occurred_at:%Y-%m-%d %H:%M} UTC ({span_hours:.1f} h).",
            "By type: " + _counts(self.by_type),
            "By building: " + _counts(self.by_building),
        ]
        if self.confirmed is not None:
            lines.append(
                f"Receipts: {self.confirmed} confirmed, {self.resent} resends,"
                f" {self.unconfirmed} still unconfirmed."
            )
        return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))


@dataclass
class _Tally:
    by_type: Counter[str] = field(default_factory=Counter)
    by_building: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    sent: int = 0
    acknowledged: int = 0
    error: BaseException | None = None

    def add(self, event: Event) -> None:
        self.sent += 1
        self.by_type[event.type] += 1
        self.by_building[event.building_id] += 1
        self.first = self.first or event.occurred_at
        self.last = event.occurred_at

    def done(self, error: BaseException | None) -> None:
        """The bus's ``on_done``: count the PUBACK, keep the first failure."""
        if error is None:
            self.acknowledged += 1
        elif self.error is None:
            self.error = error

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def summary(self, wall_seconds: float) -> FleetSummary:
        return FleetSummary(
            by_type=dict(self.by_type),
            by_building=dict(self.by_building),
            first_occurred_at=self.first,
            last_occurred_at=self.last,
            published=self.acknowledged,
            wall_seconds=wall_seconds,
        )


def _wall_clock() -> datetime:
    now = utc_now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # panels stamp ms


async def run_fleet(
    bus: Bus,
    registry: Registry,
    *,
    seed: int = 0,
    acceleration: float = 1.0,
    duration: float | None = None,
    max_events: int | None = None,
    rates: Rates = DEFAULT_RATES,
    unlock_services: tuple[str, ...] = ("parcel-unlock",),
    start: datetime | None = None,
    window: timedelta | None = None,
    on_event: Callable[[str, Event], None] | None = None,
    outbox: Outbox | None = None,
    settle: float = 0.0,
    receipts_filter: str = topics.RECEIPTS_FILTER,
) -> FleetSummary:
    """Publish the fleet's events until ``duration`` real seconds or ``max_events`` pass.

    ``acceleration`` is simulated seconds per real second. With a ``start``, events
    carry their simulated ``occurred_at`` (reproducible: what ``iter_events`` yields).
    Without one the run is live: the schedule starts now and each event is stamped
    with the wall clock as it is sent, as a real panel's clock would stamp it. Simulated
    timestamps at 3600x would be hours ahead of the wall clock within seconds, and a
    gateway rightly rejects those as from the future.
    With a ``window`` (and no ``start``) events carry simulated time that a gateway
    accepts however long the run: never ahead of the wall clock and never more than
    ``window`` behind it (``simulators.clock.SlidingClock``; ``clock.window_for`` gives
    the window for a gateway's age limit).
    With an ``outbox`` the bus subscribes to ``receipts_filter`` first (the ``fleet``
    account reads every panel's receipts), each event is kept until a receipt names it
    and resent after the outbox's timeout, and after the last event the run waits up
    to ``settle`` seconds for the receipts still missing.
    Raises the first publish failure (e.g. an ACL refusal) once it is known.
    """
    if acceleration <= 0:
        raise ValueError("acceleration must be positive")
    publish = functools.partial(
        _publish,
        bus,
        registry,
        seed=seed,
        acceleration=acceleration,
        duration=duration,
        max_events=max_events,
        rates=rates,
        unlock_services=unlock_services,
        start=start,
        window=window,
        on_event=on_event,
    )
    if outbox is None:
        return await publish(None)
    await bus.subscribe(receipts_filter)
    keeping = asyncio.create_task(keep(bus, outbox), name="panel-outbox")
    try:
        summary = await publish(outbox)
        if settle > 0:
            await outbox.wait_empty(settle)
        return dataclasses.replace(
            summary, confirmed=outbox.confirmed, resent=outbox.resent, unconfirmed=len(outbox)
        )
    finally:
        keeping.cancel()  # a no-op if it failed: awaiting it then raises its error
        with contextlib.suppress(asyncio.CancelledError):
            await keeping


async def _publish(
    bus: Bus,
    registry: Registry,
    outbox: Outbox | None,
    *,
    seed: int,
    acceleration: float,
    duration: float | None,
    max_events: int | None,
    rates: Rates,
    unlock_services: tuple[str, ...],
    start: datetime | None,
    window: timedelta | None,
    on_event: Callable[[str, Event], None] | None,
) -> FleetSummary:
    loop = asyncio.get_running_loop()
    began = loop.time()
    clock = None
    if start is None and window is not None:
        clock = SlidingClock(anchor=_wall_clock(), acceleration=acceleration, window=window)
    origin = start or (clock.origin if clock else utc_now())
    deadline = None if duration is None else began + duration
    tally = _Tally()
    events = iter_events(
        registry, seed=seed, rates=rates, start=origin, unlock_services=unlock_services
    )
    for event in events if max_events != 0 else ():
        due = began + (event.occurred_at - origin).total_seconds() / acceleration
        if deadline is not None and due > deadline:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            break
        # Pacing the simulation; a zero sleep still lets the bus's socket writers run.
        await asyncio.sleep(max(0.0, due - loop.time()))
        if clock is not None:
            event = event.model_copy(update={"occurred_at": clock.stamp(event.occurred_at)})
        elif start is None:
            event = event.model_copy(update={"occurred_at": _wall_clock()})
        topic = topics.panel_events(event.building_id, event.device.id, event.type)
        payload = event.model_dump_json().encode()
        if outbox is not None:
            await outbox.put(str(event.event_id), topic, payload)
        await bus.publish(topic, payload, qos=1, on_done=tally.done)
        tally.raise_if_failed()
        tally.add(event)
        if on_event is not None:
            on_event(topic, event)
        if max_events is not None and tally.sent >= max_events:
            break
    await bus.drain()
    tally.raise_if_failed()
    return tally.summary(loop.time() - began)
