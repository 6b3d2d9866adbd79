"""The pre-commit hooks, run by pre-commit itself in consumer repositories.

`pre-commit try-repo` builds a fresh virtualenv and pip-installs this package from a
clone of the repository's HEAD each time it runs (it uses a throwaway store, so
PRE_COMMIT_HOME cannot cache it): that needs the package index and takes about 10–25 s
per run. Those two tests are marked `slow`; the local-hooks test needs no install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flagstone.scaffold import ScaffoldOptions, scaffold_repository

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def pre_commit(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    env.pop("GITHUB_ACTIONS", None)
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture(scope="module")
def hooks_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This repository at HEAD: what a consumer's `rev:` would point at. (Cloning keeps
    other people's uncommitted work in the shared tree out of the installed package.)"""
    clone = tmp_path_factory.mktemp("hooks") / "flagstone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return clone


def consumer_repository(root: Path) -> Path:
    """A new flag repository as `flagstone init` makes it, committed."""
    scaffold_repository(root, ScaffoldOptions(project="consumer", admins="@acme/platform"))
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "flagstone init", cwd=root)
    return root


def break_example_flag(root: Path) -> None:
    flag = root / "flags" / "example-flag" / "flag.yaml"
    flag.write_text(flag.read_text().replace("off_variation: off", "off_variation: maybe"))


@pytest.mark.slow
def test_try_repo_hooks_pass_on_a_new_repository_right_after_new(
    tmp_path: Path, hooks_clone: Path, pre_commit_home: Path
) -> None:
    consumer = consumer_repository(tmp_path / "consumer")
    # Right after `flagstone new` (CODEOWNERS regenerated, placeholder description a
    # warning), as a developer would commit it.
    subprocess.run(
        [sys.executable, "-m", "flagstone", "new", "search-v2", "--owner", "platform",
         "--progression", "staff,1%,10%,100%", "--bake", "24h"],
        cwd=consumer, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    git("add", "-A", cwd=consumer)
    result = pre_commit(
        "try-repo", str(hooks_clone), "--all-files", cwd=consumer, home=pre_commit_home
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("flagstone validate", "flagstone lint", "flagstone codeowners --check"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + "."))
        assert line.endswith("Passed"), line


@pytest.mark.slow
def test_try_repo_validate_fails_on_a_broken_flag(
    tmp_path: Path, hooks_clone: Path, pre_commit_home: Path
) -> None:
    consumer = consumer_repository(tmp_path / "consumer")
    break_example_flag(consumer)
    result = pre_commit(
        "try-repo", str(hooks_clone), "flagstone-validate", "--all-files",
        cwd=consumer, home=pre_commit_home,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "flagstone validate" in result.stdout and "Failed" in result.stdout
    assert "flags/example-flag/flag.yaml:12:16: error: unknown variation 'maybe'" in result.stdout
    assert "Traceback" not in result.stdout


def test_repository_config_runs_the_local_hooks(tmp_path: Path, pre_commit_home: Path) -> None:
    """This repository's .pre-commit-config.yaml (system hooks, no install), run on a
    flag repository that also carries the workflow and action files it checks."""
    consumer = tmp_path / "consumer"
    consumer_repository(consumer)
    shutil.copy(ROOT / ".pre-commit-config.yaml", consumer)
    shutil.copy(ROOT / "action.yml", consumer)
    git("add", "-A", cwd=consumer)
    git("commit", "-q", "-m", "hooks", cwd=consumer)

    passed = pre_commit("run", "--all-files", cwd=consumer, home=pre_commit_home)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    for hook in ("flagstone validate", "flagstone lint", "flagstone codeowners --check"):
        assert any(
            line.startswith(hook + ".") and line.endswith("Passed")
            for line in passed.stdout.splitlines()
        ), passed.stdout
    assert "GitHub workflows match the workflow schema" in passed.stdout
    assert "action.yml matches the action schema" in passed.stdout

    break_example_flag(consumer)
    workflow = consumer / ".github" / "workflows" / "flags.yml"
    workflow.write_text(workflow.read_text().replace("runs-on: ubuntu-latest", "runs-on: [1, 2]"))
    failed = pre_commit("run", "--all-files", cwd=consumer, home=pre_commit_home)
    assert failed.returncode == 1
    assert "flags/example-flag/flag.yaml:12:16: error: unknown variation 'maybe'" in failed.stdout
    workflow_line = next(
        line for line in failed.stdout.splitlines() if line.startswith("GitHub workflows")
    )
    assert workflow_line.endswith("Failed")


def test_this_repository_passes_its_own_hooks(hooks_clone: Path, pre_commit_home: Path) -> None:
    """Dogfood: the committed flags, CODEOWNERS, workflows and action pass the hooks."""
    result = pre_commit("run", "--all-files", cwd=hooks_clone, home=pre_commit_home)
    assert result.returncode == 0, result.stdout + result.stderr
    hook_lines = [
        line for line in result.stdout.splitlines() if line.endswith(("Passed", "Failed"))
    ]
    assert len(hook_lines) == 5 and all(line.endswith("Passed") for line in hook_lines), hook_lines
