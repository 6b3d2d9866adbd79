"""A temporary flag has served one variation to everyone, in every environment, for
longer than `max_age_days`.

Such a flag has done its job: its code path is the only one anyone runs, so the flag
is now dead weight and a risk (someone may flip it). The age is the time since the
newest of its release files last changed — from `git log` when the repository is a
git work tree and the files are committed, from the files' modification times
otherwise. In a shallow clone (CI checkouts default to one commit) every file seems to
have changed in the oldest fetched commit, so fetch the history (`fetch-depth: 0`) for
this rule to see real ages. Flags serving their `off_variation` everywhere are not
reported here; a flag with prerequisites counts only when its prerequisites are fully
rolled out too.

Passes (`production.yaml` still rolling out)::

    enabled: true
    default:
      progression: {variation: on, baseline: off, current: ten,
                    stages: [{name: ten, percent: 10}, {name: ga, percent: 100}]}

Fails (every environment unchanged for 120 days, `max_age_days: 30`)::

    enabled: true
    default: on
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, possible_variations
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "fully-rolled-out"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"max_age_days": 30}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    environments = project.environments
    for flag in live_flags(project):
        if not flag.temporary or not environments:
            continue
        if any(env not in flag.releases for env in environments):
            continue
        served = set()
        for env in environments:
            served |= possible_variations(project, flag, flag.releases[env], context.now)
        if len(served) != 1 or served == {flag.off_variation}:
            continue
        changed = max(
            context.history.last_changed(flag.releases[env].doc.rel) for env in environments
        )
        age = (context.now - changed).days
        if age > options["max_age_days"]:
            (variation,) = served
            yield flag.doc.problem(
                (),
                f"flag '{flag.key}' has served '{variation}' to everyone in every environment "
                f"for {age} days (max_age_days is {options['max_age_days']})",
                rule=ID,
                level=DEFAULT_LEVEL,
                hint="remove the flag from the code, then archive it",
            )
