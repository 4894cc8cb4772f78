"""What the panels of a fleet emit, in simulated-time order: pure, no clock, no I/O.

Every dwelling has a few independent streams (visitors, return home, parcels, unlocks,
arming, alarms, faults, linked-device control, scenes and state reports; a lobby call
may also ring the Intercom app, ``linked.py``). Each stream fires at the times
``rates.next_occurrence`` draws and may schedule a follow-up (a parcel's pickup, an
alarm's clearing, a disarming). A heap of due actions keeps the output in time order;
ties are broken by insertion order, so the same seed always gives the same sequence.

Two random generators: ``rng`` draws the schedule and contents from ``seed`` alone, so a
seed always replays the same day; ``ids`` draws event, call and image ids from seed and
start together, so two runs of one seed at different times never reuse an event id
(a gateway would rightly reject the second run as replayed).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

from intercom_gateway.core.models import (
    AlarmEvent,
    DeliveryBoxEvent,
    DeviceFailureEvent,
    DeviceRef,
    DeviceRole,
    Event,
    Handset,
    LinkedDevice,
    ReturnHomeEvent,
    SecurityEvent,
    UnlockModeEvent,
    VisitorEvent,
)
from intercom_gateway.core.registry import Building, Device, Registry
from intercom_gateway.simulators import linked
from intercom_gateway.simulators.images import image_ref
from intercom_gateway.simulators.rates import (
    DEFAULT_RATES,
    SECONDS_PER_HOUR,
    Rates,
    next_occurrence,
)

DEFAULT_START = datetime(2026, 4, 1, tzinfo=UTC)
MINUTE = 60.0

CARRIERS = ("yamato", "sagawa", "japan-post", "amazon")
ALARM_KINDS = ("fire", "gas", "intrusion", "emergency_button", "tamper")
ALARM_WEIGHTS = (1, 1, 2, 1, 3)  # tamper (a knocked sensor) is the most common alarm
ZONES = ("entrance", "living", "kitchen", "bedroom-1", "bathroom", "balcony")
KEY_NICKNAMES = ("Dad's key", "Mum's key", "spare card", "Kenta", "guest key")
LinkedKind = Literal["aiseg", "air_conditioner", "water_heater", "lighting", "lock", "other"]
OUTCOMES: tuple[Literal["answered", "missed", "rejected"], ...] = ("answered", "missed", "rejected")
METHODS: tuple[Literal["key", "card", "app"], ...] = ("key", "card", "app")
CREDENTIALS: tuple[Literal["pin", "card", "app_token"], ...] = ("pin", "card", "app_token")
LINKED: tuple[tuple[LinkedKind, str], ...] = (
    ("aiseg", "AiSEG2 MKN704"),
    ("air_conditioner", "CS-X402D"),
    ("water_heater", "GT-C2462"),
    ("lighting", "HH-CF1092A"),
    ("lock", "EL-2000"),
    ("other", "smoke sensor SHK48455"),
)

Action = Callable[[float], list[Event]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Home:
    """One dwelling and the devices that speak for it."""

    building: str
    dwelling: str
    panel: Device | None
    lobby: Device | None
    box: Device | None


def iter_events(
    registry: Registry,
    *,
    seed: int = 0,
    rates: Rates = DEFAULT_RATES,
    start: datetime = DEFAULT_START,
    unlock_services: tuple[str, ...] = ("parcel-unlock",),
) -> Iterator[Event]:
    """Every event of the fleet from ``start`` on, in simulated-time order, forever."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return _Simulation(
        registry, seed=seed, rates=rates, start=start, unlock_services=unlock_services
    ).run()


class _Simulation:
    def __init__(
        self,
        registry: Registry,
        *,
        seed: int,
        rates: Rates,
        start: datetime,
        unlock_services: tuple[str, ...],
    ) -> None:
        self.rng = random.Random(seed)
        self.ids = random.Random(f"{seed}/{start.isoformat()}")
        self.rates = rates
        self.unlock_services = unlock_services
        self.start = start.timestamp()
        self._heap: list[tuple[float, int, Action]] = []
        self._order = itertools.count()
        self._seq: dict[str, int] = {}
        self._armed: set[str] = set()
        self._free_lockers: dict[str, list[int]] = {}
        self._handsets: dict[tuple[str, str], Handset] = {}
        for building in registry.buildings:
            self._populate(building)

    def run(self) -> Iterator[Event]:
        while self._heap:
            t, _, action = heapq.heappop(self._heap)
            yield from action(t)

    # --- scheduling -------------------------------------------------------------------

    def _at(self, t: float, action: Action) -> None:
        if math.isfinite(t):
            heapq.heappush(self._heap, (t, next(self._order), action))

    def _stream(self, per_day: float, emit: Action, after: float | None = None) -> None:
        """Fire ``emit`` as a Poisson stream of ``per_day`` mean daily rate."""

        def fire(t: float) -> list[Event]:
            self._stream(per_day, emit, after=t)
            return emit(t)

        base = self.start if after is None else after
        self._at(next_occurrence(self.rates, per_day, base, self.rng), fire)

    def _populate(self, building: Building) -> None:
        by_role = {device.role: device for device in reversed(building.devices)}
        lobby = by_role.get(DeviceRole.LOBBY_PANEL)
        box = by_role.get(DeviceRole.DELIVERY_BOX)
        panels = {d.dwelling: d for d in building.devices if d.role is DeviceRole.DWELLING_PANEL}
        for dwelling in building.dwellings:
            self._populate_home(
                _Home(building.id, dwelling.id, panels.get(dwelling.id), lobby, box)
            )
        if box is not None and building.dwellings:
            # More lockers in bigger buildings, as installers size them.
            self._free_lockers[box.id] = list(range(1, max(12, len(building.dwellings) // 2) + 1))
            homes = [_Home(building.id, d.id, None, lobby, box) for d in building.dwellings]
            self._stream(self.rates.box_failures, lambda t: self._box_failure(t, homes, box))

    def _populate_home(self, home: _Home) -> None:
        r = self.rates
        self._stream(r.visitors, lambda t: self._visitor(t, home))
        if (panel := home.panel) is not None:
            self._stream(r.return_home, lambda t: self._return_home(t, home, panel))
            self._stream(r.security_arms, lambda t: self._arm(t, home, panel))
            self._stream(r.alarms, lambda t: self._alarm(t, home, panel))
            self._stream(r.device_failures, lambda t: self._device_failure(t, home, panel))
            self._populate_linked(home, panel)
        if (box := home.box) is not None:
            self._stream(r.deliveries, lambda t: self._arrival(t, home, box))
        if (lobby := home.lobby) is not None and self.unlock_services:
            self._stream(r.unlocks, lambda t: self._unlock(t, home, lobby))

    def _populate_linked(self, home: _Home, panel: Device) -> None:
        """§2(3)①: the dwelling panel's linked devices and scenes."""
        r, rng, ids = self.rates, self.rng, self.ids
        envelope = self._envelope
        self._stream(
            r.device_controls,
            lambda t: [linked.device_control(envelope(t, home, panel), rng, ids)],
        )
        self._stream(r.scenes, lambda t: [linked.scene(envelope(t, home, panel), rng)])
        self._stream(
            r.device_states, lambda t: [linked.device_state(envelope(t, home, panel), rng)]
        )

    # --- envelopes --------------------------------------------------------------------

    def _envelope(self, t: float, home: _Home, device: Device) -> dict[str, Any]:
        seq = self._seq.get(device.id, -1) + 1
        self._seq[device.id] = seq
        return {
            "event_id": UUID(int=self.ids.getrandbits(128), version=4),
            "seq": seq,
            "building_id": home.building,
            "dwelling_id": home.dwelling,
            "device": DeviceRef(id=device.id, role=device.role),
            # Milliseconds, as panels stamp them; keeps the JSON short and round-trips.
            "occurred_at": datetime.fromtimestamp(round(t, 3), UTC),
        }

    def _pick(self, options: Sequence[T], weights: Sequence[float] | None = None) -> T:
        return self.rng.choices(options, weights=weights)[0]

    # --- dwelling panel and lobby ----------------------------------------------------

    def _visitor(self, t: float, home: _Home) -> list[Event]:
        origin: Literal["lobby", "door"] = (
            "lobby" if self.rng.random() < self.rates.lobby_visitor_share else "door"
        )
        # Depending on the installation a lobby call is reported by the lobby panel or by
        # the dwelling panel it rang; both forms occur, so the gateway must take both.
        reporter = home.panel
        if origin == "lobby" and (home.panel is None or self.rng.random() < 0.5):
            reporter = home.lobby or home.panel
        if reporter is None:
            return []
        outcome = self._pick(OUTCOMES, (6, 3, 1))
        with_image = self.rng.random() < 0.9
        call_id = f"call-{self.ids.getrandbits(48):012x}"
        visitor = VisitorEvent(
            **self._envelope(t, home, reporter),
            call_id=call_id,
            origin=origin,
            outcome=outcome,
            image=image_ref(self.ids, prefix="visitor") if with_image else None,
        )
        return [visitor, *self._app_call(t, home, origin, call_id)]

    def _app_call(self, t: float, home: _Home, origin: str, call_id: str) -> list[Event]:
        """§2(4): the lobby panel rings the Intercom app too, for some lobby calls."""
        if origin != "lobby" or home.lobby is None:
            return []
        if self.rng.random() >= self.rates.lobby_app_share:
            return []
        key = (home.building, home.dwelling)
        phone = self._handsets.get(key) or self._handsets.setdefault(key, linked.handset(self.ids))
        return [
            linked.lobby_call(
                self._envelope(t, home, home.lobby), self.rng, call_id=call_id, phone=phone
            )
        ]

    def _return_home(self, t: float, home: _Home, panel: Device) -> list[Event]:
        method = self._pick(METHODS, (6, 3, 1))
        nickname = self._pick(KEY_NICKNAMES) if self.rng.random() < 0.3 else None
        return [
            ReturnHomeEvent(
                **self._envelope(t, home, panel),
                method=method,
                key_nickname=nickname,
                image=image_ref(self.ids, prefix="return"),
            )
        ]

    def _arm(self, t: float, home: _Home, panel: Device) -> list[Event]:
        if panel.id in self._armed:
            return []
        self._armed.add(panel.id)
        mode: Literal["away", "home"] = "away" if self.rng.random() < 0.8 else "home"
        # Away: out for the day or an evening; home: the night setting.
        hours = self.rng.uniform(2, 10) if mode == "away" else self.rng.uniform(6, 9)
        self._at(t + hours * SECONDS_PER_HOUR, lambda later: self._disarm(later, home, panel, mode))
        return [SecurityEvent(**self._envelope(t, home, panel), state="armed", mode=mode)]

    def _disarm(
        self, t: float, home: _Home, panel: Device, mode: Literal["away", "home"]
    ) -> list[Event]:
        self._armed.discard(panel.id)
        return [SecurityEvent(**self._envelope(t, home, panel), state="disarmed", mode=mode)]

    def _alarm(self, t: float, home: _Home, panel: Device) -> list[Event]:
        kind = self._pick(ALARM_KINDS, ALARM_WEIGHTS)
        fields: dict[str, Any] = {
            "kind": kind,
            "zone": self._pick(ZONES),
            "severity": "warning" if kind == "tamper" else "critical",
        }
        if self.rng.random() < self.rates.alarm_cleared_share:
            delay = self.rng.uniform(5 * MINUTE, 90 * MINUTE)
            self._at(t + delay, lambda later: self._alarm_cleared(later, home, panel, fields))
        return [AlarmEvent(**self._envelope(t, home, panel), **fields)]

    def _alarm_cleared(
        self, t: float, home: _Home, panel: Device, fields: dict[str, Any]
    ) -> list[Event]:
        return [AlarmEvent(**self._envelope(t, home, panel), **fields, cleared=True)]

    def _device_failure(self, t: float, home: _Home, panel: Device) -> list[Event]:
        kind, model = self.rng.choice(LINKED)
        return [self._failure_event(t, home, panel, kind, model)]

    def _failure_event(
        self, t: float, home: _Home, device: Device, kind: LinkedKind, model: str
    ) -> DeviceFailureEvent:
        code = f"E-{self.rng.randint(100, 999)}"
        message = f"{model}: no response" if self.rng.random() < 0.5 else None
        return DeviceFailureEvent(
            **self._envelope(t, home, device),
            linked_device=LinkedDevice(kind=kind, model=model),
            code=code,
            message=message,
        )

    def _unlock(self, t: float, home: _Home, lobby: Device) -> list[Event]:
        granted = self.rng.random() < self.rates.unlock_granted_share
        return [
            UnlockModeEvent(
                **self._envelope(t, home, lobby),
                credential_kind=self._pick(CREDENTIALS, (3, 3, 4)),
                service_id=self.rng.choice(self.unlock_services),
                result="granted" if granted else "denied",
                image=image_ref(self.ids, prefix="unlock"),
            )
        ]

    # --- delivery box -----------------------------------------------------------------

    def _arrival(self, t: float, home: _Home, box: Device) -> list[Event]:
        free = self._free_lockers[box.id]
        if not free:
            return []  # every locker taken: the carrier takes the parcel back
        box_number = free.pop(self.rng.randrange(len(free)))
        carrier = self._pick(CARRIERS)
        # Collected when someone is home: minutes to most of a day later.
        delay = max(10 * MINUTE, self.rng.expovariate(1 / (5 * SECONDS_PER_HOUR)))
        self._at(t + delay, lambda later: self._shipment(later, home, box, box_number))
        return [
            DeliveryBoxEvent(
                **self._envelope(t, home, box),
                action="arrival",
                box_number=box_number,
                carrier=carrier,
            )
        ]

    def _shipment(self, t: float, home: _Home, box: Device, box_number: int) -> list[Event]:
        self._free_lockers[box.id].append(box_number)
        return [
            DeliveryBoxEvent(
                **self._envelope(t, home, box), action="shipment", box_number=box_number
            )
        ]

    def _box_failure(self, t: float, homes: Sequence[_Home], box: Device) -> list[Event]:
        # The envelope needs a dwelling: the one whose locker operation hit the fault.
        home = self.rng.choice(homes)
        return [self._failure_event(t, home, box, "lock", "locker unit DB-30")]
