"""Semantic diff between two states of a flag repository, in rollout terms.

``diff_projects(before, after)`` compares two ``Project`` values (raw YAML data, so it
works on repositories that do not validate) and returns typed ``Change`` records: flags
and segments added or removed, a release enabled or disabled, variations, targets,
rules, the default, progression stages advanced or rolled back with the change in
exposure, schedules, ownership and delegation, segment membership. Files that do not
parse become ``file-invalid`` changes; on the new side their flag or segment is left out,
so a broken file never looks like a deleted flag, and a file fixed since the old side
reads as added (its old content is unknown).

Exposure of a progression stage is its percent (a stage without one keeps the percent
of the stage before it) plus the segment rings of every stage up to it, written
``"beta (1% + staff, beta-testers)"``; the ``exposure_delta`` of a change is the change
in percentage points of contexts reached by the rolled-out variation (segments are
named, not counted: their size is not known here).

Renderers: ``render_text``, ``render_markdown`` (a pull-request comment: protected
environments first, a one-line risk summary on top, collapsible sections) and
``render_json`` (shape ``flagstone.diff/1``, documented in docs/readme/review.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any

from flagstone import escape
from flagstone.model import Flag, Project, ProjectConfig, ReleaseConfig, Segment
from flagstone.render import View
from flagstone.rollout import (
    Progression,
    Stage,
    exposure_step,
    percent_text,
    read_progression,
    release_shares,
)
from flagstone.timestamps import parse_timestamp

DIFF_FORMAT = "flagstone.diff/1"

# Change kinds, in the order a reviewer reads them.
FILE_INVALID = "file-invalid"
PROJECT_CHANGED = "project-changed"
FLAG_ADDED = "flag-added"
FLAG_REMOVED = "flag-removed"
FLAG_RENAMED = "flag-renamed"
FLAG_ARCHIVED = "flag-archived"
FLAG_UNARCHIVED = "flag-unarchived"
FLAG_CHANGED = "flag-changed"
OWNER_CHANGED = "owner-changed"
DELEGATION_CHANGED = "delegation-changed"
VARIATION_ADDED = "variation-added"
VARIATION_REMOVED = "variation-removed"
VARIATION_CHANGED = "variation-changed"
OFF_VARIATION_CHANGED = "off-variation-changed"
PREREQUISITES_CHANGED = "prerequisites-changed"
RELEASE_ADDED = "release-added"
RELEASE_REMOVED = "release-removed"
ENABLED = "enabled"
DISABLED = "disabled"
TARGETS_ADDED = "targets-added"
TARGETS_REMOVED = "targets-removed"
RULE_ADDED = "rule-added"
RULE_REMOVED = "rule-removed"
RULES_REORDERED = "rules-reordered"
RULE_CHANGED = "rule-changed"
DEFAULT_CHANGED = "default-changed"
STAGE_ADVANCED = "stage-advanced"
STAGE_ROLLED_BACK = "stage-rolled-back"
STAGES_CHANGED = "stages-changed"
SCHEDULE_CHANGED = "schedule-changed"
SEGMENT_ADDED = "segment-added"
SEGMENT_REMOVED = "segment-removed"
SEGMENT_MEMBERSHIP = "segment-membership"
SEGMENT_RULES_CHANGED = "segment-rules-changed"
SEGMENT_CHANGED = "segment-changed"

CHANGE_KINDS = (
    FILE_INVALID, PROJECT_CHANGED, FLAG_ADDED, FLAG_REMOVED, FLAG_RENAMED, FLAG_ARCHIVED,
    FLAG_UNARCHIVED, FLAG_CHANGED, OWNER_CHANGED, DELEGATION_CHANGED, VARIATION_ADDED,
    VARIATION_REMOVED, VARIATION_CHANGED, OFF_VARIATION_CHANGED, PREREQUISITES_CHANGED,
    RELEASE_ADDED, RELEASE_REMOVED, ENABLED, DISABLED, TARGETS_ADDED, TARGETS_REMOVED,
    RULE_ADDED, RULE_REMOVED, RULES_REORDERED, RULE_CHANGED, DEFAULT_CHANGED, STAGE_ADVANCED,
    STAGE_ROLLED_BACK, STAGES_CHANGED, SCHEDULE_CHANGED, SEGMENT_ADDED, SEGMENT_REMOVED,
    SEGMENT_MEMBERSHIP, SEGMENT_RULES_CHANGED, SEGMENT_CHANGED,
)  # fmt: skip

# How a change moves who gets what: "raise" reaches more contexts with a non-off
# variation, "lower" fewer, "change" alters what some get, "none" serves the same.
RISKS = ("raise", "lower", "change", "none")


@dataclass(frozen=True, slots=True)
class Change:
    """One semantic change. ``environment`` is None for flag-wide and segment changes."""

    kind: str
    subject: str  # "flag", "segment" or "project"
    key: str  # flag or segment key; "" for the project file
    environment: str | None
    summary: str
    path: str
    risk: str = "change"
    exposure_delta: float | None = None  # percentage points of contexts; + reaches more
    before: Any = None
    after: Any = None
    # Environments a segment change reaches through the flags that use the segment.
    affects: tuple[str, ...] = ()

    def line(self) -> str:
        """``production: new-checkout: stage advanced …`` — one line for logs and text."""
        where = f"{self.environment}: " if self.environment else ""
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.summary}"


# --- helpers --------------------------------------------------------------------------------


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return Decimal(str(value))


def _signed(value: Decimal) -> str:
    return ("+" if value > 0 else "−" if value < 0 else "±") + percent_text(abs(value))


def _short(value: Any) -> str:
    """A compact, deterministic rendering of a YAML value for summaries."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _keys_text(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def protected_environments(config: ProjectConfig | None) -> list[str]:
    """Environments treated as production: ``guardrails.protected_environments``, else
    ``production`` when declared, else the last declared environment."""
    if config is None:
        return []
    declared = config.guardrails.get("protected_environments")
    environments = config.environments
    if isinstance(declared, list):
        return [str(e) for e in declared]
    if "production" in environments:
        return ["production"]
    return environments[-1:]


def environment_order(config: ProjectConfig | None) -> list[str]:
    """Protected environments first, then the others latest-declared first (closer to
    production by convention)."""
    protected = protected_environments(config)
    others = [e for e in reversed(config.environments if config else []) if e not in protected]
    return protected + others


# --- progression and split exposure -----------------------------------------------------------


NO_STAGE = Stage("no stage", -1, 0, (), (), None, None, None)


def current_stage(progression: Mapping[str, Any]) -> Stage:
    """The stage named by ``current`` (``NO_STAGE`` when unset or unknown)."""
    plan = read_progression(progression)
    return (plan.current_stage if plan else None) or NO_STAGE


def stage_labels(progression: Mapping[str, Any]) -> str:
    plan = read_progression(progression)
    return ", ".join(stage.label() for stage in (plan.stages if plan else ()))


def default_kind(default: Any) -> str:
    if isinstance(default, Mapping):
        if "progression" in default:
            return "progression"
        if "split" in default:
            return "split"
    return "variation"


def serve_text(serve: Any) -> str:
    """``on``, ``split on 50% / off 50%``, ``progression of on at beta (1% + staff)``."""
    if isinstance(serve, Mapping) and isinstance(serve.get("split"), Mapping):
        parts = [f"{k} {percent_text(_number(v) or 0)}%" for k, v in serve["split"].items()]
        return "split " + " / ".join(parts)
    if isinstance(serve, Mapping) and isinstance(serve.get("progression"), Mapping):
        progression = serve["progression"]
        return (
            f"progression of {progression.get('variation')} at {current_stage(progression).label()}"
        )
    return "nothing (off variation)" if serve is None else _short(serve)


def served_shares(
    release: ReleaseConfig | None, off_variation: str | None, *, at: float | None = None
) -> dict[str, Decimal]:
    """``flagstone.rollout.release_shares`` of a release file of the model."""
    return release_shares(release.data if release else None, off_variation, at=at)


# --- the diff -------------------------------------------------------------------------------


class _Differ:
    def __init__(
        self, before: Project, after: Project, renames: Mapping[str, str], labels: tuple[str, str]
    ) -> None:
        self.base_label, self.head_label = labels
        self.before = before
        self.after = after
        self.renames = dict(renames)
        self.changes: list[Change] = []
        self.broken_before = {p.path for p in before.problems}
        self.broken_after = {p.path for p in after.problems}

    def add(
        self,
        kind: str,
        subject: str,
        key: str,
        env: str | None,
        summary: str,
        path: str,
        **extra: Any,
    ) -> None:
        self.changes.append(Change(kind, subject, key, env, summary, path, **extra))

    def flag_change(
        self, kind: str, key: str, env: str | None, summary: str, path: str, **extra: Any
    ) -> None:
        self.add(kind, "flag", key, env, summary, path, **extra)

    def segment_change(self, kind: str, key: str, summary: str, path: str, **extra: Any) -> None:
        self.add(kind, "segment", key, None, summary, path, **extra)

    def broken(self, path: str) -> bool:
        """Whether ``path`` does not parse on the new side (so nothing is said about it)."""
        return path in self.broken_after

    def run(self) -> list[Change]:
        self.invalid_files()
        self.project_file()
        self.flags()
        self.segments()
        return self.changes

    def invalid_files(self) -> None:
        before = {(p.path, p.message) for p in self.before.problems}
        for problem in self.after.problems:
            if (problem.path, problem.message) not in before:
                self.add(
                    FILE_INVALID, "project", "", None,
                    f"file invalid at {self.head_label}: {problem.format_line()}", problem.path,
                )  # fmt: skip
        after = {p.path for p in self.after.problems}
        for problem in self.before.problems:
            if problem.path not in after:
                self.add(
                    FILE_INVALID, "project", "", None,
                    f"file invalid at {self.base_label} (fixed since): {problem.format_line()}", problem.path,
                    risk="none",
                )  # fmt: skip

    def project_file(self) -> None:
        old = self.before.config.data if self.before.config else {}
        new = self.after.config.data if self.after.config else {}
        if self.broken("flagstone.yaml"):
            return
        if self.before.config is None and self.after.config is not None:
            config = self.after.config
            summary = (
                f"project file added: {config.name}, environments {', '.join(config.environments)}"
            )
            self.add(PROJECT_CHANGED, "project", "", None, summary, "flagstone.yaml", risk="none")
            return
        for field in sorted(set(old) | set(new)):
            if old.get(field) == new.get(field):
                continue
            if field == "environments" and all(
                isinstance(side.get(field) or [], list) for side in (old, new)
            ):
                old_envs = self.before.config.environments if self.before.config else []
                new_envs = self.after.config.environments if self.after.config else []
                added = [e for e in new_envs if e not in old_envs]
                removed = [e for e in old_envs if e not in new_envs]
                parts = [f"+{e}" for e in added] + [f"−{e}" for e in removed]
                summary = f"environments {' '.join(parts) or 'reordered'}"
            elif (
                field in ("teams", "signing", "guardrails", "lint", "publish")
                and isinstance(new.get(field), Mapping)
                and isinstance(old.get(field), Mapping)
            ):
                summary = f"{field}: " + _mapping_delta(old[field], new[field])
            else:
                summary = f"{field}: {_short(old.get(field))} → {_short(new.get(field))}"
            self.add(
                PROJECT_CHANGED,
                "project",
                "",
                None,
                summary,
                "flagstone.yaml",
                before=old.get(field),
                after=new.get(field),
            )

    # flags ------------------------------------------------------------------------------

    def flags(self) -> None:
        old_flags, new_flags = self.before.flags, self.after.flags
        broken_flags = {
            _flag_of(p) for p in self.broken_after if _flag_of(p) and p.endswith("/flag.yaml")
        }
        renamed_to = {
            new: old
            for old, new in self.renames.items()
            if old in old_flags and new in new_flags and old not in new_flags
        }
        for key in sorted(set(old_flags) | set(new_flags)):
            if key in broken_flags:
                continue
            old, new = old_flags.get(key), new_flags.get(key)
            if old is new or (old is not None and new is not None and _same_files(old, new)):
                continue  # history walks share unchanged flags; equal files say nothing
            if old is None and new is not None and key in renamed_to:
                source = old_flags[renamed_to[key]]
                self.flag_change(
                    FLAG_RENAMED,
                    key,
                    None,
                    f"renamed from {source.key}",
                    new.doc.rel,
                    before=source.key,
                    after=key,
                )
                self.flag(source, new, key)
            elif old is None and new is not None:
                self.flag_change(FLAG_ADDED, key, None,
                    f"flag added: {new.name!r} ({new.kind}, owner {new.owner}, variations {', '.join(new.variations)})",
                    new.doc.rel, risk="none",
                )  # fmt: skip
                for env in _ordered_envs(self.after, new.releases):
                    self.release_added(new, key, env, new.releases[env])
            elif new is None and old is not None:
                if old.key in self.renames and self.renames[old.key] in new_flags:
                    continue
                self.flag_change(
                    FLAG_REMOVED,
                    key,
                    None,
                    f"flag removed: {old.name!r}",
                    old.doc.rel,
                    risk="change",
                )
            elif old is not None and new is not None:
                self.flag(old, new, key)

    def release_added(self, flag: Flag, key: str, env: str, release: ReleaseConfig) -> None:
        summary = f"release added: {_release_text(release)}"
        risk = _release_risk(release, flag)
        self.flag_change(RELEASE_ADDED, key, env, summary, release.doc.rel, risk=risk)

    def flag(self, old: Flag, new: Flag, key: str) -> None:
        path = new.doc.rel
        od, nd = old.data, new.data
        if old.archived != new.archived:
            kind = FLAG_ARCHIVED if new.archived else FLAG_UNARCHIVED
            self.flag_change(kind, key, None, "archived" if new.archived else "unarchived", path)
        if od.get("owner") != nd.get("owner"):
            self.flag_change(
                OWNER_CHANGED,
                key,
                None,
                f"owner {od.get('owner')} → {nd.get('owner')}",
                path,
                risk="none",
                before=od.get("owner"),
                after=nd.get("owner"),
            )
        old_delegate, new_delegate = old.delegate, new.delegate
        for env in sorted(set(old_delegate) | set(new_delegate)):
            if old_delegate.get(env) != new_delegate.get(env):
                was, now = old_delegate.get(env), new_delegate.get(env)
                summary = (
                    f"delegated to {now}" if was is None else
                    f"delegation to {was} removed (back to owner {new.owner})" if now is None else
                    f"delegation {was} → {now}"
                )  # fmt: skip
                self.flag_change(
                    DELEGATION_CHANGED,
                    key,
                    env,
                    summary,
                    path,
                    risk="none",
                    before=was,
                    after=now,
                )
        for field in ("name", "description", "kind", "type", "temporary", "expires", "tags"):
            if od.get(field) != nd.get(field):
                self.flag_change(
                    FLAG_CHANGED,
                    key,
                    None,
                    f"{field}: {_short(od.get(field))} → {_short(nd.get(field))}",
                    path,
                    risk="none",
                    before=od.get(field),
                    after=nd.get(field),
                )
        old_vars, new_vars = old.variations, new.variations
        for variation in new_vars:
            if variation not in old_vars:
                self.flag_change(
                    VARIATION_ADDED,
                    key,
                    None,
                    f"variation {variation} added ({_short(new_vars[variation])})",
                    path,
                    risk="none",
                    after=new_vars[variation],
                )
        for variation in old_vars:
            if variation not in new_vars:
                self.flag_change(
                    VARIATION_REMOVED,
                    key,
                    None,
                    f"variation {variation} removed (was {_short(old_vars[variation])})",
                    path,
                    before=old_vars[variation],
                )
            elif old_vars[variation] != new_vars[variation]:
                serving = [
                    env
                    for env in _ordered_envs(self.after, new.releases)
                    if variation in serving_variations(new, env)
                ]
                where = f" (served in {', '.join(serving)})" if serving else ""
                self.flag_change(VARIATION_CHANGED, key, None,
                    f"variation {variation} value {_short(old_vars[variation])} → {_short(new_vars[variation])}{where}",
                    path, before=old_vars[variation], after=new_vars[variation],
                )  # fmt: skip
        if old.off_variation != new.off_variation:
            self.flag_change(
                OFF_VARIATION_CHANGED,
                key,
                None,
                f"off variation {old.off_variation} → {new.off_variation}",
                path,
                before=old.off_variation,
                after=new.off_variation,
            )
        if old.prerequisites != new.prerequisites:
            self.flag_change(PREREQUISITES_CHANGED, key, None,
                f"prerequisites {_prerequisites_text(old.prerequisites)} → {_prerequisites_text(new.prerequisites)}",
                path, before=old.prerequisites, after=new.prerequisites,
            )  # fmt: skip
        for env in _ordered_envs(self.after, {**old.releases, **new.releases}):
            old_release, new_release = old.releases.get(env), new.releases.get(env)
            if self.broken(f"flags/{old.key}/{env}.yaml") or self.broken(f"flags/{key}/{env}.yaml"):
                continue
            if old_release is None and new_release is not None:
                self.release_added(new, key, env, new_release)
            elif new_release is None and old_release is not None:
                self.flag_change(
                    RELEASE_REMOVED,
                    key,
                    env,
                    f"release removed: now serves {new.off_variation} to everyone",
                    old_release.doc.rel,
                    risk="lower",
                )
            elif old_release is not None and new_release is not None:
                self.release(old, new, old_release, new_release, key, env)

    def release(
        self, old_flag: Flag, flag: Flag, old: ReleaseConfig, new: ReleaseConfig, key: str, env: str
    ) -> None:
        path = new.doc.rel
        if old.enabled != new.enabled:
            if new.enabled:
                self.flag_change(
                    ENABLED,
                    key,
                    env,
                    f"enabled: now serves {serve_text(new.default)} by default",
                    path,
                    risk="raise",
                    before=False,
                    after=True,
                )
            else:
                self.flag_change(
                    DISABLED,
                    key,
                    env,
                    f"disabled: everyone gets {flag.off_variation}",
                    path,
                    risk="lower",
                    before=True,
                    after=False,
                )
        self.targets(old, new, key, env, flag.off_variation)
        self.rules(old, new, key, env)
        self.default(old, new, key, env, flag)

    def targets(
        self, old: ReleaseConfig, new: ReleaseConfig, key: str, env: str, off_variation: str | None
    ) -> None:
        old_targets, new_targets = old.targets, new.targets
        for variation in list(new_targets) + [v for v in old_targets if v not in new_targets]:
            was, now = old_targets.get(variation, []), new_targets.get(variation, [])
            added = [k for k in now if k not in was]
            removed = [k for k in was if k not in now]
            if added:
                risk = "lower" if variation == off_variation else "raise"
                self.flag_change(
                    TARGETS_ADDED,
                    key,
                    env,
                    f"targets +{len(added)} to {variation}: {_keys_text(added)}",
                    new.doc.rel,
                    risk=risk,
                    after=added,
                )
            if removed:
                self.flag_change(
                    TARGETS_REMOVED,
                    key,
                    env,
                    f"targets −{len(removed)} from {variation}: {_keys_text(removed)}",
                    new.doc.rel,
                    after=removed,
                )

    def rules(self, old: ReleaseConfig, new: ReleaseConfig, key: str, env: str) -> None:
        old_rules, new_rules = _named(old.rules), _named(new.rules)
        path = new.doc.rel
        for name, rule in new_rules.items():
            if name not in old_rules:
                self.flag_change(
                    RULE_ADDED,
                    key,
                    env,
                    f"rule {name!r} added: if {_short(rule.get('if'))} serve {serve_text(rule.get('serve'))}",
                    path,
                    after=rule,
                )
        for name, rule in old_rules.items():
            if name not in new_rules:
                self.flag_change(
                    RULE_REMOVED,
                    key,
                    env,
                    f"rule {name!r} removed (was serve {serve_text(rule.get('serve'))})",
                    path,
                    before=rule,
                )
        common_old = [n for n in old_rules if n in new_rules]
        common_new = [n for n in new_rules if n in old_rules]
        if common_old != common_new:
            self.flag_change(
                RULES_REORDERED,
                key,
                env,
                f"rules reordered: {', '.join(common_old)} → {', '.join(common_new)}",
                path,
                before=common_old,
                after=common_new,
            )
        for name in common_new:
            was, now = old_rules[name], new_rules[name]
            if was == now:
                continue
            parts = []
            if was.get("if") != now.get("if"):
                parts.append(f"condition {_short(was.get('if'))} → {_short(now.get('if'))}")
            if was.get("serve") != now.get("serve"):
                parts.append(
                    f"serve {serve_text(was.get('serve'))} → {serve_text(now.get('serve'))}"
                )
            other = sorted(
                k
                for k in set(was) | set(now)
                if k not in ("if", "serve", "name") and was.get(k) != now.get(k)
            )
            parts += [f"{k} changed" for k in other]
            self.flag_change(
                RULE_CHANGED,
                key,
                env,
                f"rule {name!r}: " + "; ".join(parts),
                path,
                before=was,
                after=now,
            )

    def default(
        self, old: ReleaseConfig, new: ReleaseConfig, key: str, env: str, flag: Flag
    ) -> None:
        was, now = old.default, new.default
        if was == now:
            return
        path = new.doc.rel
        off = flag.off_variation
        step = (
            exposure_step(served_shares(old, off), served_shares(new, off), off)
            if new.enabled
            else Decimal(0)
        )
        if default_kind(was) == default_kind(now) == "progression":
            self.progression(was["progression"], now["progression"], key, env, path)
            return
        delta = float(step) if step else None
        risk = "raise" if step > 0 else "change"
        text = f"default {serve_text(was)} → {serve_text(now)}"
        if step > 0:
            text += f": about +{percent_text(step)}% of contexts get a new variation"
        self.flag_change(
            DEFAULT_CHANGED,
            key,
            env,
            text,
            path,
            risk=risk,
            exposure_delta=delta,
            before=was,
            after=now,
        )

    def progression(self, was: Any, now: Any, key: str, env: str, path: str) -> None:
        if not isinstance(was, Mapping) or not isinstance(now, Mapping):
            self.flag_change(
                DEFAULT_CHANGED,
                key,
                env,
                "progression changed",
                path,
                before=was,
                after=now,
            )
            return
        for field in ("variation", "baseline", "bucket_by", "seed"):
            if was.get(field) != now.get(field):
                self.flag_change(
                    DEFAULT_CHANGED,
                    key,
                    env,
                    f"progression {field} {_short(was.get(field))} → {_short(now.get(field))}",
                    path,
                    before=was.get(field),
                    after=now.get(field),
                )
        self.stages(was, now, key, env, path)
        old_at = {name: at for name, at in (shape for shape in _stage_schedules(was))}
        new_at = {name: at for name, at in (shape for shape in _stage_schedules(now))}
        for name in list(new_at) + [n for n in old_at if n not in new_at]:
            if old_at.get(name) != new_at.get(name) and (old_at.get(name) or new_at.get(name)):
                before, after = old_at.get(name), new_at.get(name)
                summary = (
                    f"stage {name} scheduled at {after}" if before is None else
                    f"stage {name} schedule removed (was {before})" if after is None else
                    f"stage {name} rescheduled {before} → {after}"
                )  # fmt: skip
                risk = _schedule_risk(was, now, before, after)
                self.flag_change(
                    SCHEDULE_CHANGED, key, env, summary, path, risk=risk, before=before, after=after
                )
        old_reach, new_reach = current_stage(was), current_stage(now)
        if was.get("current") != now.get("current"):
            delta = new_reach.percent - old_reach.percent
            forward = new_reach.index > old_reach.index
            kind = STAGE_ADVANCED if forward else STAGE_ROLLED_BACK
            verb = "advanced" if forward else "rolled back"
            text = f"stage {verb} {old_reach.label()} → {new_reach.label()}"
            added_segments = [
                s for s in new_reach.reach_segments if s not in old_reach.reach_segments
            ]
            removed_segments = [
                s for s in old_reach.reach_segments if s not in new_reach.reach_segments
            ]
            effects = []
            if delta:
                effects.append(f"about {_signed(delta)}% of contexts")
            if added_segments:
                effects.append(f"plus segment {', '.join(added_segments)}")
            if removed_segments:
                effects.append(f"minus segment {', '.join(removed_segments)}")
            if effects:
                text += ": " + ", ".join(effects)
            risk = (
                "raise"
                if delta > 0 or added_segments
                else "lower"
                if delta < 0 or removed_segments
                else "none"
            )
            self.flag_change(
                kind,
                key,
                env,
                text,
                path,
                risk=risk,
                exposure_delta=float(delta),
                before=was.get("current"),
                after=now.get("current"),
            )

    def stages(
        self, was: Mapping[str, Any], now: Mapping[str, Any], key: str, env: str, path: str
    ) -> None:
        old_stages, new_stages = _stage_shapes(was), _stage_shapes(now)
        if old_stages == new_stages:
            return
        old_reach, new_reach = current_stage(was), current_stage(now)
        delta = (
            new_reach.percent - old_reach.percent
            if was.get("current") == now.get("current")
            else Decimal(0)
        )
        if [s.get("name") for s in old_stages] != [s.get("name") for s in new_stages]:
            summary = f"stages {stage_labels(was)} → {stage_labels(now)}"
        else:
            parts = []
            for old_stage, new_stage in zip(old_stages, new_stages, strict=True):
                for field in sorted(set(old_stage) | set(new_stage)):
                    if old_stage.get(field) != new_stage.get(field):
                        parts.append(
                            f"stage {new_stage.get('name')} {field} "
                            f"{_short(old_stage.get(field))} → {_short(new_stage.get(field))}"
                        )
            summary = "; ".join(parts)
        if delta:
            summary += f" (current stage {new_reach.label()}: about {_signed(delta)}% of contexts)"
        risk = "raise" if delta > 0 else "lower" if delta < 0 else "change"
        self.flag_change(STAGES_CHANGED, key, env, summary, path, risk=risk,
            exposure_delta=float(delta) if delta else None, before=was.get("stages"), after=now.get("stages"),
        )  # fmt: skip

    # segments ---------------------------------------------------------------------------

    def segments(self) -> None:
        old_segments, new_segments = self.before.segments, self.after.segments
        for key in sorted(set(old_segments) | set(new_segments)):
            if self.broken(f"segments/{key}.yaml"):
                continue
            old, new = old_segments.get(key), new_segments.get(key)
            if old is new:
                continue
            if old is None and new is not None:
                self.segment_change(
                    SEGMENT_ADDED,
                    key,
                    f"segment added: {_segment_text(new)}",
                    new.doc.rel,
                    risk="none",
                )
            elif new is None and old is not None:
                self.segment_change(SEGMENT_REMOVED, key, "segment removed", old.doc.rel)
            elif old is not None and new is not None:
                self.segment(old, new)

    def segment(self, old: Segment, new: Segment) -> None:
        first = len(self.changes)
        self.segment_fields(old, new)
        if len(self.changes) == first:
            return  # unchanged: who uses it (a walk over every flag) would annotate nothing
        users = segment_users(self.after, new.key)
        if not users:
            return
        environments = tuple(
            e
            for e in environment_order(self.after.config)
            if any(e in envs for envs in users.values())
        )
        used_by = ", ".join(f"{flag} ({', '.join(envs)})" for flag, envs in users.items())
        for index in range(first, len(self.changes)):
            change = self.changes[index]
            if change.kind in (SEGMENT_MEMBERSHIP, SEGMENT_RULES_CHANGED):
                self.changes[index] = replace(
                    change, summary=f"{change.summary} — used by {used_by}", affects=environments
                )

    def segment_fields(self, old: Segment, new: Segment) -> None:
        path, key = new.doc.rel, new.key
        for field, label in (("include", "include"), ("exclude", "exclude")):
            was, now = getattr(old, field), getattr(new, field)
            added = [k for k in now if k not in was]
            removed = [k for k in was if k not in now]
            if added or removed:
                detail = "; ".join(
                    part for part in (
                        f"added {_keys_text(added)}" if added else "",
                        f"removed {_keys_text(removed)}" if removed else "",
                    ) if part
                )  # fmt: skip
                risk = (
                    "raise"
                    if (field == "include" and added) or (field == "exclude" and removed)
                    else "lower"
                )
                self.segment_change(
                    SEGMENT_MEMBERSHIP,
                    key,
                    f"{label} +{len(added)}/−{len(removed)} ({detail})",
                    path,
                    risk=risk,
                    before=was,
                    after=now,
                )
        if old.rules != new.rules:
            added_rules = [r for r in new.rules if r not in old.rules]
            removed_rules = [r for r in old.rules if r not in new.rules]
            self.segment_change(SEGMENT_RULES_CHANGED, key, f"rules +{len(added_rules)}/−{len(removed_rules)}"
                + "".join(f"; added {_short(r)}" for r in added_rules)
                + "".join(f"; removed {_short(r)}" for r in removed_rules),
                path, before=old.rules, after=new.rules,
            )  # fmt: skip
        for field in ("name", "description", "owner"):
            if old.data.get(field) != new.data.get(field):
                self.segment_change(
                    SEGMENT_CHANGED,
                    key,
                    f"{field}: {_short(old.data.get(field))} → {_short(new.data.get(field))}",
                    path,
                    risk="none",
                )


def _same_files(old: Flag, new: Flag) -> bool:
    """Whether two flags of one key hold the same data in the same files (``flag()``
    compares nothing else, so it would report nothing)."""
    return (
        old.key == new.key
        and old.doc.data == new.doc.data
        and old.releases.keys() == new.releases.keys()
        and all(
            release.doc.data == new.releases[env].doc.data for env, release in old.releases.items()
        )
    )


def _flag_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "flags" else None


def _ordered_envs(project: Project, releases: Mapping[str, Any]) -> list[str]:
    order = environment_order(project.config)
    return [e for e in order if e in releases] + sorted(e for e in releases if e not in order)


def _named(rules: Iterable[Any]) -> dict[str, Mapping[str, Any]]:
    named: dict[str, Mapping[str, Any]] = {}
    for index, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        name = str(rule.get("name", f"#{index + 1}"))
        while name in named:  # duplicate names are a validation error; keep both visible
            name += "'"
        named[name] = rule
    return named


def _stage_shapes(progression: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Stages without their schedules (``at`` changes are reported on their own)."""
    stages = progression.get("stages")
    return [
        {k: v for k, v in stage.items() if k != "at"}
        if isinstance(stage, Mapping)
        else {"name": stage}
        for stage in (stages if isinstance(stages, list) else [])
    ]


def _schedule_risk(was: Mapping[str, Any], now: Mapping[str, Any], before: Any, after: Any) -> str:
    """``raise`` when the new schedule reaches more at its time than the old one did
    (scheduled sooner, or anew), ``lower`` when the old schedule reached more at its
    time (later, or removed), else ``change``."""
    old_plan, new_plan = read_progression(was), read_progression(now)
    if old_plan is None or new_plan is None:
        return "change"

    def reaches_more(more: Progression, less: Progression, at: Any) -> bool:
        instant = parse_timestamp(at) if isinstance(at, str) else None
        if instant is None:
            return False
        high, low = more.active_stage(instant), less.active_stage(instant)
        rings = set(high.reach_segments if high else ()) - set(low.reach_segments if low else ())
        step = exposure_step(less.shares(instant), more.shares(instant), more.baseline)
        return step > 0 or bool(rings)

    if reaches_more(new_plan, old_plan, after):
        return "raise"
    if reaches_more(old_plan, new_plan, before):
        return "lower"
    return "change"


def _stage_schedules(progression: Mapping[str, Any]) -> list[tuple[str, Any]]:
    stages = progression.get("stages")
    return [
        (str(stage.get("name")), stage.get("at"))
        for stage in (stages if isinstance(stages, list) else [])
        if isinstance(stage, Mapping)
    ]


def _prerequisites_text(prerequisites: Sequence[Any]) -> str:
    if not prerequisites:
        return "none"
    return ", ".join(
        f"{p.get('flag')}={p.get('variation')}" if isinstance(p, Mapping) else _short(p)
        for p in prerequisites
    )


def _release_text(release: ReleaseConfig) -> str:
    state = "enabled" if release.enabled else "disabled"
    return f"{state}, default {serve_text(release.default)}"


def _release_risk(release: ReleaseConfig, flag: Flag) -> str:
    if not release.enabled:
        return "none"
    shares = served_shares(release, flag.off_variation)
    return "raise" if exposure_step({}, shares, flag.off_variation) > 0 else "change"


def _segment_text(segment: Segment) -> str:
    return f"owner {segment.owner}, include {len(segment.include)}, exclude {len(segment.exclude)}, {len(segment.rules)} rules"


def _mapping_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    added = [k for k in new if k not in old]
    removed = [k for k in old if k not in new]
    changed = [k for k in new if k in old and old[k] != new[k]]
    parts = [f"+{k}" for k in added] + [f"−{k}" for k in removed] + [f"~{k}" for k in changed]
    return " ".join(parts) if parts else "reordered"


def _mentions_segment(value: Any, keys: set[str]) -> bool:
    """Whether a condition (or any YAML value) refers to one of the segments ``keys``."""
    if isinstance(value, Mapping):
        if value.get("segment") in keys:
            return True
        return any(_mentions_segment(v, keys) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_segment(v, keys) for v in value)
    return False


def segment_users(project: Project, key: str) -> dict[str, list[str]]:
    """Flags whose enabled releases use segment ``key`` (directly, or through segments
    whose rules refer to it), with the environments: ``{flag: [env, …]}``."""
    keys = {key}
    grown = True
    while grown:  # segments that include other segments by condition
        more = {
            k
            for k, seg in project.segments.items()
            if k not in keys and _mentions_segment(seg.rules, keys)
        }
        grown = bool(more)
        keys |= more
    order = environment_order(project.config)
    users: dict[str, list[str]] = {}
    for flag_key, flag in project.flags.items():
        for env in order:
            release = flag.releases.get(env)
            if release is None or not release.enabled:
                continue
            default = release.default
            progression = default.get("progression") if isinstance(default, Mapping) else None
            stages = progression.get("stages") if isinstance(progression, Mapping) else None
            in_stages = isinstance(stages, list) and any(
                isinstance(stage, Mapping) and keys & {str(s) for s in stage.get("segments") or []}
                for stage in stages
            )
            if in_stages or _mentions_segment(release.rules, keys):
                users.setdefault(flag_key, []).append(env)
    return users


def serving_variations(flag: Flag, env: str) -> set[str]:
    """Every variation the flag can serve in ``env``: the off variation always (it is
    served when disabled or a prerequisite fails), targets, rules and the default."""
    served = {flag.off_variation} if flag.off_variation else set()
    release = flag.releases.get(env)
    if release is None or not release.enabled:
        return served
    served.update(release.targets)
    for rule in release.rules:
        if isinstance(rule, Mapping):
            served.update(_serve_variations(rule.get("serve")))
    served.update(_serve_variations(release.default))
    return served


def _serve_variations(serve: Any) -> set[str]:
    if isinstance(serve, Mapping):
        if isinstance(serve.get("split"), Mapping):
            return {str(k) for k, v in serve["split"].items() if _number(v)}
        progression = serve.get("progression")
        if isinstance(progression, Mapping):
            return {str(progression.get("variation")), str(progression.get("baseline"))}
        return set()
    return {str(serve)} if serve is not None else set()


def diff_projects(
    before: Project,
    after: Project,
    *,
    renames: Mapping[str, str] | None = None,
    labels: tuple[str, str] = ("base", "head"),
) -> list[Change]:
    """Every semantic change from ``before`` to ``after``; ``renames`` maps old flag keys
    to new ones (git's rename detection) so a moved flag reads as renamed; ``labels``
    name the two sides in messages about invalid files."""
    if renames is None:
        renames = detect_flag_renames(before, after)
    return _Differ(before, after, renames, labels).run()


def detect_flag_renames(before: Project, after: Project) -> dict[str, str]:
    """Flags that vanished while a flag with the same definition appeared."""
    gone = [k for k in before.flags if k not in after.flags]
    new = [k for k in after.flags if k not in before.flags]
    renames: dict[str, str] = {}
    for old_key in gone:
        for new_key in new:
            if (
                new_key not in renames.values()
                and before.flags[old_key].data == after.flags[new_key].data
            ):
                renames[old_key] = new_key
                break
    return renames


# --- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffReport:
    """A diff with what it compared, ready to render."""

    base: str
    head: str
    changes: list[Change]
    protected: list[str]
    environments: list[str]
    titles: dict[tuple[str, str], str] = dataclasses.field(
        default_factory=dict
    )  # (subject, key) -> name

    def groups(self) -> list[tuple[str, list[Change]]]:
        """Changes grouped: environments (protected first), then flag-wide, segments and
        project changes."""
        order = self.environments + sorted(
            {
                c.environment
                for c in self.changes
                if c.environment and c.environment not in self.environments
            }
        )
        groups = [(env, [c for c in self.changes if c.environment == env]) for env in order]
        groups.append(
            (
                "all environments",
                [c for c in self.changes if c.environment is None and c.subject == "flag"],
            )
        )
        groups.append(("segments", [c for c in self.changes if c.subject == "segment"]))
        groups.append(("project", [c for c in self.changes if c.subject == "project"]))
        return [(title, items) for title, items in groups if items]

    def risk_summary(self) -> str:
        """One line: what the change does to production, most dangerous first."""
        protected = [
            c
            for c in self.changes
            if c.environment in self.protected or set(c.affects) & set(self.protected)
        ]
        raises = sum(1 for c in protected if c.risk == "raise")
        disabled = sum(1 for c in protected if c.kind == DISABLED)
        values = sum(1 for c in self.changes if c.kind == VARIATION_CHANGED)
        removed = sum(1 for c in self.changes if c.kind in (FLAG_REMOVED, FLAG_ARCHIVED))
        invalid = sum(1 for c in self.changes if c.kind == FILE_INVALID and c.risk != "none")
        label = "/".join(self.protected) or "production"
        parts = []
        if raises:
            parts.append(
                f"{raises} {label} change{'s' if raises != 1 else ''} raise{'s' if raises == 1 else ''} exposure"
            )
        if disabled:
            parts.append(f"{disabled} flag{'s' if disabled != 1 else ''} disabled in {label}")
        if values:
            parts.append(f"{values} variation value{'s' if values != 1 else ''} changed")
        if removed:
            parts.append(f"{removed} flag{'s' if removed != 1 else ''} removed or archived")
        if invalid:
            parts.append(f"{invalid} invalid file{'s' if invalid != 1 else ''}")
        if parts:
            return "⚠ " + "; ".join(parts)
        other = len(protected)
        if not self.changes:
            return "no flag changes"
        return f"✓ no {label} exposure increase ({other} {label} change{'s' if other != 1 else ''}, {len(self.changes)} in all)"


def make_report(
    before: Project, after: Project, changes: list[Change], *, base: str, head: str
) -> DiffReport:
    config = after.config or before.config
    titles: dict[tuple[str, str], str] = {}
    for side in (before, after):  # the new name wins
        titles.update({("flag", k): f.name for k, f in side.flags.items()})
        titles.update(
            {("segment", k): str(s.data.get("name", k)) for k, s in side.segments.items()}
        )
    return DiffReport(
        base, head, changes, protected_environments(config), environment_order(config), titles
    )


DIFF_VIEW: View[DiffReport] = View("diff")


@DIFF_VIEW.format("text")
def render_text(report: DiffReport) -> str:
    """Changes grouped by environment, one line each, escaped for a terminal."""
    if not report.changes:
        return escape.terminal(f"{report.base}..{report.head}: no flag changes") + "\n"
    lines = [
        f"{report.base}..{report.head}: {len(report.changes)} change{'s' if len(report.changes) != 1 else ''}",
        report.risk_summary(),
    ]
    for title, items in report.groups():
        lines.append(f"{title}:")
        for change in items:
            what = f"{change.key}: " if change.key else ""
            lines.append(f"  {what}{change.summary}")
    return "".join(escape.terminal(line) + "\n" for line in lines)


_md = escape.markdown


@DIFF_VIEW.format("markdown")
def render_markdown(report: DiffReport) -> str:
    """A pull-request comment: risk line, then one collapsible section per group
    (protected environments open)."""
    lines = [
        f"### Flagstone: {len(report.changes)} flag change{'s' if len(report.changes) != 1 else ''}",
        "",
    ]
    lines += [
        f"**{_md(report.risk_summary())}**",
        "",
        f"<sub>{escape.markdown_code(report.base)} → {escape.markdown_code(report.head)}</sub>",
        "",
    ]
    for title, items in report.groups():
        is_open = " open" if title in report.protected else ""
        lines.append(
            f"<details{is_open}><summary><b>{_md(title)}</b> — {len(items)} change{'s' if len(items) != 1 else ''}</summary>"
        )
        lines += ["", "| | what | change |", "|---|---|---|"]
        for change in items:
            mark = {"raise": "⬆", "lower": "⬇", "change": "✎", "none": "·"}.get(change.risk, "")
            what = escape.markdown_code(change.key or change.path)
            name = report.titles.get((change.subject, change.key))
            if name and name != change.key:
                what += f" {_md(name)}"
            lines.append(f"| {mark} | {what} | {_md(change.summary)} |")
        lines += ["", "</details>", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def report_document(report: DiffReport) -> dict[str, Any]:
    changes = [asdict(change) for change in report.changes]
    return {
        "format": DIFF_FORMAT,
        "base": report.base,
        "head": report.head,
        "risk_summary": report.risk_summary(),
        "protected_environments": report.protected,
        "changes": changes,
    }


@DIFF_VIEW.format("json")
def render_json(report: DiffReport) -> str:
    return json.dumps(report_document(report), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
