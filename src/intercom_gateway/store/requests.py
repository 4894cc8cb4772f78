"""The §8 queries over what the event path recorded, and the log of resident requests.

Every answer is a value of ``store.results``; a request is on record (``save_request``,
committed) before its answer is given.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from intercom_gateway.store.results import (
    DecisionSummary,
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
from intercom_gateway.store.schema import LEDGER_STATUSES, utc_text

if TYPE_CHECKING:
    from intercom_gateway.core.records import RequestRow

# The decision log's columns as readers have always seen them: the outcomes text, not
# the key of its set.
_DECISION_COLUMNS = (
    "d.event_id, d.decision_id, d.building_id, d.dwelling_id, d.event_type, d.decided_at,"
    " d.policy_version, d.consent_revision, s.outcomes"
)

_moment = datetime.fromisoformat
# Provision's fields, in order.
_PROVISION_COLUMNS = (
    "id, at, recipient, recipient_kind, third_party, building_id, dwelling_id, event_id,"
    " event_type, items, image, purposes, rule_id, policy_version, decision_id, part, status"
)


@functools.lru_cache(maxsize=1_024)
def json_tuple(text: str) -> tuple[str, ...]:
    """A ledger row's items or purposes: a route's list, the same text row after row."""
    return tuple(json.loads(text))


class Queries:
    """The §8 queries, and the log of the requests that asked them."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def decision(self, event_id: str) -> LoggedDecision | None:
        async with self._db.execute(
            f"SELECT {_DECISION_COLUMNS} FROM decisions AS d"
            " JOIN outcome_sets AS s ON s.id = d.outcome_set WHERE d.event_id = ?",
            (event_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return LoggedDecision(
            event_id=row["event_id"],
            decision_id=row["decision_id"],
            building_id=row["building_id"],
            dwelling_id=row["dwelling_id"],
            event_type=row["event_type"],
            decided_at=_moment(row["decided_at"]),
            policy_version=row["policy_version"],
            consent_revision=row["consent_revision"],
            outcomes=tuple(json.loads(row["outcomes"])),
        )

    async def provisions(
        self,
        *,
        building_id: str | None = None,
        dwelling_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[Provision]:
        where, params = _filters(building_id, dwelling_id, start, end)
        sql = f"SELECT {_PROVISION_COLUMNS} FROM ledger {where} ORDER BY at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        async with self._db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        # A dwelling's year is thousands of rows (issue #18): read by position, and the
        # few distinct items and purposes texts parsed once.
        return [
            Provision(
                row[0],
                _moment(row[1]),
                row[2],
                row[3],
                bool(row[4]),
                row[5],
                row[6],
                row[7],
                row[8],
                json_tuple(row[9]),
                bool(row[10]),
                json_tuple(row[11]),
                row[12],
                row[13],
                row[14],
                row[15],
                row[16],
            )
            for row in rows
        ]

    async def rejections(self, *, limit: int = 100) -> list[Rejection]:
        async with self._db.execute(
            "SELECT * FROM rejections ORDER BY id DESC LIMIT ?", (limit,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            Rejection(
                id=row["id"],
                at=_moment(row["at"]),
                reason=row["reason"],
                detail=row["detail"],
                topic=row["topic"],
                payload=row["payload"],
            )
            for row in rows
        ]

    async def counts(self) -> TableCounts:
        result = {}
        for table in ("decisions", "ledger", "rejections", "completed", "consent_history"):
            async with self._db.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
                row = await cursor.fetchone()
            result[table] = int(row[0]) if row else 0
        return TableCounts(**result)

    async def ledger_summary(self, building_id: str, dwelling_id: str) -> LedgerSummary:
        """How many provision records the dwelling has, per recipient and status, and
        their span."""
        key = (building_id, dwelling_id)
        by_status = ", ".join(f"SUM(status = '{s}') AS {s}" for s in LEDGER_STATUSES)
        async with self._db.execute(
            "SELECT recipient, third_party, COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last,"
            f" {by_status} FROM ledger WHERE building_id = ? AND dwelling_id = ?"
            " GROUP BY recipient, third_party ORDER BY recipient",
            key,
        ) as cursor:
            rows = await cursor.fetchall()
        recipients = tuple(
            RecipientSummary(
                recipient=row["recipient"],
                third_party=bool(row["third_party"]),
                n=row["n"],
                first=_moment(row["first"]),
                last=_moment(row["last"]),
                intended=row["intended"],
                delivered=row["delivered"],
                unconfirmed=row["unconfirmed"],
            )
            for row in rows
        )
        return LedgerSummary(
            rows=sum(r["n"] for r in rows),
            by_status={s: sum(r[s] for r in rows) for s in LEDGER_STATUSES},
            by_recipient=recipients,
        )

    async def decision_summary(self, building_id: str, dwelling_id: str) -> DecisionSummary:
        async with self._db.execute(
            "SELECT event_type, COUNT(*) AS n, MIN(decided_at) AS first, MAX(decided_at) AS last"
            " FROM decisions WHERE building_id = ? AND dwelling_id = ?"
            " GROUP BY event_type ORDER BY event_type",
            (building_id, dwelling_id),
        ) as cursor:
            rows = await cursor.fetchall()
        types = tuple(
            EventTypeSummary(
                event_type=row["event_type"],
                n=row["n"],
                first=_moment(row["first"]),
                last=_moment(row["last"]),
            )
            for row in rows
        )
        return DecisionSummary(events=sum(t.n for t in types), by_event_type=types)

    async def dwelling_rejections(self, building_id: str, dwelling_id: str) -> list[RejectedInput]:
        """Rejected input that names the dwelling, or came from its own panel."""
        where, params = rejection_filter(building_id, dwelling_id)
        async with self._db.execute(
            f"SELECT id, at, reason, detail, topic FROM rejections WHERE {where} ORDER BY id",
            params,
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            RejectedInput(
                id=row["id"],
                at=_moment(row["at"]),
                reason=row["reason"],
                detail=row["detail"],
                topic=row["topic"],
            )
            for row in rows
        ]

    async def save_request(self, row: RequestRow) -> None:
        """Committed at once: a request is on record before its answer is given."""
        await self._db.execute(
            "INSERT INTO requests (request_id, at, building_id, dwelling_id, kind, via, params,"
            " outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.request_id,
                utc_text(row.at),
                row.building_id,
                row.dwelling_id,
                row.kind,
                row.via,
                json.dumps(row.params, default=str),
                row.outcome,
                json.dumps(row.detail, default=str),
            ),
        )
        await self._db.commit()

    async def requests(self, building_id: str, dwelling_id: str) -> list[LoggedRequest]:
        async with self._db.execute(
            "SELECT request_id, at, kind, via, params, outcome FROM requests"
            " WHERE building_id = ? AND dwelling_id = ? ORDER BY id",
            (building_id, dwelling_id),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            LoggedRequest(
                request_id=row["request_id"],
                at=_moment(row["at"]),
                kind=row["kind"],
                via=row["via"],
                params=json.loads(row["params"]),
                outcome=row["outcome"],
            )
            for row in rows
        ]


def rejection_filter(building_id: str, dwelling_id: str) -> tuple[str, tuple[str, ...]]:
    """The rejections of one dwelling, as a WHERE clause and its parameters."""
    # A rejected payload may not parse, so attribution is by the dwelling panel's topic
    # (devices table), or by the ids the payload itself names when it is JSON.
    where = (
        "EXISTS (SELECT 1 FROM devices AS d WHERE d.building_id = ? AND d.dwelling_id = ?"
        " AND d.role = 'dwelling_panel' AND substr(topic, 1, length(d.device_id) + 14"
        " + length(d.building_id)) = 'intercom/v1/' || d.building_id || '/' || d.device_id"
        " || '/')"
        " OR (json_valid(payload) AND json_extract(payload, '$.building_id') = ?"
        " AND json_extract(payload, '$.dwelling_id') = ?)"
    )
    return where, (building_id, dwelling_id, building_id, dwelling_id)


def _filters(
    building_id: str | None, dwelling_id: str | None, start: datetime | None, end: datetime | None
) -> tuple[str, Sequence[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("building_id", building_id), ("dwelling_id", dwelling_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if start is not None:
        clauses.append("at >= ?")
        params.append(utc_text(start))
    if end is not None:
        clauses.append("at < ?")
        params.append(utc_text(end))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
