"""A release file lists more individual keys under one variation than `max_keys`.

Long inline `targets` lists are hard to review, get copied between environments, and
belong in a segment (`include:`) that every flag can reuse.

Passes (`max_keys: 50`)::

    targets: {on: [user-1, user-2]}

Fails::

    targets:
      on: [user-1, user-2, …, user-51]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_releases
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "large-target-list"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"max_keys": 50}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for release in live_releases(project):
        for variation, keys in release.targets.items():
            if len(keys) > options["max_keys"]:
                yield release.doc.problem(
                    ("targets", variation),
                    f"{len(keys)} keys targeted with '{variation}' (max_keys is {options['max_keys']})",
                    rule=ID,
                    level=DEFAULT_LEVEL,
                    hint="move the keys into a segment's `include:` and target it with a rule",
                    key=True,
                )
