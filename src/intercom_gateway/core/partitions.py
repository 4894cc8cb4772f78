"""Partitions: the unit of ownership when several gateways share the buildings (issue #17).

Every building belongs to one of a fixed number of partitions (``PARTITIONS``, 64) by a
stable hash of its id, and each partition is owned by exactly one gateway at a time
(``gateway/leases.py``). The owner holds one MQTT persistent session per partition
(``client_id``) subscribed to that partition's buildings' panel topics (``panel_filters``),
so that everything a dwelling sends is decided, in order, by one process, and what arrives
while nobody owns the partition is queued by the broker for that session.

The hash must give the same partition in every process, on every machine and in every
Python version, for as long as the data lives: Python's ``hash()`` of a string is salted
per process (``PYTHONHASHSEED``), so it is SHA-256, first 8 bytes, big-endian, modulo the
partition count. Changing ``PARTITIONS`` moves buildings between partitions, i.e. between
MQTT sessions: that is a migration, not a setting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from intercom_gateway.core import topics

PARTITIONS = 64


def partition_of(building_id: str, partitions: int = PARTITIONS) -> int:
    """The partition of ``building_id``: stable across processes, versions and machines."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    digest = hashlib.sha256(building_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def buildings_by_partition(
    building_ids: Iterable[str], partitions: int = PARTITIONS
) -> dict[int, list[str]]:
    """The given buildings grouped by partition (only partitions that have one), sorted."""
    grouped: dict[int, list[str]] = {}
    for building in sorted(set(building_ids)):
        grouped.setdefault(partition_of(building, partitions), []).append(building)
    return dict(sorted(grouped.items()))


def fair_share(partitions: int, members: int, rank: int) -> int:
    """How many partitions member ``rank`` (0-based, in the sorted member list) should own.

    Even spread; the first ``partitions % members`` members take one more, so the shares
    of all members always add up to ``partitions`` and every member computes the same
    split from the same member list.
    """
    if members < 1:
        raise ValueError(f"members must be at least 1, not {members}")
    if not 0 <= rank < members:
        raise ValueError(f"rank {rank} is outside 0..{members - 1}")
    base, extra = divmod(partitions, members)
    return base + (1 if rank < extra else 0)


def client_id(partition: int) -> str:
    """The MQTT client id of a partition's persistent session: ``gateway.p07``."""
    return f"gateway.p{partition:02d}"


# The session that takes the panel messages of buildings no partition has (not in the
# registry), to reject them: one for all gateways, held by the holder of partition 0.
UNKNOWN_CLIENT_ID = "gateway.unknown"


def panel_filters(building_ids: Iterable[str]) -> list[str]:
    """The panel topics (events and settings) of these buildings, for one session, and
    the contractors' distributions for them.

    Built from the topic grammar (``core/topics.py``): every device's events and its
    settings in each building, the same layout as ``PANEL_EVENTS_FILTER`` and
    ``PANEL_SETTINGS_FILTER`` with the building level filled in, and every contractor's
    ``contractor_distributions`` of the building (``CONTRACTOR_DISTRIBUTIONS_FILTER``).
    """
    filters: list[str] = []
    for building in sorted(set(building_ids)):
        filters.append(topics.panel_events(building, "+", "+"))
        filters.append(topics.panel_settings(building, "+"))
        filters.append(topics.contractor_distributions("+", building))
    return filters
