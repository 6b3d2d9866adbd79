"""canonical_json takes the C serializer of ``json`` for plain data; it must write
exactly what ``rfc8785`` writes, and refuse exactly what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.canonical import _stdlib_serializes_it_canonically, canonical_json
from flagstone.errors import SnapshotFormatError

# Text with what matters to escaping and key order: control characters, quotes and
# backslashes, U+007F, U+2028, characters near the end of the BMP (E000–FFFF sort
# differently from surrogate pairs in UTF-16), characters beyond it, lone surrogates.
_CHARACTERS = st.one_of(
    st.characters(max_codepoint=0x80),
    st.sampled_from(["\u2028", "\ufeff", "\ue000", "\uffff", "é", "\U0001f600", "\U00010000"]),
    st.characters(),
)
_TEXT = st.text(_CHARACTERS, max_size=6)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.integers(),  # some beyond ±(2**53 - 1)
    st.floats(),  # NaN and infinities included
    _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_TEXT, inner, max_size=4),
    ),
    max_leaves=25,
)


def _reference(value: Any) -> bytes | str:
    try:
        return bytes(rfc8785.dumps(value))
    except Exception as error:  # which error is compared, not handled
        return type(error).__name__


def _ours(value: Any) -> bytes | str:
    try:
        return canonical_json(value)
    except SnapshotFormatError:
        return "CanonicalizationError"
    except Exception as error:
        return type(error).__name__


def _same(ours: bytes | str, reference: bytes | str) -> bool:
    if isinstance(ours, bytes) or isinstance(reference, bytes):
        return ours == reference
    # rfc8785 raises subclasses of CanonicalizationError; canonical_json turns every one
    # into SnapshotFormatError. Other errors (UnicodeEncodeError, RecursionError) pass.
    canonicalization = {"CanonicalizationError", "IntegerDomainError", "FloatDomainError"}
    return ours == reference or (ours in canonicalization and reference in canonicalization)


@settings(max_examples=600, deadline=None)
@given(value=_JSON)
def test_canonical_json_writes_what_rfc8785_writes(value: Any) -> None:
    ours, reference = _ours(value), _reference(value)
    assert _same(ours, reference), (value, ours, reference)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_TEXT, st.integers(min_value=0, max_value=9), max_size=8))
def test_key_order_is_by_utf16_code_units(value: dict[str, int]) -> None:
    # Keys may hold lone surrogates, which neither side can encode: compare outcomes.
    ours, reference = _ours(value), _reference(value)
    assert _same(ours, reference), (value, ours, reference)


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ({"a": [1, "x", None, True, (2, 3)]}, True),
        ({"a": 1.0}, False),
        ([2**53], False),
        ([2**53 - 1, -(2**53) + 1], True),
        ({"\U0001f600": 1}, False),
        ({"\ufb01": 1, "é": 2}, True),
        ({1: "a"}, False),
        ({"a": {"b": object()}}, False),
    ],
)
def test_what_takes_the_fast_path(value: Any, plain: bool) -> None:
    assert _stdlib_serializes_it_canonically(value) is plain
    if plain:
        assert canonical_json(value) == rfc8785.dumps(value)


def test_subclasses_and_other_mappings_are_left_to_rfc8785() -> None:
    class Text(str):
        pass

    class Items(dict[str, Any]):
        pass

    for value in ({"a": Text("b")}, Items(a=1), [Items(b=[1])]):
        assert not _stdlib_serializes_it_canonically(value)
        assert canonical_json(value) == rfc8785.dumps(value)


def test_a_snapshot_sized_document_is_the_same_either_way() -> None:
    flags = {
        f"flag-{i}": {
            "type": "string",
            "variations": {"a": f"välue {i}\n", "b": "\u2028\U0001f600"},
            "targets": [{"variation": "a", "keys": [f"user-{i}", "ﬁ"]}],
            "weights": [i, 100000 - i],
        }
        for i in range(300)
    }
    assert canonical_json(flags) == rfc8785.dumps(flags)
    assert json.loads(canonical_json(flags)) == flags
