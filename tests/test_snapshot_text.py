"""Snapshots read from the signed text without parsing every flag
(``flagstone.snapshot_text.read_payload``, what the SDK serves from; issue 18.2).

They must answer exactly as a snapshot checked whole does; read every spec as the
strict reader would; take any JSON layout (or hand it to the general reader, whose
errors are the same as before); and check each flag on its first evaluation, a bad one
answering with PARSE_ERROR and the place while the others are served.
"""

from __future__ import annotations

import json
import platform
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.canonical import canonical_json
from flagstone.engine import PARSE_ERROR, PackedSpecs, Snapshot, parse_timestamp
from flagstone.errors import EnvelopeError, SnapshotFormatError
from flagstone.freedmemory import return_freed_memory
from flagstone.overrides import apply_overrides
from flagstone.sdk.changes import changed_flags
from flagstone.snapshot_text import read_payload
from sdk_support import fixed_flag, targeted_flag
from test_snapshot_packed import CONTEXTS, _mixed_payload

CONFORMANCE = sorted((Path(__file__).parent / "conformance").glob("*.json"))


def _text_snapshot(payload: dict[str, Any], layout: str = "canonical") -> Snapshot:
    if layout == "canonical":
        text = canonical_json(payload)
    elif layout == "indented":
        text = json.dumps(payload, indent=2, ensure_ascii=False).encode()
    else:
        text = json.dumps(payload, separators=(" , ", " : "), ensure_ascii=False).encode()
    read = read_payload(text)
    assert isinstance(read["flags"], PackedSpecs) and read["flags"].form == "text"
    return Snapshot.from_payload(read, owned=True)


@pytest.mark.parametrize("path", CONFORMANCE, ids=lambda p: p.stem)
def test_every_conformance_vector_answers_as_the_precompiled_form(path: Path) -> None:
    vectors = json.loads(path.read_text(encoding="utf-8"))
    snapshot = {"segments": {}, **vectors["snapshot"]}
    eager = Snapshot.from_payload(snapshot)
    text = _text_snapshot(snapshot)
    for case in vectors["cases"]:
        at = parse_timestamp(case["at"]) if case["at"] is not None else None
        arguments = (case["flag"], case["context"], case.get("default"))
        assert text.evaluate(*arguments, at=at) == eager.evaluate(*arguments, at=at)
        assert text.flag_type(case["flag"]) == eager.flag_type(case["flag"])


@pytest.mark.parametrize("layout", ["canonical", "indented", "spaced"])
def test_any_layout_and_any_text_reads_back_the_same_specs(layout: str) -> None:
    payload = _mixed_payload(60)
    payload["flags"]["ünïcødé ✓"] = targeted_flag(["jürgen", "😀"], segment="seg-1")
    payload["flags"]["f3"]["rules"][0]["name"] = 'quote " brace } bracket ] \\ done'
    snapshot = _text_snapshot(payload, layout)
    assert dict(snapshot.flags) == payload["flags"]
    assert dict(snapshot.segments) == payload["segments"]
    eager = Snapshot.from_payload(payload)
    for key in payload["flags"]:
        for context in [*CONTEXTS, {"key": "😀"}, {"key": "jürgen"}]:
            assert snapshot.evaluate(key, context) == eager.evaluate(key, context)
    assert snapshot.defects == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    flags=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    segments=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_specs_read_from_the_text_equal_the_parsed_payload(
    flags: dict[str, Any], segments: dict[str, Any]
) -> None:
    payload = {"format": "flagstone.snapshot/1", "flags": flags, "segments": segments}
    read = read_payload(canonical_json(payload))
    assert read["format"] == payload["format"]
    assert sorted(read["flags"]) == sorted(flags)
    assert canonical_json({key: read["flags"][key] for key in read["flags"]}) == canonical_json(
        flags
    )
    assert {key: read["segments"][key] for key in read["segments"]} == segments


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (b'{"flags":{"a":{},"a":{}},"segments":{}}', "duplicate object key"),
        (b'{"flags":{},"flags":{},"segments":{}}', "duplicate object key"),
        (b'{"flags":{"a":{"x":NaN}},"segments":{}}', "NaN"),
        (b'{"flags":{"a":{"x":1}},"segments":{}', "not JSON"),
        (b'{"flags":{"a":{"x":1}},"segments":{}} trailing', "not JSON"),
        (b'{"flags":{"a":{"x":1}},"segments":{},"version":1e400}', "beyond a double"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nest more than"),
        (b'{"flags":' + b"[" * 100_000 + b"]" * 100_000 + b',"segments":{}}', "nest more than"),
    ],
)
def test_what_the_strict_reader_refuses_at_load_is_still_refused_with_its_cause(
    text: bytes, cause: str
) -> None:
    with pytest.raises(EnvelopeError, match=cause):
        read_payload(text)


def test_other_layouts_are_read_the_general_way_and_checked_whole() -> None:
    payload = _mixed_payload(5)
    payload["segments"] = []  # not an object: nothing to index
    read = read_payload(canonical_json(payload))
    assert not isinstance(read["flags"], PackedSpecs)
    with pytest.raises(SnapshotFormatError, match="segments"):
        Snapshot.from_payload(read, owned=True, packed=True)


@pytest.mark.parametrize(
    ("flag_text", "cause"),
    [
        (b'{"type":"boolean","type":"string"}', "duplicate object key"),
        (b'{"variations":{"on":12345678901234567890}}', "not a canonical double"),
        (b'{"variations":{"on":"\\ud800"}}', "lone surrogate"),
        (b'{"variations":' + b"[" * 70 + b"]" * 70 + b"}", "nest more than"),
        (b'{"variations":{"on":1e400}}', "beyond a double"),
        (b'{"variations":{}}', "at least one variation"),
        (
            b'{"default":{"variation":"on"},"enabled":true,"kind":"release","off_variation":"off",'
            b'"rules":[{"condition":{"segment":"nope"},"name":"r","serve":{"variation":"on"}}],'
            b'"type":"boolean","variations":{"off":false,"on":true}}',
            "unknown segment 'nope'",
        ),
        (
            b'{"default":{"variation":"on"},"enabled":true,"kind":"release","off_variation":"off",'
            b'"prerequisites":[{"flag":"bad","variation":"on"}],'
            b'"type":"boolean","variations":{"off":false,"on":true}}',
            "cycle",
        ),
    ],
)
def test_a_bad_flag_answers_parse_error_on_its_own_and_the_others_are_served(
    flag_text: bytes, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload = _mixed_payload(20)
    good = canonical_json(payload)
    text = good.replace(b'"flags":{', b'"flags":{"bad":' + flag_text + b",", 1)
    snapshot = Snapshot.from_payload(read_payload(text), owned=True)
    caplog.set_level("WARNING", logger="flagstone.sdk")
    for _ in range(2):
        details = snapshot.evaluate("bad", {"key": "u1"}, True)
        assert (details.value, details.reason, details.error_code) == (True, "ERROR", PARSE_ERROR)
        assert cause in (details.error_message or "")
        assert "flags.bad" in (details.error_message or "")
    assert snapshot.flag_type("bad") is None and snapshot.matching_rule("bad", {}) is None
    assert list(snapshot.defects) == ["bad"]
    assert len([r for r in caplog.records if "'bad'" in r.getMessage()]) == 1
    eager = Snapshot.from_payload(payload)
    for key in payload["flags"]:
        assert snapshot.evaluate(key, {"key": "u1"}) == eager.evaluate(key, {"key": "u1"})
    with pytest.raises(SnapshotFormatError, match=r"flags\.bad"):
        snapshot.check_every_flag()
    # Checked whole before first use, the same flag is refused the same way.
    fresh = Snapshot.from_payload(read_payload(text), owned=True)
    with pytest.raises(SnapshotFormatError, match=cause):
        fresh.check_every_flag()


def test_a_flag_requiring_a_bad_flag_fails_with_it_and_a_good_snapshot_checks_whole() -> None:
    payload = _mixed_payload(30)
    payload["flags"]["f4"]["rules"][0]["condition"] = {"segment": "missing"}
    payload["flags"]["f5"]["prerequisites"] = [{"flag": "f4", "variation": "on"}]
    snapshot = Snapshot.from_payload(read_payload(canonical_json(payload)), owned=True)
    assert snapshot.evaluate("f5", {"key": "u5"}).error_code == PARSE_ERROR
    assert "flags.f4.rules[0].condition" in (snapshot.evaluate("f5", {}).error_message or "")
    assert snapshot.evaluate("f6", {"key": "u6"}).value is True
    good = _mixed_payload(300)
    Snapshot.from_payload(read_payload(canonical_json(good)), owned=True).check_every_flag()


def test_threads_compiling_flags_of_a_text_snapshot_at_once_agree_with_the_precompiled_form() -> (
    None
):
    payload = _mixed_payload(300)
    payload["flags"]["f7"]["rules"][0]["condition"] = {"segment": "missing"}
    eager_payload = json.loads(json.dumps(payload))
    del eager_payload["flags"]["f7"]
    eager = Snapshot.from_payload(eager_payload)
    keys = list(eager_payload["flags"])
    expected = {(k, i): eager.evaluate(k, c) for k in keys for i, c in enumerate(CONTEXTS)}
    snapshot = Snapshot.from_payload(read_payload(canonical_json(payload)), owned=True)
    barrier = threading.Barrier(6)
    mismatches: list[Any] = []

    def evaluate_everything(offset: int) -> None:
        barrier.wait()
        for n in range(len(keys)):
            key = keys[(n * 7 + offset) % len(keys)]
            for i, context in enumerate(CONTEXTS):
                if snapshot.evaluate(key, context) != expected[key, i]:
                    mismatches.append((key, i))
            if snapshot.evaluate("f7", {}).error_code != PARSE_ERROR:
                mismatches.append(("f7", offset))

    threads = [threading.Thread(target=evaluate_everything, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert mismatches == []
    assert list(snapshot.defects) == ["f7"]


def test_changes_from_a_snapshot_with_a_bad_flag_count_it_as_changed() -> None:
    old_payload = _mixed_payload(20)
    old_payload["flags"]["f2"]["default"]["split"]["weights"][0]["weight"] = "x"
    new_payload = _mixed_payload(20)
    new_payload["flags"]["f9"]["targets"][0]["keys"].append("extra")
    old, new = (
        Snapshot.from_payload(read_payload(canonical_json(p)), owned=True)
        for p in (old_payload, new_payload)
    )
    assert old.evaluate("f2", {}).error_code == PARSE_ERROR
    changed = changed_flags(old.flags, old.segments, new.flags, new.segments)
    expected = changed_flags(
        old_payload["flags"], old_payload["segments"], new_payload["flags"], new_payload["segments"]
    )
    assert changed == expected and {"f2", "f9"} <= changed


def test_a_kill_over_a_text_snapshot_keeps_the_others_packed_and_unread() -> None:
    from flagstone.overrides import OverrideEntry

    payload = _mixed_payload(30)
    payload["flags"]["f11"]["rules"][0]["condition"] = {"segment": "missing"}  # bad, unread
    snapshot = Snapshot.from_payload(read_payload(canonical_json(payload)), owned=True)
    entries = {
        key: OverrideEntry(
            flag=key,
            reason="incident",
            by="oncall",
            at="2026-12-05T00:00:00Z",
            expires="2026-12-06T00:00:00Z",
            expires_at=parse_timestamp("2026-12-06T00:00:00Z"),
        )
        for key in ("f9", "f2")
    }
    applied = apply_overrides(snapshot, entries, 7)
    assert isinstance(applied.snapshot.flags, PackedSpecs)
    assert applied.snapshot.evaluate("f9", {"key": "u9"}).reason == "DISABLED"
    assert applied.snapshot.evaluate("f2", {"key": "u2"}).reason == "DISABLED"
    # f3 requires f2 and f10 requires f9 (see _mixed_payload): off is their fallback.
    assert set(applied.dependents) == {"f3", "f10"}
    assert applied.dependents["f10"].variation == "off"
    assert applied.snapshot.evaluate("f5", {"key": "u5"}) == snapshot.evaluate("f5", {"key": "u5"})
    assert applied.snapshot.evaluate("f11", {}).error_code == PARSE_ERROR
    assert snapshot.flags["f9"]["enabled"] is True  # the snapshot in use is unchanged


def test_the_freed_memory_of_a_load_can_be_returned_on_glibc() -> None:
    returned = return_freed_memory()
    assert isinstance(returned, bool)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert returned is True


def test_every_segment_is_checked_at_load_even_one_no_flag_uses() -> None:
    payload = _mixed_payload(10)
    payload["segments"]["unused"] = {"include": [], "exclude": [], "rules": [{"op": "eq"}]}
    with pytest.raises(SnapshotFormatError, match=r"segments\.unused\.rules\[0\]"):
        Snapshot.from_payload(read_payload(canonical_json(payload)), owned=True)
    payload["segments"]["unused"] = {"include": [], "exclude": [], "rules": [], "x": 1, "x ": 2}
    text = canonical_json(payload).replace(b'"x ":2', b'"x":2')
    with pytest.raises(SnapshotFormatError, match=r"segments\.unused has a duplicate object key"):
        Snapshot.from_payload(read_payload(text), owned=True)


def test_a_whole_check_reads_specs_in_batches_as_it_would_one_by_one() -> None:
    payload = _mixed_payload(600)
    nested: Any = []
    for _ in range(59):
        nested = [nested]
    # 62 levels in the flag, the limit for a spec (64 counting the payload and flags).
    payload["flags"]["deep"] = fixed_flag(nested, flag_type="json")
    snapshot = Snapshot.from_payload(read_payload(canonical_json(payload)), owned=True)
    specs = snapshot.flags
    assert isinstance(specs, PackedSpecs)
    keys = list(specs)
    assert specs.read_many(keys) == {key: specs[key] for key in keys}
    snapshot.check_every_flag()  # the deep flag's batch is read again one spec at a time
    assert snapshot.evaluate("deep", {}).value == nested


def test_dependents_of_a_kill_are_found_without_reading_flags_that_cannot_have_any() -> None:
    from flagstone.overrides import _dependents

    payload = _mixed_payload(40)
    # A json flag whose value mentions the word, and one that spells the key with an escape.
    payload["flags"]["mentions"] = fixed_flag({"prerequisites": []}, flag_type="json")
    payload["flags"]["escaped"] = targeted_flag(["u"])
    payload["flags"]["escaped"]["prerequisites"] = [{"flag": "f9", "variation": "on"}]
    text = canonical_json(payload).replace(
        b'"escaped":{"default":{"variation":"off"},"enabled":true,"kind":"release",'
        b'"off_variation":"off","prerequisites"',
        b'"escaped":{"default":{"variation":"off"},"enabled":true,"kind":"release",'
        b'"off_variation":"off","\\u0070rerequisites"',
    )
    assert b"\\u0070rerequisites" in text
    snapshot = Snapshot.from_payload(read_payload(text), owned=True)
    killed = {"f9": None, "f2": None}
    assert _dependents(snapshot.flags, killed) == _dependents(payload["flags"], killed)
    assert _dependents(snapshot.flags, killed) == {"f3": "f2", "f10": "f9", "escaped": "f9"}
