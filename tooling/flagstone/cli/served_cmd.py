"""``flagstone served --env ENV --at TIME``: which snapshot was being served then."""

from __future__ import annotations

import json
from pathlib import Path

import click

from flagstone.cli.common import repo_option, resolve_repo
from flagstone.model import read_project
from flagstone.served import render_served_text, served_at
from flagstone.timeforms import TIME_FORMS, parse_time


@click.command("served")
@click.option("--env", "environment", required=True, help="The environment.")
@click.option("--at", "at", required=True, help=f"The time: {TIME_FORMS}.")
@click.option("--to", "to", default=None, help="The store (default: publish.target).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@repo_option
def served(environment: str, at: str, to: str | None, fmt: str, repo: Path | None) -> None:
    """Which snapshot version, from which commit, latest.json held at --at (read from the
    store's versioned snapshots), and the emergency overrides in force then."""
    instant = parse_time(at, "--at")
    project = read_project(resolve_repo(repo))
    answer = served_at(project, environment, instant, to=to)
    if fmt == "json":
        click.echo(json.dumps(answer.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render_served_text(answer), nl=False)
