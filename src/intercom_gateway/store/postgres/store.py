"""The PostgreSQL store: a database several gateways share, the table families composed.

``PostgresStore`` is the ``Store`` (``store.base``) over PostgreSQL with asyncpg, the
same semantics as ``store.sqlite.SqliteStore`` method by method: ``record_*`` buffered
and written by ``flush`` in one transaction (``events``), ``save_*`` committed before
they return, the same order of results and the same ``store.results`` values. Open it
with ``PostgresStore.open(dsn)``: a small pool (1 to 4 connections), the migrations
(``schema``) applied under an advisory lock, and a last flush when it closes.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.configuration import ConfigRecord
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.distributions import DistributionRow
from intercom_gateway.core.records import DecisionRow, LedgerRow, RejectionRow, RequestRow
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.statistics import Window
from intercom_gateway.errors import StoreUnreachable
from intercom_gateway.store.postgres import schema
from intercom_gateway.store.postgres.configs import PgConfigTable
from intercom_gateway.store.postgres.consents import PgConsentBook
from intercom_gateway.store.postgres.distributions import PgDistributionTables
from intercom_gateway.store.postgres.events import PgEventLog
from intercom_gateway.store.postgres.queries import PgQueries
from intercom_gateway.store.postgres.tokens import PgTokenTables
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

if TYPE_CHECKING:
    from intercom_gateway.store.base import Store

POOL_MIN = 1
POOL_MAX = 4
CONNECT_TIMEOUT = 10.0  # seconds: a store that does not answer by then is unreachable


class PostgresStore:
    """The store in a PostgreSQL database; open it with ``PostgresStore.open(dsn)``."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._events = PgEventLog(pool)
        self._consents = PgConsentBook(pool)
        self._queries = PgQueries(pool)
        self._tokens = PgTokenTables(pool)
        self._configs = PgConfigTable(pool)
        self._distributions = PgDistributionTables(pool)

    def fenced(self, fence: Callable[[Any], Awaitable[None]]) -> PostgresStore:
        """This store, with an event path of its own whose every flush, ledger intent and
        consent change first runs ``fence`` (a partition's lease check,
        ``gateway.leases.fence``) in its own transaction: a gateway that lost the
        partition commits nothing more for it (no record, no consent change, so no
        acknowledgement and no copy waiting for its intent), not even in the moment
        between a check and a commit; the new holder's epoch bump waits for a commit in
        progress. Queries are shared."""
        view = copy.copy(self)
        view._events = PgEventLog(self._pool, writing=self._events.writing, fence=fence)
        view._consents = PgConsentBook(self._pool, fence=fence)
        return view

    @property
    def pool(self) -> Any:
        """The connection pool, for a test that looks at the tables itself. Not part of
        ``Store``."""
        return self._pool

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str) -> AsyncIterator[PostgresStore]:
        """The store in the database at ``dsn``, migrated to the current layout; what is
        still recorded is flushed when it closes. ``StoreUnreachable`` if it does not
        answer."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=POOL_MIN, max_size=POOL_MAX, timeout=CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise StoreUnreachable(
                f"cannot reach the store at {redacted(dsn)}: {reason}"
            ) from error
        try:
            async with pool.acquire() as connection:
                await schema.migrate(connection)
            store = cls(pool)
            try:
                yield store
            finally:
                await store.flush()
        finally:
            await pool.close()

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
        return await self._queries.decision(event_id)

    async def provisions(
        self,
        *,
        building_id: str | None = None,
        dwelling_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[Provision]:
        return await self._queries.provisions(
            building_id=building_id, dwelling_id=dwelling_id, start=start, end=end, limit=limit
        )

    async def rejections(self, *, limit: int = 100) -> list[Rejection]:
        return await self._queries.rejections(limit=limit)

    async def counts(self) -> TableCounts:
        return await self._queries.counts()

    async def ledger_summary(self, building_id: str, dwelling_id: str) -> LedgerSummary:
        return await self._queries.ledger_summary(building_id, dwelling_id)

    async def decision_summary(self, building_id: str, dwelling_id: str) -> DecisionSummary:
        return await self._queries.decision_summary(building_id, dwelling_id)

    async def dwelling_rejections(self, building_id: str, dwelling_id: str) -> list[RejectedInput]:
        return await self._queries.dwelling_rejections(building_id, dwelling_id)

    async def requests(self, building_id: str, dwelling_id: str) -> list[LoggedRequest]:
        return await self._queries.requests(building_id, dwelling_id)

    async def save_request(self, row: RequestRow) -> None:
        await self._queries.save_request(row)

    # --- retention (store.retention) --------------------------------------------------

    async def erase_dwelling(self, building_id: str, dwelling_id: str) -> Erased:
        return await self._queries.erase_dwelling(building_id, dwelling_id)

    async def purge_ledger(self, *, before: datetime, chunk: int = 10_000) -> int:
        return await self._queries.purge_ledger(before=before, chunk=chunk)

    async def prune_completed(self, keep: int) -> int:
        return await self._queries.prune_completed(keep)

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

    # --- information distribution (store.postgres.distributions) ------------------------

    async def save_distribution(self, row: DistributionRow) -> None:
        await self._distributions.save_distribution(row)

    async def distributions(
        self, contractor_id: str | None = None, distribution_id: str | None = None
    ) -> list[DistributionRow]:
        return await self._distributions.distributions(contractor_id, distribution_id)


def redacted(dsn: str) -> str:
    """The DSN without its password, fit for a message or a log line."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


if TYPE_CHECKING:
    # mypy holds the PostgreSQL store to the interface every caller is written against.
    def _is_a_store(store: PostgresStore) -> Store:
        return store
