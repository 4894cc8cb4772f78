"""The resident desk: the thin shell that answers §8 requests and records each one.

It reads the store (any ``Store``), builds the answer with ``resident.service`` and
``resident.purposes``, sends a consent change through its channel
(``resident.channels``), and puts the request on record before it answers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import utc_now
from intercom_gateway.core.policy import PartnerRegistry, Policy, load_partners, load_policy
from intercom_gateway.core.records import RequestRow
from intercom_gateway.core.router import Router
from intercom_gateway.errors import (
    BusError,
    ConfigError,
    PendingChange,
    UnknownDwelling,
    UnknownPartner,
)
from intercom_gateway.resident.channels import ConsentChannel, StoreChannel
from intercom_gateway.resident.purposes import purposes_in_force
from intercom_gateway.resident.service import (
    KEPT_ON_ERASURE,
    RequestKind,
    settings_change,
    stop_use_bodies,
)
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store
from intercom_gateway.store.opening import open_store, sqlite_path


class ResidentDesk:
    """Answers §8 requests for one dwelling at a time and records each one."""

    def __init__(
        self,
        store: Store,
        *,
        policy: Policy,
        partners: PartnerRegistry,
        channel: ConsentChannel,
        via: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.policy = policy
        self.partners = partners
        self.router = Router.compile(policy, partners)
        self.channel = channel
        self.via = via
        self.clock = clock

    def acting_for(self, via: str) -> ResidentDesk:
        """This desk, recording its requests as made ``via`` (``api:token:<id>``: a
        resident token)."""
        if via == self.via:
            return self
        return ResidentDesk(
            self.store,
            policy=self.policy,
            partners=self.partners,
            channel=self.channel,
            via=via,
            clock=self.clock,
        )

    async def purposes(self, building_id: str, dwelling_id: str) -> dict[str, Any]:
        consent = await self._consent(building_id, dwelling_id)
        answer = purposes_in_force(consent, router=self.router)
        summary = {"destinations": [d["destination"] for d in answer["destinations"]]}
        return await self._done(RequestKind.PURPOSES, consent, {}, answer, summary)

    async def disclose(self, building_id: str, dwelling_id: str) -> dict[str, Any]:
        consent = await self._consent(building_id, dwelling_id)
        store, key = self.store, (building_id, dwelling_id)
        answer: dict[str, Any] = {
            "building_id": building_id,
            "dwelling_id": dwelling_id,
            "consent": consent.model_dump(mode="json"),
            "consent_history": [c.as_dict() for c in await store.consent_history(*key)],
            "decision_log": (await store.decision_summary(*key)).as_dict(),
            "provision_ledger": (await store.ledger_summary(*key)).as_dict(),
            "rejected_input": [r.as_dict() for r in await store.dwelling_rejections(*key)],
            "requests": [r.as_dict() for r in await store.requests(*key)],
            # Ids and dates only: the label is the operator's note, the secret never stored.
            "api_tokens": [t.dates() for t in await store.tokens(*key)],
        }
        summary = {
            "decisions": answer["decision_log"]["events"],
            "ledger_rows": answer["provision_ledger"]["rows"],
        }
        return await self._done(RequestKind.DISCLOSURE, consent, {}, answer, summary)

    async def provisions(
        self,
        building_id: str,
        dwelling_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        third_party_only: bool = False,
    ) -> dict[str, Any]:
        consent = await self._consent(building_id, dwelling_id)
        records = await self.store.provisions(
            building_id=building_id, dwelling_id=dwelling_id, start=start, end=end
        )
        rows = [r.as_dict() for r in records]
        # Defence in depth: the query is by dwelling; never answer with another's row.
        rows = [r for r in rows if (r["building_id"], r["dwelling_id"]) == consent_key(consent)]
        if third_party_only:
            rows = [r for r in rows if r["third_party"]]
        params = {"from": start, "to": end, "third_party_only": third_party_only}
        answer: dict[str, Any] = {"building_id": building_id, "dwelling_id": dwelling_id}
        answer |= {**params, "records": rows}
        return await self._done(
            RequestKind.PROVISIONS, consent, params, answer, {"rows": len(rows)}
        )

    async def stop_provision(
        self, building_id: str, dwelling_id: str, partner_id: str
    ) -> dict[str, Any]:
        consent = await self._consent(building_id, dwelling_id)
        if self.partners.get(partner_id) is None:
            raise UnknownPartner(partner_id)
        # The request rides on the change, so the service's notice says what was asked.
        body = {
            "kind": "service_use",
            "partner_id": partner_id,
            "used": False,
            "request": "stop_provision",
        }
        return await self._change(
            RequestKind.STOP_PROVISION, consent, [body], {"partner_id": partner_id}
        )

    async def stop_use(self, building_id: str, dwelling_id: str) -> dict[str, Any]:
        consent = await self._consent(building_id, dwelling_id)
        answer = await self._change(
            RequestKind.STOP_USE, consent, stop_use_bodies(consent, self.policy), {}
        )
        answer["continues"] = (
            "the policy's baseline uses of §3(2) (backup, support, own services, joint use,"
            " de-identified analytics, statistics) continue while the panel is registered;"
            " initialising the panel (move-out setting) stops all collection (§7(1)①)"
        )
        return answer

    async def erase(self, building_id: str, dwelling_id: str) -> dict[str, Any]:
        consent = await self._consent(building_id, dwelling_id)
        erased = (await self.store.erase_dwelling(building_id, dwelling_id)).as_dict()
        ledger = (await self.store.ledger_summary(building_id, dwelling_id)).as_dict()
        kept = [dict(k) for k in KEPT_ON_ERASURE]
        kept[0]["rows"] = str(ledger["rows"])
        answer: dict[str, Any] = {"building_id": building_id, "dwelling_id": dwelling_id}
        answer |= {"erased": erased, "kept": kept}
        return await self._done(RequestKind.ERASURE, consent, {}, answer, {"erased": erased})

    # --- helpers ------------------------------------------------------------------------

    async def _consent(self, building_id: str, dwelling_id: str) -> ConsentState:
        if not await self.store.dwelling_known(building_id, dwelling_id):
            raise UnknownDwelling(building_id, dwelling_id)
        consent = await self.store.consent(building_id, dwelling_id)
        return consent or ConsentState.initial(building_id, dwelling_id)

    async def _change(
        self,
        kind: RequestKind,
        consent: ConsentState,
        bodies: list[dict[str, Any]],
        params: dict[str, Any],
    ) -> dict[str, Any]:
        changes = [settings_change(*consent_key(consent), b, now=self.clock()) for b in bodies]
        acks: list[dict[str, Any]] = []
        try:
            for change in changes:
                ack = await self.channel.submit(change, store=self.store)
                acks.append(ack.model_dump(mode="json"))
        except PendingChange as pending:
            detail = {"acks": acks, "pending": str(pending.change.change_id)}
            await self._record(kind, consent, params, "pending", detail)
            raise
        except BusError as error:  # no gateway of ours on the broker: nothing was sent
            await self._record(kind, consent, params, "failed", {"acks": acks, "error": str(error)})
            raise
        outcome = "done" if all(a["applied"] for a in acks) else "refused"
        answer: dict[str, Any] = {"building_id": consent.building_id}
        answer |= {"dwelling_id": consent.dwelling_id, "outcome": outcome, "changes": acks}
        if not changes:
            answer["detail"] = "nothing to change: no service used, every optional use suspended"
        request_id = await self._record(kind, consent, params, outcome, {"acks": acks})
        return {"request_id": request_id, "kind": kind.value, **answer}

    async def _done(
        self,
        kind: RequestKind,
        consent: ConsentState,
        params: dict[str, Any],
        answer: dict[str, Any],
        summary: dict[str, Any],
    ) -> dict[str, Any]:
        request_id = await self._record(kind, consent, params, "done", summary)
        return {"request_id": request_id, "kind": kind.value, **answer}

    async def _record(
        self,
        kind: RequestKind,
        consent: ConsentState,
        params: dict[str, Any],
        outcome: str,
        detail: dict[str, Any],
    ) -> str:
        request_id = str(uuid.uuid4())
        row = RequestRow(
            request_id=request_id,
            at=self.clock(),
            building_id=consent.building_id,
            dwelling_id=consent.dwelling_id,
            kind=kind.value,
            via=self.via,
            params=params,
            outcome=outcome,
            detail=detail,
        )
        await self.store.save_request(row)
        return request_id


def consent_key(consent: ConsentState) -> tuple[str, str]:
    return consent.building_id, consent.dwelling_id


@asynccontextmanager
async def open_desk(
    settings: Settings, *, via: str, channel: ConsentChannel | None = None
) -> AsyncIterator[ResidentDesk]:
    """A desk over the settings' store (which the gateway created)."""
    path = sqlite_path(settings)
    if path is not None and not path.exists():
        raise ConfigError("no store here: has the gateway run?", path=str(path))
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    async with open_store(settings) as store:
        # §10: the latest configuration revision on record is what gateways decide
        # under (gateway/configs.py); read once, when the desk opens.
        record = await store.config()
        if record is not None:
            recorded = record.configuration()
            policy, partners = recorded.policy, recorded.partners
        yield ResidentDesk(
            store,
            policy=policy,
            partners=partners,
            channel=channel or StoreChannel(policy, partners),
            via=via,
        )
