"""``diff`` and ``check-change`` narrowed by git to what a change touches
(``flagstone.worktree_change``): for every kind of change, the same bytes as reading both
sides whole (``--no-cache``), and the narrowing taken exactly where it is safe. Real git
repositories, the in-process CLI; the suite runs with the cache off, these tests turn it
on."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flagstone import gitops, toolcache, worktree_change
from flagstone.toolcache import CACHE_FOLDER, NO_CACHE_VARIABLE
from gitrepo import GitRepo, run_cli

POLICY = """
guardrails:
  max_step: {default: 50, production: 25}
  min_bake: {default: 1h, production: 24h}
  protect_serving_values: true
"""
# A segment that refers to another, a flag that uses it, and a progression that repeats
# a stage name with a passed schedule (it draws a warning while unchanged).
STAFF_PLUS = """
name: Staff and friends
owner: platform
rules:
  - {segment: staff}
"""
FRIENDS_FLAG = """
name: Friends preview
owner: platform
kind: release
variations: {on: true, off: false}
off_variation: off
"""
FRIENDS_PRODUCTION = """
enabled: true
rules:
  - name: friends
    if: {segment: staff-plus}
    serve: on
default: off
"""
REPEATING_PRODUCTION = """
enabled: true
default:
  progression:
    variation: on
    baseline: off
    current: c
    stages:
      - {name: a, percent: 10}
      - {name: b, percent: 20}
      - {name: c, percent: 30}
      - {name: a, percent: 5, at: "2026-11-01T00:00:00Z"}
"""
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()
RUNS = 3  # the commands below
COMMANDS = (
    ["diff", "HEAD", "--format", "json"],
    ["diff", "--format", "markdown"],  # against the merge-base with main
    ["check-change", "--base", "HEAD", "--format", "json"],
)


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(NO_CACHE_VARIABLE, raising=False)
    monkeypatch.setattr(toolcache, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(time, "time", lambda: NOW)  # bake messages say how long ago
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


class Reads:
    """What the CLI runs did: how many were narrowed, how many read the base whole."""

    def __init__(self) -> None:
        self.narrowed = 0
        self.whole_base = 0

    def take(self) -> tuple[int, int]:
        counts = (self.narrowed, self.whole_base)
        self.narrowed = self.whole_base = 0
        return counts


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    seen = Reads()
    narrow, project_at = worktree_change._narrowed, gitops.project_at

    def narrow_spy(*args: Any, **kwargs: Any) -> Any:
        result = narrow(*args, **kwargs)
        seen.narrowed += result is not None
        return result

    def project_at_spy(*args: Any, **kwargs: Any) -> Any:
        seen.whole_base += 1
        return project_at(*args, **kwargs)

    monkeypatch.setattr(worktree_change, "_narrowed", narrow_spy)
    monkeypatch.setattr(gitops, "project_at", project_at_spy)
    return seen


def whole(root: Path) -> list[tuple[int, str, str]]:
    """What the commands print reading both sides whole (narrowing turned off)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worktree_change, "_narrowed", lambda *args, **kwargs: None)
        return outputs(root, ["--no-cache"])


def example_repo(path: Path, *, subfolder: str = "") -> tuple[GitRepo, Path]:
    """The repository's example flags plus a guardrails policy, a segment referring to
    another, a flag using it and one repeating a stage name, committed on main."""
    repo = GitRepo(path)
    root = repo.path / subfolder if subfolder else repo.path
    if subfolder:
        root.mkdir(parents=True)
    inner = GitRepo.__new__(GitRepo)
    inner.path, inner.clock = root, repo.clock
    inner.copy_example()
    config = root / "flagstone.yaml"
    config.write_text(config.read_text() + POLICY)
    inner.write("segments/staff-plus.yaml", STAFF_PLUS)
    inner.write("flags/friends/flag.yaml", FRIENDS_FLAG)
    inner.write("flags/friends/production.yaml", FRIENDS_PRODUCTION)
    inner.write("flags/repeating/flag.yaml", FRIENDS_FLAG.replace("Friends", "Repeating"))
    inner.write("flags/repeating/production.yaml", REPEATING_PRODUCTION)
    repo.commit("Initial flags with guardrails", date="2026-11-01T09:00:00Z")
    return repo, root


def replace(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))


def outputs(root: Path, extra: list[str]) -> list[tuple[int, str, str]]:
    return [run_cli([*command, *extra], root) for command in COMMANDS]


Edit = Callable[[GitRepo, Path], None]


def remove_flag(repo: GitRepo, root: Path) -> None:
    shutil.rmtree(root / "flags/payments-v2")


def archive_flag(repo: GitRepo, root: Path) -> None:
    replace(
        root,
        "flags/payments-v2/flag.yaml",
        "off_variation: off",
        "off_variation: off\narchived: true",
    )


def rename_flag(repo: GitRepo, root: Path) -> None:
    (root / "flags/search-ranking").rename(root / "flags/search-order")


def staged_and_more(repo: GitRepo, root: Path) -> None:
    replace(root, "flags/new-checkout/production.yaml", "current: beta", "current: ten")
    repo.git("add", str(root / "flags/new-checkout/production.yaml"))
    replace(root, "flags/new-checkout/staging.yaml", "enabled: true", "enabled: false")


def untracked_and_ignored(repo: GitRepo, root: Path) -> None:
    (root / ".gitignore").write_text("flags/hidden-one/\n")
    for key in ("brand-new", "hidden-one"):
        (root / "flags" / key).mkdir()
        (root / "flags" / key / "flag.yaml").write_text(FRIENDS_FLAG)
        (root / "flags" / key / "production.yaml").write_text(
            FRIENDS_PRODUCTION.replace("default: off", "default: on")
        )


# Each edit of the working tree, and whether narrowing is safe for it.
EDITS: dict[str, tuple[Edit, bool]] = {
    "nothing": (lambda repo, root: None, True),
    "advance a stage": (
        lambda repo, root: replace(
            root, "flags/new-checkout/production.yaml", "current: beta", "current: half"
        ),
        True,
    ),
    "a staging target": (
        lambda repo, root: replace(
            root, "flags/disable-recommendations/staging.yaml", "qa-no-", "qa-x, qa-no-"
        ),
        True,
    ),
    "a served value": (
        lambda repo, root: replace(root, "flags/holiday-banner/flag.yaml", "40% off", "50% off"),
        True,
    ),
    "a segment in a stage ring": (
        lambda repo, root: replace(
            root, "segments/beta-testers.yaml", "include: [", "include: [u-9, "
        ),
        True,
    ),
    "a segment another refers to": (
        lambda repo, root: replace(root, "segments/staff.yaml", "@acme.com", "acme.com"),
        True,
    ),
    "a segment removed": (lambda repo, root: (root / "segments/staff.yaml").unlink(), True),
    "a prerequisite removed": (remove_flag, True),
    "a prerequisite archived": (archive_flag, True),
    "a flag renamed": (rename_flag, True),
    "a release file deleted": (
        lambda repo, root: (root / "flags/holiday-banner/staging.yaml").unlink(),
        True,
    ),
    "a file that does not parse": (
        lambda repo, root: (root / "flags/payments-v2/staging.yaml").write_text("enabled: [\n"),
        True,
    ),
    "staged, then changed again": (staged_and_more, True),
    "untracked and ignored flags": (untracked_and_ignored, True),
    "the project file": (
        lambda repo, root: replace(root, "flagstone.yaml", "production: 25", "production: 5"),
        False,
    ),
    "an ident attribute": (
        lambda repo, root: (root / ".gitattributes").write_text("*.yaml ident\n"),
        False,
    ),
    "an ident attribute below": (
        lambda repo, root: (root / "flags/.gitattributes").write_text("*.yaml ident\n"),
        False,
    ),
    "an assume-unchanged file": (
        lambda repo, root: repo.git(
            "update-index",
            "--assume-unchanged",
            str((root / "flags/friends/flag.yaml").relative_to(repo.path)),
        ),
        False,
    ),
}


def reset(repo: GitRepo) -> None:
    repo.git(
        "update-index",
        "--no-assume-unchanged",
        *[line for line in repo.git("ls-files").splitlines()],
    )
    repo.git("reset", "-q", "--hard")
    repo.git("clean", "-q", "-f", "-d", "-x", "-e", ".flagstone")


@pytest.mark.parametrize("subfolder", ["", "team/flags"])
def test_narrowed_results_are_the_bytes_of_whole_reads_for_every_kind_of_change(
    tmp_path: Path, user_cache: Path, reads: Reads, subfolder: str
) -> None:
    repo, root = example_repo(tmp_path / "git", subfolder=subfolder)
    first = outputs(root, [])
    # The first run read the base whole and kept its summary; the others used it.
    assert reads.take() == (RUNS, 1)
    assert first == whole(root)
    assert list((root / CACHE_FOLDER).glob(f"{worktree_change.SUMMARY_PREFIX}*.entry"))
    few = ("nothing", "a prerequisite removed", "untracked and ignored flags", "an ident attribute")
    edits = {k: EDITS[k] for k in few} if subfolder else EDITS
    for name, (edit, safe) in edits.items():
        reset(repo)
        edit(repo, root)
        expected = whole(root)
        reads.take()
        assert outputs(root, []) == expected, name
        assert reads.take() == ((RUNS, 0) if safe else (0, RUNS)), name
        # Without the cache, the base is read whole and its summary made on the spot.
        assert outputs(root, ["--no-cache"]) == expected, name
        assert reads.take() == ((RUNS, RUNS) if safe else (0, RUNS)), name


def test_what_each_change_reports_through_the_narrowing(
    tmp_path: Path, user_cache: Path, reads: Reads
) -> None:
    """The narrowed runs find what whole reads find (the cases above compare bytes; these
    show the bytes hold the findings that need flags beyond the edited one)."""
    repo, root = example_repo(tmp_path / "git")
    outputs(root, [])
    checks = {
        "a prerequisite removed": "payments-v2 is removed but new-checkout has it as a prerequisite",
        "a segment in a stage ring": "used by new-checkout (production)",
        "a segment another refers to": "used by bulk-order-export (staging), friends (production)",
        "a flag renamed": "renamed from search-ranking",
        "nothing": "skipping b",  # the repeating flag, unchanged
    }
    for name, wanted in checks.items():
        reset(repo)
        EDITS[name][0](repo, root)
        reads.take()
        text = "".join(out for _, out, _ in outputs(root, []))
        assert wanted in text, name
        assert reads.take() == (RUNS, 0), name


def test_a_base_with_links_attributes_or_problems_is_never_narrowed(
    tmp_path: Path, user_cache: Path, reads: Reads
) -> None:
    repo, root = example_repo(tmp_path / "git")

    def check() -> None:
        outputs(root, [])
        replace(root, "flags/new-checkout/production.yaml", "current: beta", "current: ten")
        expected = whole(root)
        reads.take()
        assert outputs(root, []) == expected
        assert outputs(root, ["--no-cache"]) == expected
        assert reads.take() == (0, 2 * RUNS)
        reset(repo)

    os.symlink("staff.yaml", root / "segments/staff-link.yaml")
    repo.commit("A linked segment")
    check()
    (root / "segments/staff-link.yaml").unlink()
    (root / "flags/.gitattributes").write_text("production.yaml filter=lfs\n")
    repo.commit("A tracked attribute file")
    check()
    (root / "flags/.gitattributes").unlink()
    (root / "flags/payments-v2/staging.yaml").write_text("enabled: [\n")
    repo.commit("A broken file")
    check()


def test_a_tampered_or_foreign_summary_is_not_used(
    tmp_path: Path, user_cache: Path, reads: Reads, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = example_repo(tmp_path / "git")
    outputs(root, [])
    (entry,) = (root / CACHE_FOLDER).glob(f"{worktree_change.SUMMARY_PREFIX}*.entry")
    good = entry.read_bytes()
    replace(root, "flags/new-checkout/production.yaml", "current: beta", "current: ten")
    expected = whole(root)[0]
    for variant in (
        good[:-1] + bytes([good[-1] ^ 1]),  # the content
        good[:30] + bytes([good[30] ^ 1]) + good[31:],  # another tool version
        good[: len(good) // 2],
    ):
        entry.write_bytes(variant)
        reads.take()
        assert run_cli(list(COMMANDS[0]), root) == expected
        assert reads.take() == (1, 1)  # ignored: the base read whole, its summary kept anew
        assert entry.read_bytes() == good
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-user"))
    assert run_cli(list(COMMANDS[0]), root) == expected
    assert reads.take() == (1, 1)


def test_a_flag_key_sharing_a_prefix_is_not_read(tmp_path: Path, user_cache: Path) -> None:
    """Keys ``new-checkout`` and ``new-checkout-2``: narrowing to one reads only it (and
    the flag repeating a stage name, always read)."""
    repo, root = example_repo(tmp_path / "git")
    shutil.copytree(root / "flags/new-checkout", root / "flags/new-checkout-2")
    repo.commit("A second checkout")
    outputs(root, [])
    replace(root, "flags/new-checkout/production.yaml", "current: beta", "current: ten")
    before, after = worktree_change.narrowed_projects(
        root, repo.head(), toolcache.ToolCache.for_repository(root)
    ) or (None, None)
    assert before is not None and after is not None
    assert sorted(after.flags) == sorted(before.flags) == ["new-checkout", "repeating"]


def test_a_widened_segment_holds_the_flags_using_it_to_their_bake(
    tmp_path: Path, user_cache: Path, reads: Reads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three hours after the base: widening a segment in new-checkout's ring is an increase
    that has not baked, found by whole reads and narrowed ones alike."""
    monkeypatch.setattr(time, "time", lambda: NOW - 19 * 86400 - 6 * 3600)
    _, root = example_repo(tmp_path / "git")
    outputs(root, [])
    replace(root, "segments/beta-testers.yaml", "include: [", "include: [u-9, ")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worktree_change, "_narrowed", lambda *args, **kwargs: None)
        expected = run_cli(["check-change", "--base", "HEAD", "--no-cache"], root)
    reads.take()
    assert run_cli(["check-change", "--base", "HEAD"], root) == expected
    assert reads.take() == (1, 0)
    assert expected[0] == 1
    assert "before raising its exposure (segment beta-testers)" in expected[1]


def test_only_the_newest_summaries_are_kept(tmp_path: Path, user_cache: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    cache = toolcache.ToolCache.for_repository(root)
    assert cache is not None
    kept = worktree_change.KEPT_SUMMARIES
    folder = root / CACHE_FOLDER
    for number in range(kept + 3):
        worktree_change._keep(cache, f"{worktree_change.SUMMARY_PREFIX}{number:02d}", {})
        entry = folder / f"{worktree_change.SUMMARY_PREFIX}{number:02d}.entry"
        os.utime(entry, ns=(number * 10**9, number * 10**9))
    cache.put("revision", {})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{worktree_change.SUMMARY_PREFIX}x.entry").write_text("not ours")
    (folder / f"{worktree_change.SUMMARY_PREFIX}zz.entry").symlink_to(
        outside / f"{worktree_change.SUMMARY_PREFIX}x.entry"
    )
    worktree_change._keep(cache, f"{worktree_change.SUMMARY_PREFIX}new", {})
    names = sorted(p.name for p in folder.iterdir())
    summaries = [n for n in names if n.startswith(worktree_change.SUMMARY_PREFIX)]
    assert len(summaries) == kept + 1  # the newest written ones, and the link left alone
    assert f"{worktree_change.SUMMARY_PREFIX}00.entry" not in names
    assert f"{worktree_change.SUMMARY_PREFIX}new.entry" in names
    assert "revision.entry" in names
    assert (outside / f"{worktree_change.SUMMARY_PREFIX}x.entry").read_text() == "not ours"
    # A cache folder that is a link is not pruned through.
    shutil.rmtree(root / ".flagstone")
    (root / ".flagstone").symlink_to(outside, target_is_directory=True)
    (outside / "cache").mkdir()
    for number in range(kept + 2):
        (outside / "cache" / f"{worktree_change.SUMMARY_PREFIX}{number}.entry").write_text("x")
    worktree_change._keep(cache, f"{worktree_change.SUMMARY_PREFIX}more", {})
    assert len(list((outside / "cache").iterdir())) == kept + 2
