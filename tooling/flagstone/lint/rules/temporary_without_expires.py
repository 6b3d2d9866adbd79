"""A temporary flag has no `expires` date.

Release and experiment flags are temporary unless they say `temporary: false`; without
an `expires` date nothing reminds anyone to remove them. Give them one, or mark a
long-lived flag `temporary: false`.

Passes::

    kind: release
    expires: "2027-03-01"

Fails::

    kind: experiment          # temporary by default, and no expires
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "temporary-without-expires"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        if not flag.temporary or flag.expires:
            continue
        why = (
            "is marked temporary"
            if "temporary" in flag.data
            else f"is a {flag.kind} flag, temporary by default,"
        )
        yield flag.doc.problem(
            ("temporary",)
            if "temporary" in flag.data
            else ("kind",)
            if "kind" in flag.data
            else (),
            f"flag '{flag.key}' {why} but has no `expires` date",
            rule=ID,
            level=DEFAULT_LEVEL,
            hint='add `expires: "YYYY-MM-DD"`, or `temporary: false` for a long-lived flag',
            key=True,
        )
