"""Example-folder tests: one passing and one failing mini repository per lint rule.

``tests/lint_cases/_base/`` is a small valid repository that lints clean;
``tests/lint_cases/<rule>/{pass,fail}/`` hold the files a case adds or replaces on top
of it. A failing case lists the exact ``file:line:col: message`` lines of the rule in
``expected.txt``; ``case.json`` may set ``age_days`` (how long ago every file last
changed); a ``usage.json`` next to it is the saved usage report lint is given
(``lint --usage``). Every case repository must also pass ``validate``: lint judges
valid input.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flagstone.lint import RULES, lint_project
from flagstone.lint.context import FixedChangeTimes, LintContext
from flagstone.model import read_project
from flagstone.usage import read_usage_report
from flagstone.validate import validate_project

CASES = Path(__file__).parent / "lint_cases"
BASE = CASES / "_base"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CASE_FILES = {"expected.txt", "case.json", "usage.json"}


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.glob("*/*") if p.is_dir() and p.parent != BASE)


def build_case(case: Path, into: Path) -> Path:
    shutil.copytree(BASE, into)
    for source in case.rglob("*"):
        if source.is_file() and source.name not in CASE_FILES:
            target = into / source.relative_to(case)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return into


def lint_case(root: Path, age_days: int = 1, usage: Path | None = None) -> list[str]:
    project = read_project(root)
    errors = [p.format_line() for p in validate_project(project) if p.level == "error"]
    assert errors == [], "the case repository must be valid"
    history = FixedChangeTimes({}, NOW - timedelta(days=age_days))
    report = read_usage_report(usage.read_text(), str(usage)) if usage is not None else None
    result = lint_project(project, LintContext(now=NOW, history=history, usage=report))
    return [f"{p.format_line()} [{p.rule}]" for p in result.problems]


def test_every_rule_has_a_passing_and_a_failing_case() -> None:
    assert {p.parent.name for p in case_dirs() if p.name == "pass"} == set(RULES)
    assert {p.parent.name for p in case_dirs() if p.name == "fail"} == set(RULES)
    assert all((p / "expected.txt").is_file() for p in case_dirs() if p.name == "fail")


def test_base_repository_lints_clean() -> None:
    assert lint_case(BASE) == []


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_case(case: Path, tmp_path: Path) -> None:
    meta = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    rule = case.parent.name
    usage = case / "usage.json" if (case / "usage.json").is_file() else None
    found = lint_case(build_case(case, tmp_path / "repo"), meta.get("age_days", 1), usage)
    of_rule = [line.removesuffix(f" [{rule}]") for line in found if line.endswith(f" [{rule}]")]
    if case.name == "pass":
        assert of_rule == []
    else:
        assert of_rule == (case / "expected.txt").read_text().splitlines()
