"""A segment has no `include` keys and no `rules`, so nobody is ever in it.

Passes::

    name: Staff
    owner: platform
    rules:
      - {attribute: email, op: ends_with, value: "@acme.com"}

Fails::

    name: Staff
    owner: platform
    exclude: [user-9]         # excluding from nothing
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import segment_is_empty
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "empty-segment"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for key in sorted(project.segments):
        if segment_is_empty(project, key):
            yield project.segments[key].doc.problem(
                (),
                f"segment '{key}' has no `include` keys and no `rules`; it matches nobody",
                rule=ID,
                level=DEFAULT_LEVEL,
                hint="add members or rules, or delete the segment",
            )
