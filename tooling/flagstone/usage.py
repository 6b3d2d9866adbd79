"""``flagstone usage``: what production traffic did with each flag, from Prometheus.

Reads ``flagstone_evaluations_total`` (exported by ``flagstone.sdk.telemetry_prometheus``)
through the Prometheus HTTP API and compares it with what the repository's current
content intends, per flag and environment:

* evaluations over the last ``days`` days, per variation and reason;
* for a flag with exactly one percentage (a split, or a progression's active stage), the
  share of percentage evaluations (reason ``SPLIT``) served each variation against the
  share intended; a surplus of the variation served to contexts that cannot be bucketed
  (a split's first variation, a progression's baseline with reason ``DEFAULT``) says the
  bucketing attribute is missing from the traffic;
* enabled flags with no evaluation at all (stale candidates), and flags evaluated that the
  repository does not have.

Counts are Prometheus's ``increase()`` over the window plus the first value of series that
started inside it (what a process counted before its first scrape), rounded: estimates,
as every rate Prometheus computes.

The report is data (:class:`UsageReport`, JSON form ``flagstone.usage/1``); the lint rule
``unevaluated-flag`` reads a saved JSON report (``flagstone lint --usage FILE``).
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flagstone import escape
from flagstone.compile import compile_environment
from flagstone.engine import DEFAULT, SPLIT, TOTAL_WEIGHT, parse_timestamp
from flagstone.errors import StoreError, UsageError
from flagstone.model import Project
from flagstone.render import View
from flagstone.rollout import bucket_by, serves

FORMAT = "flagstone.usage/1"
URL_ENVIRONMENT_VARIABLE = "FLAGSTONE_PROMETHEUS_URL"
METRIC = "flagstone_evaluations_total"
DEFAULT_DAYS = 7
DEFAULT_TIMEOUT = 30.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# A share is judged only on this many percentage evaluations or more.
MIN_SAMPLE = 30

# Finding kinds (stable: the lint rule and scripts read them).
STALE = "not-evaluated"
UNKNOWN_FLAG = "not-in-repository"
SHARE_MISMATCH = "share-mismatch"
MISSING_BUCKETING_ATTRIBUTE = "missing-bucketing-attribute"


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str


@dataclass
class FlagUsage:
    flag: str
    environment: str
    in_repository: bool
    enabled: bool | None  # None when the repository does not have the flag
    evaluations: int = 0
    by_variation: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    bucket_by: str | None = None
    # Among percentage evaluations (reason SPLIT): served counts and intended shares.
    percentage_served: dict[str, int] = field(default_factory=dict)
    intended: dict[str, float] | None = None
    by_variation_reason: dict[tuple[str, str], int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def served_share(self, variation: str) -> float | None:
        total = sum(self.percentage_served.values())
        return self.percentage_served.get(variation, 0) / total if total else None

    def as_json(self) -> dict[str, Any]:
        return {
            "flag": self.flag,
            "environment": self.environment,
            "in_repository": self.in_repository,
            "enabled": self.enabled,
            "evaluations": self.evaluations,
            "by_variation": dict(sorted(self.by_variation.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
            "bucket_by": self.bucket_by,
            "percentage_served": dict(sorted(self.percentage_served.items())),
            "intended": None if self.intended is None else dict(sorted(self.intended.items())),
            "findings": [{"kind": f.kind, "message": f.message} for f in self.findings],
        }


@dataclass
class UsageReport:
    source: str
    days: int
    generated_at: str
    flags: list[FlagUsage]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": self.source,
            "days": self.days,
            "generated_at": self.generated_at,
            "flags": [usage.as_json() for usage in self.flags],
        }

    def unevaluated(self) -> list[FlagUsage]:
        return [u for u in self.flags if any(f.kind == STALE for f in u.findings)]


# --------------------------------------------------------------------------- Prometheus


def prometheus_url(project: Project, override: str | None = None) -> str:
    """The Prometheus base URL: ``override`` (--prometheus), else the environment variable
    ``FLAGSTONE_PROMETHEUS_URL``, else ``telemetry.prometheus_url`` in flagstone.yaml, else
    the one ``prometheus`` entry of ``metric_sources`` (its ``url_env`` variable, then ``url``)."""
    data = project.config.data if project.config else {}
    configured = data.get("telemetry")
    from_file = configured.get("prometheus_url") if isinstance(configured, Mapping) else None
    url = override or os.environ.get(URL_ENVIRONMENT_VARIABLE) or from_file
    if not url:
        url = _metric_source_url(data.get("metric_sources"))
    if not url:
        raise UsageError(
            "no Prometheus URL: pass --prometheus URL, set FLAGSTONE_PROMETHEUS_URL, "
            "or set telemetry.prometheus_url in flagstone.yaml"
        )
    url = str(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"the Prometheus URL must be http(s)://…, not {url!r}")
    return url.rstrip("/")


def _metric_source_url(sources: Any) -> str | None:
    """The URL of the only Prometheus metric source (the gates' configuration), if exactly
    one is configured."""
    if not isinstance(sources, Mapping):
        return None
    prometheus = [
        source
        for source in sources.values()
        if isinstance(source, Mapping) and source.get("provider") == "prometheus"
    ]
    if len(prometheus) != 1:
        return None
    (source,) = prometheus
    variable = source.get("url_env")
    from_env = os.environ.get(variable) if isinstance(variable, str) else None
    url = from_env or source.get("url")
    return url if isinstance(url, str) and url else None


def query(url: str, expression: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """An instant query's result vector (Prometheus HTTP API ``/api/v1/query``)."""
    body = urllib.parse.urlencode({"query": expression}).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/query",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as error:
        # Prometheus answers 400/422/503 with a JSON error body; say what it said.
        raw = error.read(64 * 1024)
        detail = _error_text(raw) or f"HTTP {error.code}"
        raise StoreError(f"Prometheus at {url} refused the query: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise StoreError(f"cannot reach Prometheus at {url}: {reason}") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise StoreError(f"Prometheus at {url} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise StoreError(f"Prometheus at {url} did not answer JSON (is it Prometheus?)") from None
    if not isinstance(document, dict) or document.get("status") != "success":
        said = document.get("error") if isinstance(document, dict) else None
        raise StoreError(f"Prometheus at {url} answered an error: {said or document!r:.200}")
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise StoreError(f"Prometheus at {url} did not answer a vector for {expression!r}")
    result = data.get("result")
    if not isinstance(result, list):
        raise StoreError(f"Prometheus at {url} answered a malformed result")
    return [sample for sample in result if isinstance(sample, dict)]


def _error_text(raw: bytes) -> str | None:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return str(document.get("error")) if isinstance(document, dict) else None


CountKey = tuple[str, str, str, str]  # environment, flag, variation, reason


def evaluation_counts(
    url: str, days: int, *, timeout: float = DEFAULT_TIMEOUT
) -> dict[CountKey, int]:
    """Evaluations over the last ``days`` days by (environment, flag, variation, reason)."""
    window = f"{days}d"
    by = "environment, flag, variation, reason"
    identity = "instance, job, environment, flag, variation, reason"
    grown = query(url, f"sum by ({by}) (increase({METRIC}[{window}]))", timeout=timeout)
    # Series born inside the window: their first value was counted before any scrape.
    born = query(
        url,
        f"sum by ({by}) (min_over_time({METRIC}[{window}])"
        f" unless on ({identity}) {METRIC} offset {window})",
        timeout=timeout,
    )
    totals: dict[CountKey, float] = {}
    for sample in [*grown, *born]:
        labels = sample.get("metric")
        value = sample.get("value")
        if not isinstance(labels, dict) or not isinstance(value, list) or len(value) != 2:
            raise StoreError(f"Prometheus at {url} answered a malformed sample: {sample!r:.200}")
        try:
            number = float(value[1])
        except (TypeError, ValueError):
            raise StoreError(f"Prometheus at {url} answered a non-number: {value!r:.100}") from None
        if not math.isfinite(number):
            continue
        key = (
            str(labels.get("environment", "")),
            str(labels.get("flag", "")),
            str(labels.get("variation", "")),
            str(labels.get("reason", "")),
        )
        totals[key] = totals.get(key, 0.0) + number
    return {key: round(value) for key, value in totals.items() if round(value) > 0}


# --------------------------------------------------------------------------- intent


@dataclass(frozen=True)
class Percentage:
    """The one percentage of a flag: intended shares, the variation served to contexts
    that cannot be bucketed, and with which reason."""

    intended: dict[str, float]
    fallback: str
    fallback_reason: str
    bucket_by: str


def percentage_of(flag: Mapping[str, Any], now: float) -> Percentage | str | None:
    """The flag's single percentage; None if it has none; ``"several"`` if more than one."""
    found: list[Percentage] = []
    for serve in serves(flag):
        split = serve.get("split")
        progression = serve.get("progression")
        if isinstance(split, Mapping):
            weights = [w for w in split.get("weights", []) if isinstance(w, Mapping)]
            shares: dict[str, float] = {}
            for entry in weights:
                variation = str(entry.get("variation"))
                shares[variation] = shares.get(variation, 0.0) + (
                    int(entry.get("weight", 0)) / TOTAL_WEIGHT
                )
            if weights:
                found.append(
                    Percentage(shares, str(weights[0].get("variation")), SPLIT, bucket_by(split))
                )
        elif isinstance(progression, Mapping):
            weight = _active_weight(progression, now)
            if weight is None:
                continue
            variation = str(progression.get("variation"))
            baseline = str(progression.get("baseline"))
            found.append(
                Percentage(
                    {variation: weight / TOTAL_WEIGHT, baseline: 1 - weight / TOTAL_WEIGHT},
                    baseline,
                    DEFAULT,
                    bucket_by(progression),
                )
            )
    if not found:
        return None
    return found[0] if len(found) == 1 else "several"


def _active_weight(progression: Mapping[str, Any], now: float) -> int | None:
    """The weight of the stage the engine serves at ``now``; None before the first stage
    or when it buckets nobody (weight 0: nothing to compare)."""
    stages = [s for s in progression.get("stages", []) if isinstance(s, Mapping)]
    names = [s.get("name") for s in stages]
    current = progression.get("current")
    active = names.index(current) if current in names else -1
    for index in range(len(stages) - 1, active, -1):
        at = stages[index].get("at")
        instant = parse_timestamp(at) if isinstance(at, str) else None
        if instant is not None and instant <= now:
            active = index
            break
    if active < 0:
        return None
    weight = stages[active].get("weight", 0)
    return weight if isinstance(weight, int) and weight > 0 else None


def _tolerance(share: float, count: int) -> float:
    """How far a served share may stray from ``share`` on ``count`` evaluations: four
    standard deviations of a binomial share, at least five points."""
    return max(0.05, 4 * math.sqrt(max(share * (1 - share), 0.0025) / count))


def judge_percentage(usage: FlagUsage, percentage: Percentage) -> None:
    usage.intended = percentage.intended
    usage.bucket_by = percentage.bucket_by
    total = sum(usage.percentage_served.values())
    if percentage.fallback_reason == DEFAULT:
        # A progression serves its baseline with reason DEFAULT to contexts it cannot bucket.
        unbucketed = usage.by_variation_reason.get((percentage.fallback, DEFAULT), 0)
        considered = total + unbucketed
        if considered >= MIN_SAMPLE and unbucketed / considered > 0.05:
            usage.findings.append(
                Finding(
                    MISSING_BUCKETING_ATTRIBUTE,
                    f"{unbucketed / considered:.0%} of the rollout's evaluations could not be "
                    f"bucketed (baseline '{percentage.fallback}' by default): contexts lack "
                    f"'{percentage.bucket_by}'",
                )
            )
    if total < MIN_SAMPLE:
        return
    fallback_intended = percentage.intended.get(percentage.fallback, 0.0)
    fallback_served = usage.percentage_served.get(percentage.fallback, 0) / total
    if percentage.fallback_reason == SPLIT and fallback_served - fallback_intended > _tolerance(
        fallback_intended, total
    ):
        # The other variations are short by as much: one cause, one finding.
        usage.findings.append(
            Finding(
                MISSING_BUCKETING_ATTRIBUTE,
                f"'{percentage.fallback}' served to {fallback_served:.0%} of split evaluations, "
                f"{fallback_intended:.0%} intended: contexts lacking "
                f"'{percentage.bucket_by}' all get '{percentage.fallback}'",
            )
        )
        return
    for variation, intended in sorted(percentage.intended.items()):
        served = usage.percentage_served.get(variation, 0) / total
        if abs(served - intended) > _tolerance(intended, total):
            usage.findings.append(
                Finding(
                    SHARE_MISMATCH,
                    f"'{variation}' served to {served:.0%} of percentage evaluations, "
                    f"{intended:.0%} intended (over {total} evaluations)",
                )
            )


# --------------------------------------------------------------------------- report


def usage_report(
    project: Project,
    counts: Mapping[CountKey, int],
    *,
    source: str,
    days: int,
    environments: Sequence[str] | None = None,
    now: float | None = None,
) -> UsageReport:
    """Compare ``counts`` (from :func:`evaluation_counts`) with the repository's intent."""
    now = time.time() if now is None else now
    environments = list(environments) if environments else project.environments
    for env in environments:
        if env not in project.environments:
            known = ", ".join(project.environments) or "none"
            raise UsageError(f"unknown environment {env!r} (project environments: {known})")
    flags: list[FlagUsage] = []
    for env in environments:
        compiled = compile_environment(project, env)["flags"]
        seen: dict[str, FlagUsage] = {}
        for (count_env, flag, variation, reason), count in counts.items():
            if count_env != env:
                continue
            usage = seen.get(flag)
            if usage is None:
                spec = compiled.get(flag)
                usage = seen[flag] = FlagUsage(
                    flag,
                    env,
                    in_repository=spec is not None,
                    enabled=bool(spec.get("enabled")) if spec is not None else None,
                )
            usage.evaluations += count
            usage.by_variation[variation] = usage.by_variation.get(variation, 0) + count
            usage.by_reason[reason] = usage.by_reason.get(reason, 0) + count
            usage.by_variation_reason[(variation, reason)] = count
            if reason == SPLIT:
                usage.percentage_served[variation] = (
                    usage.percentage_served.get(variation, 0) + count
                )
        for key, spec in sorted(compiled.items()):
            usage = seen.get(key)
            if usage is None:
                usage = seen[key] = FlagUsage(key, env, True, bool(spec.get("enabled")))
                if usage.enabled:
                    usage.findings.append(
                        Finding(
                            STALE,
                            f"enabled in {env} and not evaluated in the last {days} days: "
                            "remove it from the code and archive it, or check the exporter",
                        )
                    )
                continue
            percentage = percentage_of(spec, now) if spec.get("enabled") else None
            if isinstance(percentage, Percentage):
                judge_percentage(usage, percentage)
        for usage in seen.values():
            if not usage.in_repository:
                usage.findings.append(
                    Finding(
                        UNKNOWN_FLAG,
                        f"evaluated {usage.evaluations} times in {env} but not in the "
                        "repository (removed while code still asks for it?)",
                    )
                )
        flags.extend(seen[key] for key in sorted(seen))
    return UsageReport(
        source=source,
        days=days,
        generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        flags=flags,
    )


def read_usage_report(text: str, where: str) -> UsageReport:
    """A saved JSON report (``flagstone usage --format json``); UsageError naming ``where``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{where}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{where}: not a usage report (expected format {FORMAT!r})")
    flags = data.get("flags")
    if not isinstance(flags, list):
        raise UsageError(f"{where}: 'flags' must be a list")
    report = UsageReport(
        source=str(data.get("source", "")),
        days=int(data.get("days", 0)) if isinstance(data.get("days"), int) else 0,
        generated_at=str(data.get("generated_at", "")),
        flags=[],
    )
    for index, entry in enumerate(flags):
        if not isinstance(entry, dict) or not isinstance(entry.get("flag"), str):
            raise UsageError(f"{where}: flags[{index}] is not a flag usage entry")
        listed = entry.get("findings")
        findings: list[Any] = listed if isinstance(listed, list) else []
        usage = FlagUsage(
            entry["flag"],
            str(entry.get("environment", "")),
            bool(entry.get("in_repository", True)),
            entry.get("enabled") if isinstance(entry.get("enabled"), bool) else None,
            evaluations=entry.get("evaluations", 0)
            if isinstance(entry.get("evaluations"), int)
            else 0,
            findings=[
                Finding(str(f.get("kind", "")), str(f.get("message", "")))
                for f in findings
                if isinstance(f, dict)
            ],
        )
        report.flags.append(usage)
    return report


# --------------------------------------------------------------------------- rendering


def _shares(usage: FlagUsage) -> str:
    if usage.intended is None:
        return ""
    parts = []
    for variation, intended in sorted(usage.intended.items()):
        served = usage.served_share(variation)
        shown = "—" if served is None else f"{served:.0%}"
        parts.append(f"{variation} {shown} (intended {intended:.0%})")
    return ", ".join(parts)


USAGE_VIEW: View[UsageReport] = View("usage")


@USAGE_VIEW.format("text")
def render_text(report: UsageReport) -> str:
    lines = [f"usage over the last {report.days} days from {escape.terminal(report.source)}"]
    for usage in report.flags:
        served = ", ".join(
            f"{escape.terminal(v or '(error)')} {n}" for v, n in sorted(usage.by_variation.items())
        )
        lines.append(
            f"{escape.terminal(usage.environment)}  {escape.terminal(usage.flag)}: {usage.evaluations} evaluations"
            + (f" ({served})" if served else "")
        )
        if usage.intended is not None:
            lines.append(f"    percentage: {escape.terminal(_shares(usage))}")
        lines.extend(
            f"    {finding.kind}: {escape.terminal(finding.message)}" for finding in usage.findings
        )
    flagged = sum(1 for usage in report.flags if usage.findings)
    lines.append(f"{len(report.flags)} flag entries, {flagged} with findings")
    return "\n".join(lines) + "\n"


@USAGE_VIEW.format("json")
def render_json(report: UsageReport) -> str:
    return json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n"


@USAGE_VIEW.format("markdown")
def render_markdown(report: UsageReport) -> str:
    lines = [
        f"### Flag usage, last {report.days} days",
        "",
        "| Environment | Flag | Evaluations | Served | Percentage (served vs intended) | Findings |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for usage in report.flags:
        served = ", ".join(
            f"{escape.markdown(v or '(error)')} {n}" for v, n in sorted(usage.by_variation.items())
        )
        findings = "<br>".join(
            f"**{escape.markdown(f.kind)}**: {escape.markdown(f.message)}" for f in usage.findings
        )
        lines.append(
            f"| {escape.markdown(usage.environment)} | {escape.markdown(usage.flag)} | {usage.evaluations} "
            f"| {served} | {escape.markdown(_shares(usage))} | {findings} |"
        )
    return "\n".join(lines) + "\n"


def render(report: UsageReport, fmt: str) -> str:
    return USAGE_VIEW.render(fmt, report)


def stale_flags(reports: Iterable[UsageReport]) -> set[tuple[str, str]]:
    """(environment, flag) pairs a report found enabled and never evaluated."""
    return {(u.environment, u.flag) for report in reports for u in report.unevaluated()}
