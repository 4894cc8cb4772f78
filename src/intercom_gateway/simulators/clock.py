"""Accelerated simulated time that the gateway still accepts, however long the run.

A gateway refuses events stamped more than ``max_event_age`` in the past (stale) or
more than ``max_clock_skew`` ahead of its clock (future). Simulated time that runs at
``acceleration`` from a fixed start leaves that window sooner or later: a run that
starts ``duration x acceleration`` in the past is stale at first, one that starts now
is in the future within seconds. So the schedule runs accelerated in its own time, and
each event is stamped inside a window that slides with the wall clock: from
``window`` behind the wall clock up to (never past) the wall clock. When simulated
time catches up with the wall clock it steps back by ``window``, as if the panels
lived the last day again. Pure: the wall clock is the ``anchor`` the caller gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

# Room between the window and the gateway's age limit for an event's time on its way
# (queued on the broker, resent by the outbox): at most an hour, a tenth of the limit.
MARGIN_SHARE = 0.1
MAX_MARGIN = timedelta(hours=1)


def window_for(max_event_age: float) -> timedelta:
    """The lag a simulated clock may have against a gateway of this age limit (s)."""
    age = timedelta(seconds=max_event_age)
    window = age - min(MAX_MARGIN, age * MARGIN_SHARE)
    return timedelta(seconds=max(1, math.floor(window.total_seconds())))


@dataclass(frozen=True, slots=True)
class SlidingClock:
    """Maps the schedule's simulated time to the ``occurred_at`` an event carries.

    The schedule starts at ``origin`` (``window`` before ``anchor``, the wall time the
    run starts) and an event at simulated time ``t`` is due at wall time
    ``anchor + (t - origin) / acceleration``. Its stamp is ``t`` moved back by whole
    windows so that it lies in ``[due - window, due)``.
    """

    anchor: datetime
    acceleration: float
    window: timedelta

    def __post_init__(self) -> None:
        if self.acceleration <= 0:
            raise ValueError("acceleration must be positive")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")

    @property
    def origin(self) -> datetime:
        return self.anchor - self.window

    def due(self, simulated: datetime) -> datetime:
        """The wall time the event at ``simulated`` is sent."""
        return self.anchor + (simulated - self.origin) / self.acceleration

    def stamp(self, simulated: datetime) -> datetime:
        """The ``occurred_at`` of the event the schedule places at ``simulated``."""
        # How far simulated time has gained on the wall clock since the start.
        gained = (simulated - self.origin) - (simulated - self.origin) / self.acceleration
        steps = math.floor(gained / self.window)
        return simulated - steps * self.window
