"""``flagstone status``: every flag at a glance, as plain data.

For each live flag: kind, owner, delegates, expiry (and whether it is past it or stale),
and per environment:

* **state** — ``on`` (enabled), ``off`` (disabled or no release file, never switched on
  there), ``killed`` (disabled after having been enabled there: the last enable/disable
  change in the history was a disable) or ``overridden`` (an emergency override forces
  it off right now; only when the overrides were read, see ``overrides``);
* what the default serves, the **stage** in force (the later of ``current`` and any
  scheduled stage that came due) and the **exposure**: the percent of contexts reaching
  the default that get a variation other than the off variation; what comes on top of
  it, which no percent of the release file can measure, is listed in ``also``: the
  segments the stage in force reaches, the number of keys targeted to another
  variation, and the rules that serve one;
* the **next stage** and when it starts (its ``at``, or "after bake" when it waits for a
  pull request), and the **bake remaining** before the next stage may start (the stage's
  ``bake`` or ``guardrails.min_bake``, from the commit that set ``current``);
* the **last change**: commit, date, pull request, authors and summary, from the audit log.

``project_status`` returns ``FlagStatus`` values; ``STATUS_VIEW`` (the ``flagstone.render``
registry) renders them as ``text``, ``json`` and ``markdown``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from flagstone import escape
from flagstone.compile import duration_seconds
from flagstone.diff import DISABLED, ENABLED, serve_text, served_shares
from flagstone.errors import GitError, UsageError
from flagstone.model import Flag, Project, read_project
from flagstone.render import View
from flagstone.rollout import progression_spec, read_progression, release_shares

STATUS_FORMAT = "flagstone.status/1"
STALE_AFTER_DAYS = 90  # default of status.stale_after_days in flagstone.yaml


@dataclass(frozen=True, slots=True)
class LastChange:
    commit: str
    date: str
    pull_request: int | None
    authors: list[str]
    summary: str


@dataclass(frozen=True, slots=True)
class NextStage:
    name: str
    exposure: float
    at: str | None  # scheduled start; None: advanced by pull request


@dataclass(frozen=True, slots=True)
class AlsoExposed:
    """Who gets a variation other than the off variation besides the default's percent
    (contexts the release file names rather than counts)."""

    segments: list[str] = field(default_factory=list)  # reached by the stage in force
    targets: int = 0  # keys individually targeted to another variation
    rules: list[str] = field(default_factory=list)  # rules serving another variation

    def text(self) -> str:
        parts = list(self.segments)
        if self.targets:
            parts.append(f"{self.targets} target{'s' if self.targets != 1 else ''}")
        if self.rules:
            parts.append(f"{len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}")
        return ", ".join(parts) or "-"


@dataclass(frozen=True, slots=True)
class EnvironmentStatus:
    environment: str
    state: str  # on | off | killed | overridden
    serves: str
    stage: str | None
    exposure: float  # percent of contexts reaching the default not on the off variation
    next_stage: NextStage | None
    bake_remaining_seconds: int | None
    owner: str | None  # who approves changes here: the delegate, else the flag's owner
    last_change: LastChange | None
    also: AlsoExposed = field(default_factory=AlsoExposed)  # on top of ``exposure``


@dataclass(frozen=True, slots=True)
class FlagStatus:
    key: str
    name: str
    kind: str
    owner: str | None
    delegates: dict[str, str]
    temporary: bool
    expires: str | None
    expired: bool
    stale: bool  # temporary and unchanged for status.stale_after_days
    environments: list[EnvironmentStatus] = field(default_factory=list)


def stale_after_days(project: Project) -> int:
    """``status.stale_after_days`` of flagstone.yaml (default 90): a temporary flag with
    no change for that many days is stale. A bad value (which validate reports too) is
    a UsageError naming its place."""
    config = project.config
    section = config.data.get("status", {}) if config is not None else {}
    value = (
        section.get("stale_after_days", STALE_AFTER_DAYS)
        if isinstance(section, Mapping)
        else section
    )
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    assert config is not None  # a value came from it
    where = ("status", "stale_after_days") if isinstance(section, Mapping) else ("status",)
    line, col = config.doc.position(where)
    raise UsageError(
        f"{config.doc.rel}:{line}:{col}: status.stale_after_days must be a whole number of "
        f"days, 1 or more (not {value!r})"
    )


def _float(value: Decimal) -> float:
    return float(value)


def _exposure(flag: Flag, env: str, now: float) -> float:
    shares = served_shares(flag.releases.get(env), flag.off_variation, at=now)
    off = shares.get(flag.off_variation or "", Decimal(0))
    return _float(sum(shares.values(), Decimal(0)) - off)


def _also_exposed(flag: Flag, env: str, now: float) -> AlsoExposed:
    release = flag.releases.get(env)
    if release is None or not release.enabled:
        return AlsoExposed()
    data = release.data
    off = flag.off_variation or ""
    plan = read_progression(progression_spec(data))
    active = plan.active_stage(now) if plan is not None else None
    targets = data.get("targets")
    targeted = 0
    if isinstance(targets, Mapping):
        targeted = sum(
            len(keys)
            for variation, keys in targets.items()
            if str(variation) != off and isinstance(keys, list)
        )
    rules = data.get("rules")
    serving = []
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, Mapping):
            continue
        shares = release_shares({"enabled": True, "default": rule.get("serve")}, off)
        if any(share > 0 for variation, share in shares.items() if variation != off):
            serving.append(str(rule.get("name") or f"rule {index + 1}"))
    return AlsoExposed(
        segments=list(active.reach_segments) if active is not None else [],
        targets=targeted,
        rules=serving,
    )


def _policy_bake(project: Project, env: str) -> int | None:
    section = project.config.guardrails if project.config else {}
    min_bake = section.get("min_bake") if isinstance(section, Mapping) else None
    if not isinstance(min_bake, Mapping):
        return None
    value = min_bake.get(env, min_bake.get("default"))
    return duration_seconds(value) if isinstance(value, str) else None


def _stage_details(
    project: Project, flag: Flag, env: str, now: float, entered: Callable[[str, str], int | None]
) -> tuple[str | None, NextStage | None, int | None]:
    release = flag.releases.get(env)
    plan = read_progression(progression_spec(release.data)) if release is not None else None
    if plan is None or release is None:
        return None, None, None
    active = plan.active_stage(now)
    index = active.index if active is not None else -1
    following = plan.stages[index + 1] if index + 1 < len(plan.stages) else None
    next_stage = None
    if following is not None:
        next_stage = NextStage(following.name, float(following.percent), following.at_text)
    bake_left = None
    if active is not None and following is not None:
        bake = active.bake if active.bake is not None else _policy_bake(project, env)
        if bake:
            start = entered(release.doc.rel, active.name)
            if start is not None:
                bake_left = max(0, int(start + bake - now))
    return (active.name if active is not None else None), next_stage, bake_left


def _history(root: Path) -> list[Any]:
    from flagstone import auditlog, gitops

    try:
        return auditlog.audit_log(root, gitops.default_branch(root) or "HEAD")
    except GitError:
        return []  # not a git repository (or no commit yet): no history to show


def _entry_time(root: Path) -> Callable[[str, str], int | None]:
    from flagstone.guardrails import stage_entry_time

    cache: dict[tuple[str, str], int | None] = {}

    def entered(rel: str, stage: str) -> int | None:
        if (rel, stage) not in cache:
            try:
                cache[(rel, stage)] = stage_entry_time(root, "HEAD", rel, stage)
            except GitError:
                cache[(rel, stage)] = None
        return cache[(rel, stage)]

    return entered


def project_status(
    root: Path,
    *,
    environment: str | None = None,
    team: str | None = None,
    now: float | None = None,
    overrides: Mapping[str, Sequence[str]] | None = None,
    history: bool = True,
) -> list[FlagStatus]:
    """Every live flag's status (``environment``/``team`` narrow it down).

    ``overrides`` maps an environment to the flags an emergency override forces off now
    (the caller reads them from the store); ``history=False`` skips git (no last change,
    no killed/off distinction, no bake remaining)."""
    project = read_project(root)
    now = time.time() if now is None else now
    environments = list(project.environments)
    if environment is not None:
        if environment not in environments:
            raise UsageError(
                f"unknown environment {environment!r} (environments: {', '.join(environments)})"
            )
        environments = [environment]
    teams = project.config.teams if project.config else {}
    if team is not None and team not in teams:
        raise UsageError(f"unknown team {team!r} (teams: {', '.join(sorted(teams)) or 'none'})")
    entries = _history(root) if history else []
    entered = _entry_time(root) if history else (lambda rel, stage: None)
    by_flag: dict[str, list[Any]] = {}
    for entry in entries:
        if entry.subject == "flag":
            by_flag.setdefault(entry.key, []).append(entry)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    stale_after = stale_after_days(project) * 86400
    result = []
    for key in sorted(project.flags):
        flag = project.flags[key]
        if flag.archived:
            continue
        delegates = {env: str(t) for env, t in flag.delegate.items()}
        if team is not None and flag.owner != team and team not in delegates.values():
            continue
        expires = flag.expires
        try:
            expired = bool(expires) and dt.date.fromisoformat(str(expires)) < today
        except ValueError:
            expired = False
        history_of = by_flag.get(key, [])
        last_any = history_of[-1].timestamp if history_of else None
        stale = bool(flag.temporary and last_any is not None and now - last_any > stale_after)
        status = FlagStatus(
            key=key,
            name=flag.name,
            kind=flag.kind,
            owner=flag.owner,
            delegates=delegates,
            temporary=flag.temporary,
            expires=str(expires) if expires else None,
            expired=expired,
            stale=stale,
        )
        for env in environments:
            release = flag.releases.get(env)
            env_entries = [e for e in history_of if e.environment in (env, None)]
            switches = [
                e for e in history_of if e.environment == env and e.kind in (ENABLED, DISABLED)
            ]
            if key in (overrides or {}).get(env, ()):
                state = "overridden"
            elif release is not None and release.enabled:
                state = "on"
            elif switches and switches[-1].kind == DISABLED:
                state = "killed"
            else:
                state = "off"
            stage, next_stage, bake_left = _stage_details(project, flag, env, now, entered)
            last = env_entries[-1] if env_entries else None
            status.environments.append(
                EnvironmentStatus(
                    environment=env,
                    state=state,
                    serves=serve_text(release.default)
                    if release and release.enabled
                    else (f"{flag.off_variation} (off variation)"),
                    stage=stage,
                    exposure=0.0 if state == "overridden" else _exposure(flag, env, now),
                    next_stage=next_stage,
                    bake_remaining_seconds=bake_left,
                    owner=flag.owner_for(env),
                    last_change=LastChange(
                        commit=last.commit,
                        date=last.date,
                        pull_request=last.pull_request,
                        authors=list(last.authors),
                        summary=last.summary,
                    )
                    if last is not None
                    else None,
                    also=AlsoExposed() if state == "overridden" else _also_exposed(flag, env, now),
                )
            )
        result.append(status)
    return result


@dataclass(frozen=True, slots=True)
class LiveOverrides:
    """The flags an emergency override forces off now, per environment, and a one-line
    note for each part that could not be read (the caller shows it; status goes on)."""

    forced: dict[str, list[str]]
    notes: list[str]


def live_overrides(
    root: Path, environments: Sequence[str], now: float | None = None
) -> LiveOverrides:
    """The emergency overrides in force, read (and verified) from the publish target.
    Without emergency keys nothing is read; an environment whose overrides cannot be
    read or verified is left out. Either way a note says so."""
    from flagstone.emergency import emergency_keyring, read_overrides
    from flagstone.errors import FlagstoneError
    from flagstone.publish import open_target

    project = read_project(root)
    try:
        keyring = emergency_keyring(project)
    except UsageError as error:
        return LiveOverrides({}, [f"emergency overrides not read: {error.message}"])
    try:
        store = open_target(project, None)
    except FlagstoneError as error:
        return LiveOverrides({}, [f"emergency overrides not read: {error.message}"])
    moment = time.time() if now is None else now
    found: dict[str, list[str]] = {}
    notes: list[str] = []
    for env in environments:
        try:
            current = read_overrides(
                store, env, keyring, project.config.name if project.config else ""
            )
        except FlagstoneError as error:
            notes.append(f"{env}: emergency overrides not read: {error.message}")
            continue
        overrides = current.overrides
        if overrides is not None:
            found[env] = sorted(overrides.live(moment))
    return LiveOverrides(found, notes)


# --- rendering --------------------------------------------------------------------------------


def _duration(seconds: int) -> str:
    if seconds <= 0:
        return "done"
    hours, minutes = divmod(seconds // 60, 60)
    days, hours = divmod(hours, 24)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes and not days else "",
    ]
    return "".join(parts) or "<1m"


def _percent(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "%"


def _cells(flag: FlagStatus, env: EnvironmentStatus) -> list[str]:
    stage = env.stage or "-"
    nxt = "-"
    if env.next_stage is not None:
        when = env.next_stage.at or "after bake/PR"
        nxt = f"{env.next_stage.name} ({_percent(env.next_stage.exposure)}) {when}"
    bake = _duration(env.bake_remaining_seconds) if env.bake_remaining_seconds is not None else "-"
    change = "-"
    if env.last_change is not None:
        pr = f" #{env.last_change.pull_request}" if env.last_change.pull_request else ""
        change = f"{env.last_change.date[:10]} {env.last_change.commit[:8]}{pr}"
    expiry = flag.expires or "-"
    if flag.expired:
        expiry += " (EXPIRED)"
    elif flag.stale:
        expiry += " (stale)"
    return [
        flag.key,
        flag.kind,
        env.owner or "-",
        env.environment,
        env.state,
        stage,
        _percent(env.exposure),
        env.also.text(),
        nxt,
        bake,
        expiry,
        change,
    ]


_HEADER = ["flag", "kind", "owner", "env", "state", "stage", "exposure", "also", "next",
           "bake left", "expires", "last change"]  # fmt: skip


STATUS_VIEW: View[Sequence[FlagStatus]] = View("status")


@STATUS_VIEW.format("text")
def render_status_text(flags: Sequence[FlagStatus]) -> str:
    rows = [_HEADER] + [
        [escape.terminal(c) for c in _cells(f, e)] for f in flags for e in f.environments
    ]
    if len(rows) == 1:
        return "no flags\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def _md(text: str) -> str:
    escaped = "".join("\\" + c if c in "\\`*_{}[]<>()#+!|~" else c for c in escape.terminal(text))
    return escaped.replace("\n", " ")


@STATUS_VIEW.format("markdown")
def render_status_markdown(flags: Sequence[FlagStatus]) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    for flag in flags:
        for env in flag.environments:
            lines.append("| " + " | ".join(_md(c) for c in _cells(flag, env)) + " |")
    return "\n".join(lines) + "\n"


@STATUS_VIEW.format("json")
def render_status_json(flags: Sequence[FlagStatus]) -> str:
    document = {"format": STATUS_FORMAT, "flags": [asdict(f) for f in flags]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
