"""``Store``: what the gateway, the resident desk, the CLI and QA need of a store.

Exactly what they call, so that each backend implements this and nothing more:
``store.sqlite.SqliteStore`` (one file, the default) and ``store.postgres.PostgresStore``
(a database several gateways share); ``store.opening.open_store`` opens the one the
settings name. Nothing here names a driver: rows go in as ``core`` values and the store's row
types, answers come out as ``store.results`` values. The naming rule is the package's
(``intercom_gateway.store``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from intercom_gateway.core.analytics import HeldCopy
from intercom_gateway.core.configuration import ConfigRecord
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.registry import Registry
from intercom_gateway.core.statistics import Window
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
    from intercom_gateway.core.distributions import DistributionRow
    from intercom_gateway.core.records import DecisionRow, LedgerRow, RejectionRow, RequestRow


class Store(Protocol):
    # --- the event path: recorded (buffered), written by flush() ------------------------

    def record_decision(self, row: DecisionRow) -> None: ...

    def record_provisions(self, rows: Iterable[LedgerRow]) -> None:
        """Provisions the recipients' broker acknowledged: "delivered", intended or not."""

    def record_delivered(self, rows: Iterable[LedgerRow]) -> None:
        """Provisions whose intent is saved, now acknowledged: "delivered"."""

    def record_unconfirmed(self, rows: Iterable[LedgerRow]) -> None:
        """Intents whose publish this process lost track of; a delivered row stays so."""

    def record_statistic(self, window: Window, event_type: str) -> None: ...

    def record_window_published(self, window: Window, *, closed_before: datetime) -> None: ...

    def record_analytics_held(self, copy: HeldCopy) -> None: ...

    def record_analytics_released(self, copy_id: str) -> None: ...

    def record_completed(self, event_id: str, at: float) -> None: ...

    def record_rejection(self, row: RejectionRow) -> None: ...

    def record_attempt_end(self, key: str) -> None:
        """The handling of a counted message finished: forget its count."""

    async def flush(self) -> None:
        """Write everything recorded since the last flush in one transaction."""

    # --- the event path: saved (committed before returning) -----------------------------

    async def save_intents(self, rows: Sequence[LedgerRow]) -> None:
        """The ledger's write-ahead record: provisions about to be published, "intended"."""

    async def save_unconfirmed(self, buildings: Collection[str] | None = None) -> int:
        """At start: the intents a stopped process left, now "unconfirmed"; how many.
        ``buildings``: only theirs (the partitions a gateway takes over)."""

    async def save_attempt(self, key: str) -> int:
        """One more delivery of a message about to be handled; the count so far."""

    # --- read back at start -------------------------------------------------------------

    async def pending_notices(self, buildings: Collection[str] | None = None) -> list[LedgerRow]:
        """Consent notices on record whose delivery is not yet recorded, oldest first:
        every one, or those of ``buildings``. Never marked "unconfirmed" at start: the
        gateway publishes them again (``gateway.notices``)."""

    async def recent_completed(self, limit: int) -> list[str]: ...

    async def statistics_windows(
        self,
    ) -> tuple[list[tuple[Window, str, int]], datetime | None]: ...

    async def analytics_held(self, buildings: Collection[str] | None = None) -> list[HeldCopy]:
        """The analytics copies held, not yet acknowledged: all, or ``buildings``'."""

    # --- dwellings and consent ----------------------------------------------------------

    async def save_registry(self, registry: Registry) -> None: ...

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
        """Append to the consent history and replace the current state, in one commit,
        with ``notices``: the ledger rows of the consent notices the change gives, as
        "intended" (``pending_notices`` until their delivery is recorded)."""

    async def save_initial_consents(
        self, entries: Sequence[tuple[ConsentState, str]], *, source: str, detail: str, at: datetime
    ) -> None:
        """Many initial consents (state, the change that set it) in one commit."""

    async def consents(self) -> dict[tuple[str, str], ConsentState]: ...

    async def consent(self, building_id: str, dwelling_id: str) -> ConsentState | None: ...

    async def consent_change_seen(self, change_id: str) -> bool: ...

    async def consent_history(self, building_id: str, dwelling_id: str) -> list[ConsentChange]: ...

    async def dwelling_known(self, building_id: str, dwelling_id: str) -> bool: ...

    async def dwelling_panel(self, building_id: str, dwelling_id: str) -> str | None: ...

    # --- configuration revisions (§10, core.configuration) ---------------------------

    async def save_config(self, record: ConfigRecord) -> int:
        """Record a configuration change as the next revision, committed; its number
        (``record.revision`` is ignored)."""

    async def config(self, revision: int | None = None) -> ConfigRecord | None:
        """Configuration revision ``revision``, or the latest; None if there is none."""

    # --- §8 queries and the request log -------------------------------------------------

    async def decision(self, event_id: str) -> LoggedDecision | None: ...

    async def provisions(
        self,
        *,
        building_id: str | None = None,
        dwelling_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[Provision]:
        """Provision records in time order; ``start`` inclusive, ``end`` exclusive."""

    async def rejections(self, *, limit: int = 100) -> list[Rejection]:
        """The latest rejected input first."""

    async def counts(self) -> TableCounts: ...

    async def ledger_summary(self, building_id: str, dwelling_id: str) -> LedgerSummary: ...

    async def decision_summary(self, building_id: str, dwelling_id: str) -> DecisionSummary: ...

    async def dwelling_rejections(
        self, building_id: str, dwelling_id: str
    ) -> list[RejectedInput]: ...

    async def requests(self, building_id: str, dwelling_id: str) -> list[LoggedRequest]: ...

    async def save_request(self, row: RequestRow) -> None:
        """A resident request, on record before its answer is given."""

    # --- retention ----------------------------------------------------------------------

    async def erase_dwelling(self, building_id: str, dwelling_id: str) -> Erased:
        """Erase the dwelling's decision log and rejected input (never its ledger)."""

    async def purge_ledger(self, *, before: datetime, chunk: int = 10_000) -> int:
        """Delete provision records older than ``before``; how many went."""

    async def prune_completed(self, keep: int) -> int:
        """Forget all but the ``keep`` most recent completed event ids (those a gateway
        remembers at start, ``recent_completed``); how many went."""

    # --- resident API tokens (what a token is: resident.tokens) -------------------------

    async def save_token(self, info: TokenInfo, *, sha256: str, audit: AuditEntry) -> bool:
        """A new token, stored as the hex SHA-256 of the whole token, with its audit entry,
        in one commit; False, and nothing saved, if its id is taken."""

    async def save_revocation(self, audit: AuditEntry) -> None:
        """Revoke ``audit.token_id`` at ``audit.at`` (a revoked one keeps its first date),
        with the audit entry, in one commit."""

    async def token(self, token_id: str) -> TokenInfo | None: ...

    async def hashed_token(self, token_id: str) -> tuple[TokenInfo, str] | None:
        """The token and the hex SHA-256 it is stored as: for authentication only."""

    async def tokens(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[TokenInfo]:
        """Every token, or those of one dwelling, oldest first."""

    async def token_audit(
        self, building_id: str | None = None, dwelling_id: str | None = None
    ) -> list[AuditEntry]:
        """The audit trail, or one dwelling's, in the order it was written."""

    # --- information distribution (§2(1); what it is: core.distributions) ---------------

    async def save_distribution(self, row: DistributionRow) -> None:
        """A contractor's distribution and the panels it goes to, in one commit; a second
        save of the same (contractor, distribution id) changes nothing."""

    async def distributions(
        self, contractor_id: str | None = None, distribution_id: str | None = None
    ) -> list[DistributionRow]:
        """Every stored distribution with its deliveries, oldest first; or the one of
        ``contractor_id`` named ``distribution_id`` (another process may have taken it)."""
