"""Review and audit commands: ``diff``, ``log``, ``show`` and ``check-change``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from flagstone import gitops
from flagstone.auditlog import LOG_VIEW, audit_log, parse_bound, select_entries
from flagstone.cli.common import (
    cache_option,
    echo_view,
    findings_format_option,
    repo_option,
    resolve_repo,
    view_format_option,
)
from flagstone.diff import DIFF_VIEW, diff_projects, make_report
from flagstone.errors import UsageError
from flagstone.flag_at import SHOW_VIEW, flag_at
from flagstone.guardrails import check_change as guardrail_findings
from flagstone.guardrails import findings as narrowed_findings
from flagstone.model import read_project
from flagstone.problems import report
from flagstone.toolcache import ToolCache, cached_documents
from flagstone.worktree_change import narrowed_projects, remember_base


@click.command("diff")
@click.argument("base", required=False)
@click.argument("head", required=False)
@view_format_option(DIFF_VIEW, help="markdown is a pull-request comment.")
@repo_option
@cache_option
def diff(base: str | None, head: str | None, fmt: str, repo: Path | None, no_cache: bool) -> None:
    """Semantic diff of flags and segments between BASE and HEAD.

    BASE defaults to the merge-base of HEAD with the default branch (origin/HEAD, else
    main, else master); HEAD defaults to the working tree. The diff is informational:
    it exits 0 whatever changed.
    """
    root = resolve_repo(repo)
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    narrowed = None
    if head is None and not no_cache:
        narrowed = narrowed_projects(root, base_commit, ToolCache.for_repository(root))
    if narrowed is not None:
        (before, after), head_label = narrowed, gitops.WORKING_TREE
    else:
        with cached_documents(root, use=not no_cache) as documents:
            cache = documents.cache if documents is not None else None
            before = gitops.project_at(root, base_commit, cache=cache)
            remember_base(root, base_commit, before, cache)
            if head is None:
                after, head_label = read_project(root, documents=documents), gitops.WORKING_TREE
            else:
                head_commit = gitops.resolve_revision(root, head)
                after, head_label = gitops.project_at(root, head_commit, cache=cache), head
    base_label = base or gitops.short_revision(base_commit)
    changes = diff_projects(before, after, labels=(base_label, head_label))
    report = make_report(before, after, changes, base=base_label, head=head_label)
    echo_view(DIFF_VIEW, fmt, report)


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
@view_format_option(LOG_VIEW)
@click.option(
    "--overrides",
    "with_overrides",
    is_flag=True,
    help="Also the emergency override events, from the store's signed history "
    "(<target>/<env>/overrides/); text and json only.",
)
@click.option("--to", "to", default=None, help="With --overrides: the target URL.")
@repo_option
def log(
    flag: str | None,
    env: str | None,
    since: str | None,
    until: str | None,
    ref: str | None,
    fmt: str,
    with_overrides: bool,
    to: str | None,
    repo: Path | None,
) -> None:
    """Audit history: every semantic change on the default branch's first-parent history,
    with commit, author, date and pull-request number; follows renamed flags."""
    root = resolve_repo(repo)
    if with_overrides and fmt == "csv":
        raise UsageError("--overrides works with --format text or json")
    start = parse_bound(since, "--since", end_of_day=False)
    end = parse_bound(until, "--until", end_of_day=True)
    entries = select_entries(
        audit_log(root, ref or gitops.default_branch(root) or "HEAD"),
        flag=flag,
        environment=env,
        since=start,
        until=end,
        known_environments=read_project(root).environments,
    )
    if not with_overrides:
        echo_view(LOG_VIEW, fmt, entries)
        return
    from flagstone.cli.overrides_cmd import override_events, render_override_events

    rendered = LOG_VIEW.render(fmt, entries)
    events = override_events(root, flag=flag, environment=env, since=start, until=end, to=to)
    if fmt == "json":
        document = {"commits": json.loads(rendered), "overrides": [e.to_json() for e in events]}
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True))
        return
    click.echo(rendered, nl=False)
    click.echo(render_override_events(events), nl=False)


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
@view_format_option(SHOW_VIEW)
@repo_option
def show(flag: str, env: str, when: str, fmt: str, repo: Path | None) -> None:
    """A flag's configuration in one environment at a point in time, and the
    progression stage active then (scheduled stages counted at that instant)."""
    echo_view(SHOW_VIEW, fmt, flag_at(resolve_repo(repo), flag, env, when))


@click.command("check-change")
@click.option(
    "--base",
    default=None,
    help="Revision to compare with (default: merge-base with the default branch).",
)
@findings_format_option
@repo_option
@cache_option
def check_change(base: str | None, fmt: str, repo: Path | None, no_cache: bool) -> None:
    """Rollout guardrails on the change from BASE to the working tree: step size, bake
    time, values production serves, flags others depend on. Exit 1 on a violation."""
    root = resolve_repo(repo)
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    cache = None if no_cache else ToolCache.for_repository(root)
    narrowed = narrowed_projects(root, base_commit, cache)
    if narrowed is not None:
        problems = narrowed_findings(root, base_commit, *narrowed)
    else:
        with cached_documents(root, use=not no_cache) as documents:
            problems = guardrail_findings(root, base_commit, documents=documents)
    report(problems, fmt=fmt, checked="check-change", out=sys.stdout)
    if any(p.level == "error" for p in problems):
        raise click.exceptions.Exit(1)
