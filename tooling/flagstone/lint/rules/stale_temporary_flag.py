"""A temporary flag is past its `expires` date.

Temporary flags (`kind: release` and `experiment` unless `temporary: false`) are
meant to be removed from code and archived. Once `expires` has passed (plus
`grace_days`), the flag is stale: remove it, or move `expires` in a reviewed change.

Passes (linted on 2026-11-26)::

    kind: release
    temporary: true
    expires: "2027-03-01"

Fails::

    kind: release
    temporary: true
    expires: "2026-01-31"    # expired 299 days ago
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, parse_time
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "stale-temporary-flag"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"grace_days": 0}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    grace = timedelta(days=options["grace_days"])
    for flag in live_flags(project):
        expires = parse_time(flag.expires)
        if not flag.temporary or expires is None or context.now <= expires + grace:
            continue
        days = (context.now - expires).days
        yield flag.doc.problem(
            ("expires",),
            f"temporary flag '{flag.key}' expired on {flag.expires} ({days} days ago)",
            rule=ID,
            level=DEFAULT_LEVEL,
            hint="remove the flag from the code and archive it, or move `expires` in a reviewed change",
        )
