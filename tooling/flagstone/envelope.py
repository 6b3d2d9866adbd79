"""Signed snapshots: DSSE v1 envelopes with Ed25519 signatures (docs/design.md §5).

The wire object is a DSSE envelope (https://github.com/secure-systems-lab/dsse)::

    {"payload": "<base64 of the canonical snapshot JSON>",
     "payloadType": "application/vnd.flagstone.snapshot+json",
     "signatures": [{"keyid": "<64 hex>", "sig": "<base64 of 64 Ed25519 bytes>"}]}

Each signature is over the pre-authentication encoding ``PAE(payloadType, payload)``,
so the payload type is authenticated along with the payload. Key ids are computed the
way TUF and securesystemslib compute them for an ed25519 key, so
``securesystemslib.dsse.Envelope.verify`` accepts Flagstone envelopes and Flagstone
accepts theirs.

Verification is strict where strictness costs nothing: base64 must be canonical (so
no two different envelope texts carry the same signed bytes unnoticed), each trusted
key counts once towards the threshold however many signatures it made, and the payload
checks (``check_snapshot``) cover format, project, environment, expiry and digest.

Standard library, ``cryptography`` and ``flagstone.canonical`` only: the SDK imports
this module.
"""

from __future__ import annotations

import binascii
import contextlib
import gc
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flagstone.canonical import DIGEST_PREFIX, canonical_json, content_digest
from flagstone.errors import EnvelopeError, SnapshotFormatError
from flagstone.records import Record, set_field

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# cryptography's Ed25519, base64 and datetime are imported where they are used, so that
# `import flagstone.sdk` does not pay for them (issue 18.2); loading a snapshot does.

PAYLOAD_TYPE = "application/vnd.flagstone.snapshot+json"
SNAPSHOT_FORMAT = "flagstone.snapshot/1"
KEY_TYPE = "ed25519"
SIGNATURE_SCHEME = "ed25519"

# The SDK's default size cap (flagstone.sdk.sources.DEFAULT_MAX_BYTES): about 500,000
# realistic flags; anything beyond is not ours.
MAX_ENVELOPE_BYTES = 256 * 1024 * 1024

_KEYID_PATTERN = re.compile(r"[0-9a-f]{64}")
_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


# Deeper than any snapshot or envelope needs (a snapshot nests about 10 levels), far
# below where the recursive parsers and serializers would fail.
MAX_JSON_DEPTH = 64
_SAFE_INTEGER = 2**53 - 1
# Digits as b"0", anything else as b" ": a run of 16 digits is a possible integer beyond
# ±(2**53 - 1) (C-speed passes; a regular expression takes ten times longer).
_DIGITS_MARKED = bytes(ord("0") if byte in b"0123456789" else ord(" ") for byte in range(256))
_SIXTEEN_DIGITS = b"0" * 16
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
# What _structure keeps of a text: quotes, brackets (both kinds), commas and colons.
_STRUCTURE = bytes(range(256)).translate(None, b'"[]{},:')
_ONE_BRACKET_KIND = bytes.maketrans(b"{}", b"[]")
# An array whose only element is a number, true, false or null: its brackets meet in the
# structure. Also counts look-alikes inside strings, so it is an upper bound.
_SCALAR_FIRST = re.compile(rb"\[[ \t\n\r]*[-0-9tfn]")


def read_json(data: bytes, what: str, *, enclosed: int = 0) -> Any:
    """``data`` as JSON, the one way ``flagstone verify`` and the SDK read envelopes,
    payloads and cache files: UTF-8; no duplicate object keys; no NaN or Infinity;
    no number that is not a finite double (``1e400``) and no integer beyond
    ±(2**53 - 1), which canonical JSON cannot carry; no lone surrogate (``"\\ud800"``);
    nesting at most ``MAX_JSON_DEPTH`` deep, checked before parsing, so no recursion
    can fail. Raises ``EnvelopeError`` naming ``what``.

    ``enclosed``: how many brackets enclose ``data`` in the document it is part of (a
    flag's text read alone: 2, the payload and its ``flags``), counted in its nesting,
    so a part read alone is refused exactly when the whole would be.

    Duplicate keys are proven absent without a Python call per object (what made
    reading a large snapshot slow): the parser keeps every array element and every
    object member except a repeated key's, so the document holds as many elements as
    the text writes exactly when no key repeats. The text's count comes from its
    structure (``_text_elements``, an upper bound), the document's from the C-level
    traversal ``gc.get_referents`` (``_document_elements``). Only when the two differ
    is the text read again with a check on every object, which decides.
    """
    structure = _structure(data)
    if _nesting_exceeds(structure, MAX_JSON_DEPTH - enclosed):
        raise EnvelopeError(
            f"{what} is not JSON this reader accepts: its brackets nest more than "
            f"{MAX_JSON_DEPTH} levels deep"
            f"{f' (counting the {enclosed} around it)' if enclosed else ''} or do not balance"
        )

    def reject_constant(name: str) -> Any:
        raise EnvelopeError(f"{what} contains {name}, which is not JSON")

    def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise EnvelopeError(f"{what} has a duplicate object key")
        return result

    def finite_float(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise EnvelopeError(f"{what} contains the number {text[:40]}, beyond a double")
        return value

    def safe_integer(text: str) -> int | float:
        # Canonical JSON numbers are doubles: a larger integer is accepted only when it
        # is the canonical text of a double (canonical JSON writes the double 2.0**53
        # as 9007199254740992, and 1e16 + 2 as 10000000000000002), and is read as it.
        if len(text) <= 400:
            value = int(text)
            if abs(value) <= _SAFE_INTEGER:
                return value
            with contextlib.suppress(OverflowError, SnapshotFormatError):
                as_double = float(value)
                if canonical_json(as_double) == text.encode():
                    return as_double
        raise EnvelopeError(
            f"{what} contains the integer {text[:40]}, which is not a canonical double"
        )

    # Checking every integer costs a call each; only text with a run of 16+ digits
    # (anywhere, even in a string) can hold one too large.
    parse_int = safe_integer if _SIXTEEN_DIGITS in data.translate(_DIGITS_MARKED) else None
    try:
        document = json.loads(
            data, parse_constant=reject_constant, parse_float=finite_float, parse_int=parse_int
        )
        if not _COUNTS_ELEMENTS or _document_elements(document) != _text_elements(structure, data):
            document = json.loads(
                data,
                parse_constant=reject_constant,
                object_pairs_hook=unique_object,
                parse_float=finite_float,
                parse_int=parse_int,
            )
    except (UnicodeDecodeError, ValueError) as error:
        raise EnvelopeError(f"{what} is not JSON: {error}") from None
    if _ESCAPED_SURROGATE.search(data) and _has_lone_surrogate(document):
        raise EnvelopeError(f"{what} contains a lone surrogate, which is not Unicode text")
    return document


def _structure(data: bytes) -> bytes:
    """The quotes, brackets, commas and colons of ``data`` outside its strings, each
    string (however long) reduced to one ``s``; exact for JSON text.

    C-speed passes only: drop escaped backslashes, then escaped quotes (so every quote
    left opens or closes a string); keep quotes and structure characters; a string
    holding none of those is now ``""`` (in JSON two strings never meet without a comma
    or colon between them, so two adjacent quotes are one string); the rare strings
    left holding structure characters are removed by splitting at the quotes.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = data.translate(None, _STRUCTURE)
    structure = kept.replace(b'""', b"s")
    if b'"' in structure:
        structure = b"s".join(structure.split(b'"')[::2])
    return structure


def _nesting_exceeds(structure: bytes, limit: int) -> bool:
    """Whether the brackets of ``structure`` (see ``_structure``) nest deeper than
    ``limit``: remove the empty ones (``[]``, the two kinds made one) ``limit`` times;
    anything left is deeper, or does not balance (refused here too: the parser would
    recurse into it before finding out). Making the kinds one never hides depth: the
    parser stops at the first bracket of the wrong kind, at a depth counted here."""
    brackets = structure.translate(_ONE_BRACKET_KIND, b"s,:")
    for _ in range(limit):
        if not brackets:
            return False
        reduced = brackets.replace(b"[]", b"")
        if reduced == brackets:
            return True  # brackets that do not balance
        brackets = reduced
    return bool(brackets)


def _text_elements(structure: bytes, data: bytes) -> int:
    """An upper bound on the array elements plus object members ``data`` writes
    (exact for the canonical JSON Flagstone publishes).

    Each non-empty container holds one more element than the commas directly in it. A
    container is empty when its brackets meet in the structure, except an array holding
    one number, ``true``, ``false`` or ``null`` (an object's member always leaves its
    key's ``s``): subtracting only the meetings that cannot be such an array keeps this
    an upper bound.
    """
    containers = structure.count(b"[") + structure.count(b"{")
    empty_objects = structure.count(b"{}")
    meeting_arrays = structure.count(b"[]")
    arrays_of_one_scalar = len(_SCALAR_FIRST.findall(data))
    empty_arrays = max(0, meeting_arrays - arrays_of_one_scalar)
    return structure.count(b",") + containers - empty_objects - empty_arrays


def _document_elements(document: Any) -> int:
    """The array elements plus object members of parsed JSON: the objects each
    container refers to, which ``gc.get_referents`` lists in C (a dict with string keys
    visits its values, a list its items; strings and numbers are not containers)."""
    total = 0
    level = [document]
    while level:
        level = gc.get_referents(*level)
        total += len(level)
    return total


# Whether this interpreter's gc.get_referents counts parsed JSON as _document_elements
# expects (CPython does); if not, every object is checked by the slower way.
_COUNTS_ELEMENTS = (
    _document_elements(json.loads('{"a":[1,{"b":"c","d":{},"e":[]}],"f":null,"g":[[2]]}')) == 10
)


def _has_lone_surrogate(document: Any) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(payload) SP payload``, lengths in ASCII decimal.
    """
    encoded_type = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(encoded_type), encoded_type, len(payload), payload)


def compute_keyid(public_raw: bytes) -> str:
    """The TUF / securesystemslib key id of a raw 32-byte Ed25519 public key.

    sha256 over the canonical JSON of
    ``{"keytype":"ed25519","keyval":{"public":"<hex>"},"scheme":"ed25519"}`` (OLPC
    canonical JSON: sorted keys, no whitespace; every string here is plain ASCII, so
    it coincides with RFC 8785).
    """
    if len(public_raw) != _PUBLIC_KEY_BYTES:
        raise EnvelopeError(f"an Ed25519 public key has 32 bytes, not {len(public_raw)}")
    key_description = {
        "keytype": KEY_TYPE,
        "keyval": {"public": public_raw.hex()},
        "scheme": SIGNATURE_SCHEME,
    }
    import hashlib  # on first use (issue 18.2: import time)

    return hashlib.sha256(canonical_json(key_description)).hexdigest()


def public_key_raw(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32 public-key bytes belonging to ``private_key``."""
    # Imported here: the serialization package (with SSH and EC key formats) costs the
    # SDK's import more than the rest of cryptography, and only key tooling needs it.
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class TrustedKey(Record):
    """A public key allowed to sign snapshots; ``public`` is the raw 32 bytes."""

    keyid: str
    public: bytes

    _fields = __slots__ = ("keyid", "public")

    def __init__(self, keyid: str, public: bytes) -> None:
        set_field(self, "keyid", keyid)
        set_field(self, "public", public)
        self.__post_init__()

    def __post_init__(self) -> None:
        if len(self.public) != _PUBLIC_KEY_BYTES:
            raise EnvelopeError(
                f"trusted key {self.keyid[:12]}…: an Ed25519 public key has 32 bytes, not {len(self.public)}"
            )
        if not _KEYID_PATTERN.fullmatch(self.keyid):
            raise EnvelopeError(f"trusted key id {self.keyid!r} is not 64 lowercase hex digits")

    @classmethod
    def from_public(cls, public: bytes | str, keyid: str | None = None) -> TrustedKey:
        """A trusted key from raw bytes or their hex; a given ``keyid`` must be the right one."""
        if isinstance(public, str):
            try:
                public = bytes.fromhex(public)
            except ValueError:
                raise EnvelopeError("trusted public key is not hex") from None
        expected = compute_keyid(public)
        if keyid is not None and keyid != expected:
            raise EnvelopeError(
                f"key id {keyid} does not belong to public key {public.hex()}",
                hint=f"its key id is {expected}",
            )
        return cls(expected, public)

    @classmethod
    def from_config(cls, signing: Mapping[str, Any]) -> list[TrustedKey]:
        """The keys of a ``signing:`` section of ``flagstone.yaml`` (``keys: [{keyid, public}]``)."""
        keys = []
        for entry in signing.get("keys") or []:
            if not isinstance(entry, Mapping) or "public" not in entry:
                raise EnvelopeError("every signing key needs a `public` (hex of 32 bytes)")
            keys.append(cls.from_public(str(entry["public"]), entry.get("keyid")))
        return keys


def sign_payload(
    payload: bytes,
    private_keys: Ed25519PrivateKey | Iterable[Ed25519PrivateKey],
    *,
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    """A DSSE envelope (canonical JSON bytes) carrying ``payload`` signed by every key.

    Ed25519 signatures are deterministic, so the same payload and keys give the same bytes.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = [private_keys] if isinstance(private_keys, Ed25519PrivateKey) else list(private_keys)
    if not keys:
        raise EnvelopeError("at least one signing key is needed")
    message = pae(payload_type, payload)
    signatures = []
    seen: set[str] = set()
    for key in keys:
        keyid = compute_keyid(public_key_raw(key))
        if keyid in seen:
            continue
        seen.add(keyid)
        signature = key.sign(message)
        signatures.append({"keyid": keyid, "sig": _standard_base64(signature)})
    envelope = {
        "payload": _standard_base64(payload),
        "payloadType": payload_type,
        "signatures": signatures,
    }
    return canonical_json(envelope)


def _standard_base64(data: bytes) -> str:
    """``base64.standard_b64encode(data).decode()``, without importing base64."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_BASE64_VALUES = {
    character: value
    for value, character in enumerate(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    )
}


def _decode_base64(text: object, what: str) -> bytes:
    """Standard or URL-safe base64 (both allowed by DSSE), accepted only in canonical form.

    Non-canonical text (stray trailing bits, missing or extra padding, whitespace)
    decodes to the same bytes as some other text; rejecting it means any change to the
    envelope's encoded fields is a change to the bytes that are verified.
    """
    if isinstance(text, bytes):  # the envelope's own payload bytes (see _read_envelope)
        if b"-" in text or b"_" in text:
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise EnvelopeError(f"envelope {what} is not valid base64") from None
    elif not isinstance(text, str):
        raise EnvelopeError(f"envelope {what} is not a string")
    if isinstance(text, bytes) or ("-" not in text and "_" not in text):
        # The standard alphabet, decoded and checked in C (a payload is megabytes):
        # strict mode refuses anything but alphabet characters and correct padding;
        # what is left for canonical form is exactly as much padding as the last
        # quantum needs, and zero bits beyond the data in the last character.
        # Equivalent to the general path below (tested).
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"envelope {what} is not valid base64") from None
        ending = text[-3:] if isinstance(text, str) else text[-3:].decode("latin-1")
        padding = 2 if ending.endswith("==") else 1 if ending.endswith("=") else 0
        if len(text) != 4 * ((len(raw) + 2) // 3) or (
            padding and _BASE64_VALUES[ending[-padding - 1]] & (0b1111 if padding == 2 else 0b11)
        ):
            raise EnvelopeError(f"envelope {what} is not canonical base64")
        return raw
    import base64

    alphabet = b"-_"
    try:
        raw = base64.b64decode(text, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"envelope {what} is not valid base64") from None
    if base64.b64encode(raw, altchars=alphabet).decode() != text:
        raise EnvelopeError(f"envelope {what} is not canonical base64")
    return raw


_PAYLOAD_FIRST = b'{"payload":"'


def _read_envelope(envelope: bytes) -> Any:
    """``read_json(envelope)``, without running its checks over megabytes of base64.

    An envelope as Flagstone writes it (canonical JSON) starts with the payload string.
    When that string holds no backslash, it is one JSON string token whatever its
    bytes: the envelope reads as the rest with an empty payload string does, with
    those bytes as the payload (``_decode_base64`` takes them as they are; a byte that
    is not base64's, non-ASCII included, is refused there, as the whole read would
    refuse it as base64). Any other envelope is read whole.
    """
    start = len(_PAYLOAD_FIRST)
    end = envelope.find(b'"', start) if envelope.startswith(_PAYLOAD_FIRST) else -1
    if end < 0 or envelope.find(b"\\", start, end) >= 0:
        return read_json(envelope, "envelope")
    payload = envelope[start:end]  # bytes: decoded as base64 without a str copy
    document = read_json(_PAYLOAD_FIRST + envelope[end:], "envelope")
    if isinstance(document, dict) and document.get("payload") == "":
        document["payload"] = payload
    return document


class _Signature(Record):
    keyid: str | None
    sig: bytes

    _fields = __slots__ = ("keyid", "sig")

    def __init__(self, keyid: str | None, sig: bytes) -> None:
        set_field(self, "keyid", keyid)
        set_field(self, "sig", sig)


def _parse_envelope(envelope: bytes) -> tuple[str, bytes, list[_Signature]]:
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(
            f"envelope is {len(envelope)} bytes, over the {MAX_ENVELOPE_BYTES} byte limit"
        )
    document = _read_envelope(envelope)
    if not isinstance(document, dict):
        raise EnvelopeError("envelope is not a JSON object")
    missing = [name for name in ("payload", "payloadType", "signatures") if name not in document]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}; is this a DSSE envelope?")
    payload_type = document["payloadType"]
    if not isinstance(payload_type, str):
        raise EnvelopeError("envelope payloadType is not a string")
    payload = _decode_base64(document["payload"], "payload")
    if not isinstance(document["signatures"], list):
        raise EnvelopeError("envelope signatures is not a list")
    signatures = []
    for entry in document["signatures"]:
        if not isinstance(entry, dict):
            raise EnvelopeError("envelope signature is not an object")
        keyid = entry.get("keyid")
        if keyid is not None and not isinstance(keyid, str):
            raise EnvelopeError("envelope signature keyid is not a string")
        signatures.append(_Signature(keyid or None, _decode_base64(entry.get("sig"), "signature")))
    return payload_type, payload, signatures


def verify_envelope(
    envelope: bytes,
    trusted: Sequence[TrustedKey],
    threshold: int,
    *,
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    """The payload of ``envelope`` once at least ``threshold`` distinct trusted keys signed it.

    A signature naming a keyid is checked against that key only; one without a keyid
    (DSSE makes it optional) against every trusted key. Each key counts once, however
    many signatures it made. Raises ``EnvelopeError`` saying why it was rejected.
    """
    return verify_envelope_signers(envelope, trusted, threshold, payload_type=payload_type)[0]


def verify_envelope_signers(
    envelope: bytes,
    trusted: Sequence[TrustedKey],
    threshold: int,
    *,
    payload_type: str = PAYLOAD_TYPE,
) -> tuple[bytes, frozenset[str]]:
    """``verify_envelope``, and the key ids of the trusted keys whose signatures verified
    (what vouches for the snapshot's version: see the SDK cache's version floor)."""
    distinct_keys = {key.public: key for key in trusted}
    if threshold < 1:
        raise EnvelopeError(f"signature threshold must be at least 1, not {threshold}")
    if len(distinct_keys) < threshold:
        raise EnvelopeError(
            f"signature threshold {threshold} cannot be met by {len(distinct_keys)} trusted key(s)",
            hint="add public keys under signing.keys in flagstone.yaml or lower signing.threshold",
        )
    found_type, payload, signatures = _parse_envelope(envelope)
    if found_type != payload_type:
        raise EnvelopeError(f"envelope payloadType is {found_type!r}, expected {payload_type!r}")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    message = pae(found_type, payload)
    verified: set[bytes] = set()
    for signature in signatures:
        if len(signature.sig) != _SIGNATURE_BYTES:
            continue
        candidates = [k for k in distinct_keys.values() if signature.keyid in (None, k.keyid)]
        for key in candidates:
            if key.public in verified:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(key.public).verify(signature.sig, message)
            except InvalidSignature:
                continue
            verified.add(key.public)
            break
    if len(verified) < threshold:
        named = sorted({s.keyid[:12] + "…" for s in signatures if s.keyid})
        signed_by = f" (signatures name {', '.join(named)})" if named else ""
        raise EnvelopeError(
            f"envelope has {len(verified)} valid signature(s) from trusted keys, "
            f"{threshold} required{signed_by}",
            hint="is the snapshot signed by a key listed under signing.keys in flagstone.yaml?",
        )
    keyids = frozenset(key.keyid for key in distinct_keys.values() if key.public in verified)
    return payload, keyids


def parse_payload(payload: bytes) -> dict[str, Any]:
    """The snapshot payload as a JSON object, read with ``read_json``."""
    document = read_json(payload, "snapshot payload")
    if not isinstance(document, dict):
        raise EnvelopeError("snapshot payload is not a JSON object")
    return document


def parse_timestamp(text: object, what: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp written with ``Z``."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise EnvelopeError(f"snapshot {what} {text!r} is not an RFC 3339 UTC timestamp")
    try:
        from datetime import datetime

        moment = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        raise EnvelopeError(f"snapshot {what} {text!r} is not an RFC 3339 UTC timestamp") from None
    return moment.timestamp()


def check_snapshot(
    payload: Mapping[str, Any],
    *,
    project: str | None,
    environment: str | None,
    now: float,
    signed_payload: bytes | None = None,
) -> None:
    """Reject a verified payload that is not a usable snapshot for us, now.

    Checks the format marker, the project and environment (``None`` skips that check),
    that it has not expired at ``now`` (seconds since the epoch), and that ``digest``
    matches the ``flags`` and ``segments`` it carries. Raises ``EnvelopeError``.

    ``signed_payload``, when given, must be the verified bytes ``payload`` was parsed
    from (the SDK passes them; ``flagstone verify`` and publishing do not). Then a
    payload laid out in canonical form has its digest compared with the sha256 of its
    ``flags`` and ``segments`` exactly as they were signed, instead of serializing
    megabytes of parsed content again (see ``_signed_content_digest``); anything else
    gets the full canonical recomputation.
    """
    found_format = payload.get("format")
    if found_format != SNAPSHOT_FORMAT:
        raise EnvelopeError(f"snapshot format is {found_format!r}, expected {SNAPSHOT_FORMAT!r}")
    if project is not None and payload.get("project") != project:
        raise EnvelopeError(
            f"snapshot is for project {payload.get('project')!r}, expected {project!r}"
        )
    if environment is not None and payload.get("environment") != environment:
        raise EnvelopeError(
            f"snapshot is for environment {payload.get('environment')!r}, expected {environment!r}"
        )
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EnvelopeError(f"snapshot version {version!r} is not a published version (≥ 1)")
    expires = parse_timestamp(payload.get("expires"), "expires")
    if now >= expires:
        raise EnvelopeError(
            f"snapshot version {version} expired at {payload['expires']}",
            hint="publish again to refresh it (`flagstone publish --force`)",
        )
    flags, segments = payload.get("flags"), payload.get("segments")
    if not isinstance(flags, Mapping) or not isinstance(segments, Mapping):
        raise EnvelopeError("snapshot lacks its flags or segments object")
    if signed_payload is not None:
        signed_digest = _signed_content_digest(payload, signed_payload)
        if signed_digest is not None and payload.get("digest") == signed_digest:
            return
    try:
        digest = content_digest(flags, segments)
    except SnapshotFormatError as error:
        raise EnvelopeError(f"snapshot content cannot be digested: {error}") from None
    if payload.get("digest") != digest:
        raise EnvelopeError(
            f"snapshot digest {payload.get('digest')!r} does not match its content ({digest})"
        )


# Digits (and nothing else) as b"0", number separators as b":": an integer of 16 or
# more digits after a separator may lie beyond ±(2**53 - 1), which canonical JSON
# cannot represent.
_LONG_INTEGER_TABLE = bytes(
    ord("0")
    if byte in b"0123456789"
    else ord(":")
    if byte in b":,["
    else byte
    if byte == ord("-")
    else ord(" ")
    for byte in range(256)
)
_LONG_INTEGERS = (b":" + b"0" * 16, b":-" + b"0" * 16)


def _signed_content_digest(payload: Mapping[str, Any], signed: bytes) -> str | None:
    """The digest of ``payload``'s flags and segments taken from the signed bytes
    themselves, or None when ``signed`` is not laid out the canonical way.

    Why this is as good as recomputing the digest for the SDK: a payload written in
    canonical form (as ``flagstone publish`` writes it) is
    ``{<members before "flags">,"flags":F,<members between>,"segments":S,<members after>}``
    where every member but F and S is small and is re-serialized here from its parsed
    value; when the signed bytes are exactly that, with that separator occurring once,
    F and S are the canonical text of the flags and segments and the digest is sha256
    of ``{"flags":F,"segments":S}`` — what ``content_digest`` computes, without
    serializing megabytes again. The signature already authenticates those bytes;
    the digest check catches a publisher whose digest does not describe the content it
    signed. Bytes that might not serialize the same way (integers that may exceed
    ±(2**53 - 1), escaped surrogates) are left to the full recomputation, as is any
    payload whose digest does not match here, so nothing the full check accepts is
    refused.
    """
    if not {"flags", "segments"} <= payload.keys():
        return None
    pieces: list[list[bytes]] = [[], [], []]  # members before flags, between, after segments
    part = 0
    try:
        for key in sorted(payload, key=lambda k: k.encode("utf-16be")):
            if key in ("flags", "segments"):
                part += 1
                continue
            pieces[part].append(canonical_json(key) + b":" + canonical_json(payload[key]))
    except (AttributeError, UnicodeError, SnapshotFormatError):
        return None
    before, between, after = (b",".join(members) for members in pieces)
    prefix = b"{" + before + (b"," if before else b"") + b'"flags":'
    middle = b"," + between + (b"," if between else b"") + b'"segments":'
    suffix = (b"," if after else b"") + after + b"}"
    if not (signed.startswith(prefix) and signed.endswith(suffix)):
        return None
    start, end = len(prefix), len(signed) - len(suffix)
    split = signed.find(middle, start, end)
    if split < 0 or signed.find(middle, split + 1, end) >= 0:
        return None
    if b"\\ud" in signed or b"\\uD" in signed:
        return None
    marked = signed.translate(_LONG_INTEGER_TABLE)
    if any(pattern in marked for pattern in _LONG_INTEGERS):
        return None
    import hashlib

    view = memoryview(signed)
    digest = hashlib.sha256(b'{"flags":')
    digest.update(view[start:split])
    digest.update(b',"segments":')
    digest.update(view[split + len(middle) : end])
    digest.update(b"}")
    return DIGEST_PREFIX + digest.hexdigest()


def open_snapshot(
    envelope: bytes,
    trusted: Sequence[TrustedKey],
    threshold: int,
    *,
    project: str | None,
    environment: str | None,
    now: float,
) -> dict[str, Any]:
    """``verify_envelope`` + ``parse_payload`` + ``check_snapshot``: the usable payload,
    read and checked exactly as the SDK reads and checks it."""
    signed = verify_envelope(envelope, trusted, threshold)
    payload = parse_payload(signed)
    check_snapshot(
        payload, project=project, environment=environment, now=now, signed_payload=signed
    )
    return payload
