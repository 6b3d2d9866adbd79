"""A flag or segment key does not follow the naming pattern.

Keys are directory and file names that also appear in code, so a house style keeps them
greppable. The defaults ask for kebab-case; set `flag_pattern` and `segment_pattern`
(Python regular expressions, matched against the whole key) to your own.

Passes::

    flags/new-checkout/flag.yaml

Fails::

    flags/new_checkout/flag.yaml
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.model import PROJECT_FILE, Project
from flagstone.problems import Level, Problem

ID = "key-naming"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {
    "flag_pattern": r"[a-z0-9]+(?:-[a-z0-9]+)*",
    "segment_pattern": r"[a-z0-9]+(?:-[a-z0-9]+)*",
}


def _compile(
    project: Project, options: Mapping[str, Any], name: str
) -> tuple[re.Pattern[str] | None, Problem | None]:
    try:
        return re.compile(options[name]), None
    except re.error as exc:
        doc = project.config.doc if project.config else None
        line, col = doc.position(("lint", "rules", ID, name)) if doc else (0, 0)
        return None, Problem(
            PROJECT_FILE,
            line,
            col,
            "lint-config",
            "error",
            f"option {name} is not a valid regular expression: {exc}",
        )


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    kinds = (
        ("flag", "flag_pattern", project.flags),
        ("segment", "segment_pattern", project.segments),
    )
    for kind, option, members in kinds:
        pattern, problem = _compile(project, options, option)
        if problem is not None:
            yield problem
        if pattern is None:
            continue
        for key in sorted(members):
            if not pattern.fullmatch(key):
                yield Problem(
                    members[key].doc.rel,
                    0,
                    0,
                    ID,
                    DEFAULT_LEVEL,
                    f"{kind} key '{key}' does not match {option} '{options[option]}'",
                    "rename it (and every reference), or change the pattern in flagstone.yaml",
                )
