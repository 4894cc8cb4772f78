"""Date bounds of the API and the CLI: checked before any arithmetic (issue 13, item 8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercom_gateway.core.dates import DateBoundError, check_bound, check_order, parse_bound


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0001-01-01T00:00:00+14:00", "date: year 1 is outside 2000..2999"),
        ("9999-12-31T23:59:59-14:00", "year 9999 is outside"),
        ("0001-01-01T00:00:00+00:01", "year 1 is outside"),
        ("1999-12-31T23:59:59.999999", "year 1999 is outside"),
        ("3000-01-01", "year 3000 is outside"),
        ("2026-04-01T00:00:00+14:00:01", "offset +14:00:01 is outside ±14:00"),
        ("2026-04-01T00:00:00-14:01", "offset -14:01 is outside ±14:00"),
        ("2026-04-01T00:00:00+23:59", "offset +23:59"),
        ("garbage", "'garbage' is not an ISO 8601 date or date-time"),
        ("", "is not an ISO 8601"),
        ("2026-02-30", "is not an ISO 8601"),
        ("2026-04-01T24:00:01", "is not an ISO 8601"),
        ("2026-04-01T00:00:00+24:00", "is not an ISO 8601"),
        ("1" * 1000, "'" + "1" * 40 + "...' is not"),  # not read, nor echoed whole
        ("2026-04-01T09:00:00.000000+09:00:00" + " " * 30, "is not an ISO 8601"),
    ],
)
def test_a_bad_bound_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(DateBoundError) as refused:
        parse_bound(text)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 160


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-04-01", "2026-04-01T00:00:00+00:00"),  # a date is midnight UTC
        ("2026-04-01T09:00:00+09:00", "2026-04-01T00:00:00+00:00"),
        ("2026-04-01T09:00:00Z", "2026-04-01T09:00:00+00:00"),
        ("2000-01-01T00:00:00+14:00", "1999-12-31T10:00:00+00:00"),  # the edges convert
        ("2999-12-31T23:59:59-14:00", "3000-01-01T13:59:59+00:00"),
        (" 2026-04-01 ", "2026-04-01T00:00:00+00:00"),
    ],
)
def test_a_good_bound_is_zone_aware(text: str, utc: str) -> None:
    assert parse_bound(text).astimezone(UTC).isoformat() == utc


def test_the_name_of_the_bound_leads_the_message() -> None:
    with pytest.raises(DateBoundError, match=r"^--from: year 1 "):
        parse_bound("0001-01-01", name="--from")


def test_order_is_compared_as_instants() -> None:
    tokyo = timezone(timedelta(hours=9))
    check_order(datetime(2026, 4, 1, 9, tzinfo=tokyo), datetime(2026, 4, 1, tzinfo=UTC))
    check_order(None, datetime(2026, 4, 1, tzinfo=UTC))
    with pytest.raises(DateBoundError, match=r"^from \(2026-04-01T09:00:01\+09:00\) is after"):
        check_order(datetime(2026, 4, 1, 9, 0, 1, tzinfo=tokyo), datetime(2026, 4, 1, tzinfo=UTC))


@given(
    moment=st.datetimes(),
    offset=st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    zoned=st.booleans(),
)
def test_any_datetime_is_either_refused_or_converts_safely(
    moment: datetime, offset: int, zoned: bool
) -> None:
    """The property the ledger query needs: an accepted bound converts to UTC without
    overflow and stays a four-digit year, so UTC text comparison orders it."""
    if zoned:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    try:
        checked = check_bound(moment)
    except DateBoundError:
        assert not 2000 <= moment.year <= 2999 or (zoned and abs(offset) > 14 * 60)
        return
    text = checked.astimezone(UTC).isoformat()
    assert 1999 <= int(text[:4]) <= 3000 and len(text.split("-")[0]) == 4
    assert parse_bound(moment.isoformat()) == checked
