"""Rollout guardrails: checks on a change (base revision → working tree) against the
policy in ``flagstone.yaml``::

    guardrails:
      max_step: {default: 50, production: 25}   # percentage points one change may add
      min_bake: {default: 1h, production: 24h}  # time in the current stage before advancing
      protect_serving_values: true              # no edits to a value a protected env serves
      protected_environments: [production]      # default: production, else the last one

Errors (exit 1), each with the rule and the fix:

* ``max-step`` — in one environment, some non-off variation reaches more than
  ``max_step`` more percent of contexts (progression stages, splits, defaults, enabling);
* ``min-bake`` — ``current`` advances before the stage being left has been in force for
  its own ``bake`` (or ``min_bake``). The time it entered that stage is the commit on the
  base's first-parent history that set ``current`` to it, or its ``at`` when a schedule
  made it active;
* ``serving-value`` — a variation's value changes while a protected environment can
  serve it;
* ``dependency`` — a flag is removed or archived while another live flag has it as a
  prerequisite (always on).

Warnings: exposure increases in a protected environment with no ``max_step`` for it,
advancing more than one stage at once, a kill (disabling) in a protected environment.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from flagstone import gitops
from flagstone.compile import timestamp_text
from flagstone.diff import (
    detect_flag_renames,
    protected_environments,
    served_shares,
    serving_variations,
)
from flagstone.errors import GitError, LoadError
from flagstone.loader import loads
from flagstone.model import Flag, Project, ReleaseConfig, read_project
from flagstone.problems import Problem
from flagstone.rollout import (
    Progression,
    Stage,
    exposure_step,
    percent_text,
    progression_spec,
    read_progression,
    release_timeline,
)
from flagstone.timestamps import duration_seconds

RULE_PREFIX = "guardrail"


@dataclass(frozen=True, slots=True)
class Policy:
    max_step: Mapping[str, float]
    min_bake: Mapping[str, str]
    protect_serving_values: bool
    protected: list[str]

    @classmethod
    def from_project(cls, project: Project) -> Policy:
        config = project.config
        section = config.guardrails if config else {}
        return cls(
            max_step=dict(section.get("max_step") or {}),
            min_bake=dict(section.get("min_bake") or {}),
            protect_serving_values=bool(section.get("protect_serving_values", False)),
            protected=protected_environments(config),
        )

    def step_limit(self, env: str) -> Decimal | None:
        value = self.max_step.get(env, self.max_step.get("default"))
        return Decimal(str(value)) if value is not None else None

    def bake_seconds(self, env: str, stage: Stage | None) -> tuple[int, str] | None:
        """Required bake and where it comes from: the stage's own ``bake``, else policy."""
        if stage is not None and stage.bake is not None:
            return stage.bake, f"stage bake {stage.bake_text or duration_text(stage.bake)}"
        policy = self.min_bake.get(env, self.min_bake.get("default"))
        if isinstance(policy, str) and duration_seconds(policy) is not None:
            key = env if env in self.min_bake else "default"
            return duration_seconds(policy) or 0, f"guardrails.min_bake.{key} {policy}"
        return None


def _problem(
    release_or_flag: ReleaseConfig | Flag,
    where: tuple[str | int, ...],
    rule: str,
    level: str,
    message: str,
    hint: str,
) -> Problem:
    return release_or_flag.doc.problem(
        where, message, rule=f"{RULE_PREFIX}-{rule}", level=level, hint=hint
    )


def _progression(release: ReleaseConfig | None) -> Progression | None:
    return read_progression(progression_spec(release.data)) if release else None


def _schedule_jumps(
    release: ReleaseConfig | None, off: str | None, now: float
) -> list[tuple[int, str, Decimal, dict[str, Decimal]]]:
    """``(stage index, at, step, shares after)`` for each exposure jump the progression's
    schedule will make after ``now``, in time order, each from the stage in force before."""
    if release is None:
        return []
    timeline = release_timeline(release.data, off, now)
    jumps = []
    for earlier, later in itertools.pairwise(timeline):
        step = exposure_step(earlier.shares, later.shares, off)
        if step > 0 and later.stage is not None and later.stage.at_text is not None:
            jumps.append((later.stage.index, later.stage.at_text, step, dict(later.shares)))
    return jumps


def duration_text(seconds: float) -> str:
    """``1d``, ``1d10h``, ``3h10m``, ``45m``: the two largest units, zeros left out."""
    minutes = int(seconds) // 60
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    while parts and parts[0][0] == 0:
        parts.pop(0)
    text = "".join(f"{value}{unit}" for value, unit in parts[:2] if value)
    return text or "0m"


def stage_entry_time(root: Path, base: str, path: str, stage: str) -> int | None:
    """When ``current`` was set to ``stage`` in the release file at ``path``: the committer
    time of the oldest commit of the unbroken run, on ``base``'s first-parent history, in
    which the file says ``current: stage``. None when the base does not say so."""
    prefix = gitops.repo_prefix(root)
    top = f"{prefix}/{path}" if prefix else path
    out = gitops.git_text(
        root, "log", "--first-parent", "--format=%H %ct", base, "--", f":(top){top}"
    )
    entered = None
    with gitops.BlobReader(root) as reader:
        for line in out.splitlines():
            sha, stamp = line.split()
            data = reader.read(f"{sha}:{top}")
            if data is None:
                break
            try:
                document = loads(data, rel=path)
            except LoadError:
                break
            default = document.data.get("default") if isinstance(document.data, dict) else None
            progression = default.get("progression") if isinstance(default, dict) else None
            if not isinstance(progression, dict) or progression.get("current") != stage:
                break
            entered = int(stamp)
    return entered


class _Checker:
    def __init__(self, root: Path, base: str, before: Project, after: Project, now: float) -> None:
        self.root = root
        self.base = base
        self.before = before
        self.after = after
        self.now = now
        self.policy = Policy.from_project(after)
        self.problems: list[Problem] = []
        self.renames = detect_flag_renames(before, after)

    def run(self) -> list[Problem]:
        self.policy_environments()
        reverse = {new: old for old, new in self.renames.items()}
        for key, flag in sorted(self.after.flags.items()):
            old_flag = self.before.flags.get(reverse.get(key, key))
            for env in self.after.environments:
                release = flag.releases.get(env)
                old_release = old_flag.releases.get(env) if old_flag else None
                if release is not None:
                    self.step(flag, old_flag, old_release, release, env)
                    self.scheduled_steps(flag, old_flag, old_release, release, env)
                    self.bake(old_release, release, env)
                    self.kill(old_release, release, env, flag)
        self.serving_values()
        self.dependencies()
        return self.problems

    def policy_environments(self) -> None:
        """Policy entries naming undeclared environments would silently never apply."""
        config = self.after.config
        if config is None:
            return
        declared = set(config.environments)
        section = config.guardrails
        for field in ("max_step", "min_bake"):
            for env in section.get(field) or {}:
                if env != "default" and env not in declared:
                    self.problems.append(config.doc.problem(
                        ("guardrails", field, env), f"guardrails.{field} names undeclared environment {env!r}",
                        rule=f"{RULE_PREFIX}-policy", level="warning", key=True,
                        hint=f"declared environments: {', '.join(config.environments)}",
                    ))  # fmt: skip
        for index, env in enumerate(section.get("protected_environments") or []):
            if env not in declared:
                self.problems.append(config.doc.problem(
                    ("guardrails", "protected_environments", index),
                    f"guardrails.protected_environments names undeclared environment {env!r}",
                    rule=f"{RULE_PREFIX}-policy", level="warning",
                    hint=f"declared environments: {', '.join(config.environments)}",
                ))  # fmt: skip

    def step(
        self,
        flag: Flag,
        old_flag: Flag | None,
        old: ReleaseConfig | None,
        new: ReleaseConfig,
        env: str,
    ) -> None:
        off = flag.off_variation
        old_off = old_flag.off_variation if old_flag else off
        before_shares = served_shares(old, old_off, at=self.now)
        # The off variation is left out only when it stays the off variation: naming the
        # variation being rolled out "off" in the same change must not hide its step.
        step = exposure_step(
            before_shares, served_shares(new, off, at=self.now), off if old_off == off else None
        )
        if step <= 0:
            return
        limit = self.policy.step_limit(env)
        where: tuple[str | int, ...] = ("enabled",)
        if new.enabled and (old is None or old.enabled):
            where = ("default", "progression", "current") if _progression(new) else ("default",)
        if limit is None:
            if env in self.policy.protected:
                self.problems.append(_problem(
                    new, where, "max-step", "warning",
                    f"{flag.key} reaches {percent_text(step)}% more contexts in {env} in one change and no max_step applies",
                    f"set guardrails.max_step.{env} (or .default) in flagstone.yaml",
                ))  # fmt: skip
            return
        if step > limit:
            self.problems.append(_problem(
                new, where, "max-step", "error",
                f"{flag.key} reaches {percent_text(step)}% more contexts in {env} in one change; the limit is {percent_text(limit)} points",
                f"raise exposure by at most {percent_text(limit)} points per change (add an intermediate stage or split the change)",
            ))  # fmt: skip

    def scheduled_steps(
        self,
        flag: Flag,
        old_flag: Flag | None,
        old: ReleaseConfig | None,
        new: ReleaseConfig,
        env: str,
    ) -> None:
        """A scheduled stage (``at``) raises exposure later with no further change, so a
        jump a schedule will make is held to max_step too, unless the base already
        scheduled that time to reach as far."""
        limit = self.policy.step_limit(env)
        if limit is None:
            return
        old_off = old_flag.off_variation if old_flag else None
        reviewed = {at: shares for _, at, _, shares in _schedule_jumps(old, old_off, self.now)}
        for index, at, step, shares in _schedule_jumps(new, flag.off_variation, self.now):
            if step > limit and exposure_step(reviewed.get(at, {}), shares, flag.off_variation) > 0:
                self.problems.append(_problem(
                    new, ("default", "progression", "stages", index, "at"), "max-step", "error",
                    f"{flag.key}'s schedule reaches {percent_text(step)}% more contexts in {env} at {at}; the limit is {percent_text(limit)} points",
                    f"schedule steps of at most {percent_text(limit)} points (add an intermediate scheduled stage)",
                ))  # fmt: skip

    def bake(self, old: ReleaseConfig | None, new: ReleaseConfig, env: str) -> None:
        old_progression, new_progression = _progression(old), _progression(new)
        if old is None or old_progression is None or new_progression is None:
            return
        leaving = old_progression.active_stage(self.now)
        target = new_progression.current_stage
        if target is None or leaving is None or target.name == leaving.name:
            return
        scheduled_at = leaving.at if leaving.index > old_progression.current else None
        # An advance is a new stage that reaches more than the one being left, however
        # the stages are named or reordered in the same change (so adding, removing or
        # renaming stages is no way around the bake); going back needs no bake.
        if target.weight <= leaving.weight and set(target.reach_segments) <= set(
            leaving.reach_segments
        ):
            return
        leaving_now = new_progression.stage(leaving.name)
        where = ("default", "progression", "current")
        if leaving_now is not None and target.index > leaving_now.index + 1:
            skipped = [
                s.name for s in new_progression.stages if leaving_now.index < s.index < target.index
            ]
            self.problems.append(_problem(
                new, where, "skip-stage", "warning",
                f"{new.flag_key} in {env} advances {leaving.name} → {target.name}, skipping {', '.join(skipped)}",
                "advance one stage per change so each ring bakes",
            ))  # fmt: skip
        required = self.policy.bake_seconds(env, leaving)
        if required is None:
            return
        seconds, source = required
        entered = self._entered(leaving, scheduled_at, old.doc.rel)
        if entered is None:
            self.problems.append(_problem(
                new, where, "min-bake", "warning",
                f"cannot tell from git history when {new.flag_key} entered stage {leaving.name} in {env}",
                f"the stage must bake {duration_text(seconds)} ({source}); check by hand",
            ))  # fmt: skip
            return
        baked = self.now - entered
        if baked < seconds:
            ready = timestamp_text(entered + seconds)
            self.problems.append(_problem(
                new, where, "min-bake", "error",
                f"{new.flag_key} entered stage {leaving.name} in {env} at {timestamp_text(entered)}, "
                f"{duration_text(baked)} ago; it must bake {duration_text(seconds)} ({source}) before advancing to {target.name}",
                f"wait until {ready}, or keep current: {leaving.name}",
            ))  # fmt: skip

    def _entered(self, leaving: Stage, scheduled_at: float | None, path: str) -> float | None:
        if scheduled_at is not None:
            return scheduled_at
        try:
            entered = stage_entry_time(self.root, self.base, path, leaving.name)
        except GitError:
            return None
        return float(entered) if entered is not None else None

    def kill(self, old: ReleaseConfig | None, new: ReleaseConfig, env: str, flag: Flag) -> None:
        if env in self.policy.protected and old is not None and old.enabled and not new.enabled:
            self.problems.append(_problem(
                new, ("enabled",), "kill", "warning",
                f"{flag.key} is disabled in {env}: everyone gets {flag.off_variation}",
                "make sure this is intended; `flagstone enable` undoes it",
            ))  # fmt: skip

    def serving_values(self) -> None:
        if not self.policy.protect_serving_values:
            return
        reverse = {new: old for old, new in self.renames.items()}
        for key, flag in sorted(self.after.flags.items()):
            old_flag = self.before.flags.get(reverse.get(key, key))
            if old_flag is None:
                continue
            old_values = old_flag.variations
            for variation, value in flag.variations.items():
                if variation not in old_values or old_values[variation] == value:
                    continue
                serving = [
                    env
                    for env in self.policy.protected
                    if variation in serving_variations(old_flag, env)
                ]
                if serving:
                    self.problems.append(_problem(
                        flag, ("variations", variation), "serving-value", "error",
                        f"{key}: variation {variation} is served in {', '.join(serving)}; changing its value changes what live users get",
                        "add a new variation with the new value and roll it out, or stop serving this one first",
                    ))  # fmt: skip

    def dependencies(self) -> None:
        live = {k: f for k, f in self.after.flags.items() if not f.archived}
        for key, old_flag in self.before.flags.items():
            if old_flag.archived or (key in live) or key in self.renames:
                continue
            gone = "archived" if key in self.after.flags else "removed"
            for dependent in sorted(live.values(), key=lambda f: f.key):
                for index, prerequisite in enumerate(dependent.prerequisites):
                    if isinstance(prerequisite, Mapping) and prerequisite.get("flag") == key:
                        self.problems.append(_problem(
                            dependent, ("prerequisites", index, "flag"), "dependency", "error",
                            f"{key} is {gone} but {dependent.key} has it as a prerequisite",
                            f"remove the prerequisite from {dependent.key} first, or archive both",
                        ))  # fmt: skip


def check_change(root: Path, base: str | None = None, *, now: float | None = None) -> list[Problem]:
    """Guardrail findings for the change from ``base`` (default: merge-base with the
    default branch) to the working tree at ``root``."""
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    before = gitops.project_at(root, base_commit)
    after = read_project(root)
    if after.problems:
        # A file that cannot be read would make every rule silently pass.
        return list(after.problems)
    checker = _Checker(root, base_commit, before, after, time.time() if now is None else now)
    return checker.run()
