"""Example-folder tests: every ``tests/examples/valid/<case>/`` repository validates clean,
every ``tests/examples/invalid/<case>/`` gives exactly the ``file:line:col: message``
lines of its ``expected.txt``. Cases are collected from the folder listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagstone import escape
from flagstone.model import read_project
from flagstone.validate import validate_project

EXAMPLES = Path(__file__).parent / "examples"
VALID = sorted(p for p in (EXAMPLES / "valid").iterdir() if p.is_dir())
INVALID = sorted(p for p in (EXAMPLES / "invalid").iterdir() if p.is_dir())


def test_there_are_enough_cases() -> None:
    assert len(VALID) >= 3
    assert len(INVALID) >= 40


@pytest.mark.parametrize("case", VALID, ids=[p.name for p in VALID])
def test_valid_case_has_no_findings(case: Path) -> None:
    problems = validate_project(read_project(case))
    assert [p.format_line() for p in problems] == []


@pytest.mark.parametrize("case", VALID, ids=[p.name for p in VALID])
def test_valid_case_compiles_in_every_environment(case: Path) -> None:
    """Nothing that validates may fail at compile (and so at publish)."""
    from flagstone.compile import compile_environment

    project = read_project(case)
    for environment in project.environments:
        assert compile_environment(project, environment)["environment"] == environment


@pytest.mark.parametrize("case", INVALID, ids=[p.name for p in INVALID])
def test_invalid_case_reports_expected_lines(case: Path) -> None:
    expected = (case / "expected.txt").read_text("utf-8").splitlines()
    problems = validate_project(read_project(case))
    # As the text report shows them: repository text with control characters escaped.
    assert [escape.terminal(p.format_line()) for p in problems] == expected
    assert all(p.level == "error" for p in problems)


def test_the_repository_itself_validates_clean(repo_root: Path) -> None:
    project = read_project(repo_root)
    assert validate_project(project) == []
    assert len(project.flags) >= 8
    assert {"staff", "beta-testers"} <= set(project.segments)


def test_every_rule_id_is_exercised_by_an_invalid_case() -> None:
    from flagstone import validate

    rules = {value for name, value in vars(validate).items() if name.startswith("RULE_")}
    seen = {p.rule for case in INVALID for p in validate_project(read_project(case))}
    assert rules | {"yaml"} == seen


@pytest.mark.parametrize("case", INVALID + VALID, ids=[p.name for p in INVALID + VALID])
def test_fast_and_explaining_schema_paths_agree(case: Path) -> None:
    """Large repositories take the compiled fast path; its findings are the same."""
    from flagstone.validate import _documents_with_kinds, schema_problems

    for doc, kind in _documents_with_kinds(read_project(case)):
        assert schema_problems(doc, kind, fast=True) == schema_problems(doc, kind, fast=False)


def test_a_large_repository_takes_the_fast_path_with_the_same_findings(tmp_path: Path) -> None:
    import shutil

    from flagstone import validate

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "invalid" / "schema-unknown-operator", repo)
    flag = (repo / "flags" / "checkout" / "flag.yaml").read_text()
    for number in range(validate.FAST_PATH_MIN_DOCUMENTS):
        (repo / "flags" / f"copy-{number:03d}").mkdir()
        (repo / "flags" / f"copy-{number:03d}" / "flag.yaml").write_text(flag)
    calls_before = sum(validate._fast_validator.cache_info()[:2])
    problems = validate_project(read_project(repo))
    assert sum(validate._fast_validator.cache_info()[:2]) > calls_before + 300
    expected = (repo / "expected.txt").read_text("utf-8").splitlines()
    assert [p.format_line() for p in problems] == expected
