"""A split gives every context the same variation.

A split with one variation at 100% (the others at 0) is not a split: it hashes every
context for nothing and reads as an experiment that is not running. Serve the variation
directly.

Passes::

    default: {split: {control: 50, treatment: 50}}

Fails::

    default: {split: {control: 0, treatment: 100}}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_releases, served_by, splits
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "single-variation-split"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for release in live_releases(project):
        for where, _, serve in splits(release):
            served = served_by(serve)
            if len(served) == 1:
                (variation,) = served
                yield release.doc.problem(
                    (*where, "split"),
                    f"split serves only '{variation}'",
                    rule=ID,
                    level=DEFAULT_LEVEL,
                    hint=f"serve `{variation}` directly",
                    key=True,
                )
