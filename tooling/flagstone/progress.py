"""``flagstone progress``: advance a progression on evidence, hold it, or roll it back.

For every enabled progression that lists gates (``progression.gates``, see
``flagstone.gates.config``) and is not at its last stage, ``decide`` finds when the
stage in force began (the commit that set ``current`` to it, on the first-parent
history of HEAD, or its ``at`` when a schedule made it active), asks each gate's metric
about the treatment (the progression's ``variation``) and the baseline over that window,
and returns a ``Decision``:

* ``rollback`` — some gate shows a significant regression (``flagstone.gates.statistics``);
* ``advance`` — the bake is done and every gate has its samples and no regression;
* ``hold`` — anything else, with what is missing and, where it can tell, when to expect it.

A gate gives no verdict before each arm has ``min_samples`` (the normal approximation
behind the test needs them): too little data holds, it never rolls back or advances.
``flagstone.progress_apply`` turns decisions into pull requests and emergency kills.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from flagstone import gitops
from flagstone.compile import timestamp_text
from flagstone.diff import NO_STAGE
from flagstone.errors import GateConfigError, MetricQueryError, UsageError
from flagstone.gates import config as gate_config
from flagstone.gates.providers import MetricProvider, provider_for
from flagstone.gates.statistics import Verdict, msprt_ratio, split_alpha, value_threshold
from flagstone.guardrails import Policy, duration_text, stage_entry_time
from flagstone.model import Flag, Project, ReleaseConfig
from flagstone.rollout import progression_spec, read_progression

ACTIONS = ("advance", "hold", "rollback")


@dataclass(frozen=True, slots=True)
class Arm:
    """What one side of a comparison measured: ``value`` (a rate for ratio metrics) over
    ``samples`` (the denominator, or the ``samples`` query), and the raw events."""

    variation: str
    value: float | None
    samples: float | None
    events: float | None = None


@dataclass(frozen=True, slots=True)
class GateResult:
    metric: str
    kind: str
    better: str
    tolerance: str
    min_samples: int
    alpha: float | None
    treatment: Arm | None
    baseline: Arm | None
    verdict: Verdict | None
    status: str  # passed | regression | insufficient | error
    message: str


@dataclass(slots=True)
class Decision:
    flag: str
    environment: str
    path: str
    action: str
    stage: str
    stage_label: str
    next_stage: str | None
    next_label: str | None
    variation: str
    baseline: str
    stage_started: float | None
    window_seconds: int
    bake_seconds: int
    bake_remaining: int
    reasons: list[str] = field(default_factory=list)
    expected: str | None = None
    gates: list[GateResult] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage_started"] = timestamp_text(self.stage_started) if self.stage_started else None
        return data


class _Judge:
    def __init__(self, root: Path, project: Project, now: float, environ: Mapping[str, str] | None):
        assert project.config is not None
        data = project.config.data
        self.root = root
        self.now = now
        self.sources = gate_config.metric_sources(data)
        self.metrics = gate_config.metrics(data)
        self.policy = gate_config.progress_policy(data)
        self.guardrails = Policy.from_project(project)
        self.environ = environ
        self._providers: dict[str, MetricProvider] = {}

    def provider(self, name: str) -> MetricProvider:
        if name not in self._providers:
            source = self.sources.get(name)
            if source is None:
                raise GateConfigError(f"unknown metric source {name!r}")
            self._providers[name] = provider_for(source, self.environ)
        return self._providers[name]

    def decide(
        self, flag: Flag, env: str, release: ReleaseConfig, progression: Mapping[str, Any]
    ) -> Decision:
        plan = read_progression(progression)
        reaches = plan.stages if plan is not None else ()
        in_force = plan.active_stage(self.now) if plan is not None else None
        active = in_force or NO_STAGE
        following = reaches[active.index + 1] if active.index + 1 < len(reaches) else None
        rel = release.doc.rel
        started: float | None
        if in_force is not None and plan is not None and in_force.index > plan.current:
            started = in_force.at  # a schedule made it active
        else:
            entered = stage_entry_time(self.root, "HEAD", rel, active.name)
            started = float(entered) if entered is not None else None
        bake = self.guardrails.bake_seconds(env, in_force)
        bake_seconds = bake[0] if bake else 0
        window = int(self.now - started) if started is not None else 0
        decision = Decision(
            flag=flag.key,
            environment=env,
            path=rel,
            action="hold",
            stage=active.name,
            stage_label=active.label(),
            next_stage=following.name if following else None,
            next_label=following.label() if following else None,
            variation=str(progression.get("variation")),
            baseline=str(progression.get("baseline")),
            stage_started=started,
            window_seconds=window,
            bake_seconds=bake_seconds,
            bake_remaining=max(0, int(bake_seconds - window))
            if started is not None
            else bake_seconds,
        )
        if started is None:
            decision.reasons.append(
                f"{rel}: `current: {active.name}` is not committed on this branch yet; "
                "the stage's start is the commit that sets it"
            )
            return decision
        gates = gate_config.gates(progression)
        alpha = split_alpha(self.policy.alpha, max(1, len(reaches) - 1), len(gates))
        decision.gates = [self.judge_gate(gate, decision, alpha) for gate in gates]
        self.conclude(decision)
        return decision

    def judge_gate(self, gate: gate_config.Gate, decision: Decision, alpha: float) -> GateResult:
        metric = self.metrics.get(gate.metric)
        result = GateResult(
            metric=gate.metric,
            kind=metric.kind if metric else "?",
            better=("higher" if metric.higher_is_better else "lower") if metric else "?",
            tolerance=gate.tolerance.describe(),
            min_samples=gate.min_samples,
            alpha=alpha if metric and metric.kind == "ratio" else None,
            treatment=None,
            baseline=None,
            verdict=None,
            status="error",
            message=f"unknown metric {gate.metric!r}",
        )
        if metric is None:
            return result
        try:
            treatment = self.measure(metric, decision, decision.variation)
            baseline = self.measure(metric, decision, decision.baseline)
        except (MetricQueryError, GateConfigError) as error:
            return replace(result, message=str(error))
        result = replace(result, treatment=treatment, baseline=baseline)
        short = [
            arm
            for arm in (treatment, baseline)
            if arm.value is None or arm.samples is None or arm.samples < max(1, gate.min_samples)
        ]
        if short:
            missing = ", ".join(
                f"`{arm.variation}` has {_count(arm.samples)} of {gate.min_samples}"
                for arm in short
            )
            return replace(result, status="insufficient", message=f"too few samples: {missing}")
        assert treatment.value is not None and baseline.value is not None
        if metric.kind == "ratio":
            assert treatment.events is not None and baseline.events is not None
            assert treatment.samples is not None and baseline.samples is not None
            verdict = msprt_ratio(
                (treatment.events, treatment.samples),
                (baseline.events, baseline.samples),
                higher_is_better=metric.higher_is_better,
                tolerance=gate.tolerance,
                alpha=alpha,
                mixing_sd=metric.mixing_sd,
            )
        else:
            verdict = value_threshold(
                treatment.value,
                baseline.value,
                higher_is_better=metric.higher_is_better,
                tolerance=gate.tolerance,
            )
        if verdict.significant:
            message = (
                f"`{decision.variation}` is worse than `{decision.baseline}` beyond the tolerance"
            )
            return replace(result, verdict=verdict, status="regression", message=message)
        return replace(
            result, verdict=verdict, status="passed", message="no regression beyond the tolerance"
        )

    def measure(self, metric: gate_config.Metric, decision: Decision, variation: str) -> Arm:
        provider = self.provider(metric.source)

        def run(template: str | None) -> float | None:
            if template is None:
                return None
            expression = gate_config.render_query(
                template,
                flag=decision.flag,
                variation=variation,
                environment=decision.environment,
                window=decision.window_seconds,
            )
            value = provider.query(expression, self.now)
            if value is not None and value < 0:
                raise MetricQueryError(f"a count cannot be negative ({value:g}): {expression}")
            return value

        if metric.kind == "ratio":
            events, trials = run(metric.numerator), run(metric.denominator)
            if events is not None and trials is not None and events > trials:
                raise MetricQueryError(
                    f"metric {metric.name!r}: numerator {events:g} exceeds denominator {trials:g} "
                    f"for `{variation}`; the two queries must count the same requests"
                )
            rate = events / trials if events is not None and trials else None
            return Arm(variation, rate, trials, events if events is not None else None)
        return Arm(variation, run(metric.query), run(metric.samples))

    def conclude(self, decision: Decision) -> None:
        regressions = [g for g in decision.gates if g.status == "regression"]
        errors = [g for g in decision.gates if g.status == "error"]
        short = [g for g in decision.gates if g.status == "insufficient"]
        if regressions:
            decision.action = "rollback"
            names = ", ".join(g.metric for g in regressions)
            decision.reasons.append(f"significant regression on {names}")
            return
        if errors:
            decision.error = "; ".join(f"{g.metric}: {g.message}" for g in errors)
            decision.reasons.append(f"could not judge: {decision.error}")
        if decision.bake_remaining > 0:
            ends = timestamp_text(self.now + decision.bake_remaining)
            decision.reasons.append(
                f"bake not done: {duration_text(decision.bake_remaining)} left (until {ends})"
            )
            decision.expected = ends
        for gate in short:
            decision.reasons.append(f"{gate.metric}: {gate.message}")
            eta = self.sample_eta(gate, decision)
            if eta is not None and (decision.expected is None or eta > decision.expected):
                decision.expected = eta
        if decision.next_stage is None:
            decision.reasons.append("already at the last stage")
        if not decision.reasons:
            decision.action = "advance"
            decision.reasons.append("bake done and every gate passed")

    def sample_eta(self, gate: GateResult, decision: Decision) -> str | None:
        """When the slower arm reaches ``min_samples`` at the rate seen so far."""
        waits = []
        for arm in (gate.treatment, gate.baseline):
            if arm is None or not arm.samples or decision.window_seconds <= 0:
                return None
            missing = gate.min_samples - arm.samples
            if missing > 0:
                waits.append(missing / (arm.samples / decision.window_seconds))
        return timestamp_text(self.now + max(waits)) if waits else None


def _count(value: float | None) -> str:
    return "no data" if value is None else f"{value:,.0f}"


def active_progressions(
    project: Project, env: str | None, flag_key: str | None
) -> list[tuple[Flag, str, ReleaseConfig, Mapping[str, Any]]]:
    """Enabled progressions with gates, in flag and environment order."""
    environments = project.environments
    if env is not None and env not in environments:
        raise UsageError(f"unknown environment {env!r} (declared: {', '.join(environments)})")
    if flag_key is not None and flag_key not in project.flags:
        raise UsageError(f"unknown flag {flag_key!r}")
    found = []
    for key in sorted(project.flags):
        if flag_key is not None and key != flag_key:
            continue
        flag = project.flags[key]
        if flag.archived:
            continue
        for name in environments:
            release = flag.releases.get(name)
            if (env is not None and name != env) or release is None or not release.enabled:
                continue
            progression = progression_spec(release.data)
            if progression is not None and progression.get("gates"):
                found.append((flag, name, release, progression))
    return found


def decide(
    root: Path,
    project: Project,
    *,
    env: str | None = None,
    flag: str | None = None,
    now: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Decision]:
    """A decision for every gated progression (see the module docstring)."""
    gitops.resolve_revision(root, "HEAD")
    judge = _Judge(root, project, time.time() if now is None else now, environ)
    return [
        judge.decide(flag_obj, name, release, progression)
        for flag_obj, name, release, progression in active_progressions(project, env, flag)
    ]


def has_errors(decisions: Sequence[Decision]) -> bool:
    return any(d.error for d in decisions)
