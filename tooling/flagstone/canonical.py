"""Canonical JSON (RFC 8785, JCS) and the content digest of a snapshot.

Signatures and digests are computed over bytes, so the same snapshot content must always
serialize to the same bytes, in every language: JCS sorts object keys by UTF-16 code
units, writes numbers the way ECMAScript does and escapes strings minimally. The
``rfc8785`` package implements it; this module adds the Flagstone-specific digest and
turns its errors into ``SnapshotFormatError``.

Standard library plus ``rfc8785`` only: the SDK imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785

from flagstone.errors import SnapshotFormatError

DIGEST_PREFIX = "sha256:"


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` (JSON-like: dict, list, tuple, str, int, float, bool, None) per RFC 8785.

    Raises ``SnapshotFormatError`` for values JCS cannot represent: NaN and infinities,
    integers outside ±(2**53 - 1), non-string object keys.
    """
    try:
        return bytes(rfc8785.dumps(obj))
    except rfc8785.CanonicalizationError as error:
        raise SnapshotFormatError(f"value cannot be written as canonical JSON: {error}") from None


def content_digest(flags: Mapping[str, Any], segments: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``{"flags": flags, "segments": segments}``."""
    content = canonical_json({"flags": dict(flags), "segments": dict(segments)})
    return DIGEST_PREFIX + hashlib.sha256(content).hexdigest()
