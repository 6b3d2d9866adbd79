"""Cross-file checks of metric sources, metrics and gates (validate runs them after the
schema): every reference resolves, every metric has the queries its kind needs, and
every query template names only known placeholders and measures one arm at a time."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.gates.config import PLACEHOLDERS
from flagstone.model import Project, ProjectConfig, ReleaseConfig
from flagstone.problems import Problem

RULE_METRIC = "metric"
RULE_UNKNOWN_METRIC = "unknown-metric"
_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NEEDS = {"ratio": ("numerator", "denominator"), "value": ("query",)}


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"declared: {', '.join(sorted(choices))}" if choices else "declare it in flagstone.yaml"


def _template_problems(template: str) -> Iterator[str]:
    for token in _TOKEN.findall(template):
        if token not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            yield f"unknown placeholder {{{token}}} (known: {known})"
    if "{variation}" not in template:
        yield "the query does not name {variation}, so both arms would measure the same traffic"


def gate_problems(project: Project) -> list[Problem]:
    """The gate findings of a repository: ``metric_gate_problems`` plus
    ``release_gate_problems`` of every release file."""
    config = project.config
    if config is None:
        return []
    problems = metric_gate_problems(project)
    for flag in project.flags.values():
        for release in flag.releases.values():
            problems.extend(release_gate_problems(release, config))
    return problems


def release_gate_problems(release: ReleaseConfig, config: ProjectConfig) -> list[Problem]:
    """The findings about one release file's gates (unknown metrics, metrics that cannot
    check ``min_samples``): they depend on that file and ``flagstone.yaml`` only."""
    metrics = config.data.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    return _release_gate_problems(release.doc, release.default, metrics)


def metric_gate_problems(project: Project) -> list[Problem]:
    """The findings about ``flagstone.yaml``'s metrics and metric sources."""
    config = project.config
    if config is None:
        return []
    doc, data = config.doc, config.data
    problems: list[Problem] = []
    sources = data.get("metric_sources")
    source_names = list(sources) if isinstance(sources, Mapping) else []
    metrics = data.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    for name, spec in metrics.items():
        if not isinstance(spec, Mapping):
            continue
        source = spec.get("source")
        if isinstance(source, str) and source not in source_names:
            problems.append(
                doc.problem(
                    ("metrics", name, "source"),
                    f"unknown metric source '{source}'",
                    rule=RULE_METRIC,
                    hint=_hint(source, source_names),
                )
            )
        kind = spec.get("kind")
        for role in _NEEDS.get(kind, ()) if isinstance(kind, str) else ():
            if role not in spec:
                problems.append(
                    doc.problem(
                        ("metrics", name),
                        f"a {kind} metric needs a `{role}` query",
                        rule=RULE_METRIC,
                        key=True,
                    )
                )
        for role in ("numerator", "denominator", "query", "samples"):
            template = spec.get(role)
            if not isinstance(template, str):
                continue
            if (kind == "ratio" and role in ("query", "samples")) or (
                kind == "value" and role in ("numerator", "denominator")
            ):
                problems.append(
                    doc.problem(
                        ("metrics", name, role),
                        f"a {kind} metric has no `{role}` query",
                        rule=RULE_METRIC,
                        key=True,
                        hint="ratio: numerator + denominator; value: query (+ samples)",
                    )
                )
            for message in _template_problems(template):
                problems.append(doc.problem(("metrics", name, role), message, rule=RULE_METRIC))
    return problems


def _release_gate_problems(doc: Any, default: Any, metrics: Mapping[str, Any]) -> list[Problem]:
    progression = default.get("progression") if isinstance(default, Mapping) else None
    gates = progression.get("gates") if isinstance(progression, Mapping) else None
    if not isinstance(gates, list):
        return []
    problems = []
    for index, gate in enumerate(gates):
        metric = gate.get("metric") if isinstance(gate, Mapping) else None
        if not isinstance(metric, str):
            continue
        where = ("default", "progression", "gates", index, "metric")
        spec = metrics.get(metric)
        if spec is None:
            problems.append(
                doc.problem(
                    where,
                    f"unknown metric '{metric}'",
                    rule=RULE_UNKNOWN_METRIC,
                    hint=_hint(metric, list(metrics)),
                )
            )
        elif isinstance(spec, Mapping) and spec.get("kind") == "value" and "samples" not in spec:
            problems.append(
                doc.problem(
                    where,
                    f"metric '{metric}' has no `samples` query, so min_samples cannot be checked",
                    rule=RULE_METRIC,
                    hint=f"add metrics.{metric}.samples to flagstone.yaml",
                )
            )
    return problems
