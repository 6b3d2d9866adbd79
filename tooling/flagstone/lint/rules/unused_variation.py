"""A variation is never served in any environment, nor required by a prerequisite.

Only flags with at least one release file are checked (a new flag has nothing to serve
yet). A variation counts as used when a release file names it (targets, a rule, a split,
the default, a progression), when it is the `off_variation`, or when another flag
requires it as a prerequisite.

Passes::

    variations: {on: true, off: false}
    off_variation: off        # and production.yaml serves `on`

Fails::

    variations: {control: a, treatment: b, legacy: c}   # nothing serves `legacy`
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, releases, variations_referenced
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "unused-variation"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    required: set[tuple[str, str]] = set()
    for flag in live_flags(project):
        for prerequisite in flag.prerequisites:
            if isinstance(prerequisite, dict):
                required.add((str(prerequisite.get("flag")), str(prerequisite.get("variation"))))
    for flag in live_flags(project):
        if not flag.releases:
            continue
        used = {flag.off_variation or ""}
        for release in releases(flag):
            used |= variations_referenced(flag, release)
        for variation in flag.variations:
            if variation not in used and (flag.key, variation) not in required:
                yield flag.doc.problem(
                    ("variations", variation),
                    f"variation '{variation}' of flag '{flag.key}' is never served",
                    rule=ID,
                    level=DEFAULT_LEVEL,
                    hint="remove it, or serve it in a release file",
                    key=True,
                )
