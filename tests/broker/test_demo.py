"""The demo, as `scripts/demo` runs it: every event kind flows from simulated panels
through a real Mosquitto and the gateway to the cloud, partners and analytics."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from intercom_gateway.core.distributions import USAGE_EVENTS
from intercom_gateway.core.models import EventType
from intercom_gateway.qa.demo import run_demo


async def test_the_demo_shows_every_kind_reaching_its_destinations(tmp_path: Path) -> None:
    output = io.StringIO()
    view = await run_demo(
        console=Console(file=output, width=200),
        workdir=tmp_path,
        duration=4,
        seed=3,
        acceleration=7200,
    )
    # Read receipts and answers need a contractor's distribution first: not in the demo.
    kinds = set(EventType) - USAGE_EVENTS
    assert set(view.sent_by_type) == {kind.value for kind in kinds}
    assert {"cloud", "group", "partners", "analytics", "app"} <= set(view.arrived_by_kind)
    # The tour alone forwards every kind to the cloud; the simulators add more.
    assert view.arrived_by_kind["cloud"] >= len(kinds)
    text = output.getvalue()
    for kind in kinds:
        assert re.search(rf"cloud/v1/\S+/\S+/{kind.value}\b", text), kind
    assert "settings ack return-home notification off" in text
    # The simulated clock stays inside the gateway's window: no simulated event is
    # rejected (it once sent 61% stale ones); only the demo's deliberate bad input is.
    assert view.rejected_by_reason == {}
    assert all(
        view.rejected_on_purpose[reason] <= sent
        for reason, sent in view.bad_input_by_reason.items()
    )
    assert text.count("Totals") == 1
