"""``flagstone status``: every flag's state at a glance, from a real git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.errors import UsageError
from flagstone.keys import public_key_entry
from flagstone.render import VIEWS
from flagstone.scaffold import ScaffoldOptions, scaffold_repository
from flagstone.site import build_site
from flagstone.status import STATUS_VIEW, AlsoExposed, project_status
from publish_helpers import fixed_key

T0 = 1_794_000_000  # commit times, seconds


def git(root: Path, *args: str, when: int | None = None) -> str:
    env = dict(os.environ)
    if when is not None:
        env.update(GIT_AUTHOR_DATE=f"@{when} +0000", GIT_COMMITTER_DATE=f"@{when} +0000")
    done = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    return done.stdout.strip()


def cli(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--repo", str(root)])
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """search-v2 rolled out to 10pct in production (PR #7), with a scheduled 50pct stage;
    example-flag killed in staging after having been on."""
    root = tmp_path_factory.mktemp("status") / "flags"
    scaffold_repository(root, ScaffoldOptions(project="acme", admins="@acme/platform"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init", when=T0)
    steps = [
        (["new", "search-v2", "--owner", "platform", "--description", "Search.",
          "--progression", "staff,1%,10%,50%,100%", "--bake", "6h"], "new (#5)"),
        (["enable", "search-v2", "--env", "production"], "enable (#6)"),
        (["advance", "search-v2", "--env", "production"], "1pct"),
        (["advance", "search-v2", "--env", "production"], "10pct (#7)"),
        (["stage", "set", "search-v2", "50pct", "--env", "production", "--at",
          "2026-11-30T09:00Z"], "schedule 50pct (#8)"),
        (["kill", "example-flag", "--env", "staging"], "kill example in staging (#9)"),
    ]  # fmt: skip
    for index, (args, message) in enumerate(steps, start=1):
        with pytest.raises(SystemExit) as exited:
            main([*args, "--repo", str(root)])
        assert exited.value.code in (0, None), args
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", message, when=T0 + index * 86400)
    return root


def test_status_data(repo: Path) -> None:
    now = T0 + 4 * 86400 + 3600  # an hour after 10pct was entered
    flags = {f.key: f for f in project_status(repo, now=now)}
    search = flags["search-v2"]
    assert (search.kind, search.owner, search.temporary) == ("release", "platform", True)
    production = next(e for e in search.environments if e.environment == "production")
    assert (production.state, production.stage, production.exposure) == ("on", "10pct", 10.0)
    assert production.next_stage is not None
    assert (production.next_stage.name, production.next_stage.at) == (
        "50pct", "2026-11-30T09:00:00Z",
    )  # fmt: skip
    assert production.bake_remaining_seconds == 5 * 3600  # bake 6h, entered 1h ago
    assert production.last_change is not None
    assert production.last_change.pull_request == 8
    assert production.last_change.summary.startswith("stage 50pct scheduled at")
    staging = next(e for e in search.environments if e.environment == "staging")
    assert (staging.state, staging.exposure) == ("off", 0.0)  # never switched on there
    example = {e.environment: e for e in flags["example-flag"].environments}
    assert example["staging"].state == "killed"
    assert example["staging"].last_change is not None
    assert example["staging"].last_change.pull_request == 9
    assert example["production"].state == "on"
    # Once the scheduled stage comes due, it is the stage in force.
    later = {f.key: f for f in project_status(repo, now=1_796_500_000)}["search-v2"]
    production = next(e for e in later.environments if e.environment == "production")
    assert (production.stage, production.exposure) == ("50pct", 50.0)
    # An emergency override read from the store wins over the release file.
    overridden = project_status(repo, now=now, overrides={"production": ["search-v2"]})
    state = next(e for f in overridden if f.key == "search-v2" for e in f.environments
                 if e.environment == "production")  # fmt: skip
    assert (state.state, state.exposure) == ("overridden", 0.0)


def test_status_cli_formats_and_filters(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(repo, capsys, "status", "--format", "json")
    assert code == 0, err
    document = json.loads(out)
    assert document["format"] == "flagstone.status/1"
    assert {f["key"] for f in document["flags"]} == {"example-flag", "search-v2"}
    code, out, _ = cli(repo, capsys, "status", "--env", "production")
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["flag", "kind", "owner", "env", "state"]
    assert all(" production " in row for row in rows) and len(rows) == 2
    search = next(row for row in rows if row.startswith("search-v2"))
    # Today is past 2026-11-30: the scheduled 50pct stage is in force.
    assert " on " in search and " 50pct  50% " in search and "100pct (100%) after bake/PR" in search
    code, out, _ = cli(repo, capsys, "status", "--format", "markdown", "--env", "staging")
    assert out.startswith("| flag | kind | owner | env | state |")
    assert "| example-flag |" in out and "| killed |" in out
    code, _, err = cli(repo, capsys, "status", "--team", "ghosts")
    assert code == 2 and "unknown team 'ghosts'" in err
    code, _, err = cli(repo, capsys, "status", "--env", "qa")
    assert code == 2 and "unknown environment 'qa'" in err


def copy_of(repo: Path, tmp_path: Path) -> Path:
    """A copy of the module's repository (history included) for a test that edits it."""
    copy = tmp_path / "flags"
    shutil.copytree(repo, copy, symlinks=True)
    return copy


def test_status_is_a_view_of_the_render_registry() -> None:
    assert VIEWS["status"] is STATUS_VIEW
    assert STATUS_VIEW.formats() == ["text", "json", "markdown"]


def test_also_names_who_gets_the_flag_beyond_the_default(repo: Path, tmp_path: Path) -> None:
    now = T0 + 4 * 86400 + 3600
    search = {f.key: f for f in project_status(repo, now=now)}["search-v2"]
    production = next(e for e in search.environments if e.environment == "production")
    assert production.also == AlsoExposed(segments=["staff"], targets=0, rules=[])
    root = copy_of(repo, tmp_path)
    release = root / "flags/search-v2/production.yaml"
    release.write_text(
        release.read_text()
        + "targets: {on: [user-1, user-2], off: [user-3]}\n"
        + "rules:\n"
        + "  - {name: android beta, if: {attribute: platform, op: eq, value: android}, serve: on}\n"
        + "  - {name: old app, if: {attribute: app, op: eq, value: old}, serve: off}\n"
        + "  - {name: half, if: {attribute: app, op: eq, value: new},"
        + " serve: {split: {on: 50, off: 50}}}\n"
    )
    search = {f.key: f for f in project_status(root, now=now)}["search-v2"]
    production = next(e for e in search.environments if e.environment == "production")
    assert production.exposure == 10.0  # the default's percent, as before
    assert production.also == AlsoExposed(
        segments=["staff"], targets=2, rules=["android beta", "half"]
    )
    assert production.also.text() == "staff, 2 targets, 2 rules"


def test_stale_after_days_is_configurable_and_checked(repo: Path, tmp_path: Path) -> None:
    now = T0 + 9 * 86400  # search-v2 last changed 4 days before (T0 + 5 days)
    flags = {f.key: f for f in project_status(repo, now=now)}
    assert flags["search-v2"].stale is False  # default: 90 days
    root = copy_of(repo, tmp_path)
    config = root / "flagstone.yaml"
    original = config.read_text()
    config.write_text(original + "status:\n  stale_after_days: 3\n")
    flags = {f.key: f for f in project_status(root, now=now)}
    assert flags["search-v2"].stale is True
    assert run_validate(root).returncode == 0
    config.write_text(original + "status:\n  stale_after_days: 0\n")
    with pytest.raises(UsageError) as refused:
        project_status(root, now=now)
    line = len(original.splitlines()) + 2
    assert refused.value.message.startswith(f"flagstone.yaml:{line}:21: status.stale_after_days")
    validated = run_validate(root)
    assert validated.returncode == 1 and f"flagstone.yaml:{line}:" in validated.stdout


def run_validate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flagstone", "validate", "--repo", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_overrides_without_emergency_keys_or_readable_store_is_a_note(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_of(repo, tmp_path)
    code, out, err = cli(root, capsys, "status", "--overrides", "--env", "production")
    assert code == 0, err
    assert err.splitlines() == [
        "note: emergency overrides not read: flagstone.yaml has no emergency keys "
        "(signing.emergency.keys)"
    ]
    assert out.startswith("flag ") and len(out.splitlines()) == 3

    entry = public_key_entry(fixed_key(9))
    config = root / "flagstone.yaml"
    config.write_text(
        config.read_text().replace(
            "  keys: []\n",
            "  keys: []\n  emergency:\n    threshold: 1\n"
            f"    keys: [{{keyid: {entry['keyid']}, public: {entry['public']}}}]\n",
        )
    )
    tampered = root / "dist/production/overrides.json"
    tampered.parent.mkdir(parents=True)
    tampered.write_text('{"payload": "not signed"}')
    code, out, err = cli(root, capsys, "status", "--overrides")
    assert code == 0, err
    [note] = err.splitlines()
    assert note.startswith("note: production: emergency overrides not read: ")
    assert "overrides.json cannot be verified" in note
    assert len(out.splitlines()) == 5  # staging was read (nothing there), production noted
    assert " overridden " not in out

    written = build_site(root, tmp_path / "site", now=T0, overrides=True)
    assert "index.html" in written
    overview = (tmp_path / "site/index.html").read_text()
    assert '<p role="note">production: emergency overrides not read: ' in overview
