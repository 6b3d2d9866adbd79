"""Rollout guardrails, judged by exposure: checks on a change (base revision → working
tree, or the working tree → an edit about to be written) against the policy in
``flagstone.yaml``::

    guardrails:
      max_step: {default: 50, production: 25}   # percentage points one change may add
      min_bake: {default: 1h, production: 24h}  # time an exposure is in force before it grows
      restore_window: 14d                       # re-enabling to a recent exposure is allowed
      protect_serving_values: true              # no edits to a value a protected env serves
      protected_environments: [production]      # default: production, else the last one

**Exposure.** For every flag and environment, the guardrails compute what the release
file serves over time (``flagstone.rollout``: the stage in force now and at every
scheduled ``at`` ahead), before and after the change:

* the *share* of contexts each variation gets from the default (a split's percents, a
  progression's active stage percent, 100% of a fixed variation or, when disabled, of
  the off variation);
* the *audiences* of unknown size served a variation other than the off variation:
  target keys, each rule (identified by its condition) and each segment of the active
  stage's ring. A segment's membership is not knowable from the repository (its rules
  match live contexts), so it is never counted in points: an audience that is new, or
  whose segment gained members (keys included, exclusions removed, rules changed, also
  through segments that refer to it), is an increase of unknown size. It is held to the
  bake like any increase and shown by ``diff``; ``max_step`` measures percentages only.

An **increase** is any variation other than the off variation gaining share, or a new
or widened audience: raising the current stage's percent, advancing ``current``,
scheduling a later stage sooner (or anew), adding targets, rules or stage segments,
widening a segment in use, changing the baseline or the off variation. Every increase
is judged; decreases (a kill, a rollback) never are.

Errors (exit 1), each with the rule and the fix:

* ``max-step`` — now, or at a scheduled moment the base did not already have, some
  variation other than the off variation gains more than ``max_step`` points;
* ``min-bake`` — an increase comes before the exposure in force has baked: its stage's
  own ``bake``, else ``min_bake``, counted from when that stage (at its current reach)
  came into force: the commit on the base's first-parent history that set it, or its
  ``at`` when a schedule made it active. A scheduled stage whose ``at`` comes before
  the previous stage's start plus its bake is an error too ("earliest allowed: …");
* ``serving-value`` — a variation's value changes while a protected environment can
  serve it;
* ``dependency`` — a flag is removed or archived while another live flag has it as a
  prerequisite (always on).

**Restore**: an increase back to an exposure the release file had on the base's
first-parent history (the main branch) within ``restore_window`` (default 14 days) —
re-enabling after a kill, undoing a rollback — is allowed with an ``info`` notice
instead of step and bake errors.

Warnings: exposure increases in a protected environment with no ``max_step`` for it,
advancing more than one stage at once, a kill (disabling) in a protected environment,
a bake that git history cannot date.

``check_change`` judges a change for CI; ``check_edit`` judges an edit before it is
written (the edit commands refuse on its errors unless ``--force``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from flagstone import gitops
from flagstone.diff import (
    detect_flag_renames,
    protected_environments,
    serving_variations,
)
from flagstone.errors import GitError, LoadError
from flagstone.loader import loads
from flagstone.model import (
    FLAGS_DIR,
    PROJECT_FILE,
    SEGMENTS_DIR,
    Flag,
    Project,
    ReleaseConfig,
    Segment,
    read_project,
)
from flagstone.problems import Problem
from flagstone.rollout import (
    Stage,
    exposure_step,
    percent_text,
    progression_spec,
    read_progression,
    release_shares,
    release_timeline,
)
from flagstone.timestamps import duration_seconds
from flagstone.toolcache import DocumentCache
from flagstone.worktree_change import (
    narrowed_by_base,
    repeats_a_stage_name,
    segments_mentioned,
)

RULE_PREFIX = "guardrail"
DEFAULT_RESTORE_WINDOW = "14d"
Shares = Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class Policy:
    max_step: Mapping[str, float]
    min_bake: Mapping[str, str]
    protect_serving_values: bool
    protected: list[str]
    restore_window: int = 14 * 86400

    @classmethod
    def from_project(cls, project: Project) -> Policy:
        config = project.config
        section = config.guardrails if config else {}
        window = section.get("restore_window", DEFAULT_RESTORE_WINDOW)
        seconds = duration_seconds(window) if isinstance(window, str) else None
        return cls(
            max_step=dict(section.get("max_step") or {}),
            min_bake=dict(section.get("min_bake") or {}),
            protect_serving_values=bool(section.get("protect_serving_values", False)),
            protected=protected_environments(config),
            restore_window=seconds if seconds is not None else 14 * 86400,
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


def _instant_text(seconds: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, as ``flagstone.compile`` writes it (imported on first
    use: it loads the engine, which most runs of ``check-change`` never need)."""
    from flagstone.compile import timestamp_text

    return timestamp_text(seconds) or ""


def duration_text(seconds: float) -> str:
    """``1d``, ``1d10h``, ``3h10m``, ``45m``: the two largest units, zeros left out."""
    minutes = int(seconds) // 60
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    while parts and parts[0][0] == 0:
        parts.pop(0)
    text = "".join(f"{value}{unit}" for value, unit in parts[:2] if value)
    return text or "0m"


# --- exposure --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """A named audience of unknown size served ``variation``: ``kind`` is ``target``,
    ``rule`` or ``segment``; ``identity`` tells two apart (a rule by its condition)."""

    variation: str
    kind: str
    identity: str
    label: str = field(compare=False)
    segments: frozenset[str] = field(default=frozenset(), compare=False)


def _mentioned_segments(value: Any) -> set[str]:
    """Segment keys a condition (or any YAML value) refers to."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        if isinstance(value.get("segment"), str):
            found.add(value["segment"])
        for child in value.values():
            found |= _mentioned_segments(child)
    elif isinstance(value, list):
        for child in value:
            found |= _mentioned_segments(child)
    return found


def _served(serve: Any) -> set[str]:
    if isinstance(serve, Mapping):
        split = serve.get("split")
        if isinstance(split, Mapping):
            return {str(k) for k, v in split.items() if release_shares_positive(v)}
        return set()
    return {str(serve)} if serve is not None else set()


def release_shares_positive(percent: Any) -> bool:
    return isinstance(percent, (int, float)) and not isinstance(percent, bool) and percent > 0


def audiences(
    data: Mapping[str, Any] | None, off: str | None, stage: Stage | None, variation: str | None
) -> tuple[frozenset[Audience], frozenset[Audience]]:
    """The named audiences a release file serves something other than ``off`` while
    ``stage`` of its progression (rolling out ``variation``) is in force, and those it
    holds back on ``off`` (targets and rules serving it), which shield everything below.

    A rule's audience is who matches it and no off-serving rule above it, so its
    identity is its condition and the conditions of the off-serving rules above."""
    if data is None or not bool(data.get("enabled", False)):
        return frozenset(), frozenset()
    served: set[Audience] = set()
    held: set[Audience] = set()
    targets = data.get("targets")
    for variation_key, keys in targets.items() if isinstance(targets, Mapping) else []:
        for key in keys if isinstance(keys, list) else []:
            entry = Audience(str(variation_key), "target", str(key), f"target {key}")
            (held if str(variation_key) == off else served).add(entry)
    shields: list[Any] = []
    rules = data.get("rules")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, Mapping):
            continue
        condition = rule.get("if")
        name = rule.get("name", f"#{index + 1}")
        mentioned = frozenset(_mentioned_segments(condition))
        gives = _served(rule.get("serve"))
        if off is not None and off in gives:
            identity = json.dumps(condition, sort_keys=True, default=str)
            held.add(Audience(off, "rule", identity, f"rule {name!r}", mentioned))
            shields.append(condition)
        identity = json.dumps({"if": condition, "below": shields}, sort_keys=True, default=str)
        for given in gives - {off or ""}:
            served.add(Audience(given, "rule", identity, f"rule {name!r}", mentioned))
    if stage is not None and variation is not None and variation != off:
        for segment in stage.reach_segments:
            served.add(
                Audience(variation, "segment", segment, f"segment {segment}", frozenset({segment}))
            )
    return frozenset(served), frozenset(held)


@dataclass(frozen=True, slots=True)
class Exposure:
    """What a release file serves from ``at`` on."""

    at: float
    stage: Stage | None
    shares: Shares
    audiences: frozenset[Audience]
    held_back: frozenset[Audience] = frozenset()


def exposure_timeline(
    data: Mapping[str, Any] | None, off: str | None, since: float
) -> list[Exposure]:
    """The exposure in force at ``since`` and at every later scheduled change."""
    plan = read_progression(progression_spec(data)) if data is not None else None
    variation = plan.variation if plan is not None else None
    return [
        Exposure(point.at, point.stage, point.shares, *audiences(data, off, point.stage, variation))
        for point in release_timeline(data, off, since)
    ]


def widened_segments(before: Project, after: Project) -> set[str]:
    """Segments that may match more contexts after than before: keys included, exclusions
    removed or rules changed, and segments whose rules refer to one of those."""
    widened = set()
    for key, new in after.segments.items():
        old = before.segments.get(key)
        if old is None:
            continue
        if (
            set(new.include) - set(old.include)
            or set(old.exclude) - set(new.exclude)
            or old.rules != new.rules
        ):
            widened.add(key)
    return _closure(widened, after.segments)


def _closure(keys: set[str], segments: Mapping[str, Segment]) -> set[str]:
    grown = True
    while grown:
        more = {
            k
            for k, segment in segments.items()
            if k not in keys and _mentioned_segments(segment.rules) & keys
        }
        grown = bool(more)
        keys |= more
    return keys


def _increase(
    before: Exposure, after: Exposure, off: str | None, widened: set[str]
) -> tuple[Decimal, list[Audience]]:
    """Points gained by the most-gaining variation other than ``off``, and the new or
    widened audiences."""
    step = exposure_step(before.shares, after.shares, off)
    grown = [
        audience
        for audience in sorted(after.audiences, key=_audience_order)
        if audience not in before.audiences or audience.segments & widened
    ]
    if after.audiences or exposure_step({}, after.shares, off) > 0:
        # Who was held back on the off variation and no longer is falls through to
        # something else.
        grown += [
            replace(audience, label=f"{audience.label} no longer holds back")
            for audience in sorted(before.held_back - after.held_back, key=_audience_order)
        ]
    return step, grown


def _audience_order(audience: Audience) -> tuple[str, str, str]:
    return (audience.kind, audience.identity, audience.variation)


def _same_point(left: Exposure, right: Exposure) -> bool:
    """Same moment, same stage, same shares and ring (targets and rules are the same at
    every point of one timeline, so they do not tell schedules apart)."""
    return (left.at, _stage_shape(left.stage), left.shares) == (
        right.at,
        _stage_shape(right.stage),
        right.shares,
    )


def _stage_shape(stage: Stage | None) -> tuple[str, tuple[str, ...]] | None:
    return (stage.name, stage.reach_segments) if stage is not None else None


def _covered(
    point: int, timeline: list[Exposure], references: Iterable[list[Exposure]], off: str | None
) -> bool:
    """Whether a reference timeline already made a jump containing this one: from no
    higher to no lower (at whatever time; when it happens is the bake's business)."""
    start, end = timeline[point - 1], timeline[point]
    for reference in references:
        for index in range(1, len(reference)):
            earlier, later = reference[index - 1], reference[index]
            if (
                exposure_step(later.shares, end.shares, off) <= 0
                and exposure_step(start.shares, earlier.shares, off) <= 0
                and set(_ring(end)) <= set(_ring(later))
            ):
                return True
    return False


def _in_force(timeline: list[Exposure], at: float) -> Exposure:
    """The point of ``timeline`` in force at ``at``."""
    found = timeline[0]
    for point in timeline:
        if point.at <= at:
            found = point
    return found


def _not_above(point: Exposure, references: Iterable[list[Exposure]], off: str | None) -> bool:
    """Whether a reference timeline already reaches as far at the same moment: then the
    change serves no one anything new then (a rollback ahead of a schedule, say)."""
    for reference in references:
        then = _in_force(reference, point.at)
        if exposure_step(then.shares, point.shares, off) <= 0 and set(_ring(point)) <= set(
            _ring(then)
        ):
            return True
    return False


def _ring(point: Exposure) -> tuple[str, ...]:
    return point.stage.reach_segments if point.stage is not None else ()


# --- git history -----------------------------------------------------------------------------


def _release_history(
    root: Path, base: str, path: str
) -> Iterable[tuple[str, int, Mapping[str, Any] | None]]:
    """``(commit, committer time, release data)`` of every commit on ``base``'s
    first-parent history that touched ``path``, newest first; data None when the file
    is missing or unreadable there (the walk stops)."""
    prefix = gitops.repo_prefix(root)
    top = f"{prefix}/{path}" if prefix else path
    out = gitops.git_text(
        root, "log", "--first-parent", "--format=%H %ct", base, "--", f":(top){top}"
    )
    with gitops.BlobReader(root) as reader:
        for line in out.splitlines():
            sha, stamp = line.split()
            data = reader.read(f"{sha}:{top}")
            if data is None:
                yield sha, int(stamp), None
                return
            try:
                document = loads(data, rel=path)
            except LoadError:
                yield sha, int(stamp), None
                return
            yield sha, int(stamp), document.data if isinstance(document.data, dict) else {}


def entry_time(
    root: Path, base: str, path: str, same: Callable[[Mapping[str, Any]], bool]
) -> int | None:
    """The committer time of the oldest commit of the unbroken run, on ``base``'s
    first-parent history, in which the release file at ``path`` satisfies ``same``.
    None when the base's version does not."""
    entered = None
    for _, stamp, data in _release_history(root, base, path):
        if data is None or not same(data):
            break
        entered = stamp
    return entered


def stage_entry_time(root: Path, base: str, path: str, stage: str) -> int | None:
    """When ``current`` was set to ``stage`` in the release file at ``path``: the committer
    time of the oldest commit of the unbroken run, on ``base``'s first-parent history, in
    which the file says ``current: stage``. None when the base does not say so."""

    def says_current(data: Mapping[str, Any]) -> bool:
        spec = progression_spec(data)
        return spec is not None and spec.get("current") == stage

    return entry_time(root, base, path, says_current)


# --- the checker -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Pair:
    """One flag in one environment, before and after."""

    flag: Flag
    env: str
    old: ReleaseConfig | None
    new: ReleaseConfig
    off: str | None  # the off variation left out of steps (None when the change swaps it)
    timeline_before: list[Exposure]
    timeline_after: list[Exposure]

    @property
    def before_now(self) -> Exposure:
        return self.timeline_before[0]

    @property
    def after_now(self) -> Exposure:
        return self.timeline_after[0]


class _Checker:
    def __init__(
        self, root: Path, base: str | None, before: Project, after: Project, now: float
    ) -> None:
        self.root = root
        self.base = base
        self.before = before
        self.after = after
        self.now = now
        self.policy = Policy.from_project(after)
        self.problems: list[Problem] = []
        self.renames = detect_flag_renames(before, after)
        self.widened = widened_segments(before, after)

    def run(self) -> list[Problem]:
        self.policy_environments()
        reverse = {new: old for old, new in self.renames.items()}
        for key, flag in sorted(self.after.flags.items()):
            old_flag = self.before.flags.get(reverse.get(key, key))
            for env in self.after.environments:
                release = flag.releases.get(env)
                if release is None:
                    continue
                old = old_flag.releases.get(env) if old_flag else None
                off = flag.off_variation
                old_off = old_flag.off_variation if old_flag else off
                if old is not None and old_off == off and self._silent(old, release):
                    continue
                pair = _Pair(
                    flag, env, old, release,
                    # The off variation is left out only when it stays the off variation:
                    # naming the variation being rolled out "off" must not hide its step.
                    off if old_off == off else None,
                    exposure_timeline(old.data if old else None, old_off, self.now),
                    exposure_timeline(release.data, off, self.now),
                )  # fmt: skip
                self.judge(pair)
                self.kill(pair)
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
        for field_name in ("max_step", "min_bake"):
            for env in section.get(field_name) or {}:
                if env != "default" and env not in declared:
                    self.problems.append(config.doc.problem(
                        ("guardrails", field_name, env), f"guardrails.{field_name} names undeclared environment {env!r}",
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

    # -- judging one flag in one environment --

    def judge(self, pair: _Pair) -> None:
        step, grown = _increase(pair.before_now, pair.after_now, pair.off, self.widened)
        restored_from = None
        if step > 0 or grown:
            restored_from = self.restored(pair)
        if restored_from is not None:
            sha, stamp, timeline = restored_from
            self.problems.append(_problem(
                pair.new, self._where(pair), "restore", "info",
                f"{pair.flag.key} in {pair.env} returns to the exposure it had at "
                f"{_instant_text(stamp)} (commit {sha[:12]}), within restore_window "
                f"{duration_text(self.policy.restore_window)}: step and bake are not checked",
                "restoring a recent exposure skips step and bake; make sure what brought it down is fixed",
            ))  # fmt: skip
            self.schedule(pair, [pair.timeline_before, timeline])
            return
        if step > 0:
            self.step(pair, step)
        if step > 0 or grown:
            self.bake(pair, step, grown)
        self.skipped_stages(pair)
        if step <= 0 and not grown and self._unchanged(pair):
            # Every point of an unchanged timeline is in the base's: schedule() would
            # find nothing, after a walk of the file's git history (one per scheduled
            # release: thousands of git runs on a large repository).
            return
        self.schedule(pair, [pair.timeline_before])

    def _silent(self, old: ReleaseConfig, new: ReleaseConfig) -> bool:
        """Whether judging this release could find nothing, so its exposure timelines
        need not be worked out: it is as it was (with its off variation), none of the
        segments it could refer to was widened, and its progression names each stage
        once (``skipped_stages`` can warn about an unchanged release that repeats a
        name). Judged anyway, such a release finds nothing: no step, no new audience,
        every scheduled point in the base's timeline."""
        if old.data != new.data or repeats_a_stage_name(new.data):
            return False
        return not (self.widened and segments_mentioned(new.data) & self.widened)

    @staticmethod
    def _unchanged(pair: _Pair) -> bool:
        """Whether the change leaves this release and its off variation as they were."""
        return pair.old is not None and pair.off is not None and pair.old.data == pair.new.data

    def _where(self, pair: _Pair) -> tuple[str | int, ...]:
        old, new = pair.old, pair.new
        if new.enabled and (old is None or old.enabled):
            return (
                ("default", "progression", "current")
                if progression_spec(new.data)
                else ("default",)
            )
        return ("enabled",)

    def step(self, pair: _Pair, step: Decimal) -> None:
        limit = self.policy.step_limit(pair.env)
        where = self._where(pair)
        key, env = pair.flag.key, pair.env
        if limit is None:
            if env in self.policy.protected:
                self.problems.append(_problem(
                    pair.new, where, "max-step", "warning",
                    f"{key} reaches {percent_text(step)}% more contexts in {env} in one change and no max_step applies",
                    f"set guardrails.max_step.{env} (or .default) in flagstone.yaml",
                ))  # fmt: skip
            return
        if step > limit:
            self.problems.append(_problem(
                pair.new, where, "max-step", "error",
                f"{key} reaches {percent_text(step)}% more contexts in {env} in one change; the limit is {percent_text(limit)} points",
                self._step_fix(pair, limit),
            ))  # fmt: skip

    def _step_fix(self, pair: _Pair, limit: Decimal) -> str:
        """Name the furthest stage the limit allows, when the change moves a progression."""
        plan = read_progression(progression_spec(pair.new.data))
        if plan is not None and pair.old is not None and pair.old.enabled:
            shares = pair.before_now.shares
            allowed = [
                stage for stage in plan.stages
                if exposure_step(shares, plan.shares_of(stage), pair.off) <= limit
                and exposure_step(shares, plan.shares_of(stage), pair.off) > 0
            ]  # fmt: skip
            if allowed:
                return f"advance to {allowed[-1].name!r} first (at most {percent_text(limit)} points per change)"
        return f"raise exposure by at most {percent_text(limit)} points per change (add an intermediate stage or split the change)"

    def skipped_stages(self, pair: _Pair) -> None:
        old_plan = read_progression(progression_spec(pair.old.data)) if pair.old else None
        new_plan = read_progression(progression_spec(pair.new.data))
        if old_plan is None or new_plan is None:
            return
        leaving, target = old_plan.active_stage(self.now), new_plan.current_stage
        if leaving is None or target is None or target.name == leaving.name:
            return
        if target.weight <= leaving.weight and set(target.reach_segments) <= set(
            leaving.reach_segments
        ):
            return
        leaving_now = new_plan.stage(leaving.name)
        if leaving_now is not None and target.index > leaving_now.index + 1:
            skipped = [
                s.name for s in new_plan.stages if leaving_now.index < s.index < target.index
            ]
            self.problems.append(_problem(
                pair.new, ("default", "progression", "current"), "skip-stage", "warning",
                f"{pair.flag.key} in {pair.env} advances {leaving.name} → {target.name}, skipping {', '.join(skipped)}",
                "advance one stage per change so each ring bakes",
            ))  # fmt: skip

    def _in_force_since(self, pair: _Pair) -> tuple[float | None, Stage | None]:
        """When the exposure in force before the change came into force, and its stage."""
        old = pair.old
        if old is None:
            return None, None
        plan = read_progression(progression_spec(old.data))
        stage = plan.active_stage(self.now) if plan is not None and old.enabled else None
        if plan is not None and stage is not None and stage.index > plan.current:
            return stage.at, stage  # a schedule made it active
        if self.base is None:
            return None, stage
        shares = release_shares(old.data, pair.flag.off_variation)
        if plan is not None and stage is not None:
            name, weight, ring = stage.name, stage.weight, stage.reach_segments

            def same(data: Mapping[str, Any]) -> bool:
                then = read_progression(progression_spec(data))
                current = then.current_stage if then is not None else None
                return (
                    bool(data.get("enabled", False))
                    and current is not None
                    and (current.name, current.weight, current.reach_segments)
                    == (name, weight, ring)
                )
        else:

            def same(data: Mapping[str, Any]) -> bool:
                return release_shares(data, pair.flag.off_variation) == shares

        try:
            entered = entry_time(self.root, self.base, old.doc.rel, same)
        except GitError:
            return None, stage
        return (float(entered) if entered is not None else None), stage

    def bake(self, pair: _Pair, step: Decimal, grown: list[Audience]) -> None:
        before = pair.before_now
        nothing_before = (
            not before.audiences and exposure_step({}, before.shares, pair.flag.off_variation) == 0
        )
        if pair.old is None or not pair.old.enabled or nothing_before:
            return  # a first exposure: there is nothing to bake yet
        entered, stage = self._in_force_since(pair)
        required = self.policy.bake_seconds(pair.env, stage)
        if required is None:
            return
        seconds, source = required
        key, env = pair.flag.key, pair.env
        where = self._where(pair)
        new_plan = read_progression(progression_spec(pair.new.data))
        target = new_plan.current_stage if new_plan else None
        advancing = stage is not None and target is not None and target.name != stage.name
        what = f"stage {stage.name}" if stage is not None else "its current exposure"
        if entered is None:
            self.problems.append(_problem(
                pair.new, where, "min-bake", "warning",
                f"cannot tell from git history when {key} entered {what} in {env}",
                f"it must bake {duration_text(seconds)} ({source}); check by hand",
            ))  # fmt: skip
            return
        baked = self.now - entered
        if baked >= seconds:
            return
        ready = _instant_text(entered + seconds)
        if advancing and stage is not None and target is not None:
            goal, fix = (
                f"advancing to {target.name}",
                f"wait until {ready}, or keep current: {stage.name}",
            )
        else:
            grew = [a.label for a in grown[:3]]
            goal = "raising its exposure" + (f" ({', '.join(grew)})" if grew and step <= 0 else "")
            fix = f"wait until {ready} (earliest allowed), or keep the exposure as it is"
        self.problems.append(_problem(
            pair.new, where, "min-bake", "error",
            f"{key} entered {what} in {env} at {_instant_text(entered)}, "
            f"{duration_text(baked)} ago; it must bake {duration_text(seconds)} ({source}) before {goal}",
            fix,
        ))  # fmt: skip

    def schedule(self, pair: _Pair, references: list[list[Exposure]]) -> None:
        """Every increase a schedule makes later is judged as if it were a change then:
        its step against max_step, and the stage before it against its bake."""
        timeline = pair.timeline_after
        limit = self.policy.step_limit(pair.env)
        start: float | None = None
        for index in range(1, len(timeline)):
            earlier, point = timeline[index - 1], timeline[index]
            if index == 1:
                start = self._first_start(pair)
            step, grown = _increase(earlier, point, pair.off, set())
            stage = point.stage
            if stage is None or stage.at_text is None:
                start = point.at
                continue
            if (step > 0 or grown) and not _not_above(point, references, pair.off):
                where = ("default", "progression", "stages", stage.index, "at")
                key, env = pair.flag.key, pair.env
                covered = _covered(index, timeline, references, pair.off)
                if limit is not None and step > limit and not covered:
                    self.problems.append(_problem(
                        pair.new, where, "max-step", "error",
                        f"{key}'s schedule reaches {percent_text(step)}% more contexts in {env} at {stage.at_text}; the limit is {percent_text(limit)} points",
                        f"schedule steps of at most {percent_text(limit)} points (add an intermediate scheduled stage)",
                    ))  # fmt: skip
                required = self.policy.bake_seconds(env, earlier.stage)
                if required and start is not None and start + required[0] > point.at:
                    seconds, source = required
                    previous = earlier.stage.name if earlier.stage else "the exposure before it"
                    self.problems.append(_problem(
                        pair.new, where, "min-bake", "error",
                        f"{key}'s stage {stage.name} is scheduled in {env} at {stage.at_text}, "
                        f"{duration_text(max(point.at - start, 0))} after {previous} starts ({_instant_text(start)}); "
                        f"{previous} must bake {duration_text(seconds)} ({source}) first",
                        f"earliest allowed: {_instant_text(start + seconds)}",
                    ))  # fmt: skip
            start = point.at

    def _first_start(self, pair: _Pair) -> float | None:
        """When the exposure in force now (after the change) started: now when the
        change sets it, else when it came into force before."""
        if _same_point(pair.before_now, pair.after_now):
            return self._in_force_since(pair)[0]
        return self.now

    def restored(self, pair: _Pair) -> tuple[str, int, list[Exposure]] | None:
        """A recent state of the release file on the base's history whose exposure is at
        least the one after the change: ``(commit, time, its timeline)``."""
        if self.base is None or pair.old is None:
            return None
        window_start = self.now - self.policy.restore_window
        after = pair.after_now
        later = self.now
        try:
            for sha, stamp, data in _release_history(self.root, self.base, pair.old.doc.rel):
                if data is None or later <= window_start:
                    return None
                since = max(float(stamp), window_start)
                timeline = exposure_timeline(data, pair.flag.off_variation, since)
                for point in timeline:
                    if point.at >= later:
                        break
                    step, grown = _increase(point, after, pair.off, self.widened)
                    if step <= 0 and not grown:
                        return (
                            sha,
                            stamp,
                            exposure_timeline(data, pair.flag.off_variation, self.now),
                        )
                later = float(stamp)
        except GitError:
            return None
        return None

    def kill(self, pair: _Pair) -> None:
        old, new = pair.old, pair.new
        if (
            pair.env in self.policy.protected
            and old is not None
            and old.enabled
            and not new.enabled
        ):
            self.problems.append(_problem(
                new, ("enabled",), "kill", "warning",
                f"{pair.flag.key} is disabled in {pair.env}: everyone gets {pair.flag.off_variation}",
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


def check_change(
    root: Path,
    base: str | None = None,
    *,
    now: float | None = None,
    documents: DocumentCache | None = None,
) -> list[Problem]:
    """Guardrail findings for the change from ``base`` (default: merge-base with the
    default branch) to the working tree at ``root``. ``documents``: the cache of
    ``flagstone.toolcache`` (the base revision's files are cached by blob id in it too)."""
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    cache = documents.cache if documents is not None else None
    before = gitops.project_at(root, base_commit, cache=cache)
    narrowed = narrowed_by_base(root, base_commit, before, cache)
    if narrowed is not None:
        return findings(root, base_commit, *narrowed, now=now)
    return findings(root, base_commit, before, read_project(root, documents=documents), now=now)


def findings(
    root: Path, base_commit: str, before: Project, after: Project, *, now: float | None = None
) -> list[Problem]:
    """Guardrail findings for the change from ``before`` (the project at ``base_commit``)
    to ``after`` (the working tree): both whole, or both narrowed to what the change
    touches (``flagstone.worktree_change``)."""
    if after.problems:
        # A file that cannot be read would make every rule silently pass.
        return list(after.problems)
    checker = _Checker(root, base_commit, before, after, time.time() if now is None else now)
    return checker.run()


def _key(problem: Problem) -> tuple[str, str, str]:
    return (problem.path, problem.rule, problem.message)


def edit_findings(
    root: Path, current: Project, edited: Project, *, now: float | None = None
) -> list[Problem]:
    """The guardrail findings an edit adds: the checks CI will run (base → edited
    repository) that the working tree as it is (base → ``current``) does not already
    have. Outside git, or without a base, the working tree is the base."""
    moment = time.time() if now is None else now
    try:
        base: str | None = gitops.default_base(root)
    except GitError:
        base = None
    if base is not None:
        try:
            before = gitops.project_at(root, base)
        except GitError:
            base, before = None, current
    else:
        before = current
    known = {_key(p) for p in _Checker(root, base, before, current, moment).run()}
    return [p for p in _Checker(root, base, before, edited, moment).run() if _key(p) not in known]


def check_edit(root: Path, texts: Mapping[str, str], *, now: float | None = None) -> list[Problem]:
    """The guardrail findings that writing ``texts`` (repository-relative path → new
    content) into the repository at ``root`` would add, judged as ``check-change``
    will judge them. Nothing is written to ``root``. Errors in the result are what the
    edit commands refuse (unless ``--force``); warnings and ``info`` notices are for
    the person editing."""
    current = read_project(root)
    with tempfile.TemporaryDirectory(prefix="flagstone-guard-") as scratch:
        copy = Path(scratch)
        for name in (PROJECT_FILE, FLAGS_DIR, SEGMENTS_DIR):
            source = root / name
            if source.is_dir():
                shutil.copytree(source, copy / name)
            elif source.is_file():
                shutil.copy2(source, copy / name)
        for rel, text in texts.items():
            target = copy / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="")
        edited = read_project(copy)
        if edited.problems:
            return list(edited.problems)
        return edit_findings(root, current, edited, now=now)
