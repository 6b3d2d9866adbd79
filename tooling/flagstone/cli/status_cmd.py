"""``flagstone status``: every flag at a glance."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone.cli.common import repo_option, resolve_repo
from flagstone.model import read_project
from flagstone.status import STATUS_RENDERERS, live_overrides, project_status


@click.command("status")
@click.option("--env", "environment", default=None, help="Only this environment.")
@click.option("--team", default=None, help="Only flags this team owns or is delegated.")
@click.option(
    "--format", "fmt", type=click.Choice(sorted(STATUS_RENDERERS)), default="text",
    show_default=True,
)  # fmt: skip
@click.option(
    "--overrides",
    "read_overrides",
    is_flag=True,
    help="Also read the emergency overrides in force from the publish target (shown as "
    "state 'overridden'); needs signing.emergency keys.",
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
        overrides = live_overrides(root, environments)
    flags = project_status(root, environment=environment, team=team, overrides=overrides)
    click.echo(STATUS_RENDERERS[fmt](flags), nl=False)
