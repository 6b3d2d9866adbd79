"""Adversarial checks of the SDK's snapshot read from its signed text
(``flagstone.snapshot_text``; docs/design.md §7): nothing the strict reader refuses is
served, however the text is written, and a snapshot with a bad flag behaves everywhere
a client exposes it (getters, all_flags, overrides, change events, the disk cache).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flagstone.canonical import canonical_json
from flagstone.engine import DISABLED, PARSE_ERROR, PREREQUISITE_FAILED, PackedSpecs
from flagstone.envelope import MAX_JSON_DEPTH, parse_payload, sign_payload
from flagstone.errors import EnvelopeError, SnapshotFormatError
from flagstone.overrides import OverriddenDetails
from flagstone.sdk import Client
from flagstone.snapshot_text import read_payload
from sdk_support import ENVIRONMENT, NOW, PROJECT, fixed_flag, make_payload, new_key
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
