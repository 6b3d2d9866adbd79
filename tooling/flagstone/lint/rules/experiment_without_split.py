"""An experiment flag has no percentage split in any environment.

`kind: experiment` promises a comparison between randomly assigned groups; without a
`split` (in a rule or the default) nobody is randomised and there is nothing to
measure. Progressions do not count: they roll one variation out, they do not compare.

Passes (`production.yaml`)::

    enabled: true
    default: {split: {control: 50, treatment: 50}}

Fails::

    enabled: true
    default: treatment        # everyone gets the same arm
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, releases, splits
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "experiment-without-split"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        if flag.kind != "experiment":
            continue
        if any(True for release in releases(flag) for _ in splits(release)):
            continue
        yield flag.doc.problem(
            ("kind",),
            f"experiment '{flag.key}' has no percentage split in any environment",
            rule=ID,
            level=DEFAULT_LEVEL,
            hint="serve `{split: {control: 50, treatment: 50}}`, or change `kind`",
        )
