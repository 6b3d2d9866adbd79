"""``flagstone status``: every flag at a glance, as plain data.

For each live flag: kind, owner, delegates, expiry (and whether it is past it or stale),
and per environment:

* **state** — ``on`` (enabled), ``off`` (disabled or no release file, never switched on
  there), ``killed`` (disabled after having been enabled there: the last enable/disable
  change in the history was a disable) or ``overridden`` (an emergency override forces
  it off right now; only when the overrides were read, see ``overrides``);
* what the default serves, the **stage** in force (the later of ``current`` and any
  scheduled stage that came due) and the **exposure**: the percent of contexts reaching
  the default that get a variation other than the off variation (targets and rules
  come on top; segment members of a stage are named, not counted);
* the **next stage** and when it starts (its ``at``, or "after bake" when it waits for a
  pull request), and the **bake remaining** before the next stage may start (the stage's
  ``bake`` or ``guardrails.min_bake``, from the commit that set ``current``);
* the **last change**: commit, date, pull request, authors and summary, from the audit log.

``project_status`` returns ``FlagStatus`` values; ``STATUS_RENDERERS`` turns them into
``text``, ``json`` and ``markdown``.
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

from flagstone.compile import duration_seconds
from flagstone.diff import DISABLED, ENABLED, serve_text, served_shares
from flagstone.errors import GitError, UsageError
from flagstone.model import Flag, Project, read_project
from flagstone.rollout import progression_spec, read_progression

STATUS_FORMAT = "flagstone.status/1"
STALE_AFTER_DAYS = 90  # a temporary flag unchanged this long is stale


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
    stale: bool  # temporary and unchanged for STALE_AFTER_DAYS
    environments: list[EnvironmentStatus] = field(default_factory=list)


def _float(value: Decimal) -> float:
    return float(value)


def _exposure(flag: Flag, env: str, now: float) -> float:
    shares = served_shares(flag.releases.get(env), flag.off_variation, at=now)
    off = shares.get(flag.off_variation or "", Decimal(0))
    return _float(sum(shares.values(), Decimal(0)) - off)


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
        stale = bool(
            flag.temporary and last_any is not None and now - last_any > STALE_AFTER_DAYS * 86400
        )
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
                )
            )
        result.append(status)
    return result


def live_overrides(
    root: Path, environments: Sequence[str], now: float | None = None
) -> dict[str, list[str]]:
    """The flags an emergency override forces off now, per environment, read (and
    verified) from the publish target; an environment whose overrides cannot be read
    is left out."""
    from flagstone.emergency import emergency_keyring, read_overrides
    from flagstone.publish import open_target

    project = read_project(root)
    store = open_target(project, None)
    keyring = emergency_keyring(project)
    moment = time.time() if now is None else now
    found: dict[str, list[str]] = {}
    for env in environments:
        current = read_overrides(store, env, keyring, project.config.name if project.config else "")
        overrides = current.overrides
        if overrides is not None:
            found[env] = sorted(overrides.live(moment))
    return found


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
        nxt,
        bake,
        expiry,
        change,
    ]


_HEADER = ["flag", "kind", "owner", "env", "state", "stage", "exposure", "next", "bake left",
           "expires", "last change"]  # fmt: skip


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def render_status_text(flags: Sequence[FlagStatus]) -> str:
    rows = [_HEADER] + [
        [_printable(c) for c in _cells(f, e)] for f in flags for e in f.environments
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
    escaped = "".join("\\" + c if c in "\\`*_{}[]<>()#+!|~" else c for c in text)
    return escaped.replace("\n", " ")


def render_status_markdown(flags: Sequence[FlagStatus]) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    for flag in flags:
        for env in flag.environments:
            lines.append("| " + " | ".join(_md(c) for c in _cells(flag, env)) + " |")
    return "\n".join(lines) + "\n"


def render_status_json(flags: Sequence[FlagStatus]) -> str:
    document = {"format": STATUS_FORMAT, "flags": [asdict(f) for f in flags]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


STATUS_RENDERERS: dict[str, Callable[[Sequence[FlagStatus]], str]] = {
    "text": render_status_text,
    "json": render_status_json,
    "markdown": render_status_markdown,
}
