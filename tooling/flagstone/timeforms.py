"""The time forms the CLI accepts (``show --at``, ``served --at``, ``stage --at``).

Accepted, all read as UTC unless they carry an offset::

    2026-11-10                   midnight UTC that day
    2026-11-10T09:30             minutes (a space instead of T works too)
    2026-11-10T09:30:15          seconds, optionally with a fraction (.5)
    2026-11-10T09:30Z            any of the above with Z ...
    2026-11-10T09:30+01:00       ... or a UTC offset (+0100 works too)
    1794297600                   Unix seconds

Standard library only.
"""

from __future__ import annotations

import datetime as dt
import re

from flagstone.errors import UsageError

TIME_FORMS = (
    "2026-11-10, 2026-11-10T09:30, 2026-11-10T09:30:15, each optionally with Z or an "
    "offset like +01:00 (UTC when none), or Unix seconds"
)
_FORM = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?)?"
    r"(?P<zone>Z|z|[+-]\d{2}:?\d{2})?"
)


def looks_like_time(text: str) -> bool:
    """Whether ``text`` is meant as a time rather than a git revision (it starts like a
    date; Unix seconds are only taken where no revision is expected)."""
    return bool(re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}.*", text.strip(), re.DOTALL))


def parse_time(text: str, what: str = "--at") -> float:
    """Seconds since the epoch; ``UsageError`` naming the accepted forms otherwise."""
    stripped = text.strip()
    if re.fullmatch(r"\d{9,11}", stripped):
        return float(int(stripped))
    match = _FORM.fullmatch(stripped)
    if match is None:
        raise UsageError(f"{what} {text!r} is not a time; use {TIME_FORMS}")
    try:
        day = dt.date.fromisoformat(match["date"])
        hour = int(match["hour"] or 0)
        minute = int(match["minute"] or 0)
        second = int(match["second"] or 0)
        micro = int(float(match["fraction"] or 0) * 1_000_000)
        zone = match["zone"]
        offset = dt.timedelta(0)
        if zone and zone not in ("Z", "z"):
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            if abs(offset) >= dt.timedelta(hours=24):
                raise ValueError("offset out of range")
        moment = dt.datetime(
            day.year, day.month, day.day, hour, minute, second, micro,
            tzinfo=dt.timezone(offset),
        )  # fmt: skip
    except ValueError as error:
        raise UsageError(
            f"{what} {text!r} is not a valid time ({error}); use {TIME_FORMS}"
        ) from None
    return moment.timestamp()


def utc_text(seconds: float) -> str:
    """``2026-11-10T09:30:00Z`` (whole seconds)."""
    moment = dt.datetime.fromtimestamp(int(seconds), dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
