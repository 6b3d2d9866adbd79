"""A segment is not used by any live flag or other segment.

Unused segments rot: their rules stop being reviewed but still look authoritative.
Delete the segment, or use it. References from archived flags do not count.

Passes (`segments/staff.yaml` is used by a rule)::

    rules:
      - name: staff
        if: {segment: staff}
        serve: on

Fails (no rule, progression stage or segment names `beta-testers`)::

    # segments/beta-testers.yaml
    name: Beta testers
    owner: checkout-pm
    include: [user-1, user-2]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import segment_references
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "unused-segment"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    used = {
        segment
        for referrer, segment in segment_references(project)
        if referrer != f"segment {segment}"
    }
    for key in sorted(project.segments):
        if key not in used:
            yield project.segments[key].doc.problem(
                (),
                f"segment '{key}' is not used by any flag or segment",
                rule=ID,
                level=DEFAULT_LEVEL,
                hint="delete the segment, or reference it with `{segment: " + key + "}`",
            )
