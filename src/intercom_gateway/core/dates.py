"""The dates a person may give the API and the CLI as query bounds, checked before use.

A bound is an ISO 8601 date or date-time; without a zone it is UTC, as the ledger is.
Every bound is range-checked before any arithmetic, because converting an edge of the
calendar to UTC overflows (``0001-01-01T00:00:00+14:00`` is in year 0 in UTC, which
``datetime`` cannot hold) and that used to answer 500 in the API and a traceback in the
CLI (issue 13, item 8).

The accepted range is years 2000 to 2999, offsets within ±14:00:

- no record of this gateway can be older than 2000 (the first privacy policy it
  enforces is of 2026) and a query bound beyond 2999 says nothing a bound of 2999
  does not; a caller who wants "everything" leaves the bound out;
- ±14:00 is the widest offset any place on Earth uses (UTC+14 in Kiribati, UTC-12 on
  Baker Island), and ISO 8601 / RFC 3339 profiles use the same limit;
- with both limits every bound converts to UTC without overflow and stays a four-digit
  year, so the ledger's text comparison of UTC timestamps orders it correctly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from intercom_gateway.errors import DateBoundError as DateBoundError

MIN_YEAR = 2000
MAX_YEAR = 2999
MAX_OFFSET = timedelta(hours=14)
# The longest ISO date-time with room to spare: 2026-04-01T09:00:00.000000+09:00:00 is 41.
MAX_LENGTH = 64


def parse_bound(text: str, *, name: str = "date") -> datetime:
    """An ISO date or date-time within the accepted range, zone-aware (UTC if none given)."""
    try:
        if len(text) > MAX_LENGTH:  # fromisoformat reads "1" * 1000 as a date-time
            raise ValueError(text)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DateBoundError(
            f"{name}: {_shown(text)} is not an ISO 8601 date or date-time"
            " (e.g. 2026-04-01 or 2026-04-01T09:00:00+09:00)"
        ) from None
    return check_bound(moment, name=name)


def check_bound(moment: datetime, *, name: str = "date") -> datetime:
    """``moment`` if it is within the accepted range; naive means UTC."""
    offset = moment.utcoffset()
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise DateBoundError(
            f"{name}: offset {_offset(offset)} is outside ±14:00 (the widest in use on Earth)"
        )
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise DateBoundError(
            f"{name}: year {moment.year} is outside {MIN_YEAR}..{MAX_YEAR};"
            " leave the bound out to mean no limit"
        )
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_order(start: datetime | None, end: datetime | None) -> None:
    """``from`` may not be after ``to`` (equal bounds are an empty range, not an error)."""
    if start is not None and end is not None and start > end:
        raise DateBoundError(
            f"from ({start.isoformat()}) is after to ({end.isoformat()}):"
            " from is inclusive, to exclusive"
        )


def _offset(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    seconds = int(abs(offset).total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")


def _shown(text: str) -> str:
    # The message is one line in a terminal or a JSON body: never echo a long input whole.
    return repr(text if len(text) <= 40 else text[:40] + "...")
