"""Consent notices on the wire: a change's at once, and what a stopped gateway left.

A change that withdraws a dwelling from a service (``core.notices``) is committed with
the ledger rows of its notices, "intended" (``Store.save_consent``). The gateway then
publishes each notice before it takes its next message (``Gateway._handle_settings``),
and its row becomes "delivered" on the broker's acknowledgement, in the batch that
acknowledges the settings message. Nothing of the dwelling reaches the service after
the notice: the consent gates withhold it from the next message on.

A notice whose delivery is not on record (the gateway died or lost its connection
between the change and the acknowledgement; or the change was written to the store
while no gateway ran, ``resident.channels.StoreChannel``) is published again when a
gateway next comes online for its building, before it takes a message: made again from
the stored change, with the same id, so the ledger never counts it twice and a service
that gets it twice can tell. A partitioned gateway does this for its partitions'
buildings only: the owner of a dwelling's building is the one that tells its services.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import structlog

from intercom_gateway.bus import Bus
from intercom_gateway.core.models import ConsentNotice
from intercom_gateway.core.notices import notice_from_record, notice_topic
from intercom_gateway.core.plan import Publication
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.errors import PublishFailed
from intercom_gateway.gateway.acks import Inbound
from intercom_gateway.gateway.completion import Completion
from intercom_gateway.store import Store
from intercom_gateway.store.results import ConsentChange

__all__ = ["republish_notices", "send_notices"]

log = structlog.get_logger("intercom_gateway.gateway.notices")


async def send_notices(
    completion: Completion,
    bus: Bus,
    inbound: Inbound,
    notices: Sequence[tuple[ConsentNotice, LedgerRow]],
) -> None:
    """Publish the notices of the settings message ``inbound`` before the gateway takes
    its next message; the message is acknowledged once their delivery is on record."""
    for notice, row in notices:
        inbound.writes = True  # the rows' "delivered" is committed before the ack
        payload = notice.model_dump_json().encode()
        publication = Publication(notice_topic(notice), payload, confirms=row)
        await completion.send(bus, inbound, publication, recorded=True)


async def republish_notices(
    bus: Bus, store: Store, *, buildings: Collection[str] | None = None
) -> int:
    """Publish every notice of ``buildings`` (all: None) whose delivery is not on record;
    how many. Its row is recorded "delivered" on the broker's acknowledgement (committed
    by the store's next flush), "unconfirmed" if the broker refuses it."""
    if buildings is not None and not buildings:
        return 0
    rows = await store.pending_notices(buildings)
    histories: dict[tuple[str, str], list[ConsentChange]] = {}
    published = 0
    for row in rows:
        key = (row.building_id, row.dwelling_id)
        if key not in histories:
            histories[key] = await store.consent_history(*key)
        change = next(
            (c for c in histories[key] if c.change_id == row.decision_id and c.applied), None
        )
        notice = None
        if change is not None:
            notice = notice_from_record(row, change.change, revision=change.revision)
        if notice is None:
            # Its change is gone (erased with the dwelling's history): kept as it is.
            log.error("consent notice without its change", notice_id=row.event_id)
            continue
        await bus.publish(
            notice_topic(notice),
            notice.model_dump_json().encode(),
            qos=1,
            on_done=_recorder(store, row),
        )
        published += 1
    if published:
        log.warning("consent notices published again (§8)", notices=published)
    return published


def _recorder(store: Store, row: LedgerRow) -> Callable[[BaseException | None], None]:
    def done(error: BaseException | None) -> None:
        if error is None:
            store.record_delivered([row])
        elif isinstance(error, PublishFailed):
            store.record_unconfirmed([row])  # refused: publishing it again cannot help
            log.error("consent notice refused", notice_id=row.event_id, error=str(error))
        # Lost with the connection: still "intended", published again at the next start.

    return done
