"""The values events are made of: identifiers, instants, image references, linked
devices and handsets. Models of their own topics are in ``models.py``, which re-exports
these; this module holds what several of them share.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

# Identifiers end up as topic levels, so they may not contain '/', '+', '#' or '$'.
Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")]
ShortText = Annotated[str, Field(max_length=200)]

# A device's clock says what it likes. Before any arithmetic (conversion to UTC, the
# age and skew checks) a timestamp must be one the calendar can shift by any real
# offset: ``0001-01-01T00:00:00+14:00`` parses, and converting it to UTC raised
# OverflowError past the schema, which once stopped the gateway for good.
EARLIEST_YEAR, LATEST_YEAR = 1970, 2999  # a reset clock says 1970: stale, not broken
MAX_UTC_OFFSET = timedelta(hours=14)  # UTC+14 (Kiribati) and UTC-12 are the extremes in use


def _sane_instant(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None or abs(offset) > MAX_UTC_OFFSET:
        raise ValueError(f"UTC offset {offset} is beyond ±14:00")
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"year {value.year} is outside {EARLIEST_YEAR}-{LATEST_YEAR}")
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, AfterValidator(_sane_instant)]
"""An aware instant from a device, range-checked and then held in UTC."""


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def utc_now() -> datetime:
    return datetime.now(UTC)


class _RandomIds:
    """Version-4 UUIDs, as ``uuid.uuid4`` makes them, from os.urandom read 4 KiB at a time.

    ``uuid4`` reads 16 bytes per id, and os.urandom releases the GIL: on the event path,
    with the store's SQLite thread waiting for it, each id could cost a thread switch. Same
    source of randomness, one read per 256 ids.
    """

    _SIZE = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0
        os.register_at_fork(after_in_child=self.forget)  # a child never reuses our bytes

    def forget(self) -> None:
        self._pool, self._next = b"", 0

    def __call__(self) -> UUID:
        start = self._next
        if start >= len(self._pool):
            self._pool, start = os.urandom(self._SIZE), 0
        self._next = start + 16
        return UUID(bytes=self._pool[start : start + 16], version=4)


random_uuid = _RandomIds()


class ImageRef(Model):
    """A reference to an image held by the panel or the cloud image store."""

    id: Ident
    content_type: Literal["image/jpeg", "image/png"]
    size: int = Field(gt=0, le=5_000_000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LinkedDevice(Model):
    kind: Literal["aiseg", "air_conditioner", "water_heater", "lighting", "lock", "other"]
    model: ShortText


# A linked device's setting or reading: a flag, a bounded number or a code word, never
# free text (a code word is an identifier-shaped string: "cool", "eco", "locked").
DeviceValue = (
    bool
    | Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
    | Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
    | Ident
)
DeviceValues = Annotated[dict[Ident, DeviceValue], Field(max_length=16)]


class Handset(Model):
    """§2(4): the handset (phone) the Intercom app answered on. ``uuid`` identifies it:
    never to analytics (§5(5))."""

    model: ShortText
    os: Literal["ios", "android"]
    app_version: Annotated[str, Field(pattern=r"^[0-9]{1,4}(\.[0-9]{1,4}){0,3}$")]
    uuid: UUID
