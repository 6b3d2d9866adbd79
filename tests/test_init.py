"""``flagstone init``: the scaffold is a working flag repository and nothing is overwritten."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagstone.cli.main import main
from flagstone.errors import UsageError
from flagstone.lint import lint_project
from flagstone.model import read_project
from flagstone.ownership import codeowners_report
from flagstone.scaffold import (
    ScaffoldOptions,
    default_project_name,
    render_scaffold,
    scaffold_repository,
)
from flagstone.validate import validate_project

EXPECTED_FILES = [
    ".github/CODEOWNERS",
    ".github/workflows/emergency-kill.yml",
    ".github/workflows/flags.yml",
    ".github/workflows/progress.yml",
    ".gitignore",
    ".pre-commit-config.yaml",
    "flags/example-flag/flag.yaml",
    "flags/example-flag/production.yaml",
    "flags/example-flag/staging.yaml",
    "flagstone.yaml",
    "segments/staff.yaml",
]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def flagstone(*args: str, cwd: Path) -> Result:
    """The real entry point (its error handler included), in-process to save startups."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exit_:
                code = int(exit_.code or 0)
    finally:
        os.chdir(previous)
    return Result(code, out.getvalue(), err.getvalue())


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``flagstone init shop`` run once for the checks that only read the result."""
    parent = tmp_path_factory.mktemp("init")
    result = flagstone("init", "shop", cwd=parent)
    assert result.returncode == 0, result.stderr
    return parent / "shop"


def test_init_writes_the_repository_files(scaffolded: Path) -> None:
    written = files_under(scaffolded)
    schemas = [p for p in written if p.startswith("schemas/")]
    assert [p for p in written if not p.startswith("schemas/")] == EXPECTED_FILES
    assert {
        "schemas/flag.schema.json",
        "schemas/project.schema.json",
        "schemas/release.schema.json",
        "schemas/segment.schema.json",
    } <= set(schemas)
    package_schemas = Path(__file__).resolve().parent.parent / "tooling/flagstone/schemas"
    for schema in schemas:
        assert (scaffolded / schema).read_bytes() == (
            package_schemas / Path(schema).name
        ).read_bytes()


def test_init_names_the_project_after_the_directory(scaffolded: Path) -> None:
    text = (scaffolded / "flagstone.yaml").read_text()
    assert "project: shop\n" in text
    assert '"@shop/platform"' in text


@pytest.mark.parametrize("command", [["validate"], ["lint"], ["codeowners", "--check"]])
def test_scaffold_passes_the_checks_as_written(scaffolded: Path, command: list[str]) -> None:
    result = flagstone(*command, "--format", "text", cwd=scaffolded)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems" in result.stdout


def test_scaffold_checks_pass_from_a_subdirectory(scaffolded: Path) -> None:
    result = flagstone("validate", "--format", "text", cwd=scaffolded / "flags" / "example-flag")
    assert result.returncode == 0, result.stdout + result.stderr


def test_codeowners_is_what_the_codeowners_command_writes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    assert flagstone("init", str(root), cwd=tmp_path).returncode == 0
    generated = (root / ".github/CODEOWNERS").read_bytes()
    (root / ".github/CODEOWNERS").unlink()
    result = flagstone("codeowners", cwd=root)
    assert result.returncode == 0, result.stderr
    assert (root / ".github/CODEOWNERS").read_bytes() == generated
    assert "/flags/example-flag/production.yaml @repo/platform" in generated.decode()


def test_gitignore_keeps_keys_out(scaffolded: Path) -> None:
    ignored = (scaffolded / ".gitignore").read_text().splitlines()
    assert {".flagstone/", "*.pem", "*.key"} <= set(ignored)


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "existing"
    (root / "segments").mkdir(parents=True)
    (root / "flagstone.yaml").write_text("project: mine\n")
    (root / "segments" / "staff.yaml").write_text("name: Mine\n")
    before = {p: (root / p).read_bytes() for p in files_under(root)}

    result = flagstone("init", str(root), cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert "2 file(s) already exist: flagstone.yaml, segments/staff.yaml" in first
    assert {p: (root / p).read_bytes() for p in files_under(root)} == before


def test_init_into_a_directory_with_other_files_keeps_them(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "README.md").write_text("# app\n")
    result = flagstone("init", "--project", "app-flags", cwd=root)
    assert result.returncode == 0, result.stderr
    assert (root / "README.md").read_text() == "# app\n"
    assert "project: app-flags\n" in (root / "flagstone.yaml").read_text()


def test_init_with_custom_environments(tmp_path: Path) -> None:
    root = tmp_path / "multi"
    result = flagstone(
        "init", str(root), "--environments", "dev,qa,prod", "--admins", "@acme/flag-admins",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    flag_dir = root / "flags" / "example-flag"
    assert sorted(p.name for p in flag_dir.iterdir()) == [
        "dev.yaml",
        "flag.yaml",
        "prod.yaml",
        "qa.yaml",
    ]
    assert "progression:" in (flag_dir / "prod.yaml").read_text()
    assert "progression:" not in (flag_dir / "dev.yaml").read_text()
    for command in (["validate"], ["lint"], ["codeowners", "--check"]):
        checked = flagstone(*command, cwd=root)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "Not A Key"], "project name 'Not A Key' is not a valid key"),
        (["--environments", "prod,prod"], "an environment is listed twice"),
        (["--environments", "Prod"], "environment name 'Prod' is not a valid key"),
        (["--environments", "default"], "'default' cannot be an environment name here"),
        (["--admins", "platform team"], "'platform team' is not a GitHub owner"),
        (["--action", "latest"], "action 'latest' is not OWNER/REPOSITORY@REF"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = flagstone("init", str(tmp_path / "x"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: {message}"
    assert not (tmp_path / "x").exists()


def test_init_onto_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    result = flagstone("init", "taken", cwd=tmp_path)
    assert result.returncode == 2
    assert "exists and is not a directory" in result.stderr


def test_scaffold_is_deterministic() -> None:
    options = ScaffoldOptions(project="same", today=date(2026, 11, 26))
    first, second = render_scaffold(options), render_scaffold(options)
    assert first == second
    assert 'expires: "2027-02-24"' in first["flags/example-flag/flag.yaml"]


def test_action_reference_reaches_workflow_and_hooks() -> None:
    files = render_scaffold(ScaffoldOptions(project="p", action="acme/flagstone-fork@v2.1"))
    workflow = files[".github/workflows/flags.yml"]
    assert workflow.count("uses: acme/flagstone-fork@v2.1\n") == 8  # review 5, publish 2, pages 1
    assert "__FLAGSTONE_" not in "".join(files.values())
    assert "repo: https://github.com/acme/flagstone-fork\n" in files[".pre-commit-config.yaml"]


@pytest.mark.parametrize(
    ("name", "key"),
    [("Acme Shop", "acme-shop"), ("flags.repo", "flags.repo"), ("___", "flags")],
)
def test_default_project_name(tmp_path: Path, name: str, key: str) -> None:
    assert default_project_name(tmp_path / name) == key


def test_options_are_checked_before_rendering() -> None:
    with pytest.raises(UsageError):
        render_scaffold(ScaffoldOptions(project="p", environments=()))


def test_no_template_path_is_hidden() -> None:
    """Hidden names are skipped by package-data globs; templates spell them `dot-…`."""
    templates = Path(__file__).resolve().parent.parent / "tooling/flagstone/templates"
    hidden = [
        p.relative_to(templates).as_posix()
        for p in templates.rglob("*")
        if "__pycache__" not in p.parts
        and any(part.startswith(".") for part in p.relative_to(templates).parts)
    ]
    assert hidden == []


def test_existing_gitignore_gets_only_the_missing_patterns(tmp_path: Path) -> None:
    root = tmp_path / "fresh-from-github"
    root.mkdir()
    (root / ".gitignore").write_text("__pycache__/\n*.pem")  # no final newline
    result = flagstone("init", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "extended .gitignore" in result.stdout
    assert "created .gitignore" not in result.stdout
    text = (root / ".gitignore").read_text()
    assert text.startswith("__pycache__/\n*.pem\n\n# Flagstone")
    patterns = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert patterns == ["__pycache__/", "*.pem", ".flagstone/", "*.key", "/dist/"]
    assert flagstone("validate", cwd=root).returncode == 0


def test_gitignore_with_every_pattern_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    complete = ".flagstone/\n*.pem\n*.key\n/dist/\n"
    (root / ".gitignore").write_text(complete)
    result = flagstone("init", cwd=root)
    assert result.returncode == 0, result.stderr
    assert ".gitignore" not in result.stdout
    assert (root / ".gitignore").read_text() == complete


def test_gitignore_is_not_touched_when_init_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / ".gitignore").write_text("node_modules/\n")
    (root / "flagstone.yaml").write_text("project: mine\n")
    result = flagstone("init", cwd=root)
    assert result.returncode == 2
    assert "1 file(s) already exist: flagstone.yaml" in result.stderr
    assert (root / ".gitignore").read_text() == "node_modules/\n"


def test_an_unwritable_directory_is_a_one_line_error(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "flags").write_text("a file where init needs a directory\n")
    result = flagstone("init", str(blocked), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # Refused before the first write, so nothing is left half-scaffolded.
    assert result.stderr.startswith(
        f"error: {blocked}: 1 file(s) already exist: flags (a file where a folder is needed)"
    )
    assert sorted(p.name for p in blocked.iterdir()) == ["flags"]


def test_names_yaml_would_not_read_as_text_are_quoted(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    result = flagstone(
        "init", str(root), "--project", "2027", "--environments", "1,true", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    text = (root / "flagstone.yaml").read_text()
    assert 'project: "2027"\n' in text
    assert 'environments: ["1", "true"]\n' in text
    for command in (["validate"], ["lint"], ["codeowners", "--check"]):
        checked = flagstone(*command, cwd=root)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_email_owner_with_quotes_stays_one_yaml_string(tmp_path: Path) -> None:
    owner = 'flag"admins@example.com'
    result = flagstone("init", str(tmp_path / "r"), "--admins", owner, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert flagstone("validate", cwd=tmp_path / "r").returncode == 0
    assert f"/flagstone.yaml {owner}\n" in (tmp_path / "r/.github/CODEOWNERS").read_text()


KEYS = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    project=KEYS,
    environments=st.lists(
        KEYS.filter(lambda k: k != "default"), min_size=1, max_size=4, unique=True
    ),
)
def test_any_valid_names_give_a_clean_repository(
    tmp_path_factory: pytest.TempPathFactory, project: str, environments: list[str]
) -> None:
    root = tmp_path_factory.mktemp("any")
    options = ScaffoldOptions(project=project, environments=tuple(environments))
    scaffold_repository(root, options)
    repository = read_project(root)
    assert repository.problems == []
    assert repository.config is not None and repository.config.name == project
    assert repository.environments == environments
    assert [p for p in validate_project(repository) if p.level == "error"] == []
    assert lint_project(repository).problems == []
    assert codeowners_report(repository).up_to_date
