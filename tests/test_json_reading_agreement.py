"""One JSON reading everywhere (issue 12 item 6): ``flagstone verify`` and the SDK give
the same verdict on the same bytes, random and hostile alike.

Hostile payloads are *signed by the trusted key*, so they get past the signature and
reach the JSON reading and the payload checks: duplicate keys (in the payload and in
the envelope), NaN and Infinity, 1e400, integers beyond 2**53, lone surrogates,
non-canonical bytes, deep nesting and unbalanced brackets.

The SDK's verdict is whether it serves everything the payload holds: the first
snapshot a client loads is served at once and each flag is read strictly on its first
evaluation (docs/design.md §7), so a hostile flag there answers PARSE_ERROR while
``verify`` refuses the whole. Either way nothing the strict reader refuses is served.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagstone.canonical import canonical_json
from flagstone.cli.main import main
from flagstone.engine import PARSE_ERROR
from flagstone.envelope import sign_payload
from flagstone.sdk import Client
from publish_helpers import fixed_key, make_repo, trusted
from sdk_support import NOW, fixed_flag, format_timestamp, make_payload

PROJECT = "demo-shop"
ENVIRONMENT = "production"


def _payload(banner: object = "hello") -> bytes:
    """Canonical payload text, digest and all, with ``banner`` serving ``banner``."""
    flags = {"banner": fixed_flag(banner), "ratio": fixed_flag(0.25), "on": fixed_flag(True)}
    return canonical_json(make_payload(3, flags, project=PROJECT, environment=ENVIRONMENT))


BASE = _payload()
SMILE = "\U0001f600"


def _changed(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def change(payload: bytes) -> bytes:
        assert old in payload
        return payload.replace(old, new)

    return change


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Each gives the payload text to sign: hostile variants of BASE (refused by both), and
# valid payloads written unusually (accepted by both).
HOSTILE: dict[str, Callable[[], bytes]] = {
    "duplicate payload key": lambda: BASE[:-1] + b',"version":3}',
    "NaN": lambda: _changed(b'"v":0.25', b'"v":NaN')(BASE),
    "Infinity": lambda: _changed(b'"v":0.25', b'"v":-Infinity')(BASE),
    "1e400": lambda: _changed(b'"v":0.25', b'"v":1e400')(BASE),
    "integer beyond 2**53": lambda: _changed(b'"version":3', b'"version":9007199254740993')(BASE),
    "integer of 5000 digits": lambda: _changed(b'"v":0.25', b'"v":' + b"7" * 5000)(BASE),
    "lone surrogate": lambda: _changed(b'"hello"', b'"\\ud800"')(BASE),
    "deep nesting": lambda: _changed(b'"hello"', b"[" * 5000 + b"]" * 5000)(BASE),
    "unbalanced": lambda: _changed(b'"hello"', b"[" * 5000)(BASE),
    # The payload, flags, banner and variations enclose the value: 4 + 61 = 65 levels.
    "nesting one past the limit": lambda: _payload(_nested(61)),
    "not UTF-8": lambda: _changed(b"hello", b"hel\xfflo")(BASE),
}
ACCEPTED: dict[str, Callable[[], bytes]] = {
    "canonical": lambda: BASE,
    "whitespace": lambda: BASE.replace(b",", b", "),
    "escaped surrogate pair": lambda: _changed(SMILE.encode(), b"\\ud83d\\ude00")(_payload(SMILE)),
    "nesting at the limit": lambda: _payload(_nested(60)),
}


def _envelope_with_duplicate(envelope: bytes) -> bytes:
    document = json.loads(envelope)
    return envelope[:-1] + b',"payloadType":' + json.dumps(document["payloadType"]).encode() + b"}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("agreement") / "repo")


def _verdicts(repo: Path, envelope: bytes, capsys: pytest.CaptureFixture[str]) -> tuple[bool, bool]:
    path = repo / "candidate.json"
    path.write_bytes(envelope)
    with pytest.raises(SystemExit) as exited:
        main(["verify", str(path), "--repo", str(repo), "--at", format_timestamp(NOW)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err
    code = exited.value.code
    assert code in (0, 1), err  # refused as bad input, never a usage or internal error
    client = Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[trusted()],
        project=PROJECT,
        clock=lambda: NOW,
    )
    assert "RecursionError" not in (client.last_error or "")
    snapshot = client.snapshot
    if snapshot is None:
        return code == 0, False
    for key in snapshot.flags:
        details = client.evaluate(key, {"key": "u"})
        assert "RecursionError" not in (details.error_message or "")
        if details.error_code == PARSE_ERROR:
            return code == 0, False
    return code == 0, True


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_signed_payloads_are_refused_by_both(
    repo: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    envelope = sign_payload(HOSTILE[case](), fixed_key())
    assert _verdicts(repo, envelope, capsys) == (False, False)


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_valid_payloads_written_unusually_are_accepted_by_both(
    repo: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    envelope = sign_payload(ACCEPTED[case](), fixed_key())
    assert _verdicts(repo, envelope, capsys) == (True, True)


def test_a_duplicate_key_in_the_envelope_is_refused_by_both(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = _envelope_with_duplicate(sign_payload(BASE, fixed_key()))
    assert _verdicts(repo, envelope, capsys) == (False, False)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.sampled_from(sorted(HOSTILE) + sorted(ACCEPTED)),
    st.integers(min_value=0, max_value=len(BASE)),
    st.binary(max_size=8),
    st.booleans(),
)
def test_random_bytes_get_the_same_verdict_from_both(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    position: int,
    inserted: bytes,
    signed: bool,
) -> None:
    """A hostile variant with random bytes spliced in, signed or not (unsigned: the
    envelope text itself is the random one)."""
    payload = {**HOSTILE, **ACCEPTED}[case]()
    payload = payload[:position] + inserted + payload[position:]
    if signed:
        envelope = sign_payload(payload, fixed_key())
    else:
        text = sign_payload(BASE, fixed_key())
        envelope = text[:position] + inserted + text[position:]
    by_verify, by_sdk = _verdicts(repo, envelope, capsys)
    assert by_verify == by_sdk
