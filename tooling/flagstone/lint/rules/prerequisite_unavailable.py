"""A prerequisite names a flag that is archived or off in every environment.

A flag whose prerequisite can never serve the required variation only ever serves its
own `off_variation`, whatever its release files say.

Passes (`payments-v2` is enabled in production)::

    prerequisites: [{flag: payments-v2, variation: on}]

Fails (`payments-v2` has `archived: true`)::

    prerequisites: [{flag: payments-v2, variation: on}]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "prerequisite-unavailable"
DEFAULT_LEVEL: Level = "error"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        for index, prerequisite in enumerate(flag.prerequisites):
            required = (
                project.flags.get(str(prerequisite.get("flag")))
                if isinstance(prerequisite, dict)
                else None
            )
            if required is None:
                continue  # an unknown flag is a validation error
            if required.archived:
                why = "is archived"
            elif not any(release.enabled for release in required.releases.values()):
                why = "is off in every environment"
            else:
                continue
            yield flag.doc.problem(
                ("prerequisites", index, "flag"),
                f"prerequisite '{required.key}' {why}, so '{flag.key}' always serves its off variation",
                rule=ID,
                level=DEFAULT_LEVEL,
                hint="remove the prerequisite, or enable the flag it names",
            )
