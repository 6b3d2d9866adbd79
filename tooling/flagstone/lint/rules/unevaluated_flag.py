"""An enabled flag that no running code evaluated (needs a saved usage report).

Only with `flagstone lint --usage FILE`, where FILE is a report saved by
`flagstone usage --format json` (evaluations counted by the SDK and read back from
Prometheus). A flag enabled in an environment with no evaluation there over the
report's window is dead weight or a sign that the exporter is missing: remove it from
the code and archive it. Without `--usage` the rule reports nothing.

Passes (the report counted evaluations of `checkout` in production)::

    # flags/checkout/production.yaml
    enabled: true
    # usage.json: {"flag": "checkout", "environment": "production", "evaluations": 5120,
    #              "findings": []}

Fails::

    # flags/checkout/production.yaml
    enabled: true
    # usage.json: {"flag": "checkout", "environment": "production", "evaluations": 0,
    #              "findings": [{"kind": "not-evaluated", …}]}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "unevaluated-flag"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    if context.usage is None:
        return
    for usage in context.usage.unevaluated():
        flag = project.flags.get(usage.flag)
        if flag is None or flag.archived:
            continue
        release = flag.releases.get(usage.environment)
        if release is None or not release.enabled:
            continue  # the repository changed since the report: judge what is there now
        days = context.usage.days
        yield release.doc.problem(
            ("enabled",),
            f"flag '{flag.key}' is enabled in {usage.environment} but was not evaluated "
            f"in the {days} days of the usage report",
            rule=ID,
            level=DEFAULT_LEVEL,
            hint="remove it from the code and archive it, or check that the service "
            "exports flagstone_evaluations_total",
        )
