"""Metric sources, metrics and gates, as declared in YAML.

``flagstone.yaml``::

    metric_sources:
      prom:
        provider: prometheus
        url: http://127.0.0.1:9090          # or url_env: the variable that holds it
    metrics:
      error-rate:
        source: prom
        kind: ratio                         # events over trials: errors over requests
        better: lower
        numerator: sum(increase(app_errors_total{flag_variant="{variation}"}[{window}]))
        denominator: sum(increase(app_requests_total{flag_variant="{variation}"}[{window}]))
      latency-p95:
        source: prom
        kind: value                         # a number per arm: p95 latency
        better: lower
        query: histogram_quantile(0.95, sum by (le) (rate(app_seconds_bucket{…}[{window}])))
        samples: sum(increase(app_seconds_count{…}[{window}]))
    progress:
      alpha: 0.05                           # false roll-back chance over a whole rollout
      auto_merge: {staging: all, production: [checkout-eng]}

A release file's progression lists its gates::

    default:
      progression:
        …
        gates:
          - {metric: error-rate, max_regression: {relative: 0.1}, min_samples: 2000}
          - {metric: latency-p95, max_regression: {absolute: 0.05}, min_samples: 500}

Query templates name ``{flag}``, ``{variation}``, ``{environment}`` and ``{window}``
(a Prometheus duration such as ``5400s``: the time the current stage has been in force).
Only those four exact tokens are replaced, so PromQL's own braces are left alone.

The readers here take data that validate has already checked; on anything else they
raise ``GateConfigError`` rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flagstone.errors import GateConfigError
from flagstone.gates.statistics import DEFAULT_ALPHA, DEFAULT_MIXING_SD, Tolerance

PLACEHOLDERS = ("flag", "variation", "environment", "window")
_PLACEHOLDER = re.compile(r"\{(flag|variation|environment|window)\}")
PROVIDERS = ("prometheus",)
KINDS = ("ratio", "value")


@dataclass(frozen=True, slots=True)
class MetricSource:
    name: str
    provider: str
    url: str | None
    url_env: str | None


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    source: str
    kind: str
    higher_is_better: bool
    numerator: str | None = None
    denominator: str | None = None
    query: str | None = None
    samples: str | None = None
    mixing_sd: float = DEFAULT_MIXING_SD

    def templates(self) -> dict[str, str]:
        """The query templates this metric runs, by role."""
        roles = {
            "numerator": self.numerator,
            "denominator": self.denominator,
            "query": self.query,
            "samples": self.samples,
        }
        return {role: text for role, text in roles.items() if text is not None}


@dataclass(frozen=True, slots=True)
class Gate:
    metric: str
    tolerance: Tolerance
    min_samples: int


@dataclass(frozen=True, slots=True)
class ProgressPolicy:
    alpha: float
    auto_merge: Mapping[str, Any]

    def may_auto_merge(self, environment: str, team: str | None) -> bool:
        """Whether a progress pull request for ``environment``, owned by ``team``, may be
        merged without a person: ``all`` or a list of team ids per environment."""
        allowed = self.auto_merge.get(environment)
        if allowed == "all":
            return True
        return isinstance(allowed, list) and team is not None and team in allowed


def render_query(template: str, *, flag: str, variation: str, environment: str, window: int) -> str:
    """``template`` with its placeholders filled. Keys and variation names are restricted
    to ``[A-Za-z0-9._-]`` by the schemas; they are escaped for a PromQL string anyway."""
    values = {
        "flag": flag,
        "variation": variation,
        "environment": environment,
        "window": f"{max(1, int(window))}s",
    }

    def fill(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return _PLACEHOLDER.sub(fill, template)


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GateConfigError(f"flagstone.yaml: {key} is not a mapping")
    return value


def metric_sources(config: Mapping[str, Any]) -> dict[str, MetricSource]:
    sources = {}
    for name, spec in _section(config, "metric_sources").items():
        if not isinstance(spec, Mapping) or spec.get("provider") not in PROVIDERS:
            raise GateConfigError(f"flagstone.yaml: metric_sources.{name} has no known provider")
        url, url_env = spec.get("url"), spec.get("url_env")
        sources[str(name)] = MetricSource(
            str(name),
            str(spec["provider"]),
            str(url) if url else None,
            str(url_env) if url_env else None,
        )
    return sources


def metrics(config: Mapping[str, Any]) -> dict[str, Metric]:
    found = {}
    for name, spec in _section(config, "metrics").items():
        if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS:
            raise GateConfigError(f"flagstone.yaml: metrics.{name} has no known kind")

        def text(key: str, spec: Mapping[str, Any] = spec) -> str | None:
            value = spec.get(key)
            return str(value) if value is not None else None

        found[str(name)] = Metric(
            name=str(name),
            source=str(spec.get("source")),
            kind=str(spec["kind"]),
            higher_is_better=spec.get("better") == "higher",
            numerator=text("numerator"),
            denominator=text("denominator"),
            query=text("query"),
            samples=text("samples"),
            mixing_sd=float(spec.get("mixing_sd", DEFAULT_MIXING_SD)),
        )
    return found


def progress_policy(config: Mapping[str, Any]) -> ProgressPolicy:
    section = _section(config, "progress")
    alpha = section.get("alpha", DEFAULT_ALPHA)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise GateConfigError(f"flagstone.yaml: progress.alpha must be in (0, 1), not {alpha!r}")
    auto_merge = section.get("auto_merge") or {}
    return ProgressPolicy(float(alpha), dict(auto_merge) if isinstance(auto_merge, Mapping) else {})


def gates(progression: Mapping[str, Any]) -> list[Gate]:
    """The gates of one progression (``progression.gates``), in order."""
    found = []
    for spec in progression.get("gates") or []:
        if not isinstance(spec, Mapping):
            raise GateConfigError("a gate is a mapping")
        limit = spec.get("max_regression") or {}
        tolerance = Tolerance(
            absolute=float(limit.get("absolute", 0.0)), relative=float(limit.get("relative", 0.0))
        )
        found.append(Gate(str(spec.get("metric")), tolerance, int(spec.get("min_samples", 0))))
    return found
