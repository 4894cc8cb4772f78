"""How often things happen in a building: per-dwelling daily rates and a time-of-day profile.

Arrivals are Poisson processes whose intensity follows the hour of the day in the
building's local time. They are drawn by thinning: candidates at the peak rate, each
kept with probability ``profile[hour] / max(profile)``. The profile is normalised to a
mean of 1, so a stream still averages its daily rate whatever the profile's shape.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_HOUR = 3_600.0

# Relative activity per local hour, 00 to 23: little at night, a morning bump, most in
# the evening when people come home, receive visitors and collect parcels.
EVENING_PROFILE: tuple[float, ...] = (
    *(0.2, 0.1, 0.1, 0.1, 0.1, 0.2),  # 00-05
    *(0.6, 1.0, 1.0, 0.8, 0.8, 0.9),  # 06-11
    *(1.0, 0.9, 0.9, 1.0, 1.2, 1.6),  # 12-17
    *(2.0, 2.2, 2.0, 1.6, 1.0, 0.5),  # 18-23
)


@dataclass(frozen=True, slots=True)
class Rates:
    """Mean events per dwelling per simulated day, unless a field says otherwise."""

    visitors: float = 2.0  # calls at the dwelling's door or from the lobby
    lobby_visitor_share: float = 0.6  # of those calls, the share made from the lobby
    return_home: float = 1.5
    deliveries: float = 0.8  # parcels left in the building's delivery box
    unlocks: float = 1.0  # unlock-mode uses at the lobby naming this dwelling
    unlock_granted_share: float = 0.92
    security_arms: float = 0.7  # each arming is disarmed some hours later
    alarms: float = 1 / 30  # about one a month
    alarm_cleared_share: float = 0.8  # alarms later followed by a cleared=true event
    device_failures: float = 1 / 60  # faults of linked devices, per dwelling
    box_failures: float = 1 / 90  # faults of a delivery box, per box (not per dwelling)
    # §2(3)①: instructions to linked devices (panel or app), scenes, state reports
    device_controls: float = 2.0
    scenes: float = 0.3
    device_states: float = 2.0
    # §2(4): of the calls from the lobby, the share the Intercom app also rings
    lobby_app_share: float = 0.5
    hourly_profile: tuple[float, ...] = EVENING_PROFILE
    utc_offset_hours: float = 9.0  # the buildings' local time (Japan)

    def __post_init__(self) -> None:
        if len(self.hourly_profile) != 24 or min(self.hourly_profile) < 0:
            raise ValueError("hourly_profile needs 24 non-negative weights")
        if max(self.hourly_profile) == 0:
            raise ValueError("hourly_profile cannot be all zero")
        shares = ("lobby_visitor_share", "unlock_granted_share", "alarm_cleared_share")
        for name in (*shares, "lobby_app_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a share between 0 and 1")

    def local_hour(self, timestamp: float) -> int:
        return int((timestamp / SECONDS_PER_HOUR + self.utc_offset_hours) % 24)


def next_occurrence(rates: Rates, per_day: float, after: float, rng: random.Random) -> float:
    """The next arrival (POSIX seconds) of a stream of ``per_day`` mean daily rate."""
    if per_day <= 0:
        return math.inf
    profile = rates.hourly_profile
    peak = max(profile)
    peak_per_second = per_day / SECONDS_PER_DAY * peak / (sum(profile) / 24)
    t = after
    while True:
        t += rng.expovariate(peak_per_second)
        if rng.random() * peak < profile[rates.local_hour(t)]:
            return t


# A shared default is safe: Rates is frozen.
DEFAULT_RATES = Rates()
