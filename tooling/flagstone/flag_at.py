"""A flag at a point in time: its release in one environment as it was at a revision
or a date, and the progression stage in force then (``flag_at``); the ``show`` view
renders it (``text``, ``json``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from flagstone import escape
from flagstone.auditlog import audit_log, flag_lineage, parse_instant
from flagstone.diff import NO_STAGE, serve_text
from flagstone.errors import GitError
from flagstone.gitops import (
    commit_time,
    default_branch,
    git_text,
    project_at,
    resolve_revision,
    revision_at,
    short_revision,
)
from flagstone.model import Flag, Project, ReleaseConfig
from flagstone.render import View
from flagstone.rollout import progression_spec, read_progression


@dataclass(frozen=True, slots=True)
class FlagAtTime:
    """What ``flagstone show`` prints: a flag's release in one environment at an instant."""

    revision: str
    commit_date: str
    instant: float
    environment: str
    flag: Flag
    release: ReleaseConfig | None
    asked_for: str  # the flag key asked for; ``flag.key`` differs when it was renamed since

    def active_stage(self) -> dict[str, str | None] | None:
        """The progression stage in force at ``instant`` (None without a progression)."""
        release = self.release
        live = release is not None and release.enabled
        plan = read_progression(progression_spec(release.data)) if release and live else None
        if plan is None:
            return None
        stage = plan.active_stage(self.instant)
        scheduled = stage is not None and stage.index > plan.current
        return {
            "stage": stage.name if stage else None,
            "reach": (stage or NO_STAGE).label(),
            "scheduled_at": stage.at_text if stage and scheduled else None,
        }

    def document(self) -> dict[str, object]:
        """The JSON form of ``flagstone show``."""
        return {
            "flag": self.asked_for,
            "name_then": self.flag.key,
            "environment": self.environment,
            "at": _utc_text(self.instant),
            "commit": self.revision,
            "commit_date": self.commit_date,
            "enabled": bool(self.release and self.release.enabled),
            "off_variation": self.flag.off_variation,
            "release": self.release.data if self.release else None,
            "active_stage": self.active_stage(),
        }


SHOW_VIEW: View[FlagAtTime] = View("show")


@SHOW_VIEW.format("json")
def render_show_json(state: FlagAtTime) -> str:
    return json.dumps(state.document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


@SHOW_VIEW.format("text")
def render_show_text(state: FlagAtTime) -> str:
    """The human form: what a context got then, top to bottom; every line escaped
    (``escape.terminal``), since names, rules and values are written by contributors."""
    off = state.flag.off_variation
    head = f"{state.flag.key} in {state.environment} at {_utc_text(state.instant)} "
    if state.asked_for != state.flag.key:
        head = f"{state.asked_for} (then named {state.flag.key}) in {state.environment} at {_utc_text(state.instant)} "
    lines = [head + f"(commit {state.revision[:12]}, {state.commit_date})"]
    release = state.release
    if release is None:
        return _terminal_lines([*lines, f"  no release file: disabled, serves {off}"])
    lines.append(f"  enabled: {'yes' if release.enabled else f'no (serves {off})'}")
    lines += [f"  targets {v}: {', '.join(keys)}" for v, keys in release.targets.items()]
    for rule in release.rules:
        condition = json.dumps(rule.get("if"), sort_keys=True, ensure_ascii=False)
        lines.append(
            f"  rule {rule.get('name')!r}: if {condition} serve {serve_text(rule.get('serve'))}"
        )
    default = release.default
    lines.append(f"  default: {serve_text(default) if default is not None else off}")
    active = state.active_stage()
    if active is not None:
        why = f" (scheduled at {active['scheduled_at']})" if active["scheduled_at"] else ""
        lines.append(f"  active stage: {active['reach']}{why}")
    return _terminal_lines(lines)


def _terminal_lines(lines: list[str]) -> str:
    return "".join(escape.terminal(line) + "\n" for line in lines)


def _utc_text(instant: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))


def resolve_point(root: Path, when: str) -> tuple[str, float]:
    """``(commit, instant)`` for ``--at``: a date picks the last first-parent commit of the
    default branch (or HEAD) at or before it; a revision is read at its commit time."""
    from flagstone.timeforms import TIME_FORMS

    instant = parse_instant(when)
    if instant is None:
        try:
            commit = resolve_revision(root, when)
        except GitError as error:
            raise GitError(
                error.message, hint=f"--at takes a git revision or a time: {TIME_FORMS}"
            ) from None
        return commit, float(commit_time(root, commit))
    ref = default_branch(root) or "HEAD"
    found = revision_at(root, instant, ref)
    if found is None:
        raise GitError(f"no commit on {ref} at or before {when}")
    return found, instant


def _earlier_name(root: Path, project: Project, flag_key: str, commit: str) -> Flag | None:
    """The flag now called ``flag_key`` under the name it had at ``commit`` (renames are
    followed through the audit log of the default branch)."""
    entries = audit_log(root, default_branch(root) or "HEAD")
    lineage = flag_lineage(entries, flag_key)
    ancestors = set(git_text(root, "rev-list", "--first-parent", commit).split())
    names = [e.key for e in entries if e.lineage == lineage and e.commit in ancestors]
    return project.flags.get(names[-1]) if names else None


def flag_at(root: Path, flag_key: str, environment: str, when: str) -> FlagAtTime:
    commit, instant = resolve_point(root, when)
    project = project_at(root, commit)
    flag = project.flags.get(flag_key) or _earlier_name(root, project, flag_key, commit)
    if flag is None:
        raise GitError(f"flag {flag_key!r} does not exist at {short_revision(commit)} ({when})")
    if environment not in project.environments:
        known = ", ".join(project.environments) or "none"
        raise GitError(
            f"environment {environment!r} is not declared at {short_revision(commit)} (declared: {known})"
        )
    date = git_text(root, "show", "-s", "--format=%cI", commit)
    release = flag.releases.get(environment)
    return FlagAtTime(commit, date, instant, environment, flag, release, flag_key)
