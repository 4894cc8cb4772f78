"""Decision log round trip: what the gateway stores reads back, and ``explain --event-id``
prints, exactly what the row made the obvious way (``decision_outcomes``) gives."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from intercom_gateway.core.decide import decide
from intercom_gateway.core.models import EventType
from intercom_gateway.core.outcomes import Decision
from intercom_gateway.core.plan import decision_outcomes
from intercom_gateway.core.plan import decision_row as _decision_row
from intercom_gateway.core.policy import default_policy, sample_partners
from intercom_gateway.core.router import Router
from intercom_gateway.gateway.explain import explain_logged, render_logged
from intercom_gateway.settings import Settings
from intercom_gateway.store import open_store
from tests.unit.conftest import NOW
from tests.unit.test_decision import consent, make_event


def slow_row(decision: Decision) -> dict[str, Any]:
    return {
        "event_id": str(decision.event_id),
        "decision_id": str(decision.decision_id),
        "building_id": decision.building_id,
        "dwelling_id": decision.dwelling_id,
        "event_type": decision.event_type.value,
        "decided_at": decision.decided_at.isoformat(),
        "policy_version": decision.policy_version,
        "consent_revision": decision.consent_revision,
        "outcomes": decision_outcomes(decision),
    }


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"services_used": ("concierge",), "opted_out": ("marketing",)},
        {"provision_stopped": ("elder-watch",), "return_home_enabled": True},
    ],
    ids=["all-services", "one-service-opted-out", "provision-stopped"],
)
async def test_explain_of_a_logged_event_is_unchanged(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    policy, partners = default_policy(), sample_partners()
    router = Router.compile(policy, partners)
    settings = Settings(db_path=tmp_path / "gateway.sqlite", log_events=False)
    decisions = [
        decide(
            make_event(event_type, image=True, text='鍵 "quoted" §'),
            consent(policy, **state),
            router=router,
            gateway_id="gw-1",
            decision_id=uuid.uuid4(),
            now=NOW,
        )
        for event_type in EventType
    ]
    async with open_store(settings) as store:
        for decision in decisions:
            store.record_decision(_decision_row(decision))
        await store.flush()
        for decision in decisions:
            logged = await store.decision(str(decision.event_id))
            assert logged is not None and logged.as_dict() == slow_row(decision)
    for decision in decisions:
        event_id, expected = str(decision.event_id), slow_row(decision)
        assert await explain_logged(settings, event_id) == render_logged(expected)
        assert await explain_logged(settings, event_id, as_json=True) == json.dumps(
            expected, indent=2
        )
