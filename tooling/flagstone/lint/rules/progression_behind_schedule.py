"""A progression's `current` stage is behind a scheduled stage whose `at` is past.

The engine already serves the later stage (the active stage is the later of `current`
and the last stage whose time has come), so the file no longer says what users get.
Advance `current` to keep the repository truthful.

Passes (linted on 2026-11-26)::

    current: half
    stages:
      - {name: ten, percent: 10}
      - {name: half, percent: 50, at: "2026-11-20T09:00:00Z"}

Fails::

    current: ten
    stages:
      - {name: ten, percent: 10}
      - {name: half, percent: 50, at: "2026-11-20T09:00:00Z"}   # past
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_releases, plan_of
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "progression-behind-schedule"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for release in live_releases(project):
        plan = plan_of(release)
        if plan is None or plan.current < 0:
            continue
        stage = plan.active_stage(context.now.timestamp())
        if stage is None or stage.index <= plan.current:
            continue
        yield release.doc.problem(
            ("default", "progression", "current"),
            f"current stage '{plan.stages[plan.current].name}' is behind stage '{stage.name}', "
            f"scheduled for {stage.at_text}, which has passed",
            rule=ID,
            level=DEFAULT_LEVEL,
            hint=f"set `current: {stage.name}`: the engine already serves that stage",
        )
