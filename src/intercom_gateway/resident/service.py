"""A resident's requests of §8, for one dwelling at a time.

§8 lets a resident ask for: notification of the purposes of use, disclosure of what is
held, disclosure of the records of provision to third parties (APPI, since 2022),
suspension of provision to one third party, suspension of use, and erasure. Each answer
is built from the policy, the dwelling's consent and the store, and every request is
itself recorded with its outcome (``requests`` table).

The first half of this module is pure (values in, values out); ``ResidentDesk`` is the
thin shell that reads the store and records the request. A consent change does not go
to the store directly while a gateway runs: the gateway holds consent in memory and
would overwrite it. It goes over MQTT on the dwelling panel's settings topic, so the
gateway applies it in order before its next message (spec item 9). ``StoreChannel``
writes to the store instead, for when no gateway is running (it loads consent from
the store when it starts).
"""

from __future__ import annotations

import asyncio
import csv
import enum
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState, apply_change
from intercom_gateway.core.models import (
    SETTINGS_ADAPTER,
    SettingsAck,
    SettingsChange,
    utc_now,
)
from intercom_gateway.core.policy import (
    PartnerRegistry,
    Policy,
    load_partners,
    load_policy,
)
from intercom_gateway.core.router import Router
from intercom_gateway.errors import ConfigError, GatewayError
from intercom_gateway.errors import PendingChange as PendingChange
from intercom_gateway.errors import UnknownDwelling as UnknownDwelling
from intercom_gateway.errors import UnknownPartner as UnknownPartner
from intercom_gateway.resident.purposes import purposes_in_force
from intercom_gateway.resident.tokens import TokenBook
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store
from intercom_gateway.store.sqlite import RequestRow, SqliteStore


class RequestKind(enum.StrEnum):
    PURPOSES = "purposes"  # §8 notification of purposes
    DISCLOSURE = "disclosure"  # §8 disclosure
    PROVISIONS = "provisions"  # §8 / APPI: disclosure of the provision records
    STOP_PROVISION = "stop_provision"  # §8 suspension of provision to a third party
    STOP_USE = "stop_use"  # §8 suspension of use
    ERASURE = "erasure"  # §8 erasure


# --- provision records (pure) ----------------------------------------------------------

CSV_COLUMNS = (
    "at",
    "recipient",
    "recipient_kind",
    "third_party",
    "building_id",
    "dwelling_id",
    "event_id",
    "event_type",
    "items",
    "image",
    "purposes",
    "rule_id",
    "policy_version",
    "decision_id",
    "part",  # event (its facts) or image (the image alone, its own message and purposes)
    "status",  # delivered, unconfirmed (may or may not have reached it) or intended
)


def provisions_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The records as CSV, lists joined with ';' so a spreadsheet shows one cell each."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "items": ";".join(row["items"]),
                "purposes": ";".join(row["purposes"]),
                "third_party": str(row["third_party"]).lower(),
                "image": str(row["image"]).lower(),
            }
        )
    return out.getvalue()


# --- consent changes ---------------------------------------------------------------


def settings_change(
    building_id: str, dwelling_id: str, body: dict[str, Any], *, now: datetime
) -> SettingsChange:
    # Through JSON, as a panel's message arrives: the models are strict about Python types.
    data = {
        "change_id": str(uuid.uuid4()),
        "building_id": building_id,
        "dwelling_id": dwelling_id,
        "requested_at": now.isoformat(),
        "change": body,
    }
    return SETTINGS_ADAPTER.validate_json(json.dumps(data))


def stop_use_bodies(consent: ConsentState, policy: Policy) -> list[dict[str, Any]]:
    """§8 suspension of use: every purpose that may be suspended, every service stopped."""
    opt_outs = [
        {"kind": "purpose_opt_out", "purpose": p, "opted_out": True}
        for p in sorted(policy.opt_out_purposes - set(consent.opted_out))
    ]
    stops = [{"kind": "service_use", "partner_id": s, "used": False} for s in consent.services_used]
    return opt_outs + stops


class ConsentChannel(Protocol):
    """How a resident's change reaches the consent in force."""

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck: ...


class StoreChannel:
    """Apply the change to the store directly: only while no gateway runs on it.

    A running gateway keeps consent in memory and writes its own state back on the
    next panel change, so a change written here would be lost; it reads the store
    only when it starts.
    """

    def __init__(self, policy: Policy, partners: PartnerRegistry) -> None:
        self.policy = policy
        self.partners = partners

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck:
        now = utc_now()
        key = (change.building_id, change.dwelling_id)
        state = await store.consent(*key) or ConsentState.initial(*key)
        result = apply_change(state, change, policy=self.policy, partners=self.partners, now=now)
        await store.save_consent(
            result.state,
            change=change.model_dump_json(),
            change_id=str(change.change_id),
            source="resident-request",
            applied=result.applied,
            detail=result.detail,
            at=now,
        )
        return result.ack(change, now=now)


class MqttChannel:
    """Publish the change as the dwelling panel would, and await the gateway's ack.

    The gateway applies it before the next message it takes and records it in the
    consent history (source ``panel:<device>``; the ``requests`` table links the
    change id to this request).
    """

    def __init__(self, *, host: str, port: int, secrets_dir: Path, timeout: float) -> None:
        self.host = host
        self.port = port
        self.secrets_dir = secrets_dir
        self.timeout = timeout

    async def submit(self, change: SettingsChange, *, store: Store) -> SettingsAck:
        building = change.building_id
        device = await store.dwelling_panel(building, change.dwelling_id)
        if device is None:
            raise GatewayError(f"no dwelling panel for {building}/{change.dwelling_id}")
        return await send_as_panel(
            change,
            device=device,
            host=self.host,
            port=self.port,
            secrets_dir=self.secrets_dir,
            timeout=self.timeout,
        )


async def send_as_panel(
    change: SettingsChange,
    *,
    device: str,
    host: str,
    port: int,
    secrets_dir: Path,
    timeout: float,
) -> SettingsAck:
    """Publish a settings change as the dwelling's panel and await the gateway's ack."""
    from intercom_gateway.broker.mosquitto import load_credentials
    from intercom_gateway.bus import MqttBus

    building = change.building_id
    address = load_credentials(secrets_dir).address(device, host=host, port=port)
    async with MqttBus(
        address, client_id=address.client_id(f"settings-{uuid.uuid4().hex[:6]}")
    ) as bus:
        await bus.subscribe(topics.settings_ack(building, device))
        await bus.publish(
            topics.panel_settings(building, device), change.model_dump_json().encode()
        )
        try:
            return await asyncio.wait_for(_ack_for(bus, change), timeout)
        except TimeoutError:
            raise PendingChange(change, timeout) from None


async def _ack_for(bus: Any, change: SettingsChange) -> SettingsAck:
    async for message in bus.messages():
        ack = SettingsAck.model_validate_json(message.payload)
        if ack.change_id == change.change_id:
            return ack
    raise GatewayError("connection closed before the acknowledgement")


# --- erasure ---------------------------------------------------------------------------

# What an erasure leaves in place, and why (§7(1)①: records already held stay).
KEPT_ON_ERASURE: tuple[dict[str, str], ...] = (
    {
        "what": "provision ledger",
        "why": "the record of each provision to a third party must be kept for its "
        "retention period and disclosed on request; it is purged when it expires",
        "clause": "§8; APPI Art. 29; §7(1)① records already held stay",
    },
    {
        "what": "consent state and consent history",
        "why": "the evidence of what the dwelling agreed to, to which policy version and "
        "when; the gateway enforces it for every next event",
        "clause": "§10; §7(1)①; spec item 9",
    },
    {
        "what": "resident requests",
        "why": "every §8 request, this one included, is kept with its outcome",
        "clause": "§8",
    },
    {
        "what": "decision outcome sets",
        "why": "what a destination got and why, stored once for all the events it was the "
        "same for; a set names no dwelling and no event, and the dwelling's decisions that "
        "referred to it are erased",
        "clause": "§8",
    },
    {
        "what": "completed event ids",
        "why": "random ids without the dwelling, kept so a redelivered event is never "
        "provided twice",
        "clause": "spec item 8",
    },
    {
        "what": "device registry entry",
        "why": "needed to accept the panel's settings; removed with the dwelling",
        "clause": "§2(2) server registration",
    },
    {
        "what": "data held by partner services",
        "why": "the partner holds it as its own personal information; ask the partner "
        "(the provision records say which partners received what)",
        "clause": "§5(1)②; §7(3)(4)",
    },
)


# --- the shell: one desk that answers and records ---------------------------------------


class ResidentDesk:
    """Answers §8 requests for one dwelling at a time and records each one."""

    def __init__(
        self,
        store: SqliteStore,  # the resident tokens are kept on its connection
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
        tokens = await TokenBook.open(store.connection)
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
            "api_tokens": [t.dates() for t in await tokens.tokens(*key)],
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
        body = {"kind": "service_use", "partner_id": partner_id, "used": False}
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
    """A desk over the store at ``settings.db_path`` (which the gateway created)."""
    if not settings.db_path.exists():
        raise ConfigError("no store here: has the gateway run?", path=str(settings.db_path))
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    async with SqliteStore.open(settings.db_path) as store:
        yield ResidentDesk(
            store,
            policy=policy,
            partners=partners,
            channel=channel or StoreChannel(policy, partners),
            via=via,
        )


def mqtt_channel(settings: Settings, *, timeout: float = 10.0) -> MqttChannel:
    """The channel to a running gateway, as configured."""
    return MqttChannel(
        host=settings.broker_host,
        port=settings.broker_port,
        secrets_dir=settings.secrets_dir,
        timeout=timeout,
    )
