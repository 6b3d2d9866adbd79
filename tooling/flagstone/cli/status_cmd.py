"""``flagstone status``: every flag at a glance."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone import escape
from flagstone.cli.common import echo_view, repo_option, resolve_repo, view_format_option
from flagstone.model import read_project
from flagstone.status import STATUS_VIEW, live_overrides, project_status


@click.command("status")
@click.option("--env", "environment", default=None, help="Only this environment.")
@click.option("--team", default=None, help="Only flags this team owns or is delegated.")
@view_format_option(STATUS_VIEW)
@click.option(
    "--overrides",
    "read_overrides",
    is_flag=True,
    help="Also read the emergency overrides in force from the publish target (shown as "
    "state 'overridden'); needs signing.emergency keys (without them, or when the "
    "store cannot be read, a note says so and the rest is shown).",
)
@repo_option
def status(
    environment: str | None, team: str | None, fmt: str, read_overrides: bool, repo: Path | None
) -> None:
    """Every flag: kind, owner/delegate, and per environment its state (on, off, killed,
    overridden), stage and exposure, next stage and when, bake left, expiry, last change."""
    root = resolve_repo(repo)
    overrides = None
    if read_overrides:
        environments = [environment] if environment else read_project(root).environments
        live = live_overrides(root, environments)
        for note in live.notes:
            click.echo(f"note: {escape.terminal(note)}", err=True)
        overrides = live.forced
    flags = project_status(root, environment=environment, team=team, overrides=overrides)
    echo_view(STATUS_VIEW, fmt, flags)
