"""``flagstone site -o DIR``: a static release dashboard from the repository and its history.

* ``index.html`` — the status table of ``flagstone status`` (the same data, embedded as
  JSON in ``<script type="application/json" id="status-data">``), filterable by team,
  environment and kind with a few lines of inline script (the table is complete
  without it);
* ``flags/<key>.html`` — one page per flag: owner and delegates, per environment an
  exposure-over-time chart (inline SVG, drawn from the git history: one point per change
  of the exposure, at the commit that made it or at the ``at`` of a scheduled stage that
  came due, then dashed for the scheduled stages ahead), the change log with
  pull-request links (``--repo-url``), and the flag's lint findings.

No build step, no external resource: every page opens from disk and works offline.
Text from the repository is HTML-escaped everywhere.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from flagstone.diff import served_shares
from flagstone.errors import GitError, UsageError
from flagstone.model import Flag, Project, ReleaseConfig, read_project
from flagstone.status import FlagStatus, project_status

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#111;background:#fff;line-height:1.4}
a{color:#0645ad}a:focus,select:focus{outline:3px solid #000;outline-offset:2px}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #777;padding:.3rem .5rem;
text-align:left}th{background:#e8e8e8}caption{text-align:left;font-weight:bold;padding:.5rem 0}
.state-on{color:#0b5d1e}.state-killed,.state-overridden{color:#9b0000;font-weight:bold}
fieldset{border:1px solid #777;margin-bottom:1rem}label{margin-right:1rem}
svg text{font-size:11px;fill:#111}
"""


@dataclass(frozen=True, slots=True)
class ExposurePoint:
    timestamp: int
    exposure: float
    commit: str | None  # None: a scheduled stage (past or ahead)
    scheduled: bool = False


def _exposure(release: ReleaseConfig | None, flag: Flag, at: float) -> float:
    shares = served_shares(release, flag.off_variation, at=at)
    off = shares.get(flag.off_variation or "", Decimal(0))
    return float(sum(shares.values(), Decimal(0)) - off)


def _schedule_times(release: ReleaseConfig | None) -> list[int]:
    from flagstone.engine import parse_timestamp

    default = release.default if release else None
    if not (isinstance(default, Mapping) and isinstance(default.get("progression"), Mapping)):
        return []
    stages = default["progression"].get("stages")
    times = []
    for stage in stages if isinstance(stages, list) else []:
        at = stage.get("at") if isinstance(stage, Mapping) else None
        moment = parse_timestamp(at) if isinstance(at, str) else None
        if moment is not None:
            times.append(int(moment))
    return sorted(times)


def exposure_history(
    root: Path, project: Project, now: float
) -> dict[str, dict[str, list[ExposurePoint]]]:
    """flag -> environment -> the points where its exposure changed, oldest first, then
    the scheduled stages ahead (``scheduled=True``, after ``now``)."""
    from flagstone import gitops

    history: dict[str, dict[str, list[ExposurePoint]]] = {}

    def add(key: str, env: str, point: ExposurePoint) -> None:
        points = history.setdefault(key, {}).setdefault(env, [])
        if not points or points[-1].exposure != point.exposure or point.scheduled:
            points.append(point)

    try:
        commits = gitops.first_parent_history(root, gitops.default_branch(root) or "HEAD")
    except GitError:
        commits = []
    states: list[tuple[int, str, Project]] = [
        (commit.timestamp, commit.sha, after)
        for commit, _before, after in gitops.walk_projects(root, commits)
    ]
    for index, (stamp, sha, state) in enumerate(states):
        until = states[index + 1][0] if index + 1 < len(states) else now
        for key, flag in state.flags.items():
            for env in state.environments:
                release = flag.releases.get(env)
                add(key, env, ExposurePoint(stamp, _exposure(release, flag, stamp), sha))
                for moment in _schedule_times(release):
                    if stamp < moment <= until:
                        add(key, env, ExposurePoint(moment, _exposure(release, flag, moment), None))
    for key, flag in project.flags.items():
        for env in project.environments:
            release = flag.releases.get(env)
            for moment in _schedule_times(release):
                if moment > now and release is not None and release.enabled:
                    exposure = _exposure(release, flag, moment)
                    add(key, env, ExposurePoint(moment, exposure, None, scheduled=True))
    return history


def _iso(stamp: float) -> str:
    return dt.datetime.fromtimestamp(int(stamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exposure_chart(points: Sequence[ExposurePoint], title: str, now: float) -> str:
    """An inline SVG step chart of exposure (0–100%) over time."""
    width, height, left, bottom = 560, 180, 40, 24
    if not points:
        return f"<p>No history for {html.escape(title)}.</p>"
    start = points[0].timestamp
    end = max(now, points[-1].timestamp)
    span = max(end - start, 1)

    def x(stamp: float) -> float:
        return round(left + (stamp - start) / span * (width - left - 10), 1)

    def y(value: float) -> float:
        return round((height - bottom) - value / 100 * (height - bottom - 10), 1)

    past = [p for p in points if not p.scheduled]
    ahead = [p for p in points if p.scheduled]
    path = []
    for index, point in enumerate(past):
        if index:
            path.append(f"{x(point.timestamp)},{y(past[index - 1].exposure)}")
        path.append(f"{x(point.timestamp)},{y(point.exposure)}")
    if past:
        path.append(f"{x(now)},{y(past[-1].exposure)}")
    future = [f"{x(now)},{y(past[-1].exposure)}"] if past else []
    for index, point in enumerate(ahead):
        previous = ahead[index - 1].exposure if index else (past[-1].exposure if past else 0)
        future += [
            f"{x(point.timestamp)},{y(previous)}",
            f"{x(point.timestamp)},{y(point.exposure)}",
        ]
    dots = "".join(
        f'<circle cx="{x(p.timestamp)}" cy="{y(p.exposure)}" r="3" class="point" '
        f'data-t="{_iso(p.timestamp)}" data-exposure="{p.exposure:g}" '
        f'data-scheduled="{str(p.scheduled).lower()}"><title>{_iso(p.timestamp)}: '
        f"{p.exposure:g}%{' (scheduled)' if p.scheduled else ''}</title></circle>"
        for p in points
    )
    axis = (
        f'<line x1="{left}" y1="{y(0)}" x2="{width - 10}" y2="{y(0)}" stroke="#555"/>'
        f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{y(100)}" stroke="#555"/>'
        f'<text x="2" y="{y(100) + 4}">100%</text><text x="14" y="{y(0) + 4}">0%</text>'
        f'<text x="{left}" y="{height - 6}">{_iso(start)[:10]}</text>'
        f'<text x="{width - 90}" y="{height - 6}">{_iso(end)[:10]}</text>'
    )
    label = html.escape(f"Exposure over time, {title}")
    return (
        f'<svg role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{label}</title>{axis}"
        f'<polyline fill="none" stroke="#0b5d1e" stroke-width="2" points="{" ".join(path)}"/>'
        + (
            f'<polyline fill="none" stroke="#0b5d1e" stroke-width="2" stroke-dasharray="5 4" '
            f'points="{" ".join(future)}"/>'
            if ahead
            else ""
        )
        + dots
        + "</svg>"
    )


def _page(title: str, body: str, *, depth: int = 0) -> str:
    home = "../" * depth + "index.html"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><nav aria-label="Site"><a href="{home}">All flags</a></nav></header>'
        f"<main>{body}</main></body></html>\n"
    )


_FILTER_SCRIPT = """
(function(){var s=document.querySelectorAll('select[data-filter]');function apply(){
var want={};s.forEach(function(e){if(e.value)want[e.dataset.filter]=e.value;});
document.querySelectorAll('#status tbody tr').forEach(function(r){var ok=true;
for(var k in want){var v=r.dataset[k]||'';if((' '+v+' ').indexOf(' '+want[k]+' ')<0)ok=false;}
r.hidden=!ok;});}s.forEach(function(e){e.addEventListener('change',apply);});})();
"""


def _select(name: str, label: str, values: Sequence[str]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return (
        f'<label for="filter-{name}">{label}</label>'
        f'<select id="filter-{name}" data-filter="{name}"><option value="">all</option>{options}</select>'
    )


def _overview(project: Project, flags: Sequence[FlagStatus], notes: Sequence[str] = ()) -> str:
    teams = sorted(project.config.teams) if project.config else []
    kinds = sorted({f.kind for f in flags})
    rows = []
    for flag in flags:
        for env in flag.environments:
            team_values = " ".join(sorted({t for t in [flag.owner, *flag.delegates.values()] if t}))
            stage = env.stage or "-"
            nxt = (
                f"{env.next_stage.name} ({env.next_stage.exposure:g}%) "
                f"{env.next_stage.at or 'after bake/PR'}"
                if env.next_stage
                else "-"
            )
            rows.append(
                f'<tr data-team="{html.escape(team_values)}" data-env="{html.escape(env.environment)}" '
                f'data-kind="{html.escape(flag.kind)}">'
                f'<th scope="row"><a href="flags/{html.escape(flag.key)}.html">{html.escape(flag.key)}</a></th>'
                f"<td>{html.escape(flag.kind)}</td><td>{html.escape(env.owner or '-')}</td>"
                f"<td>{html.escape(env.environment)}</td>"
                f'<td class="state-{html.escape(env.state)}">{html.escape(env.state)}</td>'
                f"<td>{html.escape(stage)}</td><td>{env.exposure:g}%</td>"
                f"<td>{html.escape(env.also.text())}</td><td>{html.escape(nxt)}</td>"
                f"<td>{html.escape(flag.expires or '-')}{' (expired)' if flag.expired else ''}</td></tr>"
            )
    data = json.dumps(
        {"format": "flagstone.status/1", "flags": [asdict(f) for f in flags]}, ensure_ascii=True
    ).replace("<", "\\u003c")
    name = project.config.name if project.config else "flags"
    body = (
        f"<h1>Releases: {html.escape(name)}</h1>"
        + "".join(f'<p role="note">{html.escape(note)}</p>' for note in notes)
        + '<form aria-label="Filter flags"><fieldset><legend>Filter</legend>'
        + _select("team", "Team", teams)
        + _select("env", "Environment", project.environments)
        + _select("kind", "Kind", kinds)
        + "</fieldset></form>"
        '<table id="status"><caption>Every flag, per environment</caption><thead><tr>'
        + "".join(
            f'<th scope="col">{h}</th>'
            for h in (
                "Flag",
                "Kind",
                "Owner",
                "Environment",
                "State",
                "Stage",
                "Exposure",
                "Also",
                "Next stage",
                "Expires",
            )
        )
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        f'<script type="application/json" id="status-data">{data}</script>'
        f"<script>{_FILTER_SCRIPT}</script>"
    )
    return _page(f"Releases: {name}", body)


def _flag_page(
    project: Project,
    status: FlagStatus,
    history: Mapping[str, list[ExposurePoint]],
    changes: Sequence[Any],
    findings: Sequence[Any],
    repo_url: str | None,
    now: float,
) -> str:
    key = html.escape(status.key)
    delegates = ", ".join(
        f"{html.escape(e)}: {html.escape(t)}" for e, t in status.delegates.items()
    )
    parts = [
        f"<h1>{key}</h1><p>{html.escape(status.name)}</p>",
        "<dl>",
        f"<dt>Kind</dt><dd>{html.escape(status.kind)}</dd>",
        f"<dt>Owner</dt><dd>{html.escape(status.owner or '-')}</dd>",
        f"<dt>Delegates</dt><dd>{delegates or 'none'}</dd>",
        f"<dt>Expires</dt><dd>{html.escape(status.expires or '-')}</dd></dl>",
        "<h2>Exposure over time</h2>",
    ]
    for env in project.environments:
        parts.append(f'<section aria-labelledby="chart-{html.escape(env)}">')
        parts.append(f'<h3 id="chart-{html.escape(env)}">{html.escape(env)}</h3>')
        parts.append(exposure_chart(history.get(env, []), f"{status.key} in {env}", now))
        parts.append("</section>")
    parts.append("<h2>Changes</h2>")
    if changes:
        items = []
        for entry in reversed(changes):
            pr = ""
            if entry.pull_request:
                number = int(entry.pull_request)
                pr = (
                    f' <a href="{html.escape(repo_url.rstrip("/"))}/pull/{number}">#{number}</a>'
                    if repo_url
                    else f" #{number}"
                )
            where = f"{html.escape(entry.environment)}: " if entry.environment else ""
            authors = html.escape(", ".join(entry.authors))
            items.append(
                f'<li><time datetime="{html.escape(entry.date)}">{html.escape(entry.date[:16])}</time> '
                f"{where}{html.escape(entry.summary)} — {authors}{pr}</li>"
            )
        parts.append("<ol reversed>" + "".join(items) + "</ol>")
    else:
        parts.append("<p>No history.</p>")
    overridden = [e.environment for e in status.environments if e.state == "overridden"]
    if overridden:
        parts.append(
            "<h2>Emergency overrides</h2><p>Forced to the off variation now in: "
            + html.escape(", ".join(overridden))
            + " (reconcile the release files by pull request).</p>"
        )
    parts.append("<h2>Lint findings</h2>")
    if findings:
        parts.append(
            "<ul>"
            + "".join(
                f"<li>{html.escape(p.level)}: {html.escape(p.message)} [{html.escape(p.rule)}]</li>"
                for p in findings
            )
            + "</ul>"
        )
    else:
        parts.append("<p>None.</p>")
    return _page(f"{status.key}: flag", "".join(parts), depth=1)


def build_site(
    root: Path,
    out: Path,
    *,
    repo_url: str | None = None,
    now: float | None = None,
    overrides: bool = False,
) -> list[str]:
    """Write the dashboard into ``out``; return the files written (relative). With
    ``overrides``, the emergency overrides in force are read from the publish target
    (state ``overridden``, and a section on each flag page)."""
    from flagstone import auditlog, gitops
    from flagstone.lint import lint_project
    from flagstone.lint.context import LintContext, RepositoryChangeTimes

    if repo_url is not None and not repo_url.startswith("https://"):
        raise UsageError(f"--repo-url {repo_url!r} must be an https:// URL")
    now = time.time() if now is None else now
    project = read_project(root)
    forced: dict[str, list[str]] | None = None
    notes: list[str] = []
    if overrides:
        from flagstone.status import live_overrides

        live = live_overrides(root, project.environments, now)
        forced, notes = live.forced, live.notes
    flags = project_status(root, now=now, overrides=forced)
    history = exposure_history(root, project, now)
    try:
        entries = auditlog.audit_log(root, gitops.default_branch(root) or "HEAD")
    except GitError:
        entries = []
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    findings = lint_project(
        project, LintContext(now=moment, history=RepositoryChangeTimes(project.root))
    ).problems
    try:
        (out / "flags").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {out}: {error.strerror or error}") from None
    written = {"index.html": _overview(project, flags, notes)}
    for status in flags:
        changes = [e for e in entries if e.subject == "flag" and e.key == status.key]
        own = [p for p in findings if p.path.startswith(f"flags/{status.key}/")]
        written[f"flags/{status.key}.html"] = _flag_page(
            project, status, history.get(status.key, {}), changes, own, repo_url, now
        )
    for rel, text in written.items():
        (out / rel).write_text(text, encoding="utf-8")
    return sorted(written)
