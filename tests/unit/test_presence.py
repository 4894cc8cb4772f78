"""What the gateway check says for each retained status it may find (pure: ``judge``)."""

from __future__ import annotations

import pytest

from intercom_gateway.core import topics
from intercom_gateway.errors import NoGateway
from intercom_gateway.gateway.presence import HINT, judge
from intercom_gateway.gateway.status import status_payload

WHERE = "127.0.0.1:1883"


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        (None, f"no retained status on {topics.STATUS}"),
        (b"hello", f"{topics.STATUS} holds something that is not a status"),
        (status_payload("gw-2", "online"), "the status is of gateway 'gw-2', not 'gw-1'"),
        (status_payload("gw-1", "offline"), "gateway 'gw-1' is offline since "),
    ],
)
def test_anything_but_our_gateway_online_is_one_line_with_a_hint(
    payload: bytes | None, found: str
) -> None:
    with pytest.raises(NoGateway) as refused:
        judge(WHERE, payload, gateway_id="gw-1")
    line = str(refused.value)
    assert line.startswith(f"no intercom gateway answers on {WHERE} ({found}")
    assert line.endswith(f"): {HINT}") and "\n" not in line


def test_our_gateway_online_passes_and_offline_passes_when_asked() -> None:
    assert judge(WHERE, status_payload("gw-1", "online"), gateway_id="gw-1").state == "online"
    offline = status_payload("gw-1", "offline")
    assert judge(WHERE, offline, gateway_id="gw-1", offline_ok=True).state == "offline"
