"""Every way a snapshot is refused (issue 5, item 4): the snapshot in use stays, one
warning is logged, the status says ERROR, and no evaluation ever sees the bad one."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flagstone.canonical import canonical_json
from flagstone.envelope import sign_payload
from flagstone.sdk import Client, Status
from sdk_support import (
    DAY,
    ENVIRONMENT,
    NOW,
    PROJECT,
    SigningKey,
    fixed_flag,
    make_payload,
    new_key,
    sign,
    version_envelope,
)

KEY = new_key()
SECOND_KEY = new_key()
STRANGER = new_key()


def _resign(envelope: bytes, mutate: Callable[[dict[str, Any]], None]) -> bytes:
    """The envelope's payload changed by ``mutate`` and signed again by KEY."""
    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    mutate(payload)
    return sign_payload(canonical_json(payload), KEY.private)


def _tamper_payload(envelope: bytes) -> bytes:
    document = json.loads(envelope)
    payload = base64.b64decode(document["payload"]).replace(b'"v2"', b'"v9"')
    document["payload"] = base64.b64encode(payload).decode()
    return json.dumps(document).encode()


def _swap_signature(envelope: bytes) -> bytes:
    document = json.loads(envelope)
    other = json.loads(version_envelope(1, KEY))
    document["signatures"] = other["signatures"]
    return json.dumps(document).encode()


def _payload_type(envelope: bytes) -> bytes:
    payload = base64.b64decode(json.loads(envelope)["payload"])
    return sign_payload(payload, KEY.private, payload_type="application/json")


def _bad_digest(envelope: bytes) -> bytes:
    return _resign(envelope, lambda p: p["flags"].update({"version": fixed_flag("v9")}))


def _unusable_content(envelope: bytes) -> bytes:
    """Signed, right digest, but not the snapshot form (a rule naming no segment)."""
    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    flags = {"version": fixed_flag("v2")}
    flags["version"]["rules"] = [
        {"name": "r", "condition": {"segment": "missing"}, "serve": {"variation": "v"}}
    ]
    return sign(make_payload(payload["version"] + 2, flags), KEY)


REJECTIONS: dict[str, tuple[Callable[[], bytes], str]] = {
    "tampered payload": (lambda: _tamper_payload(version_envelope(2, KEY)), "valid signature"),
    "signature of another payload": (
        lambda: _swap_signature(version_envelope(2, KEY)),
        "valid signature",
    ),
    "untrusted key": (lambda: version_envelope(2, STRANGER), "valid signature"),
    "wrong payload type": (lambda: _payload_type(version_envelope(2, KEY)), "payloadType"),
    "another project": (lambda: version_envelope(2, KEY, project="other-shop"), "other-shop"),
    "another environment": (lambda: version_envelope(2, KEY, environment="staging"), "staging"),
    "expired when fetched": (
        lambda: version_envelope(2, KEY, published_at=NOW - 40 * DAY, expires=NOW - DAY),
        "expired",
    ),
    "digest does not match": (lambda: _bad_digest(version_envelope(2, KEY)), "digest"),
    "not JSON": (lambda: b"<html>oops</html>", "not JSON"),
    "not a snapshot": (lambda: _unusable_content(version_envelope(2, KEY)), "segment"),
    "replayed older version": (lambda: version_envelope(1, KEY), "older than version"),
}


@pytest.fixture
def latest(tmp_path: Path) -> Path:
    path = tmp_path / ENVIRONMENT / "latest.json"
    path.parent.mkdir()
    return path


def publish(path: Path, envelope: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(envelope)
    temporary.replace(path)


def client_for(path: Path, keys: list[SigningKey] | None = None, **options: Any) -> Client:
    return Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[k.trusted for k in keys or [KEY]],
        project="acme-shop",
        clock=lambda: NOW,
        **options,
    )


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_snapshot_never_reaches_an_evaluation(
    case: str, latest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_envelope, reason = REJECTIONS[case]
    publish(latest, version_envelope(2 if case != "replayed older version" else 3, KEY))
    client = client_for(latest)
    serving = client.string_value("version")
    assert client.status == Status.READY

    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    publish(latest, make_envelope())
    assert client.refresh() is False
    assert client.status == Status.ERROR
    assert client.string_value("version") == serving
    assert client.evaluate("version", {"key": "u"}).error_code is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "rejected snapshot" in warnings[0] and reason in warnings[0]
    assert reason in (client.last_error or "")

    # Polling the same bad bytes again neither re-verifies nor logs again.
    assert client.refresh() is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    # A good, newer snapshot clears the error.
    publish(latest, version_envelope(5, KEY))
    assert client.refresh() is True
    assert client.status == Status.READY
    assert client.string_value("version") == "v5"


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_snapshot_at_start_leaves_the_client_not_ready(case: str, latest: Path) -> None:
    make_envelope, _ = REJECTIONS[case]
    publish(latest, make_envelope())
    client = client_for(latest)
    if case == "replayed older version":  # nothing higher was accepted yet: version 1 is fine
        assert client.status == Status.READY
        return
    if case == "not a snapshot":  # signed, but a flag is unusable: see the next test
        return
    assert client.status == Status.ERROR
    assert client.snapshot is None
    assert client.evaluate("version", {}, "d").value == "d"


def test_threshold_needs_enough_distinct_trusted_signatures(latest: Path) -> None:
    payload = make_payload(1, {"version": fixed_flag("v1")})
    publish(latest, sign(payload, KEY))
    client = client_for(latest, [KEY, SECOND_KEY], threshold=2)
    assert client.status == Status.ERROR
    assert "1 valid signature(s) from trusted keys, 2 required" in (client.last_error or "")
    # The same key twice does not count twice.
    doubled = json.loads(sign(payload, KEY))
    doubled["signatures"] = doubled["signatures"] * 2
    publish(latest, json.dumps(doubled).encode())
    assert client.refresh() is False
    # A stranger's signature does not count either.
    publish(latest, sign(payload, KEY, STRANGER))
    assert client.refresh() is False
    publish(latest, sign(payload, KEY, SECOND_KEY))
    assert client.refresh() is True
    assert client.status == Status.READY


def test_same_version_with_other_content_is_refused(latest: Path) -> None:
    publish(latest, version_envelope(3, KEY))
    client = client_for(latest)
    publish(latest, sign(make_payload(3, {"version": fixed_flag("forged")}), KEY))
    assert client.refresh() is False
    assert "already accepted with different content" in (client.last_error or "")
    assert client.string_value("version") == "v3"


def test_replay_is_refused_after_a_restart_with_cache_dir(tmp_path: Path, latest: Path) -> None:
    cache = tmp_path / "cache"
    publish(latest, version_envelope(1, KEY))
    old_bytes = latest.read_bytes()
    publish(latest, version_envelope(2, KEY))
    first = client_for(latest, cache_dir=cache)
    assert first.version == 2

    # The cached envelope is gone (say, a fresh disk image) but the state survives:
    # the replayed version 1 is still refused.
    (cache / f"{ENVIRONMENT}.envelope.json").unlink()
    publish(latest, old_bytes)
    restarted = client_for(latest, cache_dir=cache)
    assert restarted.snapshot is None
    assert restarted.status == Status.ERROR
    assert "older than version 2" in (restarted.last_error or "")

    # With the cached envelope too, the restarted client serves version 2 from the cache.
    publish(latest, version_envelope(2, KEY))
    client_for(latest, cache_dir=cache)
    publish(latest, old_bytes)
    with_cache = client_for(latest, cache_dir=cache)
    assert with_cache.version == 2
    assert with_cache.status == Status.ERROR
    assert with_cache.string_value("version") == "v2"


def test_expired_cached_snapshot_is_served_as_stale(tmp_path: Path, latest: Path) -> None:
    cache = tmp_path / "cache"
    publish(latest, version_envelope(1, KEY, expires=NOW + DAY))
    client_for(latest, cache_dir=cache)
    latest.unlink()
    later = Client.from_file(
        latest,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        cache_dir=cache,
        clock=lambda: NOW + 2 * DAY,
    )
    assert later.status == Status.STALE
    assert later.evaluate("version", {}).value == "v1"


def test_an_unusable_flag_at_start_answers_its_default_and_the_rest_are_served(
    latest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing in use there is nothing better to serve: a signed snapshot whose flag
    fails its check is served, that flag answering the caller's default with PARSE_ERROR
    naming the place (logged once), the others as usual (docs/design.md §7)."""
    payload = make_payload(3, {"version": fixed_flag("v3"), "banner": fixed_flag("hello")})
    payload["flags"]["version"]["rules"] = [
        {"name": "r", "condition": {"segment": "missing"}, "serve": {"variation": "v"}}
    ]
    payload = make_payload(3, payload["flags"])
    publish(latest, sign(payload, KEY))
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    client = client_for(latest)
    assert client.status == Status.READY
    assert client.string_value("banner") == "hello"
    for _ in range(3):
        details = client.evaluate("version", {"key": "u"}, "fallback")
        assert (details.value, details.reason, details.error_code) == (
            "fallback",
            "ERROR",
            "PARSE_ERROR",
        )
        assert "flags.version.rules[0].condition" in (details.error_message or "")
        assert "unknown segment 'missing'" in (details.error_message or "")
    assert client.string_value("version", {"key": "u"}, "fallback") == "fallback"
    assert client.snapshot is not None
    assert set(client.snapshot.defects) == {"version"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'version'" in warnings[0], warnings

    # A replacement is checked whole first. Keeping the same defect (and adding a new
    # flag that fails) makes no working flag fail: it is taken, the rest of it served.
    flags = {**payload["flags"], "banner": fixed_flag("hi"), "added": fixed_flag("x")}
    flags["added"]["off_variation"] = "missing"
    publish(latest, sign(make_payload(4, flags), KEY))
    assert client.refresh() is True
    assert client.version == 4
    assert client.string_value("banner") == "hi"
    assert client.evaluate("version", {}, "d").error_code == "PARSE_ERROR"
    assert client.evaluate("added", {}, "d").error_code == "PARSE_ERROR"
    assert client.snapshot is not None and set(client.snapshot.defects) == {"version", "added"}
    # One that would make a working flag fail is refused: what is in use stays.
    flags["banner"]["off_variation"] = "missing"
    publish(latest, sign(make_payload(5, flags), KEY))
    assert client.refresh() is False
    assert client.version == 4
    assert client.string_value("banner") == "hi"
    assert "flags.banner.off_variation" in (client.last_error or "")
    # A good replacement is served.
    publish(latest, version_envelope(6, KEY))
    assert client.refresh() is True
    assert client.string_value("version") == "v6"
