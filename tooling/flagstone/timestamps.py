"""Instants and durations as the repository and the snapshot write them: RFC 3339
timestamps (``2026-12-03T09:00:00Z``) and durations (``30m``, ``24h``, ``7d``).

Standard library only: the engine (and so the SDK) imports this module.
"""

from __future__ import annotations

import re
from functools import lru_cache

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_DURATION = re.compile(r"([0-9]+)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# Context values reach this cache: it is bounded in entries and in the length of the
# text it keeps, so huge strings cannot make it hold gigabytes. The longest RFC 3339
# form read here is 35 characters.
MAX_TIMESTAMP_LENGTH = 64


def parse_timestamp(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 date-time with a zone (``Z`` or ±hh:mm),
    or None when ``text`` is not one (or is longer than ``MAX_TIMESTAMP_LENGTH``)."""
    if len(text) > MAX_TIMESTAMP_LENGTH:
        return None
    return _parse_timestamp(text)


@lru_cache(maxsize=4096)
def _parse_timestamp(text: str) -> float | None:
    if _RFC3339.fullmatch(text) is None:
        return None
    normalized = text.upper()
    if "." in normalized:
        # datetime accepts at most 6 fractional digits.
        head, _, rest = normalized.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        normalized = head + "." + rest[: min(digits, 6)] + rest[digits:]
    from datetime import datetime  # here, not at import: it is most of this module's cost

    try:
        return datetime.fromisoformat(normalized.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):  # e.g. month 13 or hour 25
        return None


def duration_seconds(text: str) -> int | None:
    """Seconds in a duration like ``24h`` or ``7d``; None when it is not one."""
    match = _DURATION.fullmatch(text)
    return int(match.group(1)) * _SECONDS[match.group(2)] if match else None
