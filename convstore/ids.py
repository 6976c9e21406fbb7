"""Identifiers and timestamps.

Record ids sort by the time they were made and are unique across clones without coordination:
14 hex digits of microseconds since the epoch, then 12 hex digits of randomness (48 bits).
Timestamps travel as ISO-8601 UTC strings with exactly six fractional digits and a ``Z``.
"""

from __future__ import annotations

import calendar
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone

from .errors import InvalidDate, InvalidSessionId

SESSION_ID_MAX = 128
# The documented charset (docs/FORMAT.md): ASCII letters, digits, '_', '-', '.', starting with a
# letter, digit or '_'. No separators, so an id is always exactly one folder name.
_SESSION_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
# Names Windows refuses as file names, whatever the extension; refused everywhere so that a
# store stays portable between machines.
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
# Reserved too, by newer Windows documentation; refused for new ids only, since stores made
# before may hold them.
_WINDOWS_RESERVED_NEW = frozenset(["COM0", "LPT0"])
_RECORD_ID = re.compile(r"[0-9a-f]{26}")

_clock_lock = threading.Lock()
_last_us = 0


def now_us(count: int = 1) -> int:
    """Microseconds since the epoch, strictly increasing within this process.

    Appends from one process therefore never share a timestamp, which keeps their order
    stable when readers sort by (created_at, id). A wall clock that steps back is absorbed by
    keeping the last value plus one microsecond. ``count`` reserves that many consecutive
    values (a batch's records) and returns the first.
    """
    global _last_us
    with _clock_lock:
        t = time.time_ns() // 1000
        if t <= _last_us:
            t = _last_us + 1
        _last_us = t + max(count, 1) - 1
        return t


def new_id(at_us: int | None = None) -> str:
    """A fresh record id: time-sortable, 26 lowercase hex characters."""
    return new_ids(now_us() if at_us is None else at_us, 1)[0]


def new_ids(first_us: int, count: int) -> list[str]:
    """Fresh ids for ``count`` consecutive microseconds from ``first_us`` (a batch's records,
    after ``now_us(count)``), with one read of the random source for all of them."""
    noise = os.urandom(6 * count).hex()
    return [
        f"{(first_us + i) & 0xFFFFFFFFFFFFFF:014x}{noise[12 * i : 12 * i + 12]}"
        for i in range(count)
    ]


def is_record_id(value: str) -> bool:
    return bool(_RECORD_ID.fullmatch(value))


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it may name a folder in the store, else raise."""
    if not isinstance(session_id, str):
        raise InvalidSessionId(f"session id must be a string, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidSessionId("session id is empty; pass a name or omit it to get a new id")
    if len(session_id) > SESSION_ID_MAX:
        raise InvalidSessionId(
            f"session id is {len(session_id)} characters long; the limit is {SESSION_ID_MAX}"
        )
    if not _SESSION_ID.fullmatch(session_id) or ".." in session_id:
        raise InvalidSessionId(
            f"session id {session_id!r} is not allowed: use letters, digits, '_', '-' and '.', "
            "start with a letter, digit or '_', and do not use '..'"
        )
    if session_id.split(".")[0].upper() in _WINDOWS_RESERVED:
        raise InvalidSessionId(
            f"session id {session_id!r} is a reserved device name on Windows; choose another"
        )
    return session_id


def validate_new_session_id(session_id: object) -> str:
    """Return ``session_id`` if a new session may take it, else raise.

    Stricter than :func:`validate_session_id`, which every access uses: a rule added for
    portability refuses new ids only, so a store that already holds such a folder still opens
    and reads it (``check`` reports it as not portable).
    """
    sid = validate_session_id(session_id)
    problem = portability_problem(sid)
    if problem is not None:
        raise InvalidSessionId(f"session id {sid!r} {problem}; choose another")
    return sid


def portability_problem(session_id: str) -> str | None:
    """Why a valid id cannot name a folder on every system a store may be cloned to, or None."""
    if session_id.endswith("."):
        # Windows strips trailing dots: 'abc.' would open or create the folder 'abc'.
        return "ends with '.', which Windows drops from folder names"
    if session_id.split(".")[0].upper() in _WINDOWS_RESERVED_NEW:
        return "is a reserved device name on Windows"
    return None


def fold_case(session_id: str) -> str:
    """The form under which case-insensitive file systems (macOS, Windows) compare names.

    Ids are ASCII, so lower() is exact; two ids with the same fold would share one folder.
    """
    return session_id.lower()


# Times outside years 1000-9999 are refused: four-digit years keep the on-disk form fixed-width
# (so that it sorts as text and parses back), and DuckDB and Parquet readers handle them all.
MIN_US = -30_610_224_000_000_000  # 1000-01-01T00:00:00Z
MAX_US = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z


def check_us(us: int) -> int:
    if not MIN_US <= us < MAX_US:
        raise InvalidDate(
            f"{_describe(us)} is outside the years 1000 to 9999 that convstore stores; "
            "pass a real date (or none, for now)"
        )
    return us


def _describe(us: int) -> str:
    try:
        return from_us(us).isoformat()
    except OverflowError:
        return f"a time {us} us from 1970"


def format_us(us: int) -> str:
    """Format microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if not MIN_US <= us < MAX_US:
        check_us(us)
    # Every append formats a time: a day's date is made once, the rest from a table.
    day, rest = divmod(us, 86_400_000_000)
    date = _dates.get(day)
    if date is None:
        date = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
        if len(_dates) < 100_000:
            _dates[day] = date
    sec, frac = divmod(rest, 1_000_000)
    two = _TWO_DIGITS
    return f"{date}{two[sec // 3600]}:{two[sec // 60 % 60]}:{two[sec % 60]}.{frac:06d}Z"


# "YYYY-MM-DDT" by day since the epoch, and "00" to "59".
_dates: dict[int, str] = {}
_TWO_DIGITS = tuple(f"{i:02d}" for i in range(60))


_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
# Start of day (seconds) by "YYYY-MM-DD": replaying a million records parses a million times,
# but they fall on a few hundred days. Validating and converting a day once halves replay time.
_days: dict[str, int] = {}


def parse_us(text: str) -> int:
    """Parse the on-disk timestamp form back to microseconds (fast path, strict)."""
    try:
        if isinstance(text, str) and _STAMP.fullmatch(text):
            day = _days.get(text[:10])
            if day is None:
                # datetime() refuses 31 February, which timegm would turn into 3 March.
                ymd = datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]))
                day = calendar.timegm(ymd.timetuple())
                if len(_days) < 100_000:
                    _days[text[:10]] = day
            hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
            if hour > 23 or minute > 59 or second > 59:
                raise ValueError("hour, minute or second out of range")
            us = (day + hour * 3600 + minute * 60 + second) * 1_000_000 + int(text[20:26])
            return check_us(us)
        return check_us(to_us(datetime.fromisoformat(text.replace("Z", "+00:00"))))
    except (ValueError, TypeError, OverflowError, AttributeError) as e:
        raise InvalidDate(f"timestamp {text!r} is not ISO-8601: {e}") from None


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime; naive datetimes are taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        delta = dt - _EPOCH
    except OverflowError:
        raise InvalidDate(f"{dt!r} cannot be expressed in UTC; pass a real date") from None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
