"""Schema, reference and consistency checks over a whole repository.

SKELETON: issue 2 replaces the body of ``validate_project`` with the schema and
cross-file checks; the two signatures below are the contract other modules rely on.
"""

from __future__ import annotations

from pathlib import Path

from flagstone.errors import ValidationFailed
from flagstone.model import Project, read_project
from flagstone.problems import Problem


def validate_project(project: Project) -> list[Problem]:
    """Every finding about ``project`` (load problems included), in file order."""
    return list(project.problems)


def load_valid_project(root: Path) -> Project:
    """Read the repository at ``root``; raise ``ValidationFailed`` if it has errors."""
    project = read_project(root)
    problems = validate_project(project)
    if any(p.level == "error" for p in problems):
        raise ValidationFailed(problems)
    return project
