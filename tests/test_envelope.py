"""DSSE envelopes: the spec's PAE vector, securesystemslib interop both ways, tampering,
thresholds and the snapshot payload checks."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey
from securesystemslib.signer._utils import compute_default_keyid

from flagstone.canonical import canonical_json, content_digest
from flagstone.envelope import (
    PAYLOAD_TYPE,
    TrustedKey,
    check_snapshot,
    compute_keyid,
    open_snapshot,
    pae,
    parse_payload,
    parse_timestamp,
    public_key_raw,
    sign_payload,
    verify_envelope,
)
from flagstone.errors import EnvelopeError

NOW = parse_timestamp("2026-11-26T10:00:00Z", "now")


def make_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def trusted(key: Ed25519PrivateKey) -> TrustedKey:
    return TrustedKey.from_public(public_key_raw(key))


def snapshot(**overrides: Any) -> dict[str, Any]:
    flags = {"new-checkout": {"type": "boolean", "variations": {"on": True, "off": False}}}
    payload: dict[str, Any] = {
        "format": "flagstone.snapshot/1",
        "project": "acme-shop",
        "environment": "production",
        "version": 7,
        "published_at": "2026-11-20T10:00:00Z",
        "expires": "2026-12-20T10:00:00Z",
        "source": {"commit": "a" * 40, "ref": "refs/heads/main"},
        "digest": content_digest(flags, {}),
        "flags": flags,
        "segments": {},
    }
    payload.update(overrides)
    return payload


def test_pae_matches_the_dsse_specification_vector() -> None:
    # protocol.md of secure-systems-lab/dsse, "Test Vectors".
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t/ü", "é".encode()) == b"DSSEv1 4 t/\xc3\xbc 2 \xc3\xa9"


def test_keyid_is_the_securesystemslib_keyid() -> None:
    for seed in (1, 2, 200):
        key = make_key(seed)
        sslib_key = SSlibKey.from_crypto(key.public_key())
        assert sslib_key.keytype == "ed25519" and sslib_key.scheme == "ed25519"
        assert compute_keyid(public_key_raw(key)) == sslib_key.keyid


def test_keyid_of_a_fixed_key_is_pinned() -> None:
    # Pinned so that a change in the canonical form (which would orphan every
    # configured key) cannot pass unnoticed; cross-checked with securesystemslib.
    public = bytes(range(32))
    pinned = "b5b3929e2eb1cd5fb401e8d8dd00a903bfac256d06eae9cc38a51d344e14583f"
    assert compute_keyid(public) == pinned
    assert compute_default_keyid("ed25519", "ed25519", {"public": public.hex()}) == pinned


def test_securesystemslib_verifies_our_envelope() -> None:
    key = make_key(3)
    envelope_bytes = sign_payload(b'{"hello": "world"}', key)
    envelope = Envelope.from_dict(json.loads(envelope_bytes))
    sslib_key = SSlibKey.from_crypto(key.public_key())
    accepted = envelope.verify([sslib_key], 1)
    assert list(accepted) == [sslib_key.keyid]
    assert envelope.payload == b'{"hello": "world"}'
    assert envelope.payload_type == PAYLOAD_TYPE


def test_securesystemslib_rejects_our_envelope_under_another_key() -> None:
    envelope = Envelope.from_dict(json.loads(sign_payload(b"{}", make_key(3))))
    with pytest.raises(VerificationError):
        envelope.verify([SSlibKey.from_crypto(make_key(4).public_key())], 1)


def test_we_verify_a_securesystemslib_envelope() -> None:
    key = make_key(5)
    signer = CryptoSigner(key)
    envelope = Envelope(b'{"from": "sslib"}', PAYLOAD_TYPE, {})
    envelope.sign(signer)
    wire = json.dumps(envelope.to_dict()).encode()
    assert verify_envelope(wire, [trusted(key)], 1) == b'{"from": "sslib"}'


def test_signing_is_deterministic_and_dedupes_keys() -> None:
    a, b = make_key(1), make_key(2)
    first = sign_payload(b"payload", [a, b, a])
    assert first == sign_payload(b"payload", [a, b])
    assert len(json.loads(first)["signatures"]) == 2


def test_threshold_counts_each_key_once() -> None:
    a, b = make_key(1), make_key(2)
    keys = [trusted(a), trusted(b)]
    both = sign_payload(b"x", [a, b])
    assert verify_envelope(both, keys, 2) == b"x"

    # The same key's signature repeated must not count twice.
    document = json.loads(sign_payload(b"x", a))
    document["signatures"] = document["signatures"] * 3
    repeated = json.dumps(document).encode()
    assert verify_envelope(repeated, keys, 1) == b"x"
    with pytest.raises(EnvelopeError, match="1 valid signature"):
        verify_envelope(repeated, keys, 2)

    # A key listed twice among the trusted keys is still one key.
    with pytest.raises(EnvelopeError, match="cannot be met"):
        verify_envelope(both, [trusted(a), trusted(a)], 2)


def test_signature_without_keyid_is_tried_against_every_trusted_key() -> None:
    a, b = make_key(1), make_key(2)
    document = json.loads(sign_payload(b"x", b))
    del document["signatures"][0]["keyid"]
    assert verify_envelope(json.dumps(document).encode(), [trusted(a), trusted(b)], 1) == b"x"


def test_untrusted_signer_and_bad_threshold_are_rejected() -> None:
    envelope = sign_payload(b"x", make_key(9))
    with pytest.raises(EnvelopeError, match="0 valid signature"):
        verify_envelope(envelope, [trusted(make_key(1))], 1)
    with pytest.raises(EnvelopeError, match="at least 1"):
        verify_envelope(envelope, [trusted(make_key(9))], 0)


def test_wrong_payload_type_is_rejected() -> None:
    key = make_key(1)
    envelope = sign_payload(b"x", key, payload_type="application/vnd.in-toto+json")
    with pytest.raises(EnvelopeError, match="payloadType"):
        verify_envelope(envelope, [trusted(key)], 1)


def _with_char_replaced(text: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    current = text[index]
    replacement = (
        alphabet[(alphabet.index(current) + 1) % len(alphabet)] if current in alphabet else "A"
    )
    return text[:index] + replacement + text[index + 1 :]


@pytest.mark.parametrize("field", ["payload", "payloadType", "sig"])
def test_changing_any_character_of_a_signed_field_is_rejected(field: str) -> None:
    key = make_key(1)
    payload = canonical_json(snapshot())
    original = json.loads(sign_payload(payload, key))
    text = original["signatures"][0]["sig"] if field == "sig" else original[field]
    for index in range(len(text)):
        document = json.loads(json.dumps(original))
        changed = _with_char_replaced(text, index)
        if field == "sig":
            document["signatures"][0]["sig"] = changed
        else:
            document[field] = changed
        with pytest.raises(EnvelopeError):
            verify_envelope(json.dumps(document).encode(), [trusted(key)], 1)


def test_no_single_byte_change_to_the_envelope_yields_a_different_payload() -> None:
    key = make_key(1)
    payload = canonical_json(snapshot())
    envelope = sign_payload(payload, key)
    for index in range(len(envelope)):
        for flip in (0x01, 0x20):
            tampered = bytearray(envelope)
            tampered[index] ^= flip
            try:
                result = verify_envelope(bytes(tampered), [trusted(key)], 1)
            except EnvelopeError:
                continue
            # Only changes outside the signed bytes (e.g. renaming "keyid", which makes
            # the signature anonymous) may pass, and then with the identical payload.
            assert result == payload


def test_non_canonical_base64_is_rejected() -> None:
    key = make_key(1)
    document = json.loads(sign_payload(b"ab", key))
    assert document["payload"] == "YWI="
    for variant in ("YWJ=", "YWI", "YWI==", " YWI=", "YW\nI="):
        document["payload"] = variant
        with pytest.raises(EnvelopeError, match="base64"):
            verify_envelope(json.dumps(document).encode(), [trusted(key)], 1)


def test_url_safe_base64_is_accepted() -> None:
    key = make_key(1)
    payload = b"\xfb\xff\xfe-payload"
    document = json.loads(sign_payload(payload, key))
    document["payload"] = base64.urlsafe_b64encode(payload).decode()
    assert "-" in document["payload"] or "_" in document["payload"]
    assert verify_envelope(json.dumps(document).encode(), [trusted(key)], 1) == payload


@pytest.mark.parametrize(
    "wire",
    [b"", b"[]", b"not json", b'{"payload": "", "payloadType": "x"}', b"\xff\xfe"],
)
def test_malformed_envelopes_are_rejected(wire: bytes) -> None:
    with pytest.raises(EnvelopeError):
        verify_envelope(wire, [trusted(make_key(1))], 1)


def test_trusted_key_config_checks_keyids() -> None:
    key = make_key(1)
    public_hex = public_key_raw(key).hex()
    keyid = compute_keyid(public_key_raw(key))
    assert TrustedKey.from_config({"keys": [{"keyid": keyid, "public": public_hex}]}) == [
        TrustedKey(keyid, public_key_raw(key))
    ]
    with pytest.raises(EnvelopeError, match="does not belong"):
        TrustedKey.from_config({"keys": [{"keyid": "0" * 64, "public": public_hex}]})
    with pytest.raises(EnvelopeError, match="32 bytes"):
        TrustedKey.from_public("abcd")


def test_check_snapshot_accepts_a_good_payload() -> None:
    check_snapshot(snapshot(), project="acme-shop", environment="production", now=NOW)
    check_snapshot(snapshot(), project=None, environment=None, now=NOW)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": "flagstone.snapshot/2"}, "format"),
        ({"project": "other"}, "project"),
        ({"environment": "staging"}, "environment"),
        ({"expires": "2026-11-26T10:00:00Z"}, "expired"),
        ({"expires": "2026-11-01T00:00:00Z"}, "expired"),
        ({"expires": "next week"}, "timestamp"),
        ({"version": 0}, "version"),
        ({"digest": "sha256:" + "0" * 64}, "digest"),
        ({"segments": {"staff": {"include": ["u1"]}}}, "digest"),
        ({"flags": []}, "flags"),
    ],
)
def test_check_snapshot_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        check_snapshot(
            snapshot(**overrides), project="acme-shop", environment="production", now=NOW
        )


def test_open_snapshot_end_to_end() -> None:
    key = make_key(1)
    envelope = sign_payload(canonical_json(snapshot()), key)
    payload = open_snapshot(
        envelope, [trusted(key)], 1, project="acme-shop", environment="production", now=NOW
    )
    assert payload == snapshot()
    with pytest.raises(EnvelopeError, match="environment"):
        open_snapshot(
            envelope, [trusted(key)], 1, project="acme-shop", environment="staging", now=NOW
        )


def test_parse_payload_rejects_duplicates_and_non_json_numbers() -> None:
    with pytest.raises(EnvelopeError, match="duplicate"):
        parse_payload(b'{"a": 1, "a": 2}')
    with pytest.raises(EnvelopeError, match="NaN"):
        parse_payload(b'{"a": NaN}')
    with pytest.raises(EnvelopeError, match="object"):
        parse_payload(b"[1]")


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=300), payload_type=st.text(min_size=1, max_size=40))
def test_round_trip_and_securesystemslib_agree_on_any_payload(
    payload: bytes, payload_type: str
) -> None:
    key = make_key(11)
    envelope = sign_payload(payload, key, payload_type=payload_type)
    assert verify_envelope(envelope, [trusted(key)], 1, payload_type=payload_type) == payload
    sslib = Envelope.from_dict(json.loads(envelope))
    assert sslib.pae() == pae(payload_type, payload)
    sslib.verify([SSlibKey.from_crypto(key.public_key())], 1)


# --- the digest against the signed bytes (the SDK's path) ---------------------------

_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
)
_KEYS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    flags=st.dictionaries(_KEYS, _JSON, max_size=4),
    segments=st.dictionaries(_KEYS, _JSON, max_size=3),
    extra=st.dictionaries(_KEYS, _JSON, max_size=3),
)
def test_the_digest_of_the_signed_bytes_is_the_canonical_digest(
    flags: dict[str, Any], segments: dict[str, Any], extra: dict[str, Any]
) -> None:
    from flagstone.envelope import _signed_content_digest

    payload = {**extra, **snapshot(flags=flags, segments=segments, digest="sha256:")}
    signed = canonical_json(payload)
    parsed = parse_payload(signed)
    found = _signed_content_digest(parsed, signed)
    # None only when the bytes might hold an integer beyond 2**53 (left to the full check).
    assert found is None or found == content_digest(flags, segments)
    if found is None:
        assert re.search(rb"[:,\[]-?[0-9]{16}", signed)


def _check_signed(payload: dict[str, Any], signed: bytes) -> None:
    check_snapshot(
        parse_payload(signed),
        project="acme-shop",
        environment="production",
        now=NOW,
        signed_payload=signed,
    )


def test_check_snapshot_with_the_signed_bytes_accepts_a_canonical_payload() -> None:
    from flagstone.envelope import _signed_content_digest

    payload = snapshot()
    signed = canonical_json(payload)
    assert _signed_content_digest(parse_payload(signed), signed) == payload["digest"]
    _check_signed(payload, signed)


def test_check_snapshot_with_the_signed_bytes_still_refuses_a_stale_digest() -> None:
    payload = snapshot()
    payload["flags"]["new-checkout"]["variations"]["off"] = True
    with pytest.raises(EnvelopeError, match="does not match its content"):
        _check_signed(payload, canonical_json(payload))
    with pytest.raises(EnvelopeError, match="does not match its content"):
        _check_signed(payload, json.dumps(payload, indent=2).encode())


def test_a_payload_not_laid_out_canonically_gets_the_full_recomputation() -> None:
    from flagstone.envelope import _signed_content_digest

    payload = snapshot()
    for signed in (
        json.dumps(payload, indent=2).encode(),  # whitespace at the top level
        json.dumps(payload, separators=(",", ":")).encode(),  # keys not sorted
        canonical_json(payload).replace(b'"flags":', b'"flags": '),
    ):
        # No digest from the signed bytes (or that of other bytes than the canonical
        # ones), so not the one in the payload ...
        assert _signed_content_digest(parse_payload(signed), signed) != payload["digest"]
        _check_signed(payload, signed)  # ... but the canonical digest matches: accepted


def test_integers_beyond_2_53_are_left_to_the_full_check() -> None:
    flags = {"f": {"type": "number", "variations": {"big": 2**60}}}
    payload = snapshot(flags=flags)
    # What the publisher cannot write, a signer could: JSON text with a 2**60 in it.
    content = json.dumps(
        {"flags": flags, "segments": {}}, sort_keys=True, separators=(",", ":")
    ).encode()
    payload["digest"] = "sha256:" + hashlib.sha256(content).hexdigest()
    signed = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    # Reading those bytes (as the SDK and verify do) refuses them before any check...
    with pytest.raises(EnvelopeError, match="not a canonical double"):
        _check_signed(payload, signed)
    # ...and the digest check alone, given the parsed value, refuses it too.
    with pytest.raises(EnvelopeError, match="cannot be digested"):
        check_snapshot(
            payload, project="acme-shop", environment="production", now=NOW, signed_payload=signed
        )


def test_escaped_surrogates_are_left_to_the_full_check() -> None:
    from flagstone.envelope import _signed_content_digest

    payload = snapshot(segments={"s": {"include": ["\U0001f600"]}})
    payload["digest"] = content_digest(payload["flags"], payload["segments"])
    signed = canonical_json(payload).replace("\U0001f600".encode(), b"\\ud83d\\ude00")
    assert _signed_content_digest(parse_payload(signed), signed) is None
    _check_signed(payload, signed)


def _reference_decode_base64(text: str) -> bytes | str:
    """The general path of _decode_base64 for every alphabet: bytes, or the error."""
    alphabet = b"-_" if ("-" in text or "_" in text) else b"+/"
    try:
        raw = base64.b64decode(text, altchars=alphabet, validate=True)
    except (ValueError, TypeError):
        return "not valid"
    if base64.b64encode(raw, altchars=alphabet).decode() != text:
        return "not canonical"
    return raw


_BASE64_TEXT = st.one_of(
    st.binary(max_size=12).map(lambda raw: base64.b64encode(raw).decode()),
    st.text("ABCDQRSTUwxyz0189+/=", max_size=12),
    st.text("AQgw+/= \n-_é", max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(text=_BASE64_TEXT, mutation=st.integers(min_value=0, max_value=63))
def test_fast_base64_decoding_agrees_with_the_general_path(text: str, mutation: int) -> None:
    from flagstone.envelope import _decode_base64

    # Also the same text with its last data character changed (stray trailing bits).
    stripped = text.rstrip("=")
    mutated = (
        stripped[:-1]
        + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[mutation]
        + text[len(stripped) :]
        if stripped
        else text
    )
    for candidate in (text, mutated):
        expected = _reference_decode_base64(candidate)
        # As text (a JSON string) and as the envelope's own bytes (see _read_envelope).
        for encoded in (candidate, candidate.encode()):
            try:
                found: bytes | str = _decode_base64(encoded, "payload")
            except EnvelopeError as error:
                found = "not canonical" if "canonical" in str(error) else "not valid"
            assert found == expected, encoded
