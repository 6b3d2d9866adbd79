"""A flag delegates an environment to its own owner.

Delegation hands an environment's release file to another team (usually the product
manager who owns the outcome). Delegating to the owner changes nothing and hides that
no hand-over happened.

Passes::

    owner: checkout-eng
    delegate: {production: checkout-pm}

Fails::

    owner: checkout-eng
    delegate: {production: checkout-eng}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "self-delegation"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    for flag in live_flags(project):
        for env, team in sorted(flag.delegate.items()):
            if team == flag.owner:
                yield flag.doc.problem(
                    ("delegate", env),
                    f"flag '{flag.key}' delegates {env} to its own owner '{team}'",
                    rule=ID,
                    level=DEFAULT_LEVEL,
                    hint=f"remove `{env}` from `delegate`, or name the team taking over",
                )
