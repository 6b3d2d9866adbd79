"""A metric gate asks for too few samples per arm to judge a ratio.

The sequential test behind ratio gates relies on the normal approximation of each
arm's rate, which is poor with few samples, and for rare events (errors are often well
under 1%) a few hundred requests hold hardly any events at all. Below `min_samples`
(default 1000) the gate is reported, so that a gate nobody can trust is not mistaken for
a safeguard.

Passes::

    gates:
      - {metric: error-rate, max_regression: {relative: 0.2}, min_samples: 5000}

Fails::

    gates:
      - {metric: error-rate, max_regression: {relative: 0.2}, min_samples: 50}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import live_flags, progression_of, releases
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "gate-few-samples"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"min_samples": 1000}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    config = project.config
    metrics = config.data.get("metrics") if config else None
    if not isinstance(metrics, Mapping):
        return
    floor = options["min_samples"]
    for flag in live_flags(project):
        for release in releases(flag):
            progression = progression_of(release)
            gates = progression.get("gates") if progression else None
            for index, gate in enumerate(gates if isinstance(gates, list) else []):
                metric = metrics.get(gate.get("metric")) if isinstance(gate, Mapping) else None
                samples = gate.get("min_samples") if isinstance(gate, Mapping) else None
                if not isinstance(metric, Mapping) or metric.get("kind") != "ratio":
                    continue
                if isinstance(samples, int) and samples < floor:
                    yield release.doc.problem(
                        ("default", "progression", "gates", index, "min_samples"),
                        f"gate '{gate['metric']}' of '{flag.key}' in {release.environment} judges "
                        f"a ratio on {samples} samples per arm",
                        rule=ID,
                        level=DEFAULT_LEVEL,
                        hint=f"ask for at least {floor} (lint.rules.{ID}.min_samples sets the floor)",
                    )
