"""A rule can never match.

Rules are tried in order and the first match wins, so a rule is dead when an earlier
rule matches every context (`{attribute: key, op: exists}`, `{any: [C, {not: C}]}`, a
segment whose rules match everyone), when an earlier rule has exactly the same
condition, or when its own condition can match nobody (a segment with no members and no
rules, `{all: [C, {not: C}]}`, an `all` containing such a condition). With
`contexts_have_key: false` (contexts may come without a targeting key), `key exists`
no longer counts as matching everyone.

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
from flagstone.lint.walk import always_matches, live_releases, never_matches
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "unreachable-rule"
DEFAULT_LEVEL: Level = "error"
OPTIONS: Mapping[str, Any] = {"contexts_have_key": True}


def _why_unreachable(
    project: Project, condition: Any, earlier: list[tuple[str, Any]], keyed: bool
) -> str | None:
    for before, earlier_condition in earlier:
        if always_matches(project, earlier_condition, keyed=keyed):
            return f"rule '{before}' before it matches every context"
        if earlier_condition == condition:
            return f"rule '{before}' before it has the same condition"
    never = never_matches(project, condition, keyed=keyed)
    return f"its condition never holds: {never}" if never else None


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for release in live_releases(project):
        earlier: list[tuple[str, Any]] = []
        for index, rule in enumerate(release.rules):
            if not isinstance(rule, dict):
                continue
            name = str(rule.get("name", f"#{index + 1}"))
            why = _why_unreachable(project, rule.get("if"), earlier, options["contexts_have_key"])
            if why:
                yield release.doc.problem(
                    ("rules", index),
                    f"rule '{name}' can never match: {why}",
                    rule=ID,
                    level=DEFAULT_LEVEL,
                    hint="remove or reorder the rule",
                )
            earlier.append((name, rule.get("if")))
