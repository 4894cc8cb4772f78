"""The dwellings' tables: the device registry, and each dwelling's consent.

Consent is kept twice: the current state, and the append-only history of every change,
applied or refused. A change is committed (``save_consent``) before it is acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.core.registry import Registry
from intercom_gateway.store.events import INSERT_INTENDED
from intercom_gateway.store.results import ConsentChange


class ConsentBook:
    """The registry's devices and dwellings, and each dwelling's consent."""

    def __init__(self, db: aiosqlite.Connection, writing: asyncio.Lock) -> None:
        self._db = db
        self._writing = writing  # the store's one transaction at a time

    # --- registry ---------------------------------------------------------------------

    async def save_registry(self, registry: Registry) -> None:
        await self._db.executemany(
            "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?)",
            [(d.id, b.id, d.role.value, d.dwelling) for b, d in registry.devices()],
        )
        await self._db.executemany(
            "INSERT OR IGNORE INTO dwellings VALUES (?, ?)",
            [(b.id, d.id) for b, d in registry.dwellings()],
        )
        await self._db.commit()

    async def registered_devices(self) -> list[dict[str, Any]]:
        async with self._db.execute("SELECT * FROM devices ORDER BY device_id") as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def dwelling_known(self, building_id: str, dwelling_id: str) -> bool:
        for table in ("dwellings", "consent_current"):
            async with self._db.execute(
                f"SELECT 1 FROM {table} WHERE building_id = ? AND dwelling_id = ?",
                (building_id, dwelling_id),
            ) as cursor:
                if await cursor.fetchone() is not None:
                    return True
        return False

    async def dwelling_panel(self, building_id: str, dwelling_id: str) -> str | None:
        """The device id of the dwelling's own panel, which speaks for its settings."""
        async with self._db.execute(
            "SELECT device_id FROM devices WHERE building_id = ? AND dwelling_id = ?"
            " AND role = 'dwelling_panel' ORDER BY device_id LIMIT 1",
            (building_id, dwelling_id),
        ) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    # --- consent ----------------------------------------------------------------------

    async def consents(self) -> dict[tuple[str, str], ConsentState]:
        async with self._db.execute("SELECT state FROM consent_current") as cursor:
            states = [ConsentState.model_validate_json(row[0]) for row in await cursor.fetchall()]
        return {(s.building_id, s.dwelling_id): s for s in states}

    async def consent(self, building_id: str, dwelling_id: str) -> ConsentState | None:
        async with self._db.execute(
            "SELECT state FROM consent_current WHERE building_id = ? AND dwelling_id = ?",
            (building_id, dwelling_id),
        ) as cursor:
            row = await cursor.fetchone()
        return ConsentState.model_validate_json(row[0]) if row else None

    async def consent_change_seen(self, change_id: str) -> bool:
        async with self._db.execute(
            "SELECT 1 FROM consent_history WHERE change_id = ?", (change_id,)
        ) as cursor:
            return await cursor.fetchone() is not None

    async def consent_history(self, building_id: str, dwelling_id: str) -> list[ConsentChange]:
        async with self._db.execute(
            "SELECT * FROM consent_history WHERE building_id = ? AND dwelling_id = ? ORDER BY id",
            (building_id, dwelling_id),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            ConsentChange(
                id=row["id"],
                building_id=row["building_id"],
                dwelling_id=row["dwelling_id"],
                change_id=row["change_id"],
                source=row["source"],
                change=row["change"],
                applied=bool(row["applied"]),
                detail=row["detail"],
                revision=row["revision"],
                at=datetime.fromisoformat(row["at"]),
            )
            for row in rows
        ]

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
        async with self._writing:
            if notices:
                await self._db.executemany(INSERT_INTENDED, [row.as_params() for row in notices])
            await self._db.execute(
                "INSERT INTO consent_history (building_id, dwelling_id, change_id, source, change,"
                " applied, detail, revision, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.building_id,
                    state.dwelling_id,
                    change_id,
                    source,
                    change,
                    int(applied),
                    detail,
                    state.revision,
                    at.isoformat(),
                ),
            )
            if applied:
                await self._db.execute(
                    "INSERT OR REPLACE INTO consent_current VALUES (?, ?, ?, ?, ?)",
                    (
                        state.building_id,
                        state.dwelling_id,
                        state.revision,
                        state.model_dump_json(),
                        at.isoformat(),
                    ),
                )
            await self._db.commit()

    async def save_initial_consents(
        self, entries: Sequence[tuple[ConsentState, str]], *, source: str, detail: str, at: datetime
    ) -> None:
        """Record many initial consents (state, the change that set it) in one transaction.

        One commit per dwelling made a 10,000-dwelling start-up take a minute.
        """
        when = at.isoformat()
        await self._db.executemany(
            "INSERT INTO consent_history (building_id, dwelling_id, change_id, source, change,"
            " applied, detail, revision, at) VALUES (?, ?, NULL, ?, ?, 1, ?, ?, ?)",
            [
                (s.building_id, s.dwelling_id, source, change, detail, s.revision, when)
                for s, change in entries
            ],
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO consent_current VALUES (?, ?, ?, ?, ?)",
            [
                (s.building_id, s.dwelling_id, s.revision, s.model_dump_json(), when)
                for s, _ in entries
            ],
        )
        await self._db.commit()
