"""The publisher never trusts unsigned storage (issue 12 item 8): ``latest.json`` is
verified with the project's keys before the next version is derived from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flagstone.canonical import canonical_json
from flagstone.envelope import open_snapshot, parse_timestamp, sign_payload
from flagstone.errors import EnvelopeError
from flagstone.publish import MAX_VERSION, publish_project
from flagstone.validate import load_valid_project
from publish_helpers import envelope_payload, fixed_key, make_repo, signing, trusted

NOW = parse_timestamp("2026-11-26T08:00:00Z", "now")
DAY = 86400.0


def _publish(root: Path, *keys: object, **options: object) -> list:  # type: ignore[type-arg]
    return publish_project(
        load_valid_project(root),
        signing(*keys),  # type: ignore[arg-type]
        now=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def _forge(root: Path, environment: str, version: int) -> bytes:
    """latest.json rewritten by someone without a trusted key: the real payload with a
    huge version, signed by a stranger."""
    latest = root / f"dist/{environment}/latest.json"
    payload = envelope_payload(latest.read_bytes())
    payload["version"] = version
    forged = sign_payload(canonical_json(payload), fixed_key(99))
    latest.write_bytes(forged)
    return forged


def test_a_forged_latest_json_is_refused_with_the_repair_command(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    _publish(root)
    forged = _forge(root, "staging", MAX_VERSION)
    with pytest.raises(EnvelopeError) as refused:
        _publish(root, environments=["staging"], force=True)
    assert "does not verify with the keys of flagstone.yaml" in refused.value.message
    assert "flagstone publish --env staging --replace-unverified" in (refused.value.hint or "")
    assert (root / "dist/staging/latest.json").read_bytes() == forged


def test_a_forged_version_near_2_53_cannot_block_publishing(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    _publish(root)
    _forge(root, "staging", MAX_VERSION)
    results = _publish(root, environments=["staging"], replace_unverified=True)
    assert [(r.action, r.version) for r in results] == [("published", 2)]
    latest = (root / "dist/staging/latest.json").read_bytes()
    payload = open_snapshot(
        latest, [trusted()], 1, project="demo-shop", environment="staging", now=NOW
    )
    assert payload["version"] == 2
    # And from then on publishing goes on as usual.
    assert [r.action for r in _publish(root, environments=["staging"])] == ["unchanged"]


def test_a_key_rotation_keeps_publishing_when_both_keys_are_trusted_for_a_while(
    tmp_path: Path,
) -> None:
    """The documented rotation: add the new key, publish with it (--force re-signs),
    then remove the old key; latest.json verifies at every step."""
    old_key, new_key = fixed_key(1), fixed_key(2)
    root = make_repo(tmp_path / "repo", keys=(old_key,))
    _publish(root, old_key)
    make_repo(root, keys=(old_key, new_key))
    assert [r.version for r in _publish(root, new_key, force=True)] == [2, 2]
    make_repo(root, keys=(new_key,))
    assert [r.action for r in _publish(root, new_key)] == ["unchanged"] * 2


def test_removing_a_key_abruptly_needs_the_repair_command(tmp_path: Path) -> None:
    old_key, new_key = fixed_key(1), fixed_key(2)
    root = make_repo(tmp_path / "repo", keys=(old_key,))
    _publish(root, old_key)
    make_repo(root, keys=(new_key,))
    with pytest.raises(EnvelopeError, match="does not verify"):
        _publish(root, new_key)
    results = _publish(root, new_key, replace_unverified=True)
    assert [(r.action, r.version) for r in results] == [("published", 2)] * 2
    assert results[0].reason == "replacing an unverified latest.json"


def test_the_development_key_quick_start_publishes_again_and_again(tmp_path: Path) -> None:
    """README quick start: `flagstone publish` to file://dist with the untrusted
    development key; its own latest.json verifies with the key that signed it."""
    root = make_repo(tmp_path / "repo", keys=(fixed_key(3),))
    for expected in (["published"] * 2, ["unchanged"] * 2):
        done = subprocess.run(
            [sys.executable, "-m", "flagstone", "publish", "--dev-key", "--format", "json"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONPATH": _tooling()},
        )
        assert done.returncode == 0, done.stderr
        assert [r["action"] for r in json.loads(done.stdout)] == expected


def _tooling() -> str:
    return str(Path(__file__).resolve().parent.parent / "tooling")


def test_a_snapshot_over_the_sdk_default_cap_is_refused_unless_allowed(tmp_path: Path) -> None:
    from flagstone.errors import UsageError
    from flagstone.publish import Publisher, open_target

    root = make_repo(tmp_path / "repo")
    project = load_valid_project(root)
    publisher = Publisher(project, open_target(project, None), signing(), now=lambda: NOW)
    publisher.sdk_max_bytes = 100  # the real default (256 MB) is too big for a test
    with pytest.raises(UsageError, match="over the SDKs' default max_bytes of 100 bytes"):
        publisher.publish("staging")
    assert not (root / "dist/staging/latest.json").exists()
    publisher.allow_oversized = True
    published = publisher.publish("staging")
    assert published.action == "published"
    assert published.warnings and "published anyway" in published.warnings[0]
