"""A flag (or, with `segments: true`, a segment) has no `description`.

The description is what a reviewer, an on-call engineer or the product manager reads to
learn what turning the flag on does.

Passes::

    name: New checkout flow
    description: Rebuilt checkout with saved cards.

Fails::

    name: New checkout flow
    owner: checkout-eng       # no description
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags
from flagstone.loader import Document
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "missing-description"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"segments": False}


def _described(data: Mapping[str, Any]) -> bool:
    description = data.get("description")
    return isinstance(description, str) and bool(description.strip())


def _problem(doc: Document, what: str) -> Problem:
    where = ("description",) if "description" in (doc.data or {}) else ("name",)
    return doc.problem(
        where,
        f"{what} has no description",
        rule=ID,
        level=DEFAULT_LEVEL,
        hint="add a `description:` saying what it is for",
        key=True,
    )


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        if not _described(flag.data):
            yield _problem(flag.doc, f"flag '{flag.key}'")
    if options["segments"]:
        for key in sorted(project.segments):
            segment = project.segments[key]
            if not _described(segment.data):
                yield _problem(segment.doc, f"segment '{key}'")
