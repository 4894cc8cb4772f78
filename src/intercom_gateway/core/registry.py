"""The device registry: buildings, their dwellings and the devices bound to them.

Loaded from a YAML file (see ``data/registry.sample.yaml``) or generated for
simulations. The gateway checks every event against it: the device must exist,
belong to the building in the topic, and be bound to the dwelling it names (a lobby
panel or delivery box to any dwelling of its building, a dwelling panel only to its
own).
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from intercom_gateway.core.models import DeviceRole, Ident
from intercom_gateway.errors import ConfigError

SAMPLE_REGISTRY_FILE = "registry.sample.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InitialConsent(_Model):
    """Consent a dwelling starts with when the store has none for it yet."""

    registered: bool = True
    policy_version: str = "2026-04-01"
    return_home_enabled: bool = True
    services: tuple[Ident, ...] = ()
    # §7(2): the dwelling's handsets are linked to the Intercom app (§2(4) lobby calls).
    intercom_app: bool = False


class Dwelling(_Model):
    id: Ident
    consent: InitialConsent | None = None


class Device(_Model):
    id: Ident
    role: DeviceRole
    dwelling: Ident | None = Field(default=None, description="only for dwelling panels")


class Building(_Model):
    id: Ident
    name: str = ""
    dwellings: tuple[Dwelling, ...]
    devices: tuple[Device, ...]

    @model_validator(mode="after")
    def _devices_bound(self) -> Building:
        dwellings = {d.id for d in self.dwellings}
        for device in self.devices:
            if device.role is DeviceRole.DWELLING_PANEL:
                if device.dwelling not in dwellings:
                    raise ValueError(
                        f"dwelling panel {device.id} must name a dwelling of building {self.id}"
                    )
            elif device.dwelling is not None:
                raise ValueError(f"{device.role.value} {device.id} serves the whole building")
        return self


class Registry(_Model):
    buildings: tuple[Building, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Registry:
        seen: set[str] = set()
        for building in self.buildings:
            for device in building.devices:
                if device.id in seen:
                    raise ValueError(f"device id {device.id} is used twice")
                seen.add(device.id)
        return self

    def devices(self) -> Iterator[tuple[Building, Device]]:
        for building in self.buildings:
            for device in building.devices:
                yield building, device

    def dwellings(self) -> Iterator[tuple[Building, Dwelling]]:
        for building in self.buildings:
            for dwelling in building.dwellings:
                yield building, dwelling


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_registry(path: Path) -> Registry:
    try:
        # libyaml's loader parses a 10,000-dwelling registry several times faster.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        return Registry.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"invalid device registry: {error}", path=str(path)) from error


def sample_registry_path() -> Path:
    """The sample registry shipped as package data (``data/registry.sample.yaml``)."""
    return Path(str(resources.files("intercom_gateway").joinpath("data", SAMPLE_REGISTRY_FILE)))


def building_id(index: int) -> str:
    return f"b{index:03d}"


def dwelling_id(index: int) -> str:
    return f"d{index:04d}"


def generate_registry(
    *,
    buildings: int,
    dwellings: int,
    services: tuple[str, ...] = (),
    policy_version: str = "2026-04-01",
    intercom_app: bool = True,
) -> Registry:
    """A deterministic fleet: per building a lobby panel, a delivery box, a panel a dwelling.

    ``intercom_app``: every dwelling's handsets linked to the Intercom app (§7(2)), so the
    simulated lobby calls (§2(4)) flow; a dwelling of a registry file is unlinked unless
    its consent says ``intercom_app: true``.
    """
    result = []
    for b in range(1, buildings + 1):
        bid = building_id(b)
        homes = tuple(
            Dwelling(
                id=dwelling_id(d),
                consent=InitialConsent(
                    policy_version=policy_version, services=services, intercom_app=intercom_app
                ),
            )
            for d in range(1, dwellings + 1)
        )
        devices = [
            Device(id=f"lobby-{bid}", role=DeviceRole.LOBBY_PANEL),
            Device(id=f"box-{bid}", role=DeviceRole.DELIVERY_BOX),
        ] + [
            Device(id=f"panel-{bid}-{home.id}", role=DeviceRole.DWELLING_PANEL, dwelling=home.id)
            for home in homes
        ]
        result.append(Building(id=bid, dwellings=homes, devices=tuple(devices)))
    return Registry(buildings=tuple(result))


def dump_registry(registry: Registry) -> str:
    return yaml.safe_dump(registry.model_dump(mode="json", exclude_none=True), sort_keys=False)
