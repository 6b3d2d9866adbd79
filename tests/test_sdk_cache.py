"""The disk cache cannot roll back or hang (issue 12 item 5) and key rotation recovers
from a fast-forward (issue 12 item 7).

Real FIFOs, symbolic links, oversized and hostile files in ``cache_dir``, and real
concurrent processes saving into one ``cache_dir``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
from pathlib import Path

import pytest

from flagstone.sdk import Client, Status
from flagstone.sdk.cache import SnapshotCache
from sdk_support import (
    ENVIRONMENT,
    NOW,
    PROJECT,
    SigningKey,
    new_key,
    version_envelope,
)

KEY = new_key()


def cached_client(cache: Path, source: Path, *keys: SigningKey, **options: object) -> Client:
    return Client(
        str(source),
        environment=ENVIRONMENT,
        trusted_keys=[key.trusted for key in keys or (KEY,)],
        project=PROJECT,
        poll_interval=None,
        cache_dir=cache,
        clock=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def fill_cache(cache: Path, version: int, key: SigningKey = KEY) -> None:
    """A cache written by a real client that accepted ``version``."""
    source = cache.parent / f"published-{version}.json"
    source.write_bytes(version_envelope(version, key))
    cached_client(cache, source, key).close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def gone(tmp_path: Path) -> Path:
    """A source that does not exist: the client has only its cache."""
    return tmp_path / "nowhere" / "latest.json"


@pytest.mark.parametrize("entry", ["envelope", "state"])
def test_a_fifo_in_the_cache_is_ignored_with_one_warning(
    tmp_path: Path, gone: Path, caplog: pytest.LogCaptureFixture, entry: str
) -> None:
    cache = tmp_path / "cache"
    fill_cache(cache, 3)
    target = cache / f"{ENVIRONMENT}.{entry}.json"
    target.unlink()
    os.mkfifo(target)  # nobody ever writes to it: opening it blocking would hang
    caplog.clear()
    client = cached_client(cache, gone)
    problems = [m for m in warnings_of(caplog) if "not a regular file" in m]
    assert len(problems) == 1 and str(target) in problems[0]
    if entry == "state":  # the envelope still verifies; the lost state is rewritten
        assert client.version == 3
        assert json.loads((cache / f"{ENVIRONMENT}.state.json").read_bytes()) is not None
    else:
        assert client.version is None


def test_a_symlink_out_of_the_cache_folder_is_not_followed(
    tmp_path: Path, gone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    fill_cache(cache, 3)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(version_envelope(9, KEY))  # valid, but not the cache's own
    envelope = cache / f"{ENVIRONMENT}.envelope.json"
    envelope.unlink()
    envelope.symlink_to(elsewhere)
    caplog.clear()
    client = cached_client(cache, gone)
    assert client.version is None
    assert sum("symbolic link" in m for m in warnings_of(caplog)) == 1


def test_an_oversized_cache_entry_is_ignored(
    tmp_path: Path, gone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    fill_cache(cache, 3)
    caplog.clear()
    client = cached_client(cache, gone, max_bytes=100)
    assert client.version is None
    assert sum("over the 100-byte limit" in m for m in warnings_of(caplog)) == 1


@pytest.mark.parametrize(
    "content",
    [b"[" * 60_000, b'{"a":' * 10_000, b"\xff\xfe", b'{"format": 1', b"[]", b'{"format": NaN}'],
    ids=["deep-lists", "deep-objects", "not-utf8", "truncated", "a-list", "nan"],
)
def test_a_malformed_state_file_is_ignored_and_rewritten(
    tmp_path: Path, gone: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    cache = tmp_path / "cache"
    fill_cache(cache, 3)
    state = cache / f"{ENVIRONMENT}.state.json"
    state.write_bytes(content)
    caplog.clear()
    client = cached_client(cache, gone)
    assert client.version == 3
    assert sum("not a Flagstone SDK cache state file" in m for m in warnings_of(caplog)) == 1
    assert json.loads(state.read_bytes())["highest_version"] == 3


def test_a_lost_state_file_is_rewritten(tmp_path: Path, gone: Path) -> None:
    cache = tmp_path / "cache"
    fill_cache(cache, 4)
    state = cache / f"{ENVIRONMENT}.state.json"
    state.unlink()
    assert cached_client(cache, gone).version == 4
    assert json.loads(state.read_bytes())["highest_version"] == 4


def test_a_cached_envelope_below_the_recorded_floor_is_not_served(
    tmp_path: Path, gone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone puts an older (validly signed) envelope back into the cache."""
    cache = tmp_path / "cache"
    fill_cache(cache, 7)
    (cache / f"{ENVIRONMENT}.envelope.json").write_bytes(version_envelope(5, KEY))
    caplog.clear()
    client = cached_client(cache, gone)
    assert client.version is None and client.status == Status.ERROR
    assert any("below version 7" in m for m in warnings_of(caplog))


def _save_versions(directory: str, envelopes: dict[int, bytes], seed: int) -> None:
    """One process: save its versions in a random order."""
    versions = list(envelopes)
    random.Random(seed).shuffle(versions)
    cache = SnapshotCache(directory, ENVIRONMENT)
    for version in versions:
        cache.save(envelopes[version], version, PROJECT, frozenset({KEY.trusted.keyid}))


def test_processes_sharing_a_cache_never_lower_the_floor_or_the_envelope(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    processes_count, per_process = 4, 6
    envelopes = {
        version: version_envelope(version, KEY)
        for version in range(1, processes_count * per_process + 1)
    }
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_save_versions,
            args=(
                str(cache),
                {v: e for v, e in envelopes.items() if v % processes_count == index},
                index,
            ),
        )
        for index in range(processes_count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    newest = max(envelopes)
    state = json.loads((cache / f"{ENVIRONMENT}.state.json").read_bytes())
    assert state["highest_version"] == newest
    assert state["envelope_version"] == newest
    assert (cache / f"{ENVIRONMENT}.envelope.json").read_bytes() == envelopes[newest]
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_removing_a_key_that_signed_a_huge_version_lets_the_others_publish_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TUF's fast-forward recovery: the compromised key B signed version 2**53 - 1; once
    B is no longer trusted, the floor it vouched for stops pinning."""
    good, compromised = KEY, new_key()
    cache, source = tmp_path / "cache", tmp_path / "latest.json"
    source.write_bytes(version_envelope(2**53 - 1, compromised))
    assert cached_client(cache, source, good, compromised).version == 2**53 - 1

    source.write_bytes(version_envelope(5, good))  # the honest publisher's next snapshot
    still_trusting = cached_client(cache, source, good, compromised)
    assert still_trusting.version == 2**53 - 1  # from the cache; 5 is a rollback
    assert "older than version" in (still_trusting.last_error or "")

    caplog.clear()
    rotated = cached_client(cache, source, good)
    assert rotated.version == 5 and rotated.status == Status.READY
    assert any("no longer pins" in m for m in warnings_of(caplog))
    state = json.loads((cache / f"{ENVIRONMENT}.state.json").read_bytes())
    assert state["highest_version"] == 5
    assert state["highest_keyids"] == [good.trusted.keyid]

    # The new floor pins as before: a replay of an older honest snapshot is refused.
    source.write_bytes(version_envelope(4, good))
    assert cached_client(cache, source, good).version == 5
