"""``flagstone progress --apply``: act on decisions through git.

* **advance** — a commit on ``flagstone/progress/<flag>-<env>`` that moves ``current``
  to the next stage, with the decision report as the commit body and the pull-request
  body (``flagstone.pullrequest``). It is merged automatically only where
  ``progress.auto_merge`` in ``flagstone.yaml`` allows it for that environment and the
  team that owns the release file; otherwise a person reviews it like any change.
* **rollback** — the emergency kill: a signed kill-only override that clients apply
  within seconds, plus the reconcile pull request that records the kill in git
  (``flagstone.emergency``), with the evidence as the reason.
* **hold** — nothing.

Reruns are idempotent: the branch and its pull request are reused, and a flag already
killed by an override in force is not killed again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flagstone import edit
from flagstone.gates.config import progress_policy
from flagstone.model import Project
from flagstone.progress import Decision
from flagstone.progress_report import render_markdown
from flagstone.pullrequest import Proposal, propose

KillAction = Callable[[Decision, str], str]


@dataclass(slots=True)
class Outcome:
    decision: Decision
    proposal: Proposal | None = None
    kill: str | None = None
    messages: list[str] = field(default_factory=list)


def progress_branch(decision: Decision) -> str:
    return f"flagstone/progress/{decision.flag}-{decision.environment}"


def _advance(root: Path, project: Project, decision: Decision, gh: str) -> Outcome:
    assert project.config is not None and decision.next_stage is not None
    flag = project.flags[decision.flag]
    policy = progress_policy(project.config.data)
    team = flag.owner_for(decision.environment)
    target = decision.next_stage

    def make_edit(repo: Path) -> None:
        edit.advance(repo, decision.flag, decision.environment, to=target)

    proposal = propose(
        root,
        branch=progress_branch(decision),
        title=f"progress: advance {decision.flag} in {decision.environment} to {target}",
        body=render_markdown([decision]),
        edit=make_edit,
        auto_merge=policy.may_auto_merge(decision.environment, team),
        gh=gh,
    )
    outcome = Outcome(decision, proposal=proposal)
    if not proposal.changed:
        outcome.messages.append("nothing to change: the base branch already has this stage")
    elif proposal.number is not None:
        verb = "opened" if proposal.created else "updated"
        outcome.messages.append(f"{verb} pull request #{proposal.number} ({proposal.url})")
        if proposal.auto_merge:
            outcome.messages.append("auto-merge enabled by progress.auto_merge")
    else:
        outcome.messages.append(f"branch {proposal.branch} ready; to finish:")
        outcome.messages.extend(f"  {command}" for command in proposal.commands)
    return outcome


def apply(
    root: Path,
    project: Project,
    decisions: Sequence[Decision],
    *,
    kill: KillAction | None,
    gh: str = "gh",
) -> list[Outcome]:
    """Carry out every decision (see the module docstring). ``kill`` performs the
    emergency kill of a rollback and returns what it did; None refuses rollbacks with
    the command to run by hand."""
    outcomes = []
    for decision in decisions:
        if decision.action == "advance":
            outcomes.append(_advance(root, project, decision, gh))
        elif decision.action == "rollback":
            reason = "progress: " + "; ".join(decision.reasons)
            outcome = Outcome(decision)
            if kill is None:
                outcome.messages.append(
                    "no emergency key: run "
                    f"`flagstone kill {decision.flag} --env {decision.environment} --emergency "
                    f"--reason '{reason}'`"
                )
            else:
                outcome.kill = kill(decision, reason)
                outcome.messages.append(outcome.kill)
            outcomes.append(outcome)
        else:
            outcomes.append(Outcome(decision, messages=["held: nothing to do"]))
    return outcomes


def summary_lines(outcomes: Sequence[Outcome]) -> list[str]:
    lines = []
    for outcome in outcomes:
        d = outcome.decision
        for message in outcome.messages:
            lines.append(f"{d.flag} [{d.environment}] {d.action}: {message}")
    return lines


def outcome_json(outcomes: Sequence[Outcome]) -> list[Mapping[str, object]]:
    return [
        {
            "flag": o.decision.flag,
            "environment": o.decision.environment,
            "action": o.decision.action,
            "pull_request": o.proposal.number if o.proposal else None,
            "branch": o.proposal.branch if o.proposal else None,
            "messages": list(o.messages),
        }
        for o in outcomes
    ]
