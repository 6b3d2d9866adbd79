"""Publishing to file:// from real git repositories: versions, unchanged detection,
refresh, dry runs, the ancestry rule, keyring checks."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from flagstone.envelope import open_snapshot, parse_timestamp
from flagstone.errors import ConflictError, EnvelopeError, StoreError
from flagstone.publish import publish_project
from flagstone.validate import load_valid_project
from publish_helpers import (
    commit,
    envelope_payload,
    fixed_key,
    git,
    make_repo,
    set_default,
    signing,
    trusted,
)

NOW = parse_timestamp("2026-11-26T08:00:00Z", "now")
DAY = 86400.0


def publish(root: Path, **options: object) -> list:  # type: ignore[type-arg]
    now = float(options.pop("now", NOW))  # type: ignore[arg-type]
    return publish_project(
        load_valid_project(root),
        signing(),
        now=lambda: now,
        **options,  # type: ignore[arg-type]
    )


def dist_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root / "dist").as_posix() for p in (root / "dist").rglob("*") if p.is_file()
    )


def test_first_publish_writes_version_1_of_every_environment(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    head = git(root, "rev-parse", "HEAD")
    results = publish(root)
    assert [(r.environment, r.action, r.version) for r in results] == [
        ("staging", "published", 1),
        ("production", "published", 1),
    ]
    assert dist_files(root) == [
        "production/latest.json",
        "production/snapshots/1.json",
        "staging/latest.json",
        "staging/snapshots/1.json",
    ]
    latest = (root / "dist/production/latest.json").read_bytes()
    assert latest == (root / "dist/production/snapshots/1.json").read_bytes()
    payload = open_snapshot(
        latest, [trusted()], 1, project="demo-shop", environment="production", now=NOW
    )
    assert payload["version"] == 1
    assert payload["published_at"] == "2026-11-26T08:00:00Z"
    assert payload["expires"] == "2026-12-26T08:00:00Z"  # publish.expires_after default 30d
    assert payload["source"] == {"commit": head, "ref": "refs/heads/main"}
    assert payload["digest"] == results[1].digest
    assert results[1].snapshot_url == (root / "dist/production/snapshots/1.json").as_uri()


def test_unchanged_content_publishes_nothing(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    publish(root)
    before = {name: (root / "dist" / name).read_bytes() for name in dist_files(root)}
    commit(root, "an unrelated commit")  # new commit, same flags
    results = publish(root, now=NOW + DAY)
    assert [r.action for r in results] == ["unchanged", "unchanged"]
    assert all(r.version == 1 for r in results)
    assert {name: (root / "dist" / name).read_bytes() for name in dist_files(root)} == before


def test_changed_content_gets_the_next_version_and_keeps_the_old_one(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    publish(root)
    first = (root / "dist/production/snapshots/1.json").read_bytes()
    set_default(root, "production", "off")
    commit(root, "turn checkout off")
    results = publish(root, environments=["production"])
    assert [(r.environment, r.action, r.version, r.previous_version) for r in results] == [
        ("production", "published", 2, 1)
    ]
    assert results[0].previous_digest != results[0].digest
    assert (root / "dist/production/snapshots/1.json").read_bytes() == first
    latest = (root / "dist/production/latest.json").read_bytes()
    assert envelope_payload(latest)["version"] == 2
    assert "staging/snapshots/2.json" not in dist_files(root)  # staging was not asked for


def test_force_republishes_unchanged_content(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    publish(root)
    results = publish(root, environments=["staging"], force=True)
    assert results[0].action == "published" and results[0].version == 2
    assert results[0].reason == "forced republish"
    assert results[0].digest == results[0].previous_digest


def test_refresh_before_expiry(tmp_path: Path) -> None:
    root = make_repo(
        tmp_path / "repo", publish="target: file://dist\nexpires_after: 10d\nrefresh_before: 3d"
    )
    publish(root)
    assert publish(root, now=NOW + 6 * DAY)[0].action == "unchanged"
    refreshed = publish(root, now=NOW + 8 * DAY)
    assert [(r.action, r.version, r.reason) for r in refreshed] == [
        ("published", 2, "refresh before expiry")
    ] * 2
    payload = envelope_payload((root / "dist/staging/latest.json").read_bytes())
    assert payload["expires"] == "2026-12-14T08:00:00Z"


def test_removing_the_old_key_at_once_re_signs_unchanged_content_after_the_repair(
    tmp_path: Path,
) -> None:
    old_key, new_key = fixed_key(1), fixed_key(2)
    root = make_repo(tmp_path / "repo", keys=(old_key,))
    project = load_valid_project(root)
    publish_project(project, signing(old_key), now=lambda: NOW)
    # Rotate: flagstone.yaml now trusts only the new key (flag content is unchanged).
    make_repo(root, keys=(new_key,))
    project = load_valid_project(root)
    # latest.json, signed by the removed key, no longer verifies: publish stops and says
    # how to repair (tests/test_publish_trust.py has the rotation that needs no repair).
    with pytest.raises(EnvelopeError, match="does not verify"):
        publish_project(project, signing(new_key), now=lambda: NOW + DAY)
    results = publish_project(
        project, signing(new_key), now=lambda: NOW + DAY, replace_unverified=True
    )
    assert [(r.action, r.version) for r in results] == [("published", 2)] * 2
    assert results[0].reason == "replacing an unverified latest.json"
    assert results[0].previous_version is None  # nothing unverified is reported as "previous"
    latest = (root / "dist/staging/latest.json").read_bytes()
    open_snapshot(
        latest, [trusted(new_key)], 1, project="demo-shop", environment="staging", now=NOW
    )
    again = publish_project(project, signing(new_key), now=lambda: NOW + 2 * DAY)
    assert [r.action for r in again] == ["unchanged"] * 2


def test_dry_run_writes_nothing_and_says_what_would_change(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    results = publish(root, dry_run=True)
    assert [(r.action, r.version) for r in results] == [("would-publish", 1)] * 2
    assert not (root / "dist").exists() or dist_files(root) == []
    publish(root)
    assert [r.action for r in publish(root, dry_run=True)] == ["would-skip"] * 2
    set_default(root, "production", "off")
    commit(root, "off")
    planned = publish(root, dry_run=True)
    assert [(r.environment, r.action, r.version) for r in planned] == [
        ("staging", "would-skip", 1),
        ("production", "would-publish", 2),
    ]
    assert planned[1].previous_digest != planned[1].digest
    assert envelope_payload((root / "dist/production/latest.json").read_bytes())["version"] == 1


def test_an_older_commit_never_replaces_a_newer_snapshot(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    old = git(root, "rev-parse", "HEAD")
    set_default(root, "production", "off")
    commit(root, "newer content")
    publish(root)
    latest_before = (root / "dist/production/latest.json").read_bytes()
    git(root, "checkout", "-q", old)
    with pytest.raises(ConflictError, match="newer commit"):
        publish(root, environments=["production"])
    with pytest.raises(ConflictError, match="newer commit"):
        publish(root, environments=["production"], dry_run=True)
    assert (root / "dist/production/latest.json").read_bytes() == latest_before
    assert "production/snapshots/2.json" not in dist_files(root)


def test_an_older_commit_with_the_same_content_is_simply_unchanged(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    old = git(root, "rev-parse", "HEAD")
    commit(root, "a newer commit that changes no flag")
    publish(root)
    git(root, "checkout", "-q", old)  # e.g. a re-run of an older CI job
    assert [r.action for r in publish(root)] == ["unchanged", "unchanged"]
    with pytest.raises(ConflictError, match="newer commit"):
        publish(root, force=True)


def test_a_diverged_commit_is_refused_rather_than_guessed(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    git(root, "checkout", "-q", "-b", "other")
    set_default(root, "production", "off")
    commit(root, "on another branch")
    publish(root)
    git(root, "checkout", "-q", "main")
    set_default(root, "staging", "on")
    commit(root, "main moves on")
    with pytest.raises(ConflictError, match="not an ancestor"):
        publish(root)


def test_a_commit_unknown_to_this_clone_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    publish(root)
    # Another history (different content, so a different root commit), same project name.
    other = make_repo(tmp_path / "unrelated", publish="target: file://dist\nexpires_after: 20d")
    (other / "dist").symlink_to(root / "dist")
    with pytest.raises(ConflictError, match="does not have"):
        publish(other, environments=["staging"], force=True)


def test_a_source_commit_that_is_not_a_commit_id_is_never_passed_to_git(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    publish(root, environments=["staging"])
    latest = root / "dist/staging/latest.json"
    envelope = json.loads(latest.read_bytes())
    payload = envelope_payload(latest.read_bytes())
    payload["source"]["commit"] = "--output=/tmp/owned"
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    latest.write_text(json.dumps(envelope))
    # Changed without a trusted signature: refused before its commit is looked at...
    with pytest.raises(EnvelopeError, match="does not verify"):
        publish(root, environments=["staging"], force=True)
    # ...and replacing it never reads that commit either.
    results = publish(root, environments=["staging"], replace_unverified=True)
    assert [r.action for r in results] == ["published"]
    assert not Path("/tmp/owned").exists()


def test_signing_key_missing_from_keyring_is_refused_before_writing(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", keys=(fixed_key(1),))
    with pytest.raises(EnvelopeError, match="keyring would reject"):
        publish(root)
    assert not (root / "dist").exists() or dist_files(root) == []


def test_threshold_two_needs_two_signing_keys(tmp_path: Path) -> None:
    a, b = fixed_key(1), fixed_key(2)
    root = make_repo(tmp_path / "repo", keys=(a, b), threshold=2)
    project = load_valid_project(root)
    with pytest.raises(EnvelopeError, match="1 valid signature"):
        publish_project(project, signing(a), now=lambda: NOW)
    results = publish_project(project, signing(a, b), now=lambda: NOW)
    assert [r.version for r in results] == [1, 1]
    latest = (root / "dist/staging/latest.json").read_bytes()
    open_snapshot(
        latest, [trusted(a), trusted(b)], 2, project="demo-shop", environment="staging", now=NOW
    )


def test_garbage_latest_json_is_not_overwritten(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (root / "dist/staging").mkdir(parents=True)
    (root / "dist/staging/latest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not a Flagstone snapshot envelope"):
        publish(root, environments=["staging"])
    assert (root / "dist/staging/latest.json").read_text() == "{not json"


def test_latest_json_of_another_project_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    publish(root)
    text = (root / "flagstone.yaml").read_text().replace("demo-shop", "other-shop")
    (root / "flagstone.yaml").write_text(text)
    commit(root, "rename")
    with pytest.raises(StoreError, match="wrong target"):
        publish(root)


def test_to_overrides_the_configured_target(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    results = publish(root, to=elsewhere.as_uri())
    assert results[0].latest_url == (elsewhere / "staging/latest.json").as_uri()
    assert json.loads((elsewhere / "staging/latest.json").read_bytes())["payloadType"]
    assert not (root / "dist").exists()


def test_losing_a_race_to_a_newer_commit_with_the_same_content_is_unchanged(
    tmp_path: Path,
) -> None:
    # Two CI jobs: A for c1, B for c2 (a descendant that changes no flag). B moves
    # latest.json between A's read and A's conditional write. A's content is already
    # there, so A is "unchanged" — not a failed job blaming a newer commit.
    from collections.abc import Callable, Mapping

    from flagstone.compile import git_source
    from flagstone.publish import Publisher
    from flagstone.store import SnapshotStore, WriteMode, open_store

    root = make_repo(tmp_path / "repo")
    publish(root)  # version 1 of the first content
    set_default(root, "production", "off")
    c1 = commit(root, "new content")
    commit(root, "a newer commit that changes no flag")
    worktree = tmp_path / "c1"
    git(root, "worktree", "add", "-q", "--detach", str(worktree), c1)
    url = (root / "dist").as_uri()

    class Interleaved(SnapshotStore):
        """The store, with something else happening just before the first latest.json write."""

        def __init__(self, before_latest: Callable[[], object]) -> None:
            self.__dict__.update(open_store(url).__dict__)
            self.before_latest: Callable[[], object] | None = before_latest

        def put(
            self,
            path: str,
            data: bytes,
            *,
            mode: WriteMode,
            attributes: Mapping[str, str] | None = None,
        ) -> str | None:
            if path.endswith("latest.json") and self.before_latest is not None:
                hook, self.before_latest = self.before_latest, None
                hook()
            return super().put(path, data, mode=mode, attributes=attributes)

    def job_b() -> object:
        (result,) = publish(root, environments=["production"], to=url)
        assert result.action == "published" and result.version == 3
        return result

    a = Publisher(
        load_valid_project(worktree),
        Interleaved(job_b),
        signing(),
        now=lambda: NOW,
        source=git_source(worktree),
    )
    result = a.publish("production")
    assert (result.action, result.version) == ("unchanged", 3)
    latest = envelope_payload((root / "dist/production/latest.json").read_bytes())
    assert latest["version"] == 3 and latest["source"]["commit"] != c1
