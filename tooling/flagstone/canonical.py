"""Canonical JSON (RFC 8785, JCS) and the content digest of a snapshot.

Signatures and digests are computed over bytes, so the same snapshot content must always
serialize to the same bytes, in every language: JCS sorts object keys by UTF-16 code
units, writes numbers the way ECMAScript does and escapes strings minimally. The
``rfc8785`` package implements it; this module adds the Flagstone-specific digest and
turns its errors into ``SnapshotFormatError``.

Standard library plus ``rfc8785`` only: the SDK imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import rfc8785

from flagstone.errors import SnapshotFormatError

DIGEST_PREFIX = "sha256:"


_SAFE_INTEGER = 2**53 - 1
_BMP_MAX = "\uffff"
_MAX_CONTAINERS = 4_000_000


def _stdlib_serializes_it_canonically(obj: Any) -> bool:
    """Whether ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` writes exactly the RFC 8785 text of ``obj``.

    It does for plain JSON data — dict (str keys), list, tuple, str, bool, None, int —
    because then the two escape strings alike (the same short escapes, ``\\u00xx`` for
    the other control characters, everything else as is) and write integers alike. Not
    for: floats (ECMAScript number formatting), integers beyond ±(2**53 - 1) (JCS refuses
    them), keys with characters outside the Basic Multilingual Plane (JCS sorts keys by
    UTF-16 code units, ``json`` by code points: the orders differ only there), and
    anything else (subclasses, other mappings and sequences, non-string keys), which is
    left to ``rfc8785``. A walk without recursion: deep data is refused by the
    serializers, not here; data containing itself would never end it, so it gives up
    (and leaves the data to ``rfc8785``) after a few million containers.
    """
    pending = [obj]
    pop, push = pending.pop, pending.append
    containers = _MAX_CONTAINERS
    while pending:
        value = pop()
        kind = value.__class__
        if kind is dict or kind is list or kind is tuple:
            containers -= 1
            if not containers:
                return False
        if kind is dict:
            for key in value:
                if key.__class__ is not str or (not key.isascii() and max(key) > _BMP_MAX):
                    return False
            for item in value.values():
                push(item)
        elif kind is list or kind is tuple:
            for item in value:
                push(item)
        elif kind is int:
            if not -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
                return False
        elif kind is not str and kind is not bool and value is not None:
            return False
    return True


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` (JSON-like: dict, list, tuple, str, int, float, bool, None) per RFC 8785.

    Raises ``SnapshotFormatError`` for values JCS cannot represent: NaN and infinities,
    integers outside ±(2**53 - 1), non-string object keys.

    Plain JSON data without floats goes through the C serializer of ``json`` (several
    times faster for a snapshot of megabytes), which then writes the same bytes (see
    ``_stdlib_serializes_it_canonically``; tests/test_canonical.py compares the two over
    random data); anything else, and anything it fails on (lone surrogates, which are
    not UTF-8), goes to ``rfc8785``, which decides.
    """
    if _stdlib_serializes_it_canonically(obj):
        try:
            return json.dumps(
                obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
        except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
            pass
    try:
        return bytes(rfc8785.dumps(obj))
    except rfc8785.CanonicalizationError as error:
        raise SnapshotFormatError(f"value cannot be written as canonical JSON: {error}") from None


def content_digest(flags: Mapping[str, Any], segments: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``{"flags": flags, "segments": segments}``."""
    import hashlib  # on first use (issue 18.2: import time)

    content = canonical_json({"flags": dict(flags), "segments": dict(segments)})
    return DIGEST_PREFIX + hashlib.sha256(content).hexdigest()
