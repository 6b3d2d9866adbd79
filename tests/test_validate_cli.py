"""``flagstone validate`` end to end: exit codes, formats, PATHS, --repo, subdirectories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent / "examples"


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flagstone", "validate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def broken_repo(tmp_path: Path) -> Path:
    """A copy of an invalid example with findings in two different files."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "invalid" / "unknown-team", repo)
    (repo / "expected.txt").unlink()
    return repo


def test_clean_repository_exits_0(repo_root: Path) -> None:
    result = run(cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("no problems")
    assert result.stderr == ""


def test_findings_exit_1_with_text_lines_and_hints(broken_repo: Path) -> None:
    result = run("--format", "text", cwd=broken_repo)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        "flags/checkout/flag.yaml:4:8: error: unknown team 'checkout-eng' [unknown-team]" in lines
    )
    assert "    hint: did you mean 'core'?" in lines
    assert lines[-1] == "mini-shop: 4 files checked: 4 errors"


def test_works_from_a_subdirectory_and_with_repo(broken_repo: Path, tmp_path: Path) -> None:
    from_sub = run("--format", "json", cwd=broken_repo / "flags" / "checkout")
    with_repo = run("--format", "json", "--repo", str(broken_repo), cwd=tmp_path)
    assert from_sub.returncode == with_repo.returncode == 1
    assert json.loads(from_sub.stdout) == json.loads(with_repo.stdout)


def test_paths_restrict_what_is_reported(broken_repo: Path) -> None:
    result = run("--format", "json", "segments", "flagstone.yaml", cwd=broken_repo)
    report = json.loads(result.stdout)
    assert [(p["path"], p["line"], p["col"], p["rule"]) for p in report["problems"]] == [
        ("flagstone.yaml", 7, 9, "unknown-team"),
        ("segments/staff.yaml", 2, 8, "unknown-team"),
    ]
    assert report["counts"] == {"error": 2, "warning": 0, "info": 0}
    clean = run("flags/checkout/production.yaml", cwd=broken_repo)
    assert clean.returncode == 0


def test_json_format_is_complete(broken_repo: Path) -> None:
    report = json.loads(run("--format", "json", cwd=broken_repo).stdout)
    first = report["problems"][0]
    assert first == {
        "path": "flags/checkout/flag.yaml",
        "line": 4,
        "col": 8,
        "rule": "unknown-team",
        "level": "error",
        "message": "unknown team 'checkout-eng'",
        "hint": "declared teams: core, pm",
    }


def test_github_format_annotates_and_writes_the_job_summary(
    broken_repo: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    result = run(
        cwd=broken_repo, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert result.returncode == 1
    assert (
        "::error file=flagstone.yaml,line=7,col=9,title=unknown-team::unknown team 'cor' (hint: did you mean 'core'?)"
        in result.stdout.splitlines()
    )
    text = summary.read_text("utf-8")
    assert text.startswith("### mini-shop: 4 files checked: 4 errors")
    assert (
        "| error | `segments/staff.yaml:2:8` | `unknown-team` | unknown team 'platform' — declared teams: core, pm |"
        in text
    )


def test_yaml_hazard_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "invalid" / "yaml-not-utf8", repo)
    result = run(cwd=repo)
    assert result.returncode == 1
    assert (
        "segments/staff.yaml:2:10: error: file is not valid UTF-8 (byte 0xe9) [yaml]"
        in result.stdout
    )
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(repo_root: Path, tmp_path: Path) -> None:
    missing = run("no/such/file.yaml", cwd=repo_root)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no such file or directory: no/such/file.yaml")
    outside = run(str(tmp_path), cwd=repo_root)
    assert outside.returncode == 2
    assert "is outside the flag repository" in outside.stderr
    bad_format = run("--format", "xml", cwd=repo_root)
    assert bad_format.returncode == 2
    no_repo = run(cwd=tmp_path)
    assert no_repo.returncode == 2
    assert "no flagstone.yaml found" in no_repo.stderr
    assert "Traceback" not in missing.stderr + outside.stderr + bad_format.stderr + no_repo.stderr


def test_unreadable_project_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "flagstone.yaml").write_text("project: [unclosed\n")
    result = run(cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("flagstone.yaml:2:1: error: invalid YAML")
