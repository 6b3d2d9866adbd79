"""The composite action's shell steps, run for real against real repositories.

GitHub is not here, but everything the runner does for a composite action's `run:`
steps is small and documented: it puts the step's `env:` (expressions resolved) into the
environment, gives each step a fresh GITHUB_OUTPUT file, appends GITHUB_ENV lines to
later steps' environments, and runs `bash --noprofile --norc -eo pipefail`. `ActionRunner`
does exactly that with the scripts read from action.yml, so these tests exercise the
shipped scripts and the real `flagstone` commands (annotations, job summary,
GITHUB_OUTPUT), and would fail if either changed shape.

Expressions are resolved from a fixed table; an expression the table does not know
fails the test rather than being guessed. `gh` (the GitHub CLI) is the one stand-in: a
script that answers the comments API from a JSON file and filters with the real `jq`,
so the upsert logic of the comment step runs unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flagstone.loader import load_file
from flagstone.scaffold import ScaffoldOptions, scaffold_repository
from s3server import S3Bucket

pytest_plugins = ["s3server"]

ROOT = Path(__file__).resolve().parent.parent
ACTION = load_file(ROOT / "action.yml", root=ROOT).data
INPUT = re.compile(r"\$\{\{ inputs\.([\w-]+) \}\}")
STEP_OUTPUT = re.compile(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}")
ENV_STEP_OUTPUT = re.compile(
    r"\$\{\{ steps\.([\w-]+)\.outputs\[format\('\{0\}-([\w-]+)', inputs\.environment\)\] \}\}"
)


def parse_output_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT lines: ``name=value`` and ``name<<DELIMITER`` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


@dataclass
class ActionRun:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    step_outputs: dict[str, dict[str, str]]
    summary: str
    exported_env: dict[str, str]


@dataclass
class ActionRunner:
    """Runs action.yml's steps in ``workspace`` as a GitHub runner would."""

    workspace: Path
    scratch: Path
    event: dict[str, Any] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    path_prefix: list[Path] = field(default_factory=list)

    def run(self, **inputs: str) -> ActionRun:
        values = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
        values.update({name.replace("_", "-"): value for name, value in inputs.items()})
        values["github-token"] = "test-token"  # default: ${{ github.token }}
        summary = self.scratch / "step_summary.md"
        summary.write_text("")
        exported: dict[str, str] = {}
        step_outputs: dict[str, dict[str, str]] = {}
        stdout, stderr, returncode = [], [], 0
        for index, step in enumerate(ACTION["runs"]["steps"]):
            condition = step.get("if")
            if condition is not None and not self.condition(condition, values, exported):
                continue
            if "uses" in step:
                # The one action step sets up Python; the tests run in a Python with
                # flagstone installed (FLAGSTONE_ACTION_INSTALLED below), as after the
                # first Flagstone step of a job.
                assert step["uses"].startswith("actions/setup-python@"), step
                continue
            output_file = self.scratch / f"output_{index}"
            env_file = self.scratch / f"env_{index}"
            output_file.write_text("")
            env_file.write_text("")
            env = {
                **os.environ,
                **self.extra_env,
                "GITHUB_ACTIONS": "true",
                "GITHUB_REPOSITORY": "acme/flags",
                "RUNNER_TEMP": str(self.scratch),
                "GITHUB_OUTPUT": str(output_file),
                "GITHUB_ENV": str(env_file),
                "GITHUB_STEP_SUMMARY": str(summary),
                "FLAGSTONE_ACTION_INSTALLED": str(ROOT),
                **exported,
            }
            if self.path_prefix:
                env["PATH"] = os.pathsep.join([*map(str, self.path_prefix), env["PATH"]])
            for name, expression in (step.get("env") or {}).items():
                env[name] = self.resolve(str(expression), values, step_outputs)
            cwd = self.workspace / self.resolve(
                str(step.get("working-directory", ".")), values, step_outputs
            )
            script = self.scratch / f"step_{index}.sh"
            script.write_text(step["run"])
            assert step["shell"] == "bash"
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
            stdout.append(done.stdout)
            stderr.append(done.stderr)
            if "id" in step:
                step_outputs[step["id"]] = parse_output_file(output_file.read_text())
            exported.update(parse_output_file(env_file.read_text()))
            if done.returncode != 0:
                returncode = done.returncode
                break
        outputs = {
            name: self.resolve(str(spec["value"]), values, step_outputs)
            for name, spec in ACTION["outputs"].items()
        }
        return ActionRun(
            returncode,
            "".join(stdout),
            "".join(stderr),
            outputs,
            step_outputs,
            summary.read_text(),
            exported,
        )

    def condition(self, condition: str, values: Mapping[str, str], env: Mapping[str, str]) -> bool:
        known: dict[str, Callable[[], bool]] = {
            (
                "inputs.command == 'diff' && inputs.comment == 'true' && "
                "github.event.pull_request.number != ''"
            ): lambda: (
                values["command"] == "diff"
                and values["comment"] == "true"
                and str(self.event.get("pull_request", {}).get("number", "")) != ""
            ),
        }
        assert condition in known, f"the test runner does not know the condition {condition!r}"
        return known[condition]()

    def resolve(
        self, text: str, values: Mapping[str, str], steps: Mapping[str, Mapping[str, str]]
    ) -> str:
        if "${{" not in text:
            return text
        if match := INPUT.fullmatch(text):
            return values[match.group(1)]
        if match := STEP_OUTPUT.fullmatch(text):
            return steps.get(match.group(1), {}).get(match.group(2), "")
        if match := ENV_STEP_OUTPUT.fullmatch(text):
            key = f"{values['environment']}-{match.group(2)}"
            return steps.get(match.group(1), {}).get(key, "")
        if text == "${{ github.action_path }}":
            return str(ROOT)
        if text == "${{ github.event.pull_request.number }}":
            return str(self.event.get("pull_request", {}).get("number", ""))
        raise AssertionError(f"the test runner does not know the expression {text!r}")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=30
    ).stdout


@pytest.fixture
def flag_repo(tmp_path: Path) -> Path:
    """A fresh `flagstone init` repository, committed to git."""
    root = tmp_path / "flags-repo"
    scaffold_repository(root, ScaffoldOptions(project="acme-flags", admins="@acme/platform"))
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "flagstone init", cwd=root)
    return root


@pytest.fixture
def runner(flag_repo: Path, tmp_path: Path) -> ActionRunner:
    scratch = tmp_path / "runner"
    scratch.mkdir()
    return ActionRunner(flag_repo, scratch)


def break_example_flag(root: Path) -> None:
    flag = root / "flags" / "example-flag" / "flag.yaml"
    flag.write_text(flag.read_text().replace("off_variation: off", "off_variation: maybe"))


# --- findings: annotations and the job summary -------------------------------------------


def has_annotation(stdout: str, path: str, rule: str, message_start: str) -> bool:
    """Whether ``stdout`` has an error annotation at a line and column of ``path``."""
    pattern = (
        rf"^::error file={re.escape(path)},line=\d+,col=\d+,"
        rf"title={re.escape(rule)}::{re.escape(message_start)}"
    )
    return re.search(pattern, stdout, flags=re.MULTILINE) is not None


def test_validate_passes_with_a_summary(runner: ActionRunner) -> None:
    run = runner.run(command="validate")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "flagstone already installed from" in run.stdout
    assert "::error" not in run.stdout
    assert "no problems" in run.summary


def test_validate_annotates_a_broken_flag(runner: ActionRunner, flag_repo: Path) -> None:
    break_example_flag(flag_repo)
    run = runner.run(command="validate")
    assert run.returncode == 1
    annotations = [line for line in run.stdout.splitlines() if line.startswith("::error ")]
    assert annotations, run.stdout + run.stderr
    assert any(
        re.match(r"::error file=flags/example-flag/flag\.yaml,line=\d+,col=\d+,title=", a)
        for a in annotations
    ), annotations
    assert "`flags/example-flag/flag.yaml:" in run.summary
    assert "| error |" in run.summary


def test_codeowners_check_fails_when_ownership_changed(
    runner: ActionRunner, flag_repo: Path
) -> None:
    config = flag_repo / "flagstone.yaml"
    config.write_text(config.read_text().replace("@acme/platform", "@acme/flag-admins"))
    run = runner.run(command="codeowners")
    assert run.returncode == 1
    assert "+/flagstone.yaml @acme/flag-admins" in run.stdout
    assert has_annotation(
        run.stdout, ".github/CODEOWNERS", "codeowners", ".github/CODEOWNERS is out of date"
    ), run.stdout


def test_check_change_annotates_a_guardrail_violation(
    runner: ActionRunner, flag_repo: Path
) -> None:
    base = git("rev-parse", "HEAD", cwd=flag_repo).strip()
    unchanged = runner.run(command="check-change", base=base)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr

    release = flag_repo / "flags" / "example-flag" / "production.yaml"
    release.write_text(release.read_text().replace("current: staff", "current: all"))
    git("commit", "-q", "-am", "example-flag: everyone at once", cwd=flag_repo)
    run = runner.run(command="check-change", base=base)
    assert run.returncode == 1
    assert has_annotation(
        run.stdout,
        "flags/example-flag/production.yaml",
        "guardrail-max-step",
        "example-flag reaches 100%25 more contexts",  # '%' escaped for the workflow command
    ), run.stdout
    assert "guardrail-max-step" in run.summary


def test_unknown_command_is_an_annotated_usage_error(runner: ActionRunner) -> None:
    run = runner.run(command="deploy")
    assert run.returncode == 2
    assert "::error title=flagstone action::unknown command 'deploy'" in run.stdout


def test_working_directory_input(runner: ActionRunner, flag_repo: Path, tmp_path: Path) -> None:
    nested = tmp_path / "mono"
    nested.mkdir()
    shutil.move(flag_repo, nested / "flags")
    run = ActionRunner(nested, runner.scratch).run(command="validate", working_directory="flags")
    assert run.returncode == 0, run.stdout + run.stderr


# --- publish: GITHUB_OUTPUT and the action outputs ---------------------------------------


@pytest.fixture
def signing_key(flag_repo: Path) -> str:
    """A key pair from `flagstone keygen`, trusted in flagstone.yaml; returns the PEM."""
    key_file = flag_repo.parent / "ci-key.pem"
    keygen = subprocess.run(
        [sys.executable, "-m", "flagstone", "keygen", "--out", str(key_file)],
        cwd=flag_repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entry = next(line for line in keygen.stdout.splitlines() if "keyid:" in line)
    config = flag_repo / "flagstone.yaml"
    config.write_text(config.read_text().replace("  keys: []", f"  keys:\n{entry}"))
    git("commit", "-q", "-am", "trust the CI key", cwd=flag_repo)
    return key_file.read_text()


def test_publish_sets_version_and_digest_outputs(
    runner: ActionRunner, signing_key: str, tmp_path: Path
) -> None:
    target = (tmp_path / "published").as_uri()
    refused = runner.run(
        command="publish", environment="production", target=target, signing_key=signing_key
    )
    # A file:// target in Actions reaches nobody: refused unless allowed explicitly.
    assert refused.returncode == 2
    assert "refusing to publish to file://" in refused.stderr
    assert not (tmp_path / "published").exists()
    first = runner.run(
        command="publish",
        environment="production",
        target=target,
        signing_key=signing_key,
        allow_local_target="true",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.outputs["version"] == "1"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first.outputs["digest"])
    assert first.outputs["published"] == "production"
    assert "### flagstone publish" in first.summary
    assert "production: published version 1" in first.summary
    latest = tmp_path / "published" / "production" / "latest.json"
    assert latest.is_file()
    assert signing_key.strip() not in first.stdout + first.stderr

    again = runner.run(
        command="publish",
        environment="production",
        target=target,
        signing_key=signing_key,
        allow_local_target="true",
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.outputs["version"] == "1", "unchanged content is not published again"
    assert again.outputs["digest"] == first.outputs["digest"]
    assert again.outputs["published"] == ""


def test_publish_every_environment_to_s3(
    runner: ActionRunner, signing_key: str, s3_bucket: S3Bucket
) -> None:
    run = runner.run(command="publish", target=s3_bucket.url, signing_key=signing_key)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outputs["published"] == "staging production"
    assert run.outputs["version"] == ""  # no single environment asked for
    outputs = run.step_outputs["flagstone"]
    assert outputs["staging-version"] == outputs["production-version"] == "1"
    listing = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)
    keys = {item["Key"] for item in listing["Contents"]}
    assert {"production/latest.json", "staging/latest.json"} <= keys


def test_scaffolded_target_without_the_variable_is_refused(
    runner: ActionRunner, signing_key: str, flag_repo: Path
) -> None:
    """The scaffold's publish.target is file://dist until `init --target` or the
    FLAGSTONE_PUBLISH_TARGET variable says otherwise: in Actions that is a refusal, not
    'published version 1' into a folder the runner throws away."""
    run = runner.run(command="publish", signing_key=signing_key)
    assert run.returncode == 2
    assert "refusing to publish to file://" in run.stderr
    assert "FLAGSTONE_PUBLISH_TARGET" in run.stderr
    assert run.outputs["published"] == ""
    assert not (flag_repo / "dist").exists()


def test_publish_without_a_signing_key_is_refused(runner: ActionRunner, tmp_path: Path) -> None:
    run = runner.run(command="publish", target=(tmp_path / "out").as_uri())
    assert run.returncode == 2
    assert "publish needs the signing-key input" in run.stdout
    assert not (tmp_path / "out").exists()


def test_inputs_are_data_not_shell_code(runner: ActionRunner, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    hostile = f'production"; touch {marker}; echo "$(touch {marker})'
    run = runner.run(command="publish", environment=hostile, signing_key="not a key")
    assert run.returncode == 2
    assert "unknown environment" in run.stderr
    assert not marker.exists()


# --- the pull-request comment ------------------------------------------------------------

FAKE_GH = """#!/usr/bin/env bash
# Test stand-in for the GitHub CLI: answers the issue-comments API from $GH_STATE
# (a JSON list of comments) and applies --jq with the real jq.
set -euo pipefail
echo "$*" >> "$GH_STATE.calls"
[ "$1" = api ] || { echo "unexpected gh command: $*" >&2; exit 1; }
shift
method=GET jq_filter= body_file= endpoint=
while [ $# -gt 0 ]; do
  case "$1" in
    --method) method=$2; shift 2 ;;
    --jq) jq_filter=$2; shift 2 ;;
    -F) body_file=${2#body=@}; shift 2 ;;
    --paginate | --silent) shift ;;
    *) endpoint=$1; shift ;;
  esac
done
[ "$GH_TOKEN" = test-token ] || { echo "no token" >&2; exit 1; }
if [ "$method" != GET ] && [ -e "$GH_STATE.read-only" ]; then
  echo "HTTP 403: Resource not accessible by integration" >&2; exit 1
fi
case "$method $endpoint" in
  "GET repos/acme/flags/issues/7/comments")
    jq -r "$jq_filter" "$GH_STATE" ;;
  "POST repos/acme/flags/issues/7/comments")
    jq --rawfile body "$body_file" '. + [{id: (100 + length), body: $body}]' "$GH_STATE" > "$GH_STATE.new"
    mv "$GH_STATE.new" "$GH_STATE" ;;
  "PATCH repos/acme/flags/issues/comments/"*)
    id=${endpoint##*/}
    jq --rawfile body "$body_file" --argjson id "$id" 'map(if .id == $id then .body = $body else . end)' "$GH_STATE" > "$GH_STATE.new"
    mv "$GH_STATE.new" "$GH_STATE" ;;
  *) echo "unexpected request: $method $endpoint" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def comment_runner(runner: ActionRunner, tmp_path: Path) -> tuple[ActionRunner, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH)
    gh.chmod(0o755)
    state = tmp_path / "comments.json"
    state.write_text(json.dumps([{"id": 1, "body": "LGTM"}]))
    runner.path_prefix = [bin_dir]
    runner.extra_env = {"GH_STATE": str(state)}
    runner.event = {"pull_request": {"number": 7}}
    return runner, state


def commit_a_change(root: Path) -> str:
    base = git("rev-parse", "HEAD", cwd=root).strip()
    release = root / "flags" / "example-flag" / "production.yaml"
    release.write_text(release.read_text().replace("current: staff", "current: ten"))
    git("commit", "-q", "-am", "example-flag: production to ten", cwd=root)
    return base


def needs_jq() -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq (used by the gh stand-in) is not installed")


def test_diff_goes_to_the_summary_and_one_updated_comment(
    comment_runner: tuple[ActionRunner, Path], flag_repo: Path
) -> None:
    needs_jq()
    runner, state = comment_runner
    base = commit_a_change(flag_repo)

    first = runner.run(command="diff", base=base, head="HEAD", comment="true")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "example-flag" in first.summary
    comments = json.loads(state.read_text())
    assert [c["id"] for c in comments] == [1, 101]
    assert comments[1]["body"].startswith("<!-- flagstone:semantic-diff -->\n")
    assert "example-flag" in comments[1]["body"]

    second = runner.run(command="diff", base=base, head="HEAD", comment="true")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "updated pull-request comment 101" in second.stdout
    assert [c["id"] for c in json.loads(state.read_text())] == [1, 101]


def test_diff_without_comment_input_posts_nothing(
    comment_runner: tuple[ActionRunner, Path], flag_repo: Path
) -> None:
    runner, state = comment_runner
    base = commit_a_change(flag_repo)
    run = runner.run(command="diff", base=base)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not Path(f"{state}.calls").exists()
    assert Path(run.outputs["diff-file"]).read_text() in run.summary


def test_diff_head_without_base_is_refused(runner: ActionRunner) -> None:
    run = runner.run(command="diff", head="HEAD")
    assert run.returncode == 2
    assert "input 'head' needs input 'base'" in run.stdout


def test_a_comment_that_cannot_be_written_is_a_warning(
    comment_runner: tuple[ActionRunner, Path], flag_repo: Path
) -> None:
    needs_jq()
    runner, state = comment_runner
    Path(f"{state}.read-only").touch()
    base = commit_a_change(flag_repo)
    run = runner.run(command="diff", base=base, comment="true")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "::warning title=flagstone action::could not post the pull-request comment" in run.stdout
    assert "HTTP 403" in run.stderr
    assert "example-flag" in run.summary
    assert [c["id"] for c in json.loads(state.read_text())] == [1]


def test_site_command_writes_the_dashboard_for_pages(runner: ActionRunner, flag_repo: Path) -> None:
    run = runner.run(command="site")
    assert run.returncode == 0, run.stdout + run.stderr
    site = Path(run.outputs["site-dir"])
    assert (site / "index.html").is_file()
    assert (site / "flags" / "example-flag.html").is_file()
    assert "example-flag.html" in (site / "index.html").read_text()
