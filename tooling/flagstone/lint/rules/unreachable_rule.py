"""A rule can never match.

Rules are tried in order and the first match wins, so a rule is dead when an earlier
rule matches every context (`{attribute: key, op: exists}`, or a segment whose rules
match everyone), when an earlier rule has exactly the same condition, or when its own
condition can match nobody (a segment with no members and no rules, `in` an empty
list, an `all` containing such a condition).

Passes::

    rules:
      - {name: staff, if: {segment: staff}, serve: on}
      - {name: android, if: {attribute: platform, op: eq, value: android}, serve: off}

Fails::

    rules:
      - {name: everyone, if: {attribute: key, op: exists}, serve: on}
      - {name: android, if: {attribute: platform, op: eq, value: android}, serve: off}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import always_matches, live_flags, never_matches, releases
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "unreachable-rule"
DEFAULT_LEVEL: Level = "error"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        for release in releases(flag):
            earlier: list[tuple[str, Any]] = []
            for index, rule in enumerate(release.rules):
                if not isinstance(rule, dict):
                    continue
                name = str(rule.get("name", f"#{index + 1}"))
                condition = rule.get("if")
                why = next(
                    (
                        f"rule '{before}' before it matches every context"
                        for before, cond in earlier
                        if always_matches(project, cond)
                    ),
                    None,
                )
                why = why or next(
                    (
                        f"rule '{before}' before it has the same condition"
                        for before, cond in earlier
                        if cond == condition
                    ),
                    None,
                )
                never = never_matches(project, condition)
                why = why or (f"its condition never holds: {never}" if never else None)
                if why:
                    yield release.doc.problem(
                        ("rules", index),
                        f"rule '{name}' can never match: {why}",
                        rule=ID,
                        level=DEFAULT_LEVEL,
                        hint="remove or reorder the rule",
                    )
                earlier.append((name, condition))
