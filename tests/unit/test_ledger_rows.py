"""Ledger rows on the event path: the parameters stored equal the obvious encoding."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

from hypothesis import given

from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import Event
from intercom_gateway.core.plan import LEDGER as _LEDGER
from intercom_gateway.core.plan import provision_row as _provision
from intercom_gateway.core.policy import PartnerRegistry
from intercom_gateway.core.tags import Part
from intercom_gateway.store.sqlite import LedgerRow
from tests.factories import ledger_row

from .conftest import NOW
from .test_decision import _POLICY_FOR_STRATEGIES, _PROPERTY, run, scenarios


def _obvious(row: LedgerRow) -> tuple[object, ...]:
    return (
        row.at.isoformat(),
        row.recipient,
        row.recipient_kind,
        int(row.third_party),
        row.building_id,
        row.dwelling_id,
        row.event_id,
        row.event_type,
        json.dumps(list(row.items)),
        int(row.image),
        json.dumps(list(row.purposes)),
        row.rule_id,
        row.policy_version,
        row.decision_id,
        row.part,
    )


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_provision_rows_of_a_decision_are_stored_as_before(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event, state, partners = scenario
    decision = run(event, state, _POLICY_FOR_STRATEGIES, partners)
    ids = str(decision.event_id), str(decision.decision_id)
    for outcome in decision.forwarded:
        if outcome.provision not in _LEDGER:
            continue
        # One row per message: the event's facts and its image are separate provisions,
        # each with its own items, purposes and single rule.
        for copy in outcome.copies:
            row = _provision(decision, outcome, copy, NOW, *ids)
            assert row.as_params() == _obvious(row)
            assert row.as_params() == _obvious(row)  # now from the cache
            assert (row.event_id, row.decision_id) == ids
            assert (row.recipient, row.rule_id) == (outcome.destination, copy.rule_id)
            assert (row.items, row.purposes) == (copy.fields, copy.purposes)
            assert row.image == ("image" in copy.fields) == (copy.part is Part.IMAGE)
            assert row.part == copy.part.value


def test_rows_with_other_lists_do_not_share_an_encoding() -> None:
    template = ledger_row(event_id=str(uuid.uuid4()), decision_id=str(uuid.uuid4()))
    for items, purposes in [(("a",), ("p",)), (("a", "b"), ()), ((), ("p", "q")), (("é",), ("§",))]:
        row = replace(template, items=items, purposes=purposes)
        assert row.as_params() == _obvious(row)
