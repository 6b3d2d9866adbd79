"""Audit commands: ``log`` and ``show`` (``diff`` and ``check-change``: ``review_cmd``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from flagstone import gitops
from flagstone.auditlog import LOG_VIEW, audit_log, parse_bound, select_entries
from flagstone.cli.common import (
    echo_view,
    repo_option,
    resolve_repo,
    view_format_option,
)
from flagstone.errors import UsageError
from flagstone.flag_at import SHOW_VIEW, flag_at
from flagstone.model import read_project


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
