"""A temporary flag's `expires` date is further away than `max_days`.

A far-off date defeats the purpose of `expires`: pick the date by which the flag
should really be gone.

Passes (linted on 2026-11-26, `max_days: 365`)::

    temporary: true
    expires: "2027-03-01"

Fails::

    temporary: true
    expires: "2030-01-01"     # over three years away
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, parse_time
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "expiry-too-far"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"max_days": 365}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    limit = context.now + timedelta(days=options["max_days"])
    for flag in live_flags(project):
        expires = parse_time(flag.expires)
        if flag.temporary and expires is not None and expires > limit:
            yield flag.doc.problem(
                ("expires",),
                f"temporary flag '{flag.key}' expires on {flag.expires}, "
                f"more than {options['max_days']} days from now",
                rule=ID,
                level=DEFAULT_LEVEL,
                hint="set the date by which the flag should really be removed",
            )
