"""The SDK applies signed emergency overrides (flagstone.sdk.overrides): verified
against the emergency keys, replay-protected, applied atomically over the snapshot,
refusals reported while the last good overrides stay; the OpenFeature provider
announces the change."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.event import EventDetails, ProviderEvent

from flagstone.canonical import canonical_json
from flagstone.engine import DISABLED, PREREQUISITE_FAILED
from flagstone.envelope import sign_payload
from flagstone.overrides import OVERRIDE_RULE, OVERRIDES_PAYLOAD_TYPE, OverriddenDetails
from flagstone.sdk import Client
from flagstone.sdk.openfeature import FlagstoneProvider
from flagstone.sdk.overrides import overrides_location
from sdk_support import (
    DAY,
    ENVIRONMENT,
    NOW,
    PROJECT,
    SigningKey,
    fixed_flag,
    format_timestamp,
    make_payload,
    new_key,
    serve_http,
    sign,
    wait_for,
)

KEY = new_key()
EMERGENCY = new_key()


def _flags() -> dict[str, Any]:
    dependent = fixed_flag(True) | {"prerequisites": [{"flag": "checkout", "variation": "v"}]}
    return {"checkout": fixed_flag(True), "banner": fixed_flag("hello"), "upsell": dependent}


def overrides_envelope(
    version: int,
    flags: dict[str, str],
    *,
    key: SigningKey = EMERGENCY,
    expires: float = NOW + DAY,
    project: str = PROJECT,
    payload_type: str = OVERRIDES_PAYLOAD_TYPE,
) -> bytes:
    entries = {
        flag: {
            "reason": reason,
            "by": "oncall",
            "at": format_timestamp(NOW - 60),
            "expires": format_timestamp(expires),
        }
        for flag, reason in flags.items()
    }
    payload = {
        "format": "flagstone.overrides/1",
        "project": project,
        "environment": ENVIRONMENT,
        "version": version,
        "published_at": format_timestamp(NOW - 60),
        "expires": format_timestamp(expires) if entries else None,
        "change": {"action": "kill", "by": "oncall"},
        "overrides": entries,
    }
    return sign_payload(canonical_json(payload), key.private, payload_type=payload_type)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    directory = tmp_path / "dist" / ENVIRONMENT
    directory.mkdir(parents=True)
    (directory / "latest.json").write_bytes(sign(make_payload(1, _flags()), KEY))
    return tmp_path / "dist"


def client_for(target: Path, **options: Any) -> Client:
    return Client(
        str(target),
        environment=ENVIRONMENT,
        project=PROJECT,
        trusted_keys=[KEY.trusted],
        emergency_keys=[EMERGENCY.trusted],
        **({"poll_interval": None, "clock": lambda: NOW} | options),
    )


def put_overrides(target: Path, envelope: bytes) -> None:
    path = target / ENVIRONMENT / "overrides.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(envelope)
    os.replace(temporary, path)


def test_no_overrides_object_is_normal(target: Path) -> None:
    client = client_for(target)
    assert client.bool_value("checkout", {"key": "u"}) is True
    assert client.last_error is None and client.overrides_version is None


def test_an_override_forces_the_off_variation_with_its_reason(target: Path) -> None:
    client = client_for(target)
    put_overrides(target, overrides_envelope(1, {"checkout": "card errors"}))
    client.refresh()
    details = client.evaluate("checkout", {"key": "u"})
    assert isinstance(details, OverriddenDetails)
    assert (details.value, details.variation, details.reason) == (False, "off", DISABLED)
    assert details.rule == OVERRIDE_RULE and details.override_reason == "card errors"
    assert client.bool_value("checkout", {"key": "u"}) is False
    # Requiring a killed flag fails the prerequisite, as the kill in git would.
    upsell = client.evaluate("upsell", {"key": "u"})
    assert (upsell.value, upsell.reason) == (False, PREREQUISITE_FAILED)
    assert client.string_value("banner", {"key": "u"}) == "hello"  # untouched
    assert client.all_flags({"key": "u"})["checkout"].reason == DISABLED
    assert client.snapshot is not None and client.snapshot.flags["checkout"]["enabled"] is True
    # A signed undo restores the flag.
    put_overrides(target, overrides_envelope(2, {}))
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is True
    assert client.overrides_version == 2


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (overrides_envelope(5, {"banner": "x"}, key=KEY), "valid signature"),
        (overrides_envelope(5, {"banner": "x"}, project="other"), "project 'other'"),
        (overrides_envelope(5, {"banner": "x"}, expires=NOW - 1), "expired"),
        (overrides_envelope(1, {"banner": "x"}), "replayed"),
        (
            overrides_envelope(
                5, {"banner": "x"}, payload_type="application/vnd.flagstone.snapshot+json"
            ),
            "payloadType",
        ),
        (b'{"payload": "e30=", "payloadType": "x", "signatures": []}' + b" " * 10, "payloadType"),
    ],
    ids=["snapshot-key", "project", "expired", "replayed", "snapshot-type", "garbage"],
)
def test_refused_overrides_keep_the_last_good_ones(
    target: Path, envelope: bytes, message: str
) -> None:
    client = client_for(target)
    put_overrides(target, overrides_envelope(2, {"checkout": "first"}))
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is False
    put_overrides(target, envelope)
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is False  # last good stays
    assert client.string_value("banner", {"key": "u"}) == "hello"  # refused one not applied
    assert client.last_error is not None and message in client.last_error
    assert client.overrides_version == 2


def test_a_tampered_overrides_object_is_refused(target: Path) -> None:
    import base64
    import json

    client = client_for(target)
    document = json.loads(overrides_envelope(3, {"checkout": "x"}))
    forged = json.loads(base64.b64decode(document["payload"]))
    forged["overrides"]["banner"] = forged["overrides"]["checkout"]
    document["payload"] = base64.standard_b64encode(canonical_json(forged)).decode()
    put_overrides(target, json.dumps(document).encode())
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is True
    assert client.last_error is not None and "valid signature" in client.last_error


def test_deleting_the_object_does_not_undo_a_kill(target: Path) -> None:
    client = client_for(target)
    put_overrides(target, overrides_envelope(1, {"checkout": "x"}))
    client.refresh()
    (target / ENVIRONMENT / "overrides.json").unlink()
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is False
    assert client.last_error is not None and "missing" in client.last_error


def test_entries_expire_on_their_own(target: Path) -> None:
    now = [NOW]
    client = client_for(target, clock=lambda: now[0])
    put_overrides(target, overrides_envelope(1, {"checkout": "x"}, expires=NOW + 60))
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is False
    now[0] = NOW + 61
    client.refresh()
    assert client.bool_value("checkout", {"key": "u"}) is True


def test_replay_is_refused_after_a_restart_and_a_kill_survives_storage_loss(
    target: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = client_for(target, cache_dir=cache)
    put_overrides(target, overrides_envelope(4, {"checkout": "x"}))
    first.refresh()
    first.close()
    # Restarted while storage serves an older overrides object: refused.
    put_overrides(target, overrides_envelope(3, {}))
    second = client_for(target, cache_dir=cache)
    assert second.bool_value("checkout", {"key": "u"}) is False
    assert second.last_error is not None and "replayed" in second.last_error
    # Restarted with storage gone entirely: the cached kill is still applied.
    (target / ENVIRONMENT / "overrides.json").unlink()
    third = client_for(target, cache_dir=cache)
    assert third.bool_value("checkout", {"key": "u"}) is False


def test_overrides_location_is_next_to_latest() -> None:
    assert (
        overrides_location("s3://b/flags", "production") == "s3://b/flags/production/overrides.json"
    )
    assert (
        overrides_location("https://cdn/x/production/latest.json", "production")
        == "https://cdn/x/production/overrides.json"
    )
    assert overrides_location("dist", "production") == os.path.join(
        "dist", "production", "overrides.json"
    )


def test_background_polling_uses_conditional_gets_and_applies_within_the_interval() -> None:
    servers = serve_http()
    server = next(servers)
    try:
        server.put("/production/latest.json", sign(make_payload(1, _flags()), KEY))
        client = Client(
            server.base_url,
            environment=ENVIRONMENT,
            project=PROJECT,
            trusted_keys=[KEY.trusted],
            emergency_keys=[EMERGENCY.trusted],
            override_poll_interval=0.05,
            clock=lambda: NOW,
        )
        try:
            assert client.wait_until_ready(10)
            assert wait_for(
                lambda: any(p.endswith("overrides.json") for p, _e, _s in server.requests())
            )
            server.put("/production/overrides.json", overrides_envelope(1, {"checkout": "x"}))
            assert wait_for(lambda: client.bool_value("checkout", {"key": "u"}) is False)
            assert wait_for(
                lambda: any(
                    p.endswith("overrides.json") and s == 304 for p, _e, s in server.requests()
                )
            )
            assert client.last_error is None
        finally:
            client.close()
    finally:
        servers.close()


@pytest.fixture
def fresh_openfeature() -> Iterator[None]:
    api.shutdown()
    yield
    api.shutdown()


def test_the_openfeature_provider_announces_an_override(
    target: Path, fresh_openfeature: None
) -> None:
    received: list[EventDetails] = []
    lock = threading.Lock()

    def record(details: EventDetails) -> None:
        with lock:
            received.append(details)

    provider = FlagstoneProvider(client_for(target))
    api.set_provider_and_wait(provider)
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, record)
    put_overrides(target, overrides_envelope(1, {"checkout": "card errors"}))
    provider.client.refresh()
    assert wait_for(lambda: any(d.provider_name == "flagstone" for d in received))
    changed = next(d for d in received if d.provider_name == "flagstone")
    assert changed.flags_changed == ["checkout"]
    details = api.get_client().get_boolean_details("checkout", True)
    assert details.value is False and details.flag_metadata["override_reason"] == "card errors"
