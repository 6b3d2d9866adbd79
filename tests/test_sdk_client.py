"""flagstone.sdk.Client: loading, typed getters, contexts, status, on_change, cache_dir.

Snapshots are real signed envelopes on disk; the client reads them through its file
source. Faults over HTTP and S3 are in test_sdk_faults.py and test_sdk_s3.py.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flagstone.errors import UsageError
from flagstone.sdk import CachedDetails, Client, Details, Fetched, Status, TrustedKey
from sdk_support import (
    DAY,
    ENVIRONMENT,
    NOW,
    PROJECT,
    SigningKey,
    fixed_flag,
    make_payload,
    new_key,
    segment,
    sign,
    targeted_flag,
    version_envelope,
)


@pytest.fixture
def key() -> SigningKey:
    return new_key()


@pytest.fixture
def latest(tmp_path: Path) -> Path:
    path = tmp_path / "dist" / ENVIRONMENT / "latest.json"
    path.parent.mkdir(parents=True)
    return path


def publish(path: Path, envelope: bytes) -> None:
    """Write the way publishing does: a new file renamed into place."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(envelope)
    temporary.replace(path)


def file_client(path: Path, key: SigningKey, **options: Any) -> Client:
    options.setdefault("clock", lambda: NOW)
    options.setdefault("project", PROJECT)
    return Client.from_file(
        path, environment=ENVIRONMENT, trusted_keys=[key.config_entry], **options
    )


MIXED_FLAGS = {
    "dark-mode": fixed_flag(True),
    "banner": fixed_flag("hello"),
    "page-size": fixed_flag(20),
    "ratio": fixed_flag(0.25),
    "layout": fixed_flag({"columns": 3, "dense": False}),
    "beta": targeted_flag(["user-1"], segment="staff"),
}
STAFF = {"staff": segment(["user-9"])}


def test_from_file_serves_every_value_type(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(7, MIXED_FLAGS, STAFF), key))
    client = file_client(latest, key)

    assert client.status == Status.READY
    assert client.version == 7
    assert client.bool_value("dark-mode", {"key": "u"}, False) is True
    assert client.string_value("banner", {"key": "u"}, "x") == "hello"
    assert client.number_value("page-size", {"key": "u"}, 1) == 20
    assert client.number_value("ratio", {"key": "u"}, 1.0) == 0.25
    assert client.json_value("layout", {"key": "u"}, {}) == {"columns": 3, "dense": False}
    details = client.evaluate("beta", {"key": "user-1"}, False)
    assert (details.value, details.variation, details.reason, details.version) == (
        True,
        "on",
        "TARGETING_MATCH",
        7,
    )
    member = client.evaluate("beta", {"key": "user-9"}, False)
    assert (member.value, member.rule) == (True, "members")
    assert client.evaluate("beta", {"key": "user-2"}, False).value is False


def test_typed_getters_refuse_the_wrong_type(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(1, MIXED_FLAGS, STAFF), key))
    client = file_client(latest, key)

    # A boolean is not a number, and a number is not a boolean.
    assert client.number_value("dark-mode", {"key": "u"}, 5) == 5
    assert client.number_details("dark-mode", {"key": "u"}, 5).error_code == "TYPE_MISMATCH"
    assert client.bool_value("page-size", {"key": "u"}, False) is False
    mismatch = client.bool_details("page-size", {"key": "u"}, False)
    assert (mismatch.value, mismatch.reason, mismatch.error_code) == (
        False,
        "ERROR",
        "TYPE_MISMATCH",
    )
    assert client.string_value("page-size", {"key": "u"}, "d") == "d"
    assert client.string_details("banner", {"key": "u"}, "d").value == "hello"
    assert client.number_details("ratio", {"key": "u"}, 0).value == 0.25
    assert client.json_details("layout", {"key": "u"}, None).value == {
        "columns": 3,
        "dense": False,
    }


def test_unknown_flag_gives_the_default_and_flag_not_found(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(1, MIXED_FLAGS, STAFF), key))
    client = file_client(latest, key)
    details = client.evaluate("no-such-flag", {"key": "u"}, "fallback")
    assert (details.value, details.reason, details.error_code) == (
        "fallback",
        "ERROR",
        "FLAG_NOT_FOUND",
    )
    assert client.bool_value("no-such-flag", {"key": "u"}, True) is True


@dataclass
class OpenFeatureLikeContext:
    targeting_key: str | None
    attributes: dict[str, Any]


def test_context_may_be_an_object_with_a_targeting_key(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(1, MIXED_FLAGS, STAFF), key))
    client = file_client(latest, key)
    context = OpenFeatureLikeContext("user-1", {"plan": "pro"})
    assert client.evaluate("beta", context, False).reason == "TARGETING_MATCH"
    assert client.evaluate("beta", OpenFeatureLikeContext("user-2", {}), False).value is False
    # No context at all is an anonymous evaluation, not an error.
    assert client.evaluate("dark-mode", None, False).value is True


def test_all_flags_evaluates_every_flag(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(1, MIXED_FLAGS, STAFF), key))
    client = file_client(latest, key)
    everything = client.all_flags({"key": "user-1"})
    assert list(everything) == sorted(MIXED_FLAGS)
    assert everything["beta"].value is True
    assert everything["banner"].value == "hello"
    assert all(isinstance(d, Details) and d.error_code is None for d in everything.values())


def test_trusted_keys_as_objects_or_config_mappings(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(1, MIXED_FLAGS, STAFF), key))
    by_object = Client.from_file(
        latest,
        environment=ENVIRONMENT,
        trusted_keys=[key.trusted],
        project=PROJECT,
        clock=lambda: NOW,
    )
    by_public_only = Client.from_file(
        latest,
        environment=ENVIRONMENT,
        trusted_keys=[{"public": key.trusted.public.hex()}],
        project=PROJECT,
        clock=lambda: NOW,
    )
    assert by_object.status == by_public_only.status == Status.READY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trusted_keys": []}, "cannot be met"),
        ({"threshold": 0}, "at least 1"),
        ({"threshold": 2}, "cannot be met"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"environment": "../etc"}, "not a valid environment"),
        ({"timeout": 0}, "timeout"),
        ({"trusted_keys": ["not a key"]}, "trusted key"),
        ({"project": ""}, "project must be"),
        ({"project": None}, "project must be"),
    ],
)
def test_misconfiguration_is_refused_at_construction(
    latest: Path, key: SigningKey, options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "environment": ENVIRONMENT,
        "trusted_keys": [key.trusted],
        "project": PROJECT,
        "poll_interval": None,
    }
    arguments.update(options)
    with pytest.raises(UsageError, match=message):
        Client(str(latest), **arguments)


def test_a_wrong_keyid_for_a_public_key_is_refused(key: SigningKey, latest: Path) -> None:
    other = new_key()
    with pytest.raises(Exception, match="does not belong"):
        Client(
            str(latest),
            environment=ENVIRONMENT,
            trusted_keys=[{"keyid": other.trusted.keyid, "public": key.trusted.public.hex()}],
            project=PROJECT,
            poll_interval=None,
        )


def test_no_snapshot_yet_gives_defaults_and_provider_not_ready(
    latest: Path, key: SigningKey
) -> None:
    client = file_client(latest, key)  # nothing published
    assert client.status == Status.ERROR
    assert client.version is None
    details = client.evaluate("dark-mode", {"key": "u"}, True)
    assert (details.value, details.reason, details.error_code) == (
        True,
        "ERROR",
        "PROVIDER_NOT_READY",
    )
    assert "does not exist" in (details.error_message or "")
    assert client.all_flags({"key": "u"}) == {}
    assert client.wait_until_ready(0) is False
    publish(latest, version_envelope(1, key))
    assert client.refresh() is True
    assert client.status == Status.READY
    assert client.wait_until_ready(0) is True


def test_refresh_swaps_versions_and_reports_changed_flags(latest: Path, key: SigningKey) -> None:
    flags = {
        "a": targeted_flag(["user-1"]),
        "b": targeted_flag([], segment="staff"),
        "c": fixed_flag("same"),
        "needs-b": {**fixed_flag("x"), "prerequisites": [{"flag": "b", "variation": "on"}]},
        "removed": fixed_flag(1),
    }
    segments = {"staff": segment(["user-5"]), "other": segment([])}
    publish(latest, sign(make_payload(1, flags, segments), key))
    client = file_client(latest, key)
    changes: list[frozenset[str]] = []
    client.on_change(changes.append)

    # Same content, new version (a refresh of the expiry): a swap that changes no flag.
    publish(latest, sign(make_payload(2, flags, segments), key))
    assert client.refresh() is True
    assert client.version == 2
    assert changes == []

    # A segment changes (so "b", and "needs-b" through its prerequisite), "a" changes,
    # "removed" goes and "added" arrives; "c" and the unused segment's users do not.
    new_flags = {k: v for k, v in flags.items() if k != "removed"}
    new_flags["a"] = targeted_flag(["user-1", "user-2"])
    new_flags["added"] = fixed_flag(True)
    new_segments = {"staff": segment(["user-5", "user-6"]), "other": segment([])}
    publish(latest, sign(make_payload(3, new_flags, new_segments), key))
    assert client.refresh() is True
    assert changes == [frozenset({"a", "b", "needs-b", "removed", "added"})]
    assert client.evaluate("b", {"key": "user-6"}).value is True


def test_unchanged_source_is_not_read_again(
    latest: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(latest, version_envelope(1, key))
    client = file_client(latest, key)
    snapshot = client.snapshot
    verified: list[bytes] = []
    import flagstone.sdk.client as client_module

    real_verify = client_module.verify_envelope_signers

    def counting_verify(envelope: bytes, *args: Any, **kwargs: Any) -> Any:
        verified.append(envelope)
        return real_verify(envelope, *args, **kwargs)

    monkeypatch.setattr(client_module, "verify_envelope_signers", counting_verify)
    assert client.refresh() is True
    assert client.snapshot is snapshot
    assert verified == []
    publish(latest, version_envelope(2, key))
    assert client.refresh() is True
    assert len(verified) == 1
    assert client.string_value("version") == "v2"


def test_stale_when_the_snapshot_in_use_expires(latest: Path, key: SigningKey) -> None:
    now = [NOW]
    publish(latest, version_envelope(1, key, expires=NOW + DAY))
    client = file_client(latest, key, clock=lambda: now[0])
    statuses: list[tuple[Status, str | None]] = []
    client.on_status_change(lambda status, message: statuses.append((status, message)))
    assert client.status == Status.READY
    now[0] = NOW + 2 * DAY
    assert client.status == Status.STALE
    # Still served while stale.
    assert client.string_value("version") == "v1"
    client.refresh()
    assert statuses == [(Status.STALE, None)]
    publish(latest, version_envelope(2, key, expires=NOW + 30 * DAY))
    assert client.refresh() is True
    assert client.status == Status.READY
    assert statuses[-1] == (Status.READY, None)


def test_cache_dir_serves_the_last_good_snapshot_when_the_source_is_gone(
    tmp_path: Path, latest: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    publish(latest, version_envelope(4, key))
    first = file_client(latest, key, cache_dir=cache)
    assert first.version == 4
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{ENVIRONMENT}.envelope.json",
        f"{ENVIRONMENT}.lock",
        f"{ENVIRONMENT}.state.json",
    ]
    latest.unlink()

    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    restarted = file_client(latest, key, cache_dir=cache)
    assert restarted.status == Status.READY
    details = restarted.evaluate("version", {"key": "u"}, "default")
    assert isinstance(details, CachedDetails)
    assert (details.value, details.reason, details.engine_reason, details.version) == (
        "v4",
        "CACHED",
        "DEFAULT",
        4,
    )
    assert [r.getMessage() for r in caplog.records if "cannot fetch" in r.getMessage()]

    # Once a fresh fetch confirms it (same bytes), reasons are the engine's again.
    publish(latest, version_envelope(4, key))
    assert restarted.refresh() is True
    assert restarted.evaluate("version", {"key": "u"}).reason == "DEFAULT"


def test_cached_snapshot_is_verified_again_on_load(
    tmp_path: Path, latest: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    publish(latest, version_envelope(4, key))
    file_client(latest, key, cache_dir=cache)
    latest.unlink()
    envelope_file = cache / f"{ENVIRONMENT}.envelope.json"
    envelope_file.write_bytes(envelope_file.read_bytes().replace(b'"sig":"', b'"sig":"A'))
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    client = file_client(latest, key, cache_dir=cache)
    assert client.status == Status.ERROR
    assert client.evaluate("version", {}, "d").error_code == "PROVIDER_NOT_READY"
    assert any("ignoring the cached snapshot" in r.getMessage() for r in caplog.records)
    # A key rotated away also invalidates the cache.
    other = new_key()
    client = file_client(latest, other, cache_dir=cache)
    assert client.snapshot is None


def test_cache_for_another_project_is_ignored(
    tmp_path: Path, latest: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    publish(latest, version_envelope(9, key, project="other-shop"))
    file_client(latest, key, cache_dir=cache)
    latest.unlink()
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    client = file_client(latest, key, cache_dir=cache, project="acme-shop")
    assert client.snapshot is None
    assert any("other-shop" in r.getMessage() for r in caplog.records)


def test_corrupt_cache_state_is_ignored_with_a_warning(
    tmp_path: Path, latest: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{ENVIRONMENT}.state.json").write_text("[1, 2")
    publish(latest, version_envelope(2, key))
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    client = file_client(latest, key, cache_dir=cache)
    assert client.version == 2
    assert any("ignoring the cache" in r.getMessage() for r in caplog.records)
    # The next save replaces it with a good one.
    assert '"highest_version": 2' in (cache / f"{ENVIRONMENT}.state.json").read_text()


def test_trusted_key_type_is_exported() -> None:
    # The SDK's public names are importable from flagstone.sdk alone.
    assert TrustedKey.__module__ == "flagstone.envelope"


class ListSource:
    """A Source of our own: hands out queued envelopes, or raises queued errors."""

    def __init__(self, *items: bytes | Exception) -> None:
        self.items = list(items)

    def describe(self) -> str:
        return "a list"

    def fetch(self, if_none_match: str | None) -> Fetched:
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return Fetched(item, None)


def test_any_source_object_can_feed_the_client(key: SigningKey) -> None:
    source = ListSource(
        RuntimeError("socket exploded"), version_envelope(1, key), version_envelope(2, key)
    )
    client = Client(
        source,
        environment=ENVIRONMENT,
        trusted_keys=[key.trusted],
        project=PROJECT,
        poll_interval=None,
        clock=lambda: NOW,
    )
    assert client.status == Status.ERROR
    assert client.last_error == "RuntimeError: socket exploded"
    assert client.refresh() is True
    assert client.refresh() is True
    assert client.string_value("version") == "v2"


def test_memory_store_source(key: SigningKey) -> None:
    from flagstone.store import open_store

    store = open_store("memory://sdk-test-memory")
    store.put(f"acme/{ENVIRONMENT}/latest.json", version_envelope(5, key), mode="overwrite")
    client = Client(
        "memory://sdk-test-memory/acme",
        environment=ENVIRONMENT,
        trusted_keys=[key.trusted],
        project=PROJECT,
        poll_interval=None,
        clock=lambda: NOW,
    )
    assert client.version == 5
    assert client.refresh() is True  # not modified


def test_json_values_handed_out_are_copies(latest: Path, key: SigningKey) -> None:
    publish(latest, sign(make_payload(1, MIXED_FLAGS, STAFF), key))
    client = file_client(latest, key)
    first = client.json_value("layout", {"key": "u"}, {})
    first["columns"] = 99
    client.all_flags({"key": "u"})["layout"].value["dense"] = True
    assert client.json_value("layout", {"key": "u"}, {}) == {"columns": 3, "dense": False}


def test_closed_client_keeps_answering_from_its_last_snapshot(
    latest: Path, key: SigningKey
) -> None:
    publish(latest, version_envelope(1, key))
    with Client(
        str(latest),
        environment=ENVIRONMENT,
        trusted_keys=[key.trusted],
        project=PROJECT,
        poll_interval=0.05,
        clock=lambda: NOW,
    ) as client:
        assert client.wait_until_ready(10)
        assert "READY" in repr(client)
    assert client._thread is not None and not client._thread.is_alive()
    client.close()  # idempotent
    assert client.string_value("version") == "v1"


def test_environment_names_cannot_escape_the_cache_dir(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(UsageError, match="not a valid environment"):
        Client(
            ListSource(version_envelope(1, key)),
            environment="../outside",
            trusted_keys=[key.trusted],
            project=PROJECT,
            cache_dir=tmp_path / "cache",
            poll_interval=None,
        )
    assert not (tmp_path / "outside.state.json").exists()


def test_loading_leaves_the_collector_on_and_the_application_frozen_objects_frozen(
    latest: Path, key: SigningKey
) -> None:
    """The load pauses the cyclic GC, then moves the snapshot's objects to the oldest
    generation (gc.freeze + gc.unfreeze) — unless the application keeps objects frozen
    itself, which that would undo."""
    publish(latest, version_envelope(1, key))
    assert gc.isenabled()
    client = file_client(latest, key)
    assert client.status == Status.READY and gc.isenabled()
    assert gc.get_freeze_count() == 0

    gc.freeze()
    try:
        publish(latest, version_envelope(2, key))
        assert client.refresh() and client.version == 2
        # Some frozen objects (version 1) were freed meanwhile; the rest stay frozen.
        assert gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()

    gc.disable()
    try:
        publish(latest, version_envelope(3, key))
        assert client.refresh() and client.version == 3
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
