"""Git plumbing and ``flagstone diff`` defaults on real repositories."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flagstone import auditlog, gitops
from flagstone.errors import GitError
from flagstone.problems import Problem
from gitrepo import BOB, GitRepo, run_cli

FLAG = "name: Dark mode\nowner: eng\nvariations: {on: true, off: false}\noff_variation: off\n"
PROJECT = "project: shop\nenvironments: [staging, production]\nteams: {eng: {github: '@acme/eng'}}\nadmins: eng\n"


@pytest.fixture(autouse=True)
def _outside_pull_request_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under GitHub Actions pull_request runs GITHUB_BASE_REF picks the default branch."""
    monkeypatch.delenv("GITHUB_BASE_REF", raising=False)


def small_repo(path: Path, *, branch: str = "main", prefix: str = "") -> GitRepo:
    repo = GitRepo(path, branch=branch)
    repo.write(f"{prefix}flagstone.yaml", PROJECT)
    repo.write(f"{prefix}flags/dark-mode/flag.yaml", FLAG)
    repo.write(f"{prefix}flags/dark-mode/production.yaml", "enabled: false\ndefault: off\n")
    repo.commit("Add dark-mode", date="2026-11-01T09:00:00Z")
    return repo


@pytest.mark.parametrize(
    ("subject", "number"),
    [
        ("Merge pull request #123 from acme/branch", 123),
        ("Enable dark mode (#45)", 45),
        ("Enable dark mode (#45)  ", 45),
        ('Revert "Enable dark mode (#45)"', None),
        ("Fix #12 in the middle", None),
        ("Plain commit", None),
    ],
)
def test_pull_request_numbers_from_subjects(subject: str, number: int | None) -> None:
    commit = gitops.Commit(
        "0" * 40, "A", "a@example.com", "2026-11-01T00:00:00+00:00", 0, subject, ()
    )
    assert commit.pull_request == number


def test_default_branch_and_merge_base(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    root = repo.path
    assert gitops.default_branch(root) == "main"
    main_head = repo.head()
    assert gitops.default_base(root) == main_head  # on the default branch: HEAD itself
    repo.branch("feature")
    repo.replace("flags/dark-mode/production.yaml", "enabled: false", "enabled: true")
    repo.commit("Enable dark mode", author=BOB, date="2026-11-02T09:00:00Z")
    assert gitops.default_base(root) == main_head
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True, timeout=60
    )
    assert gitops.default_branch(clone) == "origin/feature"  # origin/HEAD follows the source's HEAD


def test_pull_request_base_ref_and_remote_branches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = small_repo(tmp_path / "r")
    repo.branch("release")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", str(repo.path), str(clone)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(["git", "remote", "set-head", "origin", "-d"], cwd=clone, check=True, timeout=60)
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=clone, check=True, timeout=60)
    subprocess.run(["git", "branch", "-q", "-D", "release"], cwd=clone, check=True, timeout=60)
    assert gitops.default_branch(clone) == "origin/main"  # a detached CI checkout
    monkeypatch.setenv("GITHUB_BASE_REF", "release")
    assert gitops.default_branch(clone) == "origin/release"
    monkeypatch.setenv("GITHUB_BASE_REF", "no-such-branch")
    assert gitops.default_branch(clone) == "origin/main"


def test_unrelated_histories_are_an_error_not_an_empty_diff(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    repo.git("checkout", "-q", "--orphan", "other")
    repo.commit("Unrelated root", date="2026-11-02T09:00:00Z")
    with pytest.raises(GitError, match="HEAD and main have no common history here") as raised:
        gitops.default_base(repo.path)
    assert "fetch-depth: 0" in (raised.value.hint or "")


def test_master_is_the_fallback_default_branch(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r", branch="master")
    assert gitops.default_branch(repo.path) == "master"
    repo.git("branch", "-m", "master", "trunk")
    assert gitops.default_branch(repo.path) is None
    assert gitops.default_base(repo.path) == repo.head()


def test_project_in_a_subdirectory(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r", prefix="config/flags/")
    root = repo.path / "config" / "flags"
    project = gitops.project_at(root, "HEAD")
    assert sorted(project.flags) == ["dark-mode"]
    assert project.flags["dark-mode"].releases["production"].enabled is False
    history = gitops.first_parent_history(root)
    assert [c.subject for c in history] == ["Add dark-mode"]
    assert {c.path for c in history[0].changes} == {
        "flagstone.yaml",
        "flags/dark-mode/flag.yaml",
        "flags/dark-mode/production.yaml",
    }


def test_a_revision_before_the_subdirectory_existed_is_empty(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "r")
    repo.write("README.md", "# monorepo\n")
    first = repo.commit("Start the monorepo")
    repo.write("config/flags/flagstone.yaml", PROJECT)
    repo.write("config/flags/flags/dark-mode/flag.yaml", FLAG)
    repo.commit("Add flags", date="2026-11-02T09:00:00Z")
    root = repo.path / "config" / "flags"
    empty = gitops.project_at(root, first)
    assert (empty.config, empty.flags, empty.problems) == (None, {}, [])
    code, out, _ = run_cli(["diff", first, "HEAD", "--format", "json"], root)
    assert code == 0
    assert [c["kind"] for c in json.loads(out)["changes"]] == ["project-changed", "flag-added"]


def test_invalid_file_at_a_revision_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    repo.write("flags/dark-mode/production.yaml", "enabled: [\n")
    repo.commit("Break it")
    project = gitops.project_at(repo.path, "HEAD")
    assert [p.path for p in project.problems] == ["flags/dark-mode/production.yaml"]
    assert "production" not in project.flags["dark-mode"].releases


def test_unknown_revision_and_no_git(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    with pytest.raises(GitError, match=r"^unknown revision 'v9'$"):
        gitops.resolve_revision(repo.path, "v9")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "flagstone.yaml").write_text(PROJECT)
    with pytest.raises(GitError, match="is not inside a git work tree"):
        gitops.project_at(plain, "HEAD")
    code, out, err = run_cli(["diff"], plain)
    assert code == 1 and out == "" and err.startswith("error: ")


def test_blob_reader_reads_many_and_reports_missing(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    with gitops.BlobReader(repo.path) as reader:
        assert reader.read("HEAD:flags/dark-mode/flag.yaml") == FLAG.encode()
        assert reader.read("HEAD:no/such/file") is None
        assert reader.read("HEAD:flagstone.yaml") == PROJECT.encode()


def test_diff_defaults_merge_base_to_working_tree(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    repo.branch("feature")
    repo.replace("flags/dark-mode/production.yaml", "enabled: false", "enabled: true")
    repo.commit("Enable dark mode in production", author=BOB, date="2026-11-02T09:00:00Z")
    repo.write("flags/dark-mode/staging.yaml", "enabled: true\ndefault: on\n")  # not committed
    code, out, err = run_cli(["diff"], repo.path / "flags")
    assert code == 0, err
    assert out.splitlines()[1:] == [
        "⚠ 1 production change raises exposure",
        "production:",
        "  dark-mode: enabled: now serves off by default",
        "staging:",
        "  dark-mode: release added: enabled, default on",
    ]
    code, out, _ = run_cli(["diff", "main", "feature", "--format", "json"], repo.path)
    document = json.loads(out)
    assert (document["base"], document["head"]) == ("main", "feature")
    assert [c["kind"] for c in document["changes"]] == ["enabled"]
    code, out, _ = run_cli(["diff", "main", "feature", "--format", "markdown"], repo.path)
    assert code == 0 and "<details open><summary><b>production</b> — 1 change</summary>" in out


def test_diff_reports_an_invalid_working_tree_file(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    repo.write("flags/dark-mode/production.yaml", "enabled: true\n  bad indent: [\n")
    code, out, _ = run_cli(["diff", "--format", "json"], repo.path)
    assert code == 0
    changes = json.loads(out)["changes"]
    assert [c["kind"] for c in changes] == ["file-invalid"]
    assert changes[0]["summary"].startswith(
        "file invalid at working tree: flags/dark-mode/production.yaml:"
    )


def test_audit_log_sees_a_rename_with_an_edit_and_a_broken_then_fixed_file(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "r")
    repo.move("flags/dark-mode", "flags/night-mode")
    repo.replace("flags/night-mode/flag.yaml", "name: Dark mode", "name: Night mode")
    renamed = repo.commit("Rename dark-mode (#3)", date="2026-11-02T09:00:00Z")
    repo.write("flags/night-mode/production.yaml", "enabled: [\n")
    broken = repo.commit("Oops", author=BOB, date="2026-11-03T09:00:00Z")
    repo.write("flags/night-mode/production.yaml", "enabled: true\ndefault: off\n")
    fixed = repo.commit("Fix and enable (#4)", author=BOB, date="2026-11-04T09:00:00Z")
    entries = auditlog.audit_log(repo.path)
    later = [
        (e.commit, e.kind, e.key, e.summary)
        for e in entries
        if e.commit in (renamed, broken, fixed)
    ]
    assert later[:2] == [
        (renamed, "flag-renamed", "night-mode", "renamed from dark-mode"),
        (renamed, "flag-changed", "night-mode", "name: Dark mode → Night mode"),
    ]
    assert later[2][:3] == (broken, "file-invalid", "")
    assert later[2][3].startswith(
        f"file invalid at {broken[:12]}: flags/night-mode/production.yaml:"
    )
    assert [k for c, k, _, _ in later[3:]] == ["file-invalid", "release-added"]
    assert later[4][3] == "release added: enabled, default off"
    assert later[3][3].startswith("file invalid at its parent (fixed since): ")
    selected = auditlog.select_entries(entries, flag="night-mode")
    assert selected[0].kind == "flag-added" and selected[0].key == "dark-mode"


def test_history_walk_parses_only_the_files_each_commit_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = small_repo(tmp_path / "r")  # 3 files
    for step in range(5):
        repo.write(
            "flags/dark-mode/production.yaml", f"enabled: true\ndefault: on\n# step {step}\n"
        )
        repo.commit(f"Step {step}", date=f"2026-11-0{step + 2}T09:00:00Z")
    parsed: list[str] = []
    original = gitops.load_document

    def counting(rel: str, data: bytes, problems: list[Problem]) -> object:
        parsed.append(rel)
        return original(rel, data, problems)

    monkeypatch.setattr(gitops, "load_document", counting)
    entries = auditlog.audit_log(repo.path)
    assert len(parsed) == 3 + 5
    assert parsed[3:] == ["flags/dark-mode/production.yaml"] * 5
    later = [(e.kind, e.summary) for e in entries if e.date > "2026-11-02"]
    assert later == [
        ("enabled", "enabled: now serves on by default"),
        ("default-changed", "default off → on: about +100% of contexts get a new variation"),
    ]  # comment-only commits say nothing
