"""The SQLite store: one file, one aiosqlite connection, the table families composed.

``SqliteStore`` is the ``Store`` (``store.base``) over SQLite. Each table family keeps
its SQL in its own module: ``schema`` (tables, indexes, migrations), ``events`` (the
event path's buffered batch), ``consents`` (registry and consent), ``requests`` (§8
queries and the request log), ``retention`` (erasure and purges), ``statistics`` and
``analytics`` (their tables, written in the event path's batches), ``tokens`` (resident
API tokens and their audit trail). Nothing outside the store package speaks SQL to them.

The row types an event's records are made of are defined here too (for now).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.configuration import ConfigRecord
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.distributions import DistributionRow
from intercom_gateway.core.records import DecisionRow as DecisionRow
from intercom_gateway.core.records import LedgerRow as LedgerRow
from intercom_gateway.core.records import RejectionRow as RejectionRow
from intercom_gateway.core.records import RequestRow as RequestRow
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.statistics import Window
from intercom_gateway.store import schema
from intercom_gateway.store.configs import ConfigTable
from intercom_gateway.store.consents import ConsentBook
from intercom_gateway.store.distributions import DistributionTables
from intercom_gateway.store.events import EventLog
from intercom_gateway.store.requests import Queries
from intercom_gateway.store.results import (
    AuditEntry,
    ConsentChange,
    DecisionSummary,
    Erased,
    LedgerSummary,
    LoggedDecision,
    LoggedRequest,
    Provision,
    RejectedInput,
    Rejection,
    TableCounts,
    TokenInfo,
)
from intercom_gateway.store.retention import Retention
from intercom_gateway.store.tokens import TokenTables

if TYPE_CHECKING:
    from intercom_gateway.store.base import Store


class SqliteStore:
    """The store in one SQLite file; open it with ``SqliteStore.open(path)``."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        # One transaction at a time on the one connection: a commit of one writer in the
        # middle of another's statements would commit half a batch, or fail outright
        # ("SQL statements in progress") and stop the gateway.
        writing = asyncio.Lock()
        self._events = EventLog(connection, writing)
        self._consents = ConsentBook(connection, writing)
        self._requests = Queries(connection)
        self._retention = Retention(connection)
        self._tokens = TokenTables(connection, writing)
        self._configs = ConfigTable(connection, writing)
        self._distributions = DistributionTables(connection, writing)

    @property
    def connection(self) -> aiosqlite.Connection:
        """The open connection, for a test that looks at the file itself. Not part of
        ``Store``: another backend has none."""
        return self._db

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[SqliteStore]:
        """The store at ``path``, made or migrated to the current layout; what is still
        recorded is flushed when it closes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # A generous busy timeout: a second process opening the file while the first
        # migrates it waits for the write lock rather than failing.
        async with aiosqlite.connect(path, timeout=schema.LOCKED_WAIT) as connection:
            connection.row_factory = aiosqlite.Row
            await schema.migrate(connection)
            store = cls(connection)
            try:
                yield store
            finally:
                await store.flush()

    # --- the event path (store.events) ------------------------------------------------

    def record_decision(self, row: DecisionRow) -> None:
        self._events.record_decision(row)

    def record_provisions(self, rows: Iterable[LedgerRow]) -> None:
        self._events.record_provisions(rows)

    def record_delivered(self, rows: Iterable[LedgerRow]) -> None:
        self._events.record_delivered(rows)

    def record_unconfirmed(self, rows: Iterable[LedgerRow]) -> None:
        self._events.record_unconfirmed(rows)

    def record_statistic(self, window: Window, event_type: str) -> None:
        self._events.record_statistic(window, event_type)

    def record_window_published(self, window: Window, *, closed_before: datetime) -> None:
        self._events.record_window_published(window, closed_before=closed_before)

    def record_analytics_held(self, copy: HeldCopy) -> None:
        self._events.record_analytics_held(copy)

    def record_analytics_released(self, copy_id: str) -> None:
        self._events.record_analytics_released(copy_id)

    def record_completed(self, event_id: str, at: float) -> None:
        self._events.record_completed(event_id, at)

    def record_rejection(self, row: RejectionRow) -> None:
        self._events.record_rejection(row)

    def record_attempt_end(self, key: str) -> None:
        self._events.record_attempt_end(key)

    @property
    def pending(self) -> bool:
        """Whether anything is recorded and not yet flushed."""
        return self._events.pending

    async def flush(self) -> None:
        await self._events.flush()

    async def save_intents(self, rows: Sequence[LedgerRow]) -> None:
        await self._events.save_intents(rows)

    async def save_unconfirmed(self, buildings: Collection[str] | None = None) -> int:
        return await self._events.save_unconfirmed(buildings)

    async def save_attempt(self, key: str) -> int:
        return await self._events.save_attempt(key)

    async def pending_notices(self, buildings: Collection[str] | None = None) -> list[LedgerRow]:
        return await self._events.pending_notices(buildings)

    async def recent_completed(self, limit: int) -> list[str]:
        return await self._events.recent_completed(limit)

    async def statistics_windows(self) -> tuple[list[tuple[Window, str, int]], datetime | None]:
        return await self._events.statistics_windows()

    async def analytics_held(self, buildings: Collection[str] | None = None) -> list[HeldCopy]:
        return await self._events.analytics_held(buildings)

    # --- dwellings and consent (store.consents) ---------------------------------------

    async def save_registry(self, registry: Registry) -> None:
        await self._consents.save_registry(registry)

    async def registered_devices(self) -> list[dict[str, Any]]:
        return await self._consents.registered_devices()

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
        await self._consents.save_consent(
            state,
            change=change,
            change_id=change_id,
            source=source,
            applied=applied,
            detail=detail,
            at=at,
            notices=notices,
        )

    async def save_initial_consents(
        self, entries: Sequence[tuple[ConsentState, str]], *, source: str, detail: str, at: datetime
    ) -> None:
        await self._consents.save_initial_consents(entries, source=source, detail=detail, at=at)

    async def consents(self) -> dict[tuple[str, str], ConsentState]:
        return await self._consents.consents()

    async def consent(self, building_id: str, dwelling_id: str) -> ConsentState | None:
        return await self._consents.consent(building_id, dwelling_id)

    async def consent_change_seen(self, change_id: str) -> bool:
        return await self._consents.consent_change_seen(change_id)

    async def consent_history(self, building_id: str, dwelling_id: str) -> list[ConsentChange]:
        return await self._consents.consent_history(building_id, dwelling_id)

    async def dwelling_known(self, building_id: str, dwelling_id: str) -> bool:
        return await self._consents.dwelling_known(building_id, dwelling_id)

    async def dwelling_panel(self, building_id: str, dwelling_id: str) -> str | None:
        return await self._consents.dwelling_panel(building_id, dwelling_id)

    # --- §8 queries and the request log (store.requests) ------------------------------

    async def decision(self, event_id: str) -> LoggedDecision | None:
        return await self._requests.decision(event_id)

    async def provisions(
        self,
        *,
        building_id: str | None = None,
        dwelling_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[Provision]:
        return await self._requests.provisions(
            building_id=building_id, dwelling_id=dwelling_id, start=start, end=end, limit=limit
        )

    async def rejections(self, *, limit: int = 100) -> list[Rejection]:
        return await self._requests.rejections(limit=limit)

    async def counts(self) -> TableCounts:
        return await self._requests.counts()

    async def ledger_summary(self, building_id: str, dwelling_id: str) -> LedgerSummary:
        return await self._requests.ledger_summary(building_id, dwelling_id)

    async def decision_summary(self, building_id: str, dwelling_id: str) -> DecisionSummary:
        return await self._requests.decision_summary(building_id, dwelling_id)

    async def dwelling_rejections(self, building_id: str, dwelling_id: str) -> list[RejectedInput]:
        return await self._requests.dwelling_rejections(building_id, dwelling_id)

    async def requests(self, building_id: str, dwelling_id: str) -> list[LoggedRequest]:
        return await self._requests.requests(building_id, dwelling_id)

    async def save_request(self, row: RequestRow) -> None:
        await self._requests.save_request(row)

    # --- retention (store.retention) --------------------------------------------------

    async def erase_dwelling(self, building_id: str, dwelling_id: str) -> Erased:
        return await self._retention.erase_dwelling(building_id, dwelling_id)

    async def purge_ledger(self, *, before: datetime, chunk: int = 10_000) -> int:
        return await self._retention.purge_ledger(before=before, chunk=chunk)

    async def prune_completed(self, keep: int) -> int:
        return await self._retention.prune_completed(keep)

    # --- configuration revisions (§10) -------------------------------------------------

    async def save_config(self, record: ConfigRecord) -> int:
        return await self._configs.save_config(record)

    async def config(self, revision: int | None = None) -> ConfigRecord | None:
        return await self._configs.config(revision)

    # --- resident API tokens (store.tokens) -------------------------------------------

    async def save_token(self, info: TokenInfo, *, sha256: str, audit: AuditEntry) -> bool:
        return await self._tokens.save_token(info, sha256=sha256, audit=audit)

    async def save_revocation(self, audit: AuditEntry) -> None:
        await self._tokens.save_revocation(audit)

    async def token(self, token_id: str) -> TokenInfo | None:
        return await self._tokens.token(token_id)

    async def hashed_token(self, token_id: str) -> tuple[TokenInfo, str] | None:
        return await self._tokens.hashed_token(token_id)

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        return await self._tokens.tokens(building_id, dwelling_id)

    async def token_audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        return await self._tokens.token_audit(building_id, dwelling_id)

    # --- information distribution (store.distributions) --------------------------------

    async def save_distribution(self, row: DistributionRow) -> None:
        await self._distributions.save_distribution(row)

    async def distributions(
        self, contractor_id: str | None = None, distribution_id: str | None = None
    ) -> list[DistributionRow]:
        return await self._distributions.distributions(contractor_id, distribution_id)


if TYPE_CHECKING:
    # mypy holds the SQLite store to the interface every caller is written against.
    def _is_a_store(store: SqliteStore) -> Store:
        return store
