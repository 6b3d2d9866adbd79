"""The decision report of ``flagstone progress``: text for a terminal, Markdown for a
pull request body and a job summary (written for the product manager who owns the
rollout: what was compared, the numbers, the verdict, what happens next), JSON for tools.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from flagstone import escape
from flagstone.compile import timestamp_text
from flagstone.guardrails import duration_text
from flagstone.progress import Arm, Decision, GateResult
from flagstone.render import View

_VERBS = {"advance": "advance", "hold": "hold", "rollback": "ROLL BACK"}


def _rate(arm: Arm | None, kind: str) -> str:
    if arm is None or arm.value is None:
        return "no data"
    if kind == "ratio":
        return f"{arm.value * 100:.3g}% of {arm.samples:,.0f}" if arm.samples else "no traffic"
    samples = f" ({arm.samples:,.0f} samples)" if arm.samples is not None else ""
    return f"{arm.value:.4g}{samples}"


def _amount(value: float, kind: str) -> str:
    return f"{value * 100:+.3g} pp" if kind == "ratio" else f"{value:+.4g}"


def _worse_by(gate: GateResult) -> str:
    verdict = gate.verdict
    if verdict is None:
        return "–"
    text = _amount(verdict.regression, gate.kind)
    if gate.kind == "ratio":
        low, high = _amount(verdict.lower, gate.kind), _amount(verdict.upper, gate.kind)
        text += f" (beyond tolerance: {low} to {high})"
    return text


def _next_step(decision: Decision) -> str:
    if decision.action == "advance":
        return (
            f"a pull request moves `current` from `{decision.stage}` to `{decision.next_stage}` "
            f"({decision.next_label})."
        )
    if decision.action == "rollback":
        return (
            f"an emergency override turns `{decision.flag}` off in {decision.environment} within "
            "seconds, and a pull request records the kill in git."
        )
    when = f" Expected by {decision.expected}." if decision.expected else ""
    return f"nothing changes; the next run looks again.{when}"


def _cell(text: str) -> str:
    """A Markdown table cell: one line, inert (``escape.markdown``)."""
    return escape.markdown(" ".join(text.split()))


PROGRESS_VIEW: View[Sequence[Decision]] = View("progress")


@PROGRESS_VIEW.format("markdown")
def render_markdown(decisions: Sequence[Decision]) -> str:
    if not decisions:
        return "## Flagstone progress\n\nNo gated progression is in flight.\n"
    out = ["## Flagstone progress", ""]
    for d in decisions:
        out.append(f"### `{d.flag}` in {d.environment}: **{_VERBS[d.action]}**")
        out.append("")
        started = timestamp_text(d.stage_started) if d.stage_started else "not committed yet"
        bake = duration_text(d.bake_seconds) if d.bake_seconds else "none"
        bake_state = "done" if d.bake_remaining == 0 else f"{duration_text(d.bake_remaining)} left"
        out.append(
            f"Stage **{_cell(d.stage_label)}** has served `{d.variation}` since {started} "
            f"({duration_text(d.window_seconds)}); bake {bake}: {bake_state}. "
            f"Everyone else gets `{d.baseline}`."
        )
        out.append("")
        if d.gates:
            out.append(
                f"| gate | `{d.variation}` (new) | `{d.baseline}` (baseline) | worse by | "
                "tolerated | verdict |"
            )
            out.append("|---|---|---|---|---|---|")
            for g in d.gates:
                out.append(
                    f"| {_cell(g.metric)} ({g.better} is better) | {_cell(_rate(g.treatment, g.kind))} | "
                    f"{_cell(_rate(g.baseline, g.kind))} | {_cell(_worse_by(g))} | "
                    f"{_cell(g.tolerance)} | {g.status}: {_cell(g.message)} |"
                )
            out.append("")
        out.append("**Why:** " + _cell("; ".join(d.reasons)))
        out.append("")
        out.append("**Next:** " + _cell(_next_step(d)))
        out.append("")
    out.append(
        "<sub>Ratio gates use an always-valid sequential test (mSPRT): looking again every run "
        "does not raise the chance of a false roll-back above the configured α. "
        "See docs/readme/progress.md.</sub>"
    )
    return "\n".join(out) + "\n"


@PROGRESS_VIEW.format("text")
def render_text(decisions: Sequence[Decision]) -> str:
    if not decisions:
        return "no gated progression is in flight\n"
    lines = []
    for d in decisions:
        lines.append(
            f"{d.flag} [{d.environment}] {_VERBS[d.action]}: {d.stage_label}"
            + (f" -> {d.next_label}" if d.action == "advance" else "")
        )
        for reason in d.reasons:
            lines.append(f"  {' '.join(reason.split())}")
        for g in d.gates:
            lines.append(
                f"  gate {g.metric}: {g.status}; new {_rate(g.treatment, g.kind)}, "
                f"baseline {_rate(g.baseline, g.kind)}, worse by {_worse_by(g)}, "
                f"tolerated {g.tolerance}"
            )
    return "".join(escape.terminal(line) + "\n" for line in lines)


@PROGRESS_VIEW.format("json")
def render_json(decisions: Sequence[Decision]) -> str:
    return json.dumps([d.as_json() for d in decisions], indent=2, sort_keys=True) + "\n"
