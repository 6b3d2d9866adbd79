"""Review and audit commands: ``diff``, ``log``, ``show`` and ``check-change``."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click

from flagstone import gitops
from flagstone.cli.common import findings_format_option, repo_option, resolve_repo
from flagstone.diff import RENDERERS, diff_projects, make_report
from flagstone.errors import UsageError
from flagstone.guardrails import check_change as guardrail_findings
from flagstone.model import read_project
from flagstone.problems import report

LOG_FORMAT = "flagstone.log/1"
LOG_COLUMNS = (
    "commit",
    "date",
    "author_name",
    "author_email",
    "pull_request",
    "environment",
    "flag",
    "segment",
    "kind",
    "summary",
)


@click.command("diff")
@click.argument("base", required=False)
@click.argument("head", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(RENDERERS)),
    default="text",
    show_default=True,
    help="markdown is a pull-request comment.",
)
@repo_option
def diff(base: str | None, head: str | None, fmt: str, repo: Path | None) -> None:
    """Semantic diff of flags and segments between BASE and HEAD.

    BASE defaults to the merge-base of HEAD with the default branch (origin/HEAD, else
    main, else master); HEAD defaults to the working tree. The diff is informational:
    it exits 0 whatever changed.
    """
    root = resolve_repo(repo)
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    before = gitops.project_at(root, base_commit)
    if head is None:
        after, head_label = read_project(root), gitops.WORKING_TREE
    else:
        after, head_label = gitops.project_at(root, gitops.resolve_revision(root, head)), head
    base_label = base or gitops.short_revision(base_commit)
    changes = diff_projects(before, after)
    click.echo(
        RENDERERS[fmt](make_report(before, after, changes, base=base_label, head=head_label)),
        nl=False,
    )


def _log_row(entry: gitops.LogEntry) -> dict[str, object]:
    return {
        "commit": entry.commit,
        "date": entry.date,
        "author_name": entry.author_name,
        "author_email": entry.author_email,
        "pull_request": entry.pull_request,
        "environment": entry.environment,
        "flag": entry.key if entry.subject == "flag" else None,
        "segment": entry.key if entry.subject == "segment" else None,
        "kind": entry.kind,
        "summary": entry.summary,
    }


def _bound(text: str | None, option: str, *, end_of_day: bool) -> float | None:
    if text is None:
        return None
    instant = gitops.parse_instant(text)
    if instant is None:
        raise UsageError(f"{option} {text!r} is not a date (YYYY-MM-DD) or an RFC 3339 date-time")
    if end_of_day and gitops._DATE_ONLY.fullmatch(text):
        instant += 86400 - 1
    return instant


@click.command("log")
@click.argument("flag", required=False)
@click.option(
    "--env", "env", default=None, help="Only changes to this environment (and flag-wide ones)."
)
@click.option("--since", default=None, help="From this date (YYYY-MM-DD, inclusive) or date-time.")
@click.option("--until", default=None, help="Up to this date (YYYY-MM-DD, inclusive) or date-time.")
@click.option(
    "--ref", default=None, help="Branch to read (default: the default branch, else HEAD)."
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True
)
@repo_option
def log(
    flag: str | None,
    env: str | None,
    since: str | None,
    until: str | None,
    ref: str | None,
    fmt: str,
    repo: Path | None,
) -> None:
    """Audit history: every semantic change on the default branch's first-parent history,
    with commit, author, date and pull-request number; follows renamed flags."""
    root = resolve_repo(repo)
    start = _bound(since, "--since", end_of_day=False)
    end = _bound(until, "--until", end_of_day=True)
    entries = gitops.audit_log(root, ref or gitops.default_branch(root) or "HEAD")
    if flag is not None:
        lineage = gitops.flag_lineage(entries, flag)
        if lineage is None:
            raise UsageError(f"flag {flag!r} never existed on this branch")
        entries = [e for e in entries if e.subject == "flag" and e.lineage == lineage]
    if env is not None:
        entries = [e for e in entries if e.environment in (env, None)]
    entries = [
        e
        for e in entries
        if (start is None or e.timestamp >= start) and (end is None or e.timestamp <= end)
    ]
    rows = [_log_row(e) for e in entries]
    if fmt == "json":
        click.echo(
            json.dumps({"format": LOG_FORMAT, "entries": rows}, indent=2, ensure_ascii=False)
        )
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        for e in entries:
            pr = f" #{e.pull_request}" if e.pull_request else ""
            where = f"{e.environment}: " if e.environment else ""
            what = e.key or "flagstone.yaml"
            click.echo(
                f"{e.date} {e.commit[:12]} {e.author_name} <{e.author_email}>{pr}  {where}{what}: {e.summary}"
            )


@click.command("show")
@click.argument("flag")
@click.option("--env", "env", required=True, help="Environment to show.")
@click.option(
    "--at",
    "when",
    default="HEAD",
    show_default=True,
    help="A revision, a date (YYYY-MM-DD, midnight UTC) or an RFC 3339 date-time.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@repo_option
def show(flag: str, env: str, when: str, fmt: str, repo: Path | None) -> None:
    """A flag's configuration in one environment at a point in time, and the
    progression stage active then (scheduled stages counted at that instant)."""
    from flagstone.diff import active_reach, serve_text

    root = resolve_repo(repo)
    state = gitops.flag_at(root, flag, env, when)
    release = state.release
    data = release.data if release else None
    progression = (
        (release.default or {}).get("progression")
        if release and isinstance(release.default, dict)
        else None
    )
    active = None
    if isinstance(progression, dict):
        reach, scheduled_at = active_reach(progression, state.instant)
        active = {
            "stage": None if reach.index < 0 else reach.name,
            "reach": reach.label(),
            "scheduled_at": scheduled_at,
        }
    from flagstone.compile import timestamp_text

    document = {
        "flag": flag,
        "environment": env,
        "at": timestamp_text(state.instant),
        "commit": state.revision,
        "commit_date": state.commit_date,
        "enabled": bool(release and release.enabled),
        "off_variation": state.flag.off_variation,
        "release": data,
        "active_stage": active,
    }
    if fmt == "json":
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True))
        return
    click.echo(
        f"{flag} in {env} at {document['at']} (commit {state.revision[:12]}, {state.commit_date})"
    )
    if release is None:
        click.echo(f"  no release file: disabled, serves {state.flag.off_variation}")
        return
    click.echo(
        f"  enabled: {'yes' if release.enabled else f'no (serves {state.flag.off_variation})'}"
    )
    for variation, keys in release.targets.items():
        click.echo(f"  targets {variation}: {', '.join(keys)}")
    for rule in release.rules:
        click.echo(
            f"  rule {rule.get('name')!r}: if {json.dumps(rule.get('if'), sort_keys=True)} serve {serve_text(rule.get('serve'))}"
        )
    click.echo(
        f"  default: {serve_text(release.default) if release.default is not None else state.flag.off_variation}"
    )
    if active is not None:
        why = f" (scheduled at {active['scheduled_at']})" if active["scheduled_at"] else ""
        click.echo(f"  active stage: {active['reach']}{why}")


@click.command("check-change")
@click.option(
    "--base",
    default=None,
    help="Revision to compare with (default: merge-base with the default branch).",
)
@findings_format_option
@repo_option
def check_change(base: str | None, fmt: str, repo: Path | None) -> None:
    """Rollout guardrails on the change from BASE to the working tree: step size, bake
    time, values production serves, flags others depend on. Exit 1 on a violation."""
    root = resolve_repo(repo)
    problems = guardrail_findings(root, base)
    report(problems, fmt=fmt, checked="check-change", out=sys.stdout)
    if any(p.level == "error" for p in problems):
        raise click.exceptions.Exit(1)
