"""``envelope.read_json``: the fast reading (C parser, duplicate keys proven absent by
counting elements) refuses exactly what the strict reading (a check on every object)
refuses, and reads the same documents.

The strict reading here is the reference: json.loads with a hook on every object.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone import envelope
from flagstone.envelope import MAX_JSON_DEPTH, read_json
from flagstone.errors import EnvelopeError


def _strict(data: bytes) -> Any:
    """The reference: every object checked for a repeated key as it is built."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("duplicate")
        return result

    return json.loads(data, object_pairs_hook=unique)


def _verdict(reader: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "read", reader(data)
    except (EnvelopeError, ValueError):
        return "refused", None


def test_the_element_count_works_on_this_interpreter() -> None:
    # Otherwise every document takes the strict path: still right, but slow.
    assert envelope._COUNTS_ELEMENTS


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"a":1}',
        '{"a":1,"b":{"c":[1],"c":[1]}}',
        '[[1],{"x":null,"x":true}]',
        '{"a":[1],"a":[2]}',
        '{"k":{"a":{},"a":{}}}',
        '{ "a" : 1 , "a" : 2 }',
        '{"s":"[1]","s":"[1]"}',
        '{"a":[],"b":[],"a":[]}',
        '{"a":{"b":1,"b":{"c":1,"c":2}}}',
        # a duplicate whose dropped value holds elements of its own
        '{"a":{"x":1,"y":[1,2,3]},"a":1}',
        # look-alikes inside strings must not hide a duplicate
        '{"a":"[1]","b":"{}","a":"x"}',
        '{"a":"\\"[]\\"","a":"\\\\"}',
    ],
)
def test_duplicate_keys_are_refused_wherever_they_are(text: str) -> None:
    with pytest.raises(EnvelopeError, match="duplicate object key"):
        read_json(text.encode(), "doc")


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "[]",
        "[1]",
        '[[],[[]],{},{"a":[]}]',
        '{"a":[1],"b":[true],"c":[null],"d":[-1.5],"e":[false]}',
        '{"a":"x,y:z[{","b":["]","}"],"c":"\\"\\\\"}',
        ' { "a" : [ 1 , 2 ] , "b" : { } } ',
        '{"":"","a":["",""]}',
    ],
)
def test_valid_documents_are_read_as_json_reads_them(text: str) -> None:
    assert read_json(text.encode(), "doc") == json.loads(text)


def test_nesting_is_refused_beyond_the_limit_and_accepted_at_it() -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert read_json(at_limit.encode(), "doc") is not None
    mixed = '{"a":' * (MAX_JSON_DEPTH // 2) + "[" * (MAX_JSON_DEPTH // 2 + 1)
    mixed += "]" * (MAX_JSON_DEPTH // 2 + 1) + "}" * (MAX_JSON_DEPTH // 2)
    for deep in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), mixed, "[" * 100_000):
        with pytest.raises(EnvelopeError, match="nest more than"):
            read_json(deep.encode(), "doc")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"a": "[" * 1000, "b": ["}" * 1000, '"[' * 50]})
    assert read_json(text.encode(), "doc") == json.loads(text)


def test_a_document_whose_count_does_not_prove_it_is_read_the_strict_way() -> None:
    # "[1" inside a string makes the text's count an over-estimate: no proof, so the
    # strict reading decides, and this document has no duplicate.
    text = '{"a":"[1","b":[]}'
    assert read_json(text.encode(), "doc") == {"a": "[1", "b": []}


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from(["", "a", "[1", "]", "{}", '"', "\\", ",", ":", "x y", "\u00e9"]),
)
_KEYS = st.sampled_from(["a", "b", "", "[", "}", '"', "a:b", "k,"])
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


def _with_duplicate(document: Any, seed: int) -> str | None:
    """``document`` as text with one object member written twice (None: no object)."""
    objects: list[dict[str, Any]] = []
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if value:
                objects.append(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    if not objects:
        return None
    target = objects[seed % len(objects)]
    key = sorted(target)[seed % len(target)]
    marker = "\u0001MARK\u0001"
    target[marker] = None
    marked = json.dumps(document, separators=(",", ":"))
    del target[marker]
    member = json.dumps(key) + ":" + json.dumps(target[key], separators=(",", ":"))
    duplicated = marked.replace(json.dumps(marker) + ":null", member)
    assert duplicated != marked
    return duplicated


@settings(max_examples=300, deadline=None)
@given(_JSON, st.integers(0, 1000))
def test_fast_and_strict_readings_agree(document: Any, seed: int) -> None:
    texts = (json.dumps(document), json.dumps(document, indent=1), _with_duplicate(document, seed))
    for text in texts:
        if text is None:
            continue
        data = text.encode()
        ours, reference = _verdict(lambda d: read_json(d, "doc"), data), _verdict(_strict, data)
        assert ours == reference, text


def _envelope_verdict(data: bytes) -> tuple[str, Any]:
    return _verdict(lambda d: envelope._read_envelope(d), data)


@pytest.mark.parametrize(
    "text",
    [
        '{"payload":"QUJD","payloadType":"t","signatures":[]}',
        # escapes: the payload string is not its bytes, so the whole envelope is read
        '{"payload":"\\u0051UJD","payloadType":"t","signatures":[]}',
        '{"payload":"QU\\"JD","payloadType":"t","signatures":[]}',
        # a raw control character or non-ASCII in the payload text
        '{"payload":"QU\nJD","payloadType":"t","signatures":[]}',
        '{"payload":"QU\u00e9JD","payloadType":"t","signatures":[]}',
        # the rest decides: duplicates, a second payload, bad JSON, deep nesting
        '{"payload":"QUJD","payloadType":"t","payloadType":"u","signatures":[]}',
        '{"payload":"QUJD","payload":"","signatures":[]}',
        '{"payload":"QUJD","signatures":[}',
        '{"payload":"QUJD","x":' + "[" * 100 + "]" * 100 + "}",
        '{"payload":"QUJD"',
        '{"payloadType":"t","payload":"QUJD","signatures":[]}',
        ' {"payload":"QUJD","payloadType":"t","signatures":[]}',
    ],
)
def test_reading_an_envelope_past_its_payload_text_is_reading_it_whole(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The envelope read past its payload text (which is then decoded as base64 from its
    bytes) gives what reading it whole gives: the same payload type, payload bytes and
    signatures, or a refusal."""
    data = text.encode()

    def parsed() -> tuple[str, Any]:
        try:
            found_type, payload, signatures = envelope._parse_envelope(data)
        except EnvelopeError:
            return "refused", None
        return "read", (found_type, payload, [(s.keyid, s.sig) for s in signatures])

    ours = parsed()
    monkeypatch.setattr(envelope, "_read_envelope", lambda d: read_json(d, "envelope"))
    assert ours == parsed(), text
