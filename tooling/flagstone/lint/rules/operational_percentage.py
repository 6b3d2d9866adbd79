"""An operational (kill-switch) flag serves a percentage split or progression.

A kill switch must be on or off for everyone: when it is pulled during an incident,
nobody should still be in a 10% bucket. Flags of the `kinds` listed, and flags carrying
one of the `tags` listed, are checked.

Passes::

    enabled: true
    default: on

Fails::

    enabled: true
    default: {split: {on: 90, off: 10}}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, progression_of, releases, splits, stages
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "operational-percentage"
DEFAULT_LEVEL: Level = "error"
OPTIONS: Mapping[str, Any] = {"kinds": ["operational"], "tags": ["kill-switch"]}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        if flag.kind not in options["kinds"] and not set(flag.tags) & set(options["tags"]):
            continue
        for release in releases(flag):
            places = [(*where, "split") for where, _, _ in splits(release)]
            progression = progression_of(release)
            if progression is not None and any("percent" in stage for stage in stages(progression)):
                places.append(("default", "progression"))
            for where in places:
                what = "a progression" if where[-1] == "progression" else "a percentage split"
                yield release.doc.problem(
                    where,
                    f"kill switch '{flag.key}' ({flag.kind}) serves {what} in {release.environment}",
                    rule=ID,
                    level=DEFAULT_LEVEL,
                    hint="serve one variation to everyone (or use targets and rules), so the switch acts for all",
                    key=True,
                )
