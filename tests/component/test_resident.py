"""Resident requests (§8) and ledger retention over a real store filled by the gateway on
the in-memory bus: each request through the CLI, on SQLite and on PostgreSQL
(``--store``)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from intercom_gateway.bus import MemoryBroker, Message
from intercom_gateway.cli.main import main
from intercom_gateway.core import topics
from intercom_gateway.core.models import utc_now
from intercom_gateway.gateway.service import Gateway
from intercom_gateway.resident.service import CSV_COLUMNS
from intercom_gateway.settings import Settings
from intercom_gateway.store import Store, open_store
from tests.conftest import SAMPLE_SERVICES
from tests.factories import event_dict, gateway_settings, ledger_row, panel_message
from tests.stores import store_args

# (dwelling, event type) -> what the sample registry sends where (every dwelling uses all
# three sample services): visitor to concierge, delivery box to concierge and
# parcel-unlock, alarm to elder-watch; group joint use for all of them.
EVENTS = [("d0001", "visitor"), ("d0001", "delivery_box"), ("d0001", "alarm")]
EVENTS += [("d0002", "visitor"), ("d0002", "alarm")]


async def _populate(tmp_path: Path) -> Settings:
    settings = gateway_settings(tmp_path)
    async with open_store(settings) as store:
        gateway = await Gateway.load(settings, store)
        bus = MemoryBroker().client("gateway")
        gateway._bus = bus  # handle() is driven directly, as in the gateway component tests
        messages = [panel_message(event_dict(t, dwelling=d)) for d, t in EVENTS]
        # One malformed message from each of d0001's and d0002's own panels.
        for dwelling in ("d0001", "d0002"):
            device = f"panel-b001-{dwelling}"
            messages.append((topics.panel_events("b001", device, "alarm"), b"{not json"))
        for mid, (topic, payload) in enumerate(messages, 1):
            await gateway.handle(bus, Message(topic=topic, payload=payload, qos=1, mid=mid))
        await gateway.finish_in_flight()
    return settings


@pytest.fixture
def settings(tmp_path: Path, both_stores: str) -> Settings:
    return asyncio.run(_populate(tmp_path))


def _store(settings: Settings, work: Any) -> Any:
    async def go() -> Any:
        async with open_store(settings) as store:
            answer = await work(store)
        # The store answers with typed values; these tests read them as the CLI shows them.
        return [a.as_dict() for a in answer] if isinstance(answer, list) else answer

    return asyncio.run(go())


def _cli(settings: Settings, *args: str) -> Any:
    result = CliRunner().invoke(main, [*args, *store_args(settings)])
    assert result.exit_code == 0, result.output
    return result.output


def _json_cli(settings: Settings, *args: str) -> Any:
    return json.loads(_cli(settings, *args))


# --- retention ---------------------------------------------------------------------------


def _aged_rows(settings: Settings, days: list[int]) -> None:
    async def add(store: Store) -> None:
        [template] = await store.provisions(dwelling_id="d0001", limit=1)
        row = ledger_row(at=utc_now(), event_id="", decision_id=template.decision_id)
        store.record_provisions(
            replace(row, at=utc_now() - timedelta(days=age), event_id=f"aged-{age}") for age in days
        )
        await store.flush()

    _store(settings, add)


def test_purge_deletes_only_rows_older_than_the_retention(settings: Settings) -> None:
    _aged_rows(settings, [1_097, 1_200, 1_095, 400])
    before = _store(settings, lambda s: s.provisions())
    answer = _json_cli(settings, "ledger", "purge")
    after = _store(settings, lambda s: s.provisions())
    assert answer["deleted"] == 2 and answer["days"] == 1_096
    assert {r["event_id"] for r in before} - {r["event_id"] for r in after} == {
        "aged-1097",
        "aged-1200",
    }


def test_purge_with_a_shorter_retention_keeps_the_recent_rows(settings: Settings) -> None:
    _aged_rows(settings, [31, 29])
    fresh = len(_store(settings, lambda s: s.provisions())) - 2
    answer = _json_cli(settings, "ledger", "purge", "--older-than-days", "30")
    remaining = _store(settings, lambda s: s.provisions())
    assert answer["deleted"] == 1
    ids = {r["event_id"] for r in remaining}
    assert "aged-29" in ids and "aged-31" not in ids
    assert len(remaining) == fresh + 1


# --- each request through the CLI ----------------------------------------------------------


def test_cli_purposes_names_each_partner_with_its_event_kinds(settings: Settings) -> None:
    answer = _json_cli(settings, "resident", "purposes", "b001", "d0001")
    flows = {
        d["destination"]: {f["event_type"] for f in d["flows"]} for d in answer["destinations"]
    }
    assert flows["partner:concierge"] == {"visitor", "delivery_box"}
    assert flows["partner:elder-watch"] == {
        "return_home",
        "alarm",
        "security",
        "device_control",
        "device_state",
    }
    assert flows["partner:parcel-unlock"] == {"unlock_mode", "delivery_box"}
    assert (
        "image"
        not in next(
            f for d in answer["destinations"] if d["destination"] == "group" for f in d["flows"]
        )["fields"]
    )
    assert answer["can_opt_out"] == ["direct_mail", "marketing", "profiling"]


def test_cli_disclose_counts_what_is_held_for_this_dwelling_only(settings: Settings) -> None:
    answer = _json_cli(settings, "resident", "disclose", "b001", "d0001")
    assert answer["decision_log"]["events"] == 3
    recipients = {r["recipient"]: r["n"] for r in answer["provision_ledger"]["by_recipient"]}
    # One row per message: concierge got the visitor's facts and, in a message of its
    # own, its image (two provisions), and the delivery-box event.
    assert recipients == {
        "group": 3,
        "partner:concierge": 3,
        "partner:elder-watch": 1,
        "partner:parcel-unlock": 1,
    }
    assert [r["reason"] for r in answer["rejected_input"]] == ["malformed_json"]
    assert "panel-b001-d0001" in answer["rejected_input"][0]["topic"]
    assert answer["consent"]["dwelling_id"] == "d0001"


def test_cli_provisions_as_json_and_csv_within_a_range(settings: Settings) -> None:
    answer = _json_cli(settings, "resident", "provisions", "b001", "d0001")
    assert len(answer["records"]) == 8  # the visitor's image is a provision of its own
    assert {r["dwelling_id"] for r in answer["records"]} == {"d0001"}
    assert {r["recipient"] for r in answer["records"] if not r["third_party"]} == {"group"}
    text = _cli(settings, "resident", "provisions", "b001", "d0001", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sorted((r["event_id"], r["recipient"], r["part"]) for r in rows) == sorted(
        (r["event_id"], r["recipient"], r["part"]) for r in answer["records"]
    )
    image = next(r for r in rows if r["recipient"] == "partner:concierge" and r["image"] == "true")
    assert "image" in image["items"].split(";")
    # The image was provided for resident confirmation only, under its own rule; the
    # visitor's facts, in their own row, without it, for partner provision (§3(3)).
    assert (image["part"], image["purposes"], image["rule_id"]) == (
        "image",
        "resident_confirmation",
        "partner-images",
    )
    facts = next(
        r
        for r in rows
        if r["recipient"] == "partner:concierge"
        and r["event_id"] == image["event_id"]
        and r["part"] == "event"
    )
    assert (facts["image"], facts["purposes"], facts["rule_id"]) == (
        "false",
        "partner_provision",
        "partner-events",
    )
    assert "image" not in facts["items"].split(";")
    tomorrow = (utc_now() + timedelta(days=1)).date().isoformat()
    later = _json_cli(settings, "resident", "provisions", "b001", "d0001", "--from", tomorrow)
    assert later["records"] == []


def test_cli_stop_provision_offline_changes_the_stored_consent(settings: Settings) -> None:
    args = ("resident", "stop-provision", "b001", "d0001", "concierge", "--offline")
    answer = _json_cli(settings, *args)
    assert answer["outcome"] == "done" and answer["changes"][0]["applied"] is True
    consent = _store(settings, lambda s: s.consent("b001", "d0001"))
    assert consent.provision_stopped == ("concierge",)
    assert "concierge" not in consent.services_used
    history = _store(settings, lambda s: s.consent_history("b001", "d0001"))
    assert history[-1]["source"] == "resident-request"
    other = _store(settings, lambda s: s.consent("b001", "d0002"))
    assert "concierge" in other.services_used


def test_cli_stop_use_suspends_every_optional_purpose_and_service(settings: Settings) -> None:
    answer = _json_cli(settings, "resident", "stop-use", "b001", "d0002", "--offline")
    assert answer["outcome"] == "done"
    consent = _store(settings, lambda s: s.consent("b001", "d0002"))
    assert consent.opted_out == ("direct_mail", "marketing", "profiling")
    assert consent.services_used == ()
    assert consent.provision_stopped == tuple(sorted(SAMPLE_SERVICES))
    purposes = _json_cli(settings, "resident", "purposes", "b001", "d0002")
    assert not any(d["destination"].startswith("partner:") for d in purposes["destinations"])


def test_cli_erase_keeps_the_ledger_and_consent_and_says_why(settings: Settings) -> None:
    ledger_before = _store(settings, lambda s: s.provisions())
    answer = _json_cli(settings, "resident", "erase", "b001", "d0001", "--yes")
    assert answer["erased"] == {"decisions": 3, "rejections": 1}
    assert {k["what"] for k in answer["kept"]} >= {
        "provision ledger",
        "consent state and consent history",
    }
    assert all(k["why"] and k["clause"] for k in answer["kept"])
    assert _store(settings, lambda s: s.provisions()) == ledger_before
    left = _json_cli(settings, "resident", "disclose", "b001", "d0002")
    assert left["decision_log"]["events"] == 2 and len(left["rejected_input"]) == 1


def test_every_request_is_recorded_with_its_outcome(settings: Settings) -> None:
    _cli(settings, "resident", "purposes", "b001", "d0001")
    _cli(settings, "resident", "provisions", "b001", "d0001")
    _cli(settings, "resident", "stop-provision", "b001", "d0001", "elder-watch", "--offline")
    _cli(settings, "resident", "erase", "b001", "d0001", "--yes")
    answer = _json_cli(settings, "resident", "disclose", "b001", "d0001")
    kinds = [(r["kind"], r["outcome"], r["via"]) for r in answer["requests"]]
    assert kinds == [
        ("purposes", "done", "cli"),
        ("provisions", "done", "cli"),
        ("stop_provision", "done", "cli"),
        ("erasure", "done", "cli"),
    ]
    assert _json_cli(settings, "resident", "disclose", "b001", "d0002")["requests"] == []


def test_cli_refuses_an_unknown_dwelling(settings: Settings) -> None:
    result = CliRunner().invoke(
        main, ["resident", "purposes", "b001", "d0999", *store_args(settings)]
    )
    assert result.exit_code == 1 and "unknown dwelling b001/d0999" in result.output


def test_purge_in_small_chunks_still_deletes_every_expired_row_and_only_those(
    settings: Settings,
) -> None:
    _aged_rows(settings, [2_000, 1_500, 1_100, 1_000])
    cutoff = utc_now() - timedelta(days=1_096)
    deleted = _store(settings, lambda s: s.purge_ledger(before=cutoff, chunk=1))
    ids = {r["event_id"] for r in _store(settings, lambda s: s.provisions())}
    assert deleted == 3
    assert "aged-1000" in ids and not ids & {"aged-2000", "aged-1500", "aged-1100"}
