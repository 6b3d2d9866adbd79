"""The strict YAML loader: values, positions, hazards and fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagstone.errors import LoadError
from flagstone.loader import MAX_DEPTH, load_file, loads


def test_yaml_1_2_scalars() -> None:
    doc = loads(
        b"a: true\nb: false\nc: on\nd: off\ne: yes\nf: no\ng: 2027-03-01\nh: 0x1f\ni: 0o17\n"
        b"j: 1.5e3\nk: ~\nl: null\nm: '1'\nn: 012\no: True\np: -7\nq:\n"
    )
    assert doc.data == {
        "a": True,
        "b": False,
        "c": "on",
        "d": "off",
        "e": "yes",
        "f": "no",
        "g": "2027-03-01",
        "h": 31,
        "i": 15,
        "j": 1500.0,
        "k": None,
        "l": None,
        "m": "1",
        "n": 12,
        "o": "True",
        "p": -7,
        "q": None,
    }


def test_keys_stay_text() -> None:
    doc = loads(b"on: 1\noff: 2\n3: x\nnull: y\ntrue: z\n")
    assert list(doc.data) == ["on", "off", "3", "null", "true"]


def test_positions_of_values_and_keys() -> None:
    doc = loads(b"# comment\nrules:\n  - name: a\n    serve: {split: {on: 50}}\n", rel="f.yaml")
    assert doc.position(("rules",)) == (3, 3)
    assert doc.position(("rules", 0, "name")) == (3, 11)
    assert doc.position(("rules", 0, "serve", "split", "on")) == (4, 25)
    assert doc.position(("rules", 0, "serve"), key=True) == (4, 5)
    # an absent path falls back to the nearest ancestor that exists
    assert doc.position(("rules", 0, "missing", "deeper")) == (3, 5)
    problem = doc.problem(("rules", 0, "name"), "bad", rule="x")
    assert problem.format_line() == "f.yaml:3:11: bad"


def test_byte_order_mark_is_accepted() -> None:
    assert loads(b"\xef\xbb\xbfa: 1\n").data == {"a": 1}


def test_non_specific_tag_on_quoted_scalar_is_accepted() -> None:
    assert loads(b"a: ! '5'\nb: ! 5\n").data == {"a": "5", "b": "5"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"a: 1\na: 2\n", "2:1: duplicate key 'a' (first defined at line 1)"),
        (b"a: &x 1\n", "1:4: anchor '&x' is not allowed"),
        (b"a: *x\n", "1:4: aliases are not allowed"),
        (b"<<: {a: 1}\n", "1:1: merge keys ('<<') are not allowed"),
        (b"a: !!str 1\n", "1:4: tag '!!str' is not allowed"),
        (b"a: !env X\n", "1:4: tag '!env' is not allowed"),
        (b"a: !!map {b: 1}\n", "1:4: tag '!!map' is not allowed"),
        (b"a:\n\t- 1\n", "2:1: tab character in indentation"),
        (b"a: \xff\n", "1:4: file is not valid UTF-8 (byte 0xff)"),
        (b"a: 1\n---\nb: 2\n", "2:1: only one YAML document per file"),
        (b"a: [1\n", "2:1: invalid YAML: did not find expected ',' or ']'"),
        (b"a: .nan\n", "1:4: '.nan' is not a finite number"),
        (b"a: -.inf\n", "1:4: '-.inf' is not a finite number"),
        (b'a: "\x01"\n', "1:5: control character U+0001 is not allowed"),
        (b"? [a]\n: 1\n", "1:3: mapping keys must be plain text"),
        (
            b"a: " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"\n",
            "nesting deeper than 32 levels",
        ),
    ],
)
def test_hazards_are_rejected_with_a_position(source: bytes, message: str) -> None:
    with pytest.raises(LoadError) as caught:
        loads(source, rel="f.yaml")
    assert caught.value.problem.rule == "yaml"
    assert message in caught.value.problem.format_line()
    assert caught.value.problem.format_line().startswith("f.yaml")


def test_oversize_file_is_rejected_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * 5000 + b"\n")
    with pytest.raises(LoadError) as caught:
        load_file(big, root=tmp_path, max_bytes=4096)
    assert (
        caught.value.problem.format_line()
        == "big.yaml: file is 5004 bytes, over the 4096-byte limit"
    )


def test_unreadable_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as caught:
        load_file(tmp_path / "missing.yaml", root=tmp_path)
    assert caught.value.problem.path == "missing.yaml"
    assert "cannot read file" in caught.value.problem.message


def test_empty_document_is_none() -> None:
    assert loads(b"").data is None
    assert loads(b"# only a comment\n").data is None


# --- fuzzing: nothing but LoadError, ever --------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_yamlish_alphabet = st.sampled_from(
    [
        *"abc:-? []{},&*!|>'\"#%@`\n\t ~.01e+<\\",
        "\u00e9",
        "\x00",
        "\x85",
        "\ufeff",
        "\U0001f600",
        "---",
        "...",
        ": ",
        "- ",
        "<<",
    ]
)


def _load_must_not_crash(raw: bytes) -> None:
    try:
        doc = loads(raw, rel="fuzz.yaml")
    except LoadError as error:
        assert error.problem.path == "fuzz.yaml"
        assert error.problem.line >= 0 and error.problem.col >= 0
        assert "\n" not in error.problem.message
        return
    for line, col in doc.marks.values():
        assert line >= 1 and col >= 1


@_FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_load_error(raw: bytes) -> None:
    _load_must_not_crash(raw)


@_FUZZ
@given(st.lists(_yamlish_alphabet, max_size=120).map("".join))
def test_random_yamlish_text_only_raises_load_error(text: str) -> None:
    _load_must_not_crash(text.encode("utf-8", "surrogatepass"))


# Escaped JSON text; astral characters would be escaped as surrogate pairs, which YAML
# (having \U escapes instead) rightly rejects.
_bmp_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=8)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), _bmp_text)


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        _json_leaf,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(_bmp_text.filter(bool), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_json_round_trips_through_the_loader(value: object) -> None:
    import json

    # JSON is YAML 1.2 (flow style); the loader must read it back unchanged.
    text = json.dumps({"v": value})
    assert loads(text.encode()).data == {"v": value}


def test_cyclic_gc_pause_restores_the_collector_state() -> None:
    import gc

    from flagstone.loader import cyclic_gc_paused

    assert gc.isenabled()
    with pytest.raises(LoadError), cyclic_gc_paused():
        assert not gc.isenabled()
        loads(b"a: &x 1\n")
    assert gc.isenabled()
    gc.disable()
    try:
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()


_word = st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6).map(lambda w: "w" + w)
_document = st.recursive(
    st.one_of(_word, st.integers(0, 999)),
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(_word, children, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_word, _document, min_size=1, max_size=4), st.booleans())
def test_every_position_points_at_its_value(data: dict[str, object], flow: bool) -> None:
    import yaml

    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False, width=10_000)
    doc = loads(text.encode())
    assert doc.data == data
    lines = text.split("\n")

    def walk(value: object, path: tuple[str | int, ...]) -> None:
        line, col = doc.marks[path]
        source = lines[line - 1][col - 1 :]
        if isinstance(value, dict):
            if flow:
                assert source.startswith("{")
            for key, child in value.items():
                key_line, key_col = doc.key_marks[(*path, key)]
                assert lines[key_line - 1][key_col - 1 :].startswith(key)
                walk(child, (*path, key))
        elif isinstance(value, list):
            assert source[0] in "[-"
            for index, child in enumerate(value):
                walk(child, (*path, index))
        else:
            assert source.startswith(str(value))

    walk(data, ())
