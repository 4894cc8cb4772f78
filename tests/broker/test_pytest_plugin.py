"""The pytest plugin, as an integrator uses it: the README's example runs in a separate
pytest, with pytest-asyncio in auto mode and in strict mode, against a real Mosquitto."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The Python block of the README's "Testing your partner integration" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Testing your partner integration", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README section has no Python example"
    return match.group(1)


def test_the_readme_example_passes_in_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_concierge_subscriber=readme_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2)


STRICT = """
import pytest

from intercom_gateway.core.models import ReturnHomeNotification


@pytest.mark.asyncio
async def test_elder_watch_gets_return_home_without_image(intercom_panels, intercom_partner):
    elder_watch = await intercom_partner("elder-watch")
    sent = await intercom_panels.send("return_home", dwelling="d0003")
    envelope = await elder_watch.next()
    assert envelope.event["event_id"] == sent["event_id"]
    assert "image" not in envelope.event and "key_nickname" not in envelope.event


@pytest.mark.asyncio
async def test_return_home_off_stops_it(intercom_panels, intercom_partner, intercom_gateway):
    elder_watch = await intercom_partner("elder-watch")
    await intercom_panels.change_settings(
        ReturnHomeNotification(enabled=False), dwelling="d0004"
    )
    sent = await intercom_panels.send("return_home", dwelling="d0004")
    await intercom_panels.processed()
    decision = await intercom_gateway.gateway.store.decision(sent["event_id"])
    assert decision is None or not any(o["forwarded"] for o in decision.outcomes)
    alarm = await intercom_panels.send("alarm", dwelling="d0004")
    envelope = await elder_watch.next()
    assert envelope.event["event_id"] == alarm["event_id"]


@pytest.mark.asyncio
async def test_the_unlock_image_comes_on_its_own_in_either_order(
    intercom_panels, intercom_partner
):
    parcel = await intercom_partner("parcel-unlock")
    sent = await intercom_panels.send("unlock_mode", dwelling="d0002")
    image = await parcel.next_image()  # the operation, if first, is set aside for next()
    envelope = await parcel.next()
    assert str(image.event_id) == str(envelope.event_id) == sent["event_id"]
    assert sorted(image.purposes) == ["unlock_service_security", "unlock_visitor_confirmation"]
    assert image.event["image"] == sent["image"] and "result" not in image.event
    assert "image" not in envelope.event and envelope.purposes == ("partner_provision",)


@pytest.mark.asyncio
async def test_panels_keep_their_events_until_a_receipt_names_them(intercom_panels):
    for dwelling in ("d0001", "d0002", "d0003"):
        await intercom_panels.send("visitor", dwelling=dwelling)
    await intercom_panels.confirmed()
    assert len(intercom_panels.outbox) == 0
    assert intercom_panels.outbox.confirmed == 3
"""


def test_the_fixtures_work_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_strict=STRICT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=4)
