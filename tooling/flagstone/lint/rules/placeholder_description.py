"""A flag's (or segment's) `description` is still a placeholder: it starts with `TODO`,
`TBD`, `FIXME` or `XXX`, or is the text `flagstone new` writes when no `--description`
is given.

`flagstone new` has to write something; this rule makes sure the placeholder does not
reach a reviewer, an on-call engineer or the product manager unnoticed.

Passes::

    name: New checkout flow
    description: Rebuilt checkout with saved cards.

Fails::

    name: New checkout flow
    description: TODO say what this flag changes and when it can be removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags
from flagstone.loader import Document
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "placeholder-description"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"markers": ["TODO", "TBD", "FIXME", "XXX"]}


def _placeholder(data: Mapping[str, Any], markers: list[str]) -> bool:
    description = data.get("description")
    if not isinstance(description, str):
        return False
    text = description.strip()
    return any(re.match(rf"{re.escape(str(marker))}\b", text, re.IGNORECASE) for marker in markers)


def _problem(doc: Document, what: str) -> Problem:
    return doc.problem(
        ("description",),
        f"{what} has a placeholder description",
        rule=ID,
        level=DEFAULT_LEVEL,
        hint="say what it changes, who it is for and when it can be removed",
    )


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    markers = [str(m) for m in options["markers"] or []]
    for flag in live_flags(project):
        if _placeholder(flag.data, markers):
            yield _problem(flag.doc, f"flag '{flag.key}'")
    for key in sorted(project.segments):
        segment = project.segments[key]
        if _placeholder(segment.data, markers):
            yield _problem(segment.doc, f"segment '{key}'")
