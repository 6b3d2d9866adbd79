"""``flagstone site -o DIR``: the static release dashboard."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone.cli.common import repo_option, resolve_repo
from flagstone.site import build_site


@click.command("site")
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(path_type=Path),
    help="Folder to write the pages into (created if missing).",
)  # fmt: skip
@click.option(
    "--repo-url",
    default=None,
    metavar="URL",
    help="https://github.com/OWNER/REPO: pull-request numbers become links.",
)
@click.option(
    "--overrides",
    "read_overrides",
    is_flag=True,
    help="Also show the emergency overrides in force (read from the publish target).",
)
@repo_option
def site(output: Path, repo_url: str | None, read_overrides: bool, repo: Path | None) -> None:
    """Write a static dashboard (opens from disk, no network): an overview of every
    flag, filterable by team, environment and kind, and a page per flag with exposure
    charts from the history, the change log and lint findings."""
    written = build_site(resolve_repo(repo), output, repo_url=repo_url, overrides=read_overrides)
    click.echo(f"wrote {len(written)} pages to {output} (open {output / 'index.html'})")
