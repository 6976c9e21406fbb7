"""Parsing of ``since``/``until`` arguments, shared by every listing, search and statistic.

Accepted forms (UTC unless the value carries a zone):

- ``datetime`` (naive is UTC) and ``date`` objects;
- ISO dates and times: ``2026-05-01``, ``2026-05-01T10:00``, ``2026-05-01 10:00:00+02:00``,
  ``2026-05-01T10:00:00Z``;
- relative spans back from now: ``90s``, ``30m``, ``3h``, ``7d``, ``2w`` (also ``7 days``);
- ``now``, ``today``, ``yesterday``.

A date without a time means the whole day: as ``since`` it is the start of the day, as ``until``
the start of the next day, so ``until="2026-05-01"`` includes all of 1 May.
Bounds are half-open: ``since <= t < until``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .errors import InvalidDate
from .ids import now_us, to_us

When = datetime | date | str
_RELATIVE = re.compile(
    r"\s*(\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?|w|weeks?)\s*(ago)?\s*",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_when(value: When | None, *, end: bool = False) -> int | None:
    """Turn a since/until value into microseconds since the epoch (``None`` stays ``None``).

    ``end`` says the value is an upper bound, which moves a bare date to the next midnight.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_us(value)
    if isinstance(value, date):
        return _day_start(value, end)
    if not isinstance(value, str):
        raise InvalidDate(
            f"a date must be a datetime, a date or a string, not {type(value).__name__}"
        )
    text = value.strip()
    lower = text.lower()
    today = datetime.now(timezone.utc).date()
    if lower == "now":
        return now_us()
    if lower == "today":
        return _day_start(today, end)
    if lower == "yesterday":
        return _day_start(today - timedelta(days=1), end)
    m = _RELATIVE.fullmatch(text)
    if m:
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)[0].lower()]
        return now_us() - seconds * 1_000_000
    if _DATE_ONLY.fullmatch(text):
        try:
            return _day_start(date.fromisoformat(text), end)
        except ValueError as e:
            raise InvalidDate(f"date {value!r} is not a real date: {e}") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidDate(
            f"cannot read {value!r} as a date: use an ISO date or time (2026-05-01, "
            "2026-05-01T10:00Z), a span back from now (30m, 3h, 7d, 2w) or today/yesterday"
        ) from None
    return to_us(parsed)


def parse_range(since: When | None, until: When | None) -> tuple[int | None, int | None]:
    """Parse both bounds and refuse a range that ends before it starts."""
    lo = parse_when(since)
    hi = parse_when(until, end=True)
    if lo is not None and hi is not None and hi < lo:
        raise InvalidDate(f"until ({until!r}) is before since ({since!r}); swap them")
    return lo, hi


def _day_start(day: date, end: bool) -> int:
    if end:
        day = day + timedelta(days=1)
    return to_us(datetime(day.year, day.month, day.day, tzinfo=timezone.utc))
