"""The §8 queries, the request log and retention on PostgreSQL.

The same questions, answers and order as the SQLite store's ``store.requests`` and
``store.retention``; each answer is a ``store.results`` value, each deletion committed
before it returns.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from intercom_gateway.store.requests import json_tuple
from intercom_gateway.store.results import (
    DecisionSummary,
    Erased,
    EventTypeSummary,
    LedgerSummary,
    LoggedDecision,
    LoggedRequest,
    Provision,
    RecipientSummary,
    RejectedInput,
    Rejection,
    TableCounts,
)
from intercom_gateway.store.schema import LEDGER_STATUSES

if TYPE_CHECKING:
    from intercom_gateway.core.records import RequestRow

# A dwelling's rejected input: from its own panel's topics, or naming it in its JSON
# (schema: named_building, named_dwelling); $1 building, $2 dwelling.
_DWELLING_REJECTIONS = (
    "(EXISTS (SELECT 1 FROM devices AS d WHERE d.building_id = $1 AND d.dwelling_id = $2"
    " AND d.role = 'dwelling_panel'"
    " AND starts_with(topic, 'intercom/v1/' || d.building_id || '/' || d.device_id || '/'))"
    " OR (named_building = $1 AND named_dwelling = $2))"
)


class PgQueries:
    """The §8 queries, the log of the requests that asked them, and retention."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._pool.acquire() as db:
            return list(await db.fetch(sql, *args))

    async def decision(self, event_id: str) -> LoggedDecision | None:
        rows = await self._fetch(
            "SELECT d.event_id, d.decision_id, d.building_id, d.dwelling_id, d.event_type,"
            " d.decided_at, d.policy_version, d.consent_revision, s.outcomes"
            " FROM decisions AS d JOIN outcome_sets AS s ON s.id = d.outcome_set"
            " WHERE d.event_id = $1",
            event_id,
        )
        if not rows:
            return None
        row = dict(rows[0])
        return LoggedDecision(**{**row, "outcomes": tuple(json.loads(row["outcomes"]))})

    async def provisions(
        self,
        *,
        building_id: str | None = None,
        dwelling_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[Provision]:
        clauses: list[str] = []
        params: list[Any] = []
        for test, value in (
            ("building_id = ", building_id),
            ("dwelling_id = ", dwelling_id),
            ("at >= ", _aware(start)),
            ("at < ", _aware(end)),
        ):
            if value is not None:
                params.append(value)
                clauses.append(f"{test}${len(params)}")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT * FROM ledger {where} ORDER BY at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = await self._fetch(sql, *params)
        return [
            Provision(
                **{
                    **dict(row),
                    "items": json_tuple(row["items"]),
                    "purposes": json_tuple(row["purposes"]),
                }
            )
            for row in rows
        ]

    async def rejections(self, *, limit: int = 100) -> list[Rejection]:
        rows = await self._fetch(
            "SELECT id, at, reason, detail, topic, payload FROM rejections"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [
            Rejection(
                id=row["id"],
                at=row["at"],
                reason=row["reason"],
                detail=row["detail"],
                topic=row["topic"],
                payload=bytes(row["payload"]).decode(),
            )
            for row in rows
        ]

    async def counts(self) -> TableCounts:
        tables = ("decisions", "ledger", "rejections", "completed", "consent_history")
        sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t}) AS {t}" for t in tables)
        rows = await self._fetch(sql)
        return TableCounts(**{t: int(rows[0][t]) for t in tables})

    async def ledger_summary(self, building_id: str, dwelling_id: str) -> LedgerSummary:
        by_status = ", ".join(
            f"COUNT(*) FILTER (WHERE status = '{s}') AS {s}" for s in LEDGER_STATUSES
        )
        rows = await self._fetch(
            "SELECT recipient, third_party, COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last,"
            f" {by_status} FROM ledger WHERE building_id = $1 AND dwelling_id = $2"
            " GROUP BY recipient, third_party ORDER BY recipient",
            building_id,
            dwelling_id,
        )
        recipients = tuple(RecipientSummary(**dict(row)) for row in rows)
        return LedgerSummary(
            rows=sum(r.n for r in recipients),
            by_status={s: sum(int(r[s]) for r in rows) for s in LEDGER_STATUSES},
            by_recipient=recipients,
        )

    async def decision_summary(self, building_id: str, dwelling_id: str) -> DecisionSummary:
        rows = await self._fetch(
            "SELECT event_type, COUNT(*) AS n, MIN(decided_at) AS first,"
            " MAX(decided_at) AS last FROM decisions WHERE building_id = $1"
            " AND dwelling_id = $2 GROUP BY event_type ORDER BY event_type",
            building_id,
            dwelling_id,
        )
        types = tuple(EventTypeSummary(**dict(row)) for row in rows)
        return DecisionSummary(events=sum(t.n for t in types), by_event_type=types)

    async def dwelling_rejections(self, building_id: str, dwelling_id: str) -> list[RejectedInput]:
        rows = await self._fetch(
            "SELECT id, at, reason, detail, topic FROM rejections"
            f" WHERE {_DWELLING_REJECTIONS} ORDER BY id",
            building_id,
            dwelling_id,
        )
        return [RejectedInput(**dict(row)) for row in rows]

    async def save_request(self, row: RequestRow) -> None:
        """Committed at once: a request is on record before its answer is given."""
        async with self._pool.acquire() as db:
            await db.execute(
                "INSERT INTO requests (request_id, at, building_id, dwelling_id, kind, via,"
                " params, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                row.request_id,
                _aware(row.at),
                row.building_id,
                row.dwelling_id,
                row.kind,
                row.via,
                json.dumps(row.params, default=str),
                row.outcome,
                json.dumps(row.detail, default=str),
            )

    async def requests(self, building_id: str, dwelling_id: str) -> list[LoggedRequest]:
        rows = await self._fetch(
            "SELECT request_id, at, kind, via, params, outcome FROM requests"
            " WHERE building_id = $1 AND dwelling_id = $2 ORDER BY id",
            building_id,
            dwelling_id,
        )
        return [LoggedRequest(**{**dict(r), "params": json.loads(r["params"])}) for r in rows]

    # --- retention ----------------------------------------------------------------------

    async def erase_dwelling(self, building_id: str, dwelling_id: str) -> Erased:
        """The dwelling's decision log and rejected input, in one commit (never its
        ledger or consent history: resident.erase says why)."""
        async with self._pool.acquire() as db, db.transaction():
            decisions = await db.execute(
                "DELETE FROM decisions WHERE building_id = $1 AND dwelling_id = $2",
                building_id,
                dwelling_id,
            )
            rejections = await db.execute(
                f"DELETE FROM rejections WHERE {_DWELLING_REJECTIONS}", building_id, dwelling_id
            )
        return Erased(decisions=rowcount(decisions), rejections=rowcount(rejections))

    async def purge_ledger(self, *, before: datetime, chunk: int = 10_000) -> int:
        """Ledger rows older than ``before``, in chunks of one commit each (a running
        gateway writes the same table); how many went."""
        deleted = 0
        while True:
            async with self._pool.acquire() as db:
                status = await db.execute(
                    "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at < $1 LIMIT $2)",
                    _aware(before),
                    chunk,
                )
            deleted += rowcount(status)
            if rowcount(status) < chunk:
                return deleted

    async def prune_completed(self, keep: int) -> int:
        """Forget all but the ``keep`` most recent completed event ids (and any that
        completed at the same moment as the oldest of them: kept, never lost)."""
        async with self._pool.acquire() as db:
            status = await db.execute(
                "DELETE FROM completed WHERE at < (SELECT min(at) FROM"
                " (SELECT at FROM completed ORDER BY at DESC LIMIT $1) AS kept)",
                keep,
            )
        return rowcount(status)


def _aware(moment: datetime | None) -> datetime | None:
    """A bound must say its zone, as on SQLite (``schema.utc_text``)."""
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give a time zone")
    return moment


def rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 3``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
