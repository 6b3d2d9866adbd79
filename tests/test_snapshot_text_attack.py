"""Adversarial checks of the SDK's snapshot read from its signed text
(``flagstone.snapshot_text``; docs/design.md §7): nothing the strict reader refuses is
served, however the text is written, and a snapshot with a bad flag behaves everywhere
a client exposes it (getters, all_flags, overrides, change events, the disk cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.canonical import canonical_json
from flagstone.engine import DISABLED, PARSE_ERROR, PREREQUISITE_FAILED, PackedSpecs, Snapshot
from flagstone.envelope import MAX_JSON_DEPTH, parse_payload, sign_payload
from flagstone.errors import EnvelopeError, SnapshotFormatError
from flagstone.overrides import OverriddenDetails
from flagstone.sdk import Client
from flagstone.snapshot_text import read_payload
from sdk_support import ENVIRONMENT, NOW, PROJECT, fixed_flag, make_payload, new_key, wait_for
from test_sdk_overrides import KEY as SNAPSHOT_KEY
from test_sdk_overrides import client_for, overrides_envelope, put_overrides

KEY = new_key()

GOOD = {"banner": fixed_flag("hello"), "on": fixed_flag(True)}


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _text(flags: dict[str, Any], segments: dict[str, Any] | None = None) -> bytes:
    return canonical_json(make_payload(3, flags, segments))


def _client_for(tmp_path: Any, payload_text: bytes) -> Client:
    path = tmp_path / "latest.json"
    path.write_bytes(sign_payload(payload_text, KEY.private))
    return Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW,
    )


@pytest.mark.parametrize("kind", ["flags", "segments"])
@pytest.mark.parametrize("extra", [-1, 0, 1, 2])
def test_a_spec_nested_past_the_payloads_limit_is_refused_as_the_whole_payload_is(
    kind: str, extra: int
) -> None:
    """The limit counts the payload's own brackets: a spec sits two levels in (the
    payload, its flags or segments), so it may nest two levels less than a whole text."""
    spec = {"deep": _nested(MAX_JSON_DEPTH - 3 + extra)}  # the spec's {} is one level
    text = _text(GOOD, {"s": spec}) if kind == "segments" else _text({**GOOD, "s": spec})
    whole_refuses = False
    try:
        parse_payload(text)
    except EnvelopeError:
        whole_refuses = True
    assert whole_refuses is (extra > 0)
    specs = read_payload(text)[kind]
    assert isinstance(specs, PackedSpecs) and specs.form == "text"
    if whole_refuses:
        with pytest.raises(SnapshotFormatError, match=f"{kind}.s .*nest more than"):
            specs["s"]
    else:
        assert specs["s"] == spec


@pytest.mark.parametrize("kind", ["flags", "segments"])
def test_a_key_with_a_lone_surrogate_is_refused_cleanly_as_the_strict_reader_does(
    kind: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    text = _text(GOOD, {"seg": {"include": [], "exclude": [], "rules": []}})
    if kind == "flags":
        text = text.replace(b'"banner":', b'"\\ud800":')
    else:
        text = text.replace(b'"seg":', b'"\\uDBFF":')
    with pytest.raises(EnvelopeError, match="lone surrogate"):
        parse_payload(text)
    with pytest.raises(EnvelopeError, match="lone surrogate"):
        read_payload(text)
    caplog.set_level(logging.WARNING)
    client = _client_for(tmp_path, text)
    assert client.snapshot is None
    assert "lone surrogate" in (client.last_error or "")
    assert not [r for r in caplog.records if r.exc_info], "no traceback for bad input"


def _with_bad_flags() -> dict[str, Any]:
    """checkout: a rule naming a missing segment; upsell: requires checkout; a and b:
    require each other (a cycle); banner: good."""
    checkout = fixed_flag(True) | {
        "rules": [{"name": "r", "condition": {"segment": "missing"}, "serve": {"variation": "v"}}]
    }
    return {
        "checkout": checkout,
        "upsell": fixed_flag(True) | {"prerequisites": [{"flag": "checkout", "variation": "v"}]},
        "a": fixed_flag(True) | {"prerequisites": [{"flag": "b", "variation": "v"}]},
        "b": fixed_flag(True) | {"prerequisites": [{"flag": "a", "variation": "v"}]},
        "banner": fixed_flag("hello"),
    }


def test_a_kill_lands_on_a_flag_that_fails_only_through_its_prerequisites(
    tmp_path: Any,
) -> None:
    """A killed flag serves its off variation (OverriddenDetails) even when a flag it
    requires cannot be compiled, or it is in a prerequisite cycle: a disabled flag never
    evaluates its prerequisites. Killing one flag of a cycle lands on the other as a
    dependent."""
    directory = tmp_path / "dist" / ENVIRONMENT
    directory.mkdir(parents=True)
    payload_text = canonical_json(make_payload(1, _with_bad_flags()))
    (directory / "latest.json").write_bytes(sign_payload(payload_text, SNAPSHOT_KEY.private))
    client = client_for(tmp_path / "dist")
    assert client.snapshot is not None
    for key in ("checkout", "upsell", "a", "b"):
        assert client.evaluate(key, {"key": "u"}, True).error_code == PARSE_ERROR, key
    put_overrides(tmp_path / "dist", overrides_envelope(1, {"upsell": "x", "a": "y"}))
    client.refresh()
    assert client.overrides_version == 1
    for key in ("upsell", "a"):
        details = client.evaluate(key, {"key": "u"}, True)
        assert isinstance(details, OverriddenDetails), (key, details)
        assert (details.value, details.variation, details.reason) == (False, "off", DISABLED)
        assert client.bool_value(key, {"key": "u"}, True) is False
    b = client.evaluate("b", {"key": "u"}, True)
    assert (b.value, b.variation, b.reason) == (False, "off", PREREQUISITE_FAILED)
    assert client.evaluate("checkout", {"key": "u"}, True).error_code == PARSE_ERROR
    assert client.string_value("banner", {"key": "u"}) == "hello"


def _signed_text_digest(text: bytes) -> bytes:
    """``text`` (canonical layout) with its digest made the sha256 of its flags and
    segments exactly as written (what the SDK compares for such a layout), so a flag
    text that canonical JSON would never write still matches."""
    start = text.index(b'"flags":') + len(b'"flags":')
    end = text.index(b',"format":', start)
    segments = text.index(b',"segments":', end) + len(b',"segments":')
    segments_end = text.index(b',"source":', segments)
    content = b'{"flags":' + text[start:end] + b',"segments":' + text[segments:segments_end] + b"}"
    digest = b"sha256:" + hashlib.sha256(content).hexdigest().encode()
    return re.sub(rb'"digest":"sha256:[0-9a-f]+"', b'"digest":"' + digest + b'"', text)


def test_threads_getters_and_openfeature_on_a_snapshot_with_bad_flags(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Many threads at once, through every getter and the OpenFeature provider, with
    telemetry counting: a bad flag answers the caller's default with PARSE_ERROR, no
    exception escapes, each bad flag is logged once; a fixed replacement announces
    the flags it fixed."""
    from openfeature import api
    from openfeature.event import EventDetails, ProviderEvent
    from openfeature.exception import ErrorCode

    from flagstone.sdk.openfeature import FlagstoneProvider

    flags = _with_bad_flags() | {"broken": fixed_flag(True), "ratio": fixed_flag(0.5)}
    text = canonical_json(make_payload(1, flags))
    text = _signed_text_digest(text.replace(b'"broken":{', b'"broken":{"type":"json",', 1))
    path = tmp_path / "latest.json"
    path.write_bytes(sign_payload(text, KEY.private))
    caplog.set_level(logging.WARNING)
    client = Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW,
        telemetry=True,
    )
    assert client.snapshot is not None and client.status.value == "READY"
    api.shutdown()
    provider = FlagstoneProvider(client)
    api.set_provider_and_wait(provider)
    events: list[EventDetails] = []
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, events.append)
    of_client = api.get_client()
    bad = ("broken", "checkout", "upsell", "a", "b")
    barrier = threading.Barrier(8)
    wrong: list[Any] = []

    def hammer(n: int) -> None:
        barrier.wait()
        try:
            for i in range(40):
                key = bad[(n + i) % len(bad)]
                details = client.evaluate(key, {"key": f"u{i}"}, "fallback")
                if (details.value, details.error_code) != ("fallback", PARSE_ERROR):
                    wrong.append((key, details))
                if client.bool_value(key, {"key": "u"}, True) is not True:
                    wrong.append((key, "bool_value"))
                if client.string_value(key, None, "s") != "s":
                    wrong.append((key, "string_value"))
                if client.number_value(key, {}, 7) != 7:
                    wrong.append((key, "number_value"))
                resolved = of_client.get_boolean_details(key, True)
                if (resolved.value, resolved.error_code) != (True, ErrorCode.PARSE_ERROR):
                    wrong.append((key, resolved))
                if client.string_value("banner", {"key": f"u{i}"}) != "hello":
                    wrong.append(("banner", i))
                if of_client.get_float_value("ratio", 0.0) != 0.5:
                    wrong.append(("ratio", i))
                answers = client.all_flags({"key": "u"})
                if {k for k, d in answers.items() if d.error_code == PARSE_ERROR} != set(bad):
                    wrong.append(("all_flags", answers))
                labels = client.variation_labels({"key": "u"}, flags=["broken", "banner"])
                if [label["feature_flag_variant"] for label in labels] != ["", "v"]:
                    wrong.append(("labels", labels))
        except Exception as error:  # the test's own failure, reported below
            wrong.append(("raised", repr(error)))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
    assert set(client.snapshot.defects) == set(bad)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for key in bad:
        assert len([m for m in logged if m.startswith(f"flag {key!r} ")]) == 1, (key, logged)
    assert not [r for r in caplog.records if r.exc_info]
    assert client.telemetry is not None
    counts = client.telemetry.counts.collect()
    # 8 threads x 40 rounds: each bad key 64 times through evaluate, the three getters
    # and the provider (all_flags and variation_labels are not counted).
    assert sum(n for key, n in counts.items() if key[0] == "broken" and key[2] == "ERROR") == 320

    fixed = dict(flags)
    fixed["broken"] = fixed_flag(True)
    fixed["checkout"] = fixed_flag(True)
    fixed["b"] = fixed_flag(True)
    path.write_bytes(sign_payload(canonical_json(make_payload(2, fixed)), KEY.private))
    assert client.refresh() is True
    assert wait_for(lambda: any(e.provider_name == "flagstone" for e in events))
    changed = next(e for e in events if e.provider_name == "flagstone")
    assert set(changed.flags_changed or []) == {"broken", "checkout", "upsell", "a", "b"}
    assert client.bool_value("upsell", {"key": "u"}, False) is True
    assert of_client.get_boolean_details("broken", False).value is True
    api.shutdown()
    client.close()


def _chain(length: int) -> dict[str, Any]:
    """Flags c0000 … each requiring the next: a prerequisite chain ``length`` long."""
    flags = {}
    for i in range(length):
        flag = fixed_flag(True)
        if i + 1 < length:
            flag["prerequisites"] = [{"flag": f"c{i + 1:04d}", "variation": "v"}]
        flags[f"c{i:04d}"] = flag
    return flags


def test_a_prerequisite_chain_too_deep_to_compile_is_refused_in_one_line_never_raised(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A chain hundreds of flags long exhausts the recursion limit when it is compiled:
    a replacement that would make a working flag fail through it is refused naming the
    flag (no traceback logged); new flags failing that way answer an error; on a first
    snapshot no reader of that flag raises."""
    deep = {**GOOD, **_chain(600)}
    snapshot = Snapshot.from_payload(read_payload(_text(deep)), owned=True)
    assert snapshot.flag_type("c0000") in (None, "boolean")
    assert snapshot.matching_rule("c0000", {}) is None
    details = snapshot.evaluate("c0000", {"key": "u"}, False)
    assert (details.value, details.reason) == (False, "ERROR")
    assert snapshot.evaluate("banner", {}).value == "hello"
    fresh = Snapshot.from_payload(read_payload(_text(deep)), owned=True)
    with pytest.raises(SnapshotFormatError, match=r"flags\.c0000: its prerequisites nest too deep"):
        fresh.check_every_flag()

    path = tmp_path / "latest.json"
    path.write_bytes(sign_payload(_text(GOOD), KEY.private))
    client = Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW,
    )
    caplog.set_level(logging.WARNING)
    # The chain's flags are new: failing here fails nothing that works now. Taken.
    path.write_bytes(sign_payload(canonical_json(make_payload(4, deep)), KEY.private))
    assert client.refresh() is True
    assert client.evaluate("c0000", {"key": "u"}, False).error_code == "PARSE_ERROR"
    assert client.version == 4 and client.string_value("banner") == "hello"
    # The banner, which works, would fail through the chain: refused, naming it.
    banner = {**GOOD["banner"], "prerequisites": [{"flag": "c0000", "variation": "v"}]}
    payload = make_payload(5, {**deep, "banner": banner})
    path.write_bytes(sign_payload(canonical_json(payload), KEY.private))
    assert client.refresh() is False
    assert "flags.banner: its prerequisites nest too deep" in (client.last_error or "")
    assert client.version == 4 and client.string_value("banner") == "hello"
    assert not [r for r in caplog.records if r.exc_info], "refused as bad input, no traceback"


def _escaped_keys(text: str) -> str:
    """``text`` with every key's first character written as a \\u escape (``"flags"``
    as ``"\\u0066lags"``): the same document to any JSON reader."""
    return re.sub(r'"(\w)([^"\\]*)":', lambda m: f'"\\u{ord(m[1]):04x}{m[2]}":', text)


spec_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(
    flags=st.dictionaries(st.text(max_size=6), spec_values, max_size=5),
    segments=st.dictionaries(st.text(max_size=6), spec_values, max_size=2),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2, "\t"]),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,\r\n", " :\t")]),
    escape_keys=st.booleans(),
    order=st.permutations(["format", "flags", "segments", "version"]),
)
def test_any_writing_of_a_payload_reads_back_as_the_strict_reader_reads_it(
    flags: dict[str, Any],
    segments: dict[str, Any],
    ensure_ascii: bool,
    indent: Any,
    separators: tuple[str, str],
    escape_keys: bool,
    order: list[str],
) -> None:
    members = {"format": "flagstone.snapshot/1", "flags": flags, "segments": segments, "version": 1}
    document = {key: members[key] for key in order}
    text = json.dumps(document, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    if escape_keys:
        text = _escaped_keys(text)
    data = text.encode()
    expected = parse_payload(data)
    read = read_payload(data)
    assert {k: v for k, v in read.items() if k not in ("flags", "segments")} == {
        k: v for k, v in expected.items() if k not in ("flags", "segments")
    }
    for kind in ("flags", "segments"):
        assert isinstance(read[kind], PackedSpecs)
        assert list(read[kind]) == list(expected[kind])
        assert {key: read[kind][key] for key in read[kind]} == expected[kind]


@pytest.mark.parametrize(
    "writing",
    ["canonical", "spaced", "escaped keys", "names in values"],
)
def test_changes_read_from_the_text_equal_those_of_the_parsed_specs(writing: str) -> None:
    """``changed_flags`` reads only the specs whose text may name a prerequisite or a
    segment: whatever the writing, it finds what reading every spec finds."""
    segment = {"include": ["u1"], "exclude": [], "rules": []}
    uses_segment = fixed_flag(True) | {
        "rules": [{"name": "r", "condition": {"segment": "s"}, "serve": {"variation": "v"}}]
    }
    flags = {
        "base": fixed_flag("a"),
        "needs-base": fixed_flag(True) | {"prerequisites": [{"flag": "base", "variation": "v"}]},
        "needs-needs": fixed_flag(True)
        | {"prerequisites": [{"flag": "needs-base", "variation": "v"}]},
        "uses-s": uses_segment,
        "needs-uses-s": fixed_flag(True)
        | {"prerequisites": [{"flag": "uses-s", "variation": "v"}]},
        "quiet": fixed_flag({"prerequisites": [], "segment": "s", "x": "prerequisites"}),
        "other": fixed_flag(1),
    }
    old = make_payload(3, flags, {"s": segment})
    new = make_payload(4, {**flags, "base": fixed_flag("b")}, {"s": {**segment, "include": []}})

    def written(payload: dict[str, Any]) -> bytes:
        if writing == "canonical":
            return canonical_json(payload)
        text = json.dumps(payload, separators=(", ", " : "), ensure_ascii=False)
        if writing == "escaped keys":
            text = text.replace('"prerequisites"', '"\\u0070rerequisites"')
            text = text.replace('"segment"', '"\\u0073egment"')
        elif writing == "names in values":
            text = text.replace('"kind" : "release"', '"kind" : "\\"prerequisites\\":[]"')
        return text.encode()

    old_text, new_text = (
        Snapshot.from_payload(read_payload(written(p)), owned=True) for p in (old, new)
    )
    assert isinstance(new_text.flags, PackedSpecs) and new_text.flags.form == "text"
    from flagstone.sdk.changes import changed_flags

    expected = changed_flags(old["flags"], old["segments"], new["flags"], new["segments"])
    assert expected == {"base", "needs-base", "needs-needs", "uses-s", "needs-uses-s"}
    found = changed_flags(old_text.flags, old_text.segments, new_text.flags, new_text.segments)
    assert found == expected


def _ladder(levels: int) -> dict[str, Any]:
    """Two flags per level, each requiring both of the next level: 2**levels paths."""
    flags = {}
    for level in range(levels):
        for side in "ab":
            flag = fixed_flag(True)
            if level + 1 < levels:
                flag["prerequisites"] = [
                    {"flag": f"l{level + 1:02d}{other}", "variation": "v"} for other in "ab"
                ]
            flags[f"l{level:02d}{side}"] = flag
    return flags


def test_a_kill_lands_whatever_the_prerequisite_graph_of_a_first_snapshot(tmp_path: Any) -> None:
    """A first snapshot is served with flags a whole check refuses (a chain too long to
    compile); finding a killed flag's dependents must neither exhaust the recursion
    limit (the kill raised RecursionError out of refresh and never landed) nor take
    time that grows with the number of paths (a ladder of diamonds)."""
    directory = tmp_path / "dist" / ENVIRONMENT
    directory.mkdir(parents=True)
    flags = {**GOOD, **_chain(1500), **_ladder(40)}
    payload_text = canonical_json(make_payload(1, flags))
    (directory / "latest.json").write_bytes(sign_payload(payload_text, SNAPSHOT_KEY.private))
    client = client_for(tmp_path / "dist")
    assert client.string_value("banner") == "hello"
    put_overrides(tmp_path / "dist", overrides_envelope(1, {"banner": "x", "c1200": "y"}))
    outcome: list[Any] = []

    def refresh() -> None:
        try:
            outcome.append(client.refresh())
        except BaseException as error:  # reported below
            outcome.append(error)

    worker = threading.Thread(target=refresh, daemon=True)
    worker.start()
    worker.join(timeout=120)  # a hang guard, not a timing claim
    assert not worker.is_alive() and outcome == [True]
    details = client.evaluate("banner", {}, "d")
    assert isinstance(details, OverriddenDetails) and details.variation == "off"
    assert client.evaluate("c1200", {}, True).variation == "off"
    dependent = client.evaluate("c1199", {}, True)
    assert (dependent.variation, dependent.reason, dependent.rule) == (
        "off",
        PREREQUISITE_FAILED,
        "c1200",
    )
    assert client.evaluate("l38a", {"key": "u"}).value is True  # not a dependent


def test_with_overrides_in_force_a_bad_flag_is_in_the_snapshots_defects_and_logged_once(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Evaluations run on the snapshot with the overrides applied (a snapshot of its
    own, made again at every overrides change): a flag that fails there is still
    listed in ``client.snapshot.defects`` and logged once, not once per change."""
    directory = tmp_path / "dist" / ENVIRONMENT
    directory.mkdir(parents=True)
    payload_text = canonical_json(make_payload(1, _with_bad_flags()))
    (directory / "latest.json").write_bytes(sign_payload(payload_text, SNAPSHOT_KEY.private))
    client = client_for(tmp_path / "dist")
    caplog.set_level(logging.WARNING)
    for version, killed in ((1, {"banner": "x"}), (2, {"a": "y"}), (3, {"banner": "z"})):
        put_overrides(tmp_path / "dist", overrides_envelope(version, killed))
        client.refresh()
        assert client.overrides_version == version
        details = client.evaluate("checkout", {"key": "u"}, True)
        assert (details.value, details.error_code) == (True, PARSE_ERROR)
    assert client.snapshot is not None and "checkout" in client.snapshot.defects
    logged = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("flag 'checkout'")
    ]
    assert len(logged) == 1, logged
