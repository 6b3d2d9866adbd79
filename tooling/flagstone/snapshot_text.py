"""A signed snapshot payload read without parsing every flag: what the SDK serves from
(issue 18.2; docs/design.md §7).

``read_payload`` reads the payload's text once with the standard library's C scanner,
member by member. The top-level members other than ``flags`` and ``segments`` are read
strictly (``read_json``), as every payload is. Each flag and segment is scanned, so its
text is known to be one JSON value and where it ends, and then dropped: only its span in
the text is kept (``PackedSpecs.of_text``). A flag's text is read strictly (duplicate
keys, integers beyond ±(2**53 - 1), lone surrogates, nesting) and checked against the
snapshot form on its first evaluation, with the prerequisites it uses; every segment's
when the snapshot is made (see ``engine.Snapshot``).

Why: at 50,000 flags, parsing the payload and checking every flag took about 2 s before
the first evaluation, and the parsed payload's freed memory stayed with the process.
Scanning costs about what a bare ``json.loads`` does and keeps one ``bytes`` object.

A text not laid out as one object with ``flags`` and ``segments`` objects, once each, or
one the scanner refuses (not JSON, NaN, a repeated flag key), is read the general way
(``parse_payload``): the result is a plain payload, checked whole, and its errors are
that reader's.

Standard library only: the SDK imports this module.
"""

from __future__ import annotations

import json
from array import array
from itertools import accumulate
from typing import Any

from flagstone.engine import PackedSpecs
from flagstone.envelope import parse_payload, read_json
from flagstone.errors import EnvelopeError, SnapshotFormatError

_WHITESPACE = " \t\n\r"
_SPECS = ("flags", "segments")


class _NotLaidOut(Exception):
    """The text is not laid out as this reader expects: read it the general way."""


def _refuse_constant(name: str) -> Any:
    raise _NotLaidOut(name)


# The C scanner of a decoder that refuses NaN and Infinity and builds nothing it does not
# need: each object becomes its member count, each number its length (C calls, no dict
# or number made), since only where a spec ends is kept. It clears its key memo after
# every call.
_scan = json.JSONDecoder(  # type: ignore[attr-defined]
    parse_constant=_refuse_constant, object_pairs_hook=len, parse_float=len, parse_int=len
).scan_once
scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # the C one


def read_payload(signed: bytes) -> dict[str, Any]:
    """The snapshot payload ``signed`` (verified bytes): a dict whose ``flags`` and
    ``segments`` are ``PackedSpecs`` over the text, or a plain payload when the text is
    not laid out for that (see the module doc). Raises ``EnvelopeError``."""
    try:
        payload = _indexed(signed)
    except (ValueError, IndexError, StopIteration, RecursionError, _NotLaidOut):
        payload = None
    return payload if payload is not None else parse_payload(signed)


def _indexed(signed: bytes) -> dict[str, Any] | None:
    text = signed.decode("utf-8")
    i = _skip(text, 0)
    if text[i] != "{":
        return None
    spans: dict[str, tuple[int, int, PackedSpecs]] = {}
    seen: set[str] = set()
    i = _skip(text, i + 1)
    while text[i] != "}":
        if text[i] != '"':
            return None
        key, i = scanstring(text, i + 1)
        if key in seen:
            return None  # a repeated member: the general reader refuses it
        seen.add(key)
        i = _skip(text, i)
        if text[i] != ":":
            return None
        start = _skip(text, i + 1)
        if key in _SPECS and text[start] == "{":
            specs, i = _specs(text, start, signed, key)
            spans[key] = (start, i, specs)
        else:
            i = _scan(text, start)[1]
        i = _skip(text, i)
        if text[i] == ",":
            i = _skip(text, i + 1)
        elif text[i] != "}":
            return None
    if _skip(text, i + 1) != len(text) or len(spans) != len(_SPECS):
        return None
    # The rest of the payload, with {} for the flags and segments, read strictly.
    (first, first_end, _), (second, second_end, _) = sorted(spans.values(), key=lambda s: s[0])
    rest = text[:first] + "{}" + text[first_end:second] + "{}" + text[second_end:]
    payload = read_json(rest.encode(), "snapshot payload")
    if not isinstance(payload, dict):
        return None
    for key, (_, _, specs) in spans.items():
        payload[key] = specs
    return payload


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not whitespace."""
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _specs(text: str, i: int, signed: bytes, kind: str) -> tuple[PackedSpecs, int]:
    """The object of specs at ``text[i]`` (``{``) as ``PackedSpecs`` over the text, and
    the index after it. Each spec is scanned (a JSON value: its end is known) and its
    parse dropped at once, so the scan needs the memory of one spec."""
    keys: list[str] = []
    starts, ends = array("Q"), array("Q")
    add_start, add_end, add_key = starts.append, ends.append, keys.append
    scan = _scan
    i += 1
    if text[i] in _WHITESPACE:
        i = _skip(text, i)
    if text[i] != "}":
        while True:
            if text[i] != '"':
                raise _NotLaidOut(i)
            key, i = scanstring(text, i + 1)
            if text[i] != ":":
                i = _skip(text, i)
                if text[i] != ":":
                    raise _NotLaidOut(i)
            i += 1
            if text[i] in _WHITESPACE:
                i = _skip(text, i)
            add_start(i)
            i = scan(text, i)[1]
            add_end(i)
            add_key(key)
            if text[i] in _WHITESPACE:
                i = _skip(text, i)
            if text[i] == ",":
                i += 1
                if text[i] in _WHITESPACE:
                    i = _skip(text, i)
                continue
            if text[i] == "}":
                break
            raise _NotLaidOut(i)
    if len(set(keys)) != len(keys):
        raise _NotLaidOut("a repeated key")  # the general reader names it
    if (b"\\ud" in signed or b"\\uD" in signed) and not _unicode_text(keys):
        raise _NotLaidOut("a key with a lone surrogate")  # the general reader names it
    decode = _flag_reader if kind == "flags" else _segment_reader
    if signed.isascii():  # the text's indexes are the bytes' offsets
        return PackedSpecs.of_text(signed, keys, starts, ends, decode), i + 1
    pieces = [text[start:end].encode() for start, end in zip(starts, ends, strict=True)]
    offsets = array("Q", accumulate(map(len, pieces), initial=0))
    blob = b"".join(pieces)
    return PackedSpecs.of_text(blob, keys, offsets[:-1], offsets[1:], decode), i + 1


def _unicode_text(keys: list[str]) -> bool:
    """Whether every key is Unicode text: the scanner reads an escaped lone surrogate
    (``"\\ud800"``) into a key, which the strict reader refuses."""
    try:
        "".join(keys).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flag_reader(text: bytes, key: str) -> Any:
    return _read_spec(text, f"flags.{key}")


def _segment_reader(text: bytes, key: str) -> Any:
    return _read_spec(text, f"segments.{key}")


def _read_spec(text: bytes, where: str) -> Any:
    try:
        # Two brackets enclose a spec in the payload: the payload's and its flags' (or
        # segments'); the whole payload's nesting limit counts them.
        return read_json(text, where, enclosed=2)
    except EnvelopeError as error:
        raise SnapshotFormatError(f"snapshot {error}") from None
