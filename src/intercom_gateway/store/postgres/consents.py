"""The dwellings' tables on PostgreSQL: the device registry, and each dwelling's consent.

As on SQLite (``store.consents``): the current state and the append-only history of
every change; ``save_consent`` commits both in one transaction before it returns, so
the gateway's settings ack is published only for a change on record, and any gateway
that loads consent afterwards sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.core.registry import Registry
from intercom_gateway.store.postgres.events import INSERT_INTENDED
from intercom_gateway.store.results import ConsentChange

_UPSERT_CURRENT = (
    "INSERT INTO consent_current VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (building_id, dwelling_id) DO UPDATE SET revision = excluded.revision,"
    " state = excluded.state, updated_at = excluded.updated_at"
)
_INSERT_HISTORY = (
    "INSERT INTO consent_history (building_id, dwelling_id, change_id, source, change,"
    " applied, detail, revision, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


class PgConsentBook:
    """The registry's devices and dwellings, and each dwelling's consent."""

    def __init__(self, pool: Any, *, fence: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self._pool = pool
        self._fence = fence  # a partition's lease check (PostgresStore.fenced)

    async def save_registry(self, registry: Registry) -> None:
        async with self._pool.acquire() as db, db.transaction():
            await db.executemany(
                "INSERT INTO devices VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE"
                " SET building_id = excluded.building_id, role = excluded.role,"
                " dwelling_id = excluded.dwelling_id",
                [(d.id, b.id, d.role.value, d.dwelling) for b, d in registry.devices()],
            )
            await db.executemany(
                "INSERT INTO dwellings VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(b.id, d.id) for b, d in registry.dwellings()],
            )

    async def registered_devices(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as db:
            rows = await db.fetch("SELECT * FROM devices ORDER BY device_id")
        return [dict(row) for row in rows]

    async def dwelling_known(self, building_id: str, dwelling_id: str) -> bool:
        async with self._pool.acquire() as db:
            found = await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM dwellings WHERE building_id = $1"
                " AND dwelling_id = $2) OR EXISTS (SELECT 1 FROM consent_current"
                " WHERE building_id = $1 AND dwelling_id = $2)",
                building_id,
                dwelling_id,
            )
        return bool(found)

    async def dwelling_panel(self, building_id: str, dwelling_id: str) -> str | None:
        async with self._pool.acquire() as db:
            found = await db.fetchval(
                "SELECT device_id FROM devices WHERE building_id = $1 AND dwelling_id = $2"
                " AND role = 'dwelling_panel' ORDER BY device_id LIMIT 1",
                building_id,
                dwelling_id,
            )
        return str(found) if found is not None else None

    async def consents(self) -> dict[tuple[str, str], ConsentState]:
        async with self._pool.acquire() as db:
            rows = await db.fetch("SELECT state FROM consent_current")
        states = [ConsentState.model_validate_json(row[0]) for row in rows]
        return {(s.building_id, s.dwelling_id): s for s in states}

    async def consent(self, building_id: str, dwelling_id: str) -> ConsentState | None:
        async with self._pool.acquire() as db:
            text = await db.fetchval(
                "SELECT state FROM consent_current WHERE building_id = $1 AND dwelling_id = $2",
                building_id,
                dwelling_id,
            )
        return ConsentState.model_validate_json(text) if text is not None else None

    async def consent_change_seen(self, change_id: str) -> bool:
        async with self._pool.acquire() as db:
            found = await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM consent_history WHERE change_id = $1)", change_id
            )
        return bool(found)

    async def consent_history(self, building_id: str, dwelling_id: str) -> list[ConsentChange]:
        async with self._pool.acquire() as db:
            rows = await db.fetch(
                "SELECT id, building_id, dwelling_id, change_id, source, change, applied,"
                " detail, revision, at FROM consent_history"
                " WHERE building_id = $1 AND dwelling_id = $2 ORDER BY id",
                building_id,
                dwelling_id,
            )
        return [ConsentChange(**dict(row)) for row in rows]

    async def save_consent(
        self,
        state: ConsentState,
        *,
        change: str,
        change_id: str | None,
        source: str,
        applied: bool,
        detail: str,
        at: datetime,
        notices: Sequence[LedgerRow] = (),
    ) -> None:
        """Append to the history and replace the current state, in one commit, with the
        ledger rows of the consent notices the change gives ("intended")."""
        async with self._pool.acquire() as db, db.transaction():
            if self._fence is not None:
                await self._fence(db)
            if notices:
                await db.executemany(INSERT_INTENDED, [row.as_params() for row in notices])
            await db.execute(
                _INSERT_HISTORY,
                state.building_id,
                state.dwelling_id,
                change_id,
                source,
                change,
                applied,
                detail,
                state.revision,
                at,
            )
            if applied:
                await db.execute(
                    _UPSERT_CURRENT,
                    state.building_id,
                    state.dwelling_id,
                    state.revision,
                    state.model_dump_json(),
                    at,
                )

    async def save_initial_consents(
        self, entries: Sequence[tuple[ConsentState, str]], *, source: str, detail: str, at: datetime
    ) -> None:
        """Many initial consents (state, the change that set it) in one transaction."""
        async with self._pool.acquire() as db, db.transaction():
            await db.executemany(
                _INSERT_HISTORY,
                [
                    (
                        s.building_id,
                        s.dwelling_id,
                        None,
                        source,
                        change,
                        True,
                        detail,
                        s.revision,
                        at,
                    )
                    for s, change in entries
                ],
            )
            await db.executemany(
                _UPSERT_CURRENT,
                [
                    (s.building_id, s.dwelling_id, s.revision, s.model_dump_json(), at)
                    for s, _ in entries
                ],
            )
