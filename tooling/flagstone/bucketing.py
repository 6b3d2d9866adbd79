"""Percentage bucketing, bit-compatible with flagd's ``fractional`` operator.

flagd (openfeature-flagd-core 2.x) evaluates
``{"fractional": [{"cat": [SEED, {"var": ATTR}]}, [VARIANT, WEIGHT], …]}`` by
concatenating the seed and the attribute into one text string, encoding it as an
RFC 8949 deterministic CBOR text string, hashing that with MurmurHash3 x86 32-bit
(seed 0, unsigned) and taking ``(hash * total_weight) >> 32``. Flagstone weights are
thousandths of a percent and always sum to 100 000, so

    bucket = (murmur3_x86_32(cbor_text(seed + value)) * 100000) >> 32   ∈ [0, 100000)

and a variation with cumulative upper bound ``u`` is served when ``bucket < u``.

Only strings and integers (written in decimal, as flagd's ``cat`` writes them) are
bucketable; any other value (a float, a list, a string with a lone surrogate, an integer
too long to write out: over Python's 4,300-digit limit) gives ``None`` (not bucketed),
which the engine treats as a missing attribute: the first variation of a split, the
baseline of a progression.

Standard library plus ``mmh3`` only: the SDK imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mmh3

BUCKETS = 100_000

# CBOR major type 3 (text string) headers for every length below 256; longer lengths
# use the 2-, 4- and 8-byte length forms.
_SHORT_HEADERS = tuple(bytes([0x60 | n]) if n < 24 else bytes([0x78, n]) for n in range(256))


def cbor_text(data: bytes) -> bytes:
    """The deterministic CBOR encoding of a text string whose UTF-8 bytes are ``data``."""
    size = len(data)
    if size < 256:
        return _SHORT_HEADERS[size] + data
    if size < 0x10000:
        return b"\x79" + size.to_bytes(2, "big") + data
    if size < 0x100000000:
        return b"\x7a" + size.to_bytes(4, "big") + data
    return b"\x7b" + size.to_bytes(8, "big") + data


def bucket_text(text: str) -> int:
    """The bucket of an already concatenated seed + value string."""
    data = text.encode("utf-8")
    return (mmh3.hash(cbor_text(data), 0, False) * BUCKETS) >> 32


Reader = Callable[[Mapping[str, Any]], Any]


def attribute_reader(attribute: str) -> Reader:
    """A function reading ``attribute`` from a context; dots descend into nested
    mappings. Absent values read as None."""
    if "." not in attribute:

        def read_top(context: Mapping[str, Any]) -> Any:
            return context.get(attribute)

        return read_top
    parts = tuple(attribute.split("."))

    def read_nested(context: Mapping[str, Any]) -> Any:
        value: Any = context
        for part in parts:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return read_nested


def make_bucketer(seed: str, attribute: str) -> Callable[[Mapping[str, Any]], int | None]:
    """A function from a context to its bucket for ``seed`` and the (dotted) ``attribute``;
    None when the context has no bucketable value there.

    The seed's UTF-8 bytes are encoded once here; per evaluation only the value is
    encoded and the CBOR header chosen. A top-level attribute is read inline.
    """
    prefix = seed.encode("utf-8")
    headers = _SHORT_HEADERS
    murmur = mmh3.hash
    nested = attribute_reader(attribute) if "." in attribute else None

    def bucket_of(context: Mapping[str, Any]) -> int | None:
        value = context.get(attribute) if nested is None else nested(context)
        if isinstance(value, str):
            try:
                data = prefix + value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
                return None
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                data = prefix + str(value).encode("ascii")
            except ValueError:  # over Python's int-to-text digit limit: not bucketable
                return None
        else:
            return None
        size = len(data)
        encoded = headers[size] + data if size < 256 else cbor_text(data)
        return (murmur(encoded, 0, False) * BUCKETS) >> 32

    return bucket_of
