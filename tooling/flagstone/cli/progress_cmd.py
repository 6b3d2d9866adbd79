"""``flagstone progress``: judge every gated progression on its metrics; with
``--apply``, advance through pull requests and roll back through the emergency kill."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import click

from flagstone import emergency, progress_apply
from flagstone import progress as progressions
from flagstone.cli.common import repo_option, resolve_repo
from flagstone.cli.overrides_cmd import emergency_kill
from flagstone.engine import parse_timestamp
from flagstone.errors import MetricQueryError, UsageError
from flagstone.model import read_project
from flagstone.progress_report import PROGRESS_VIEW
from flagstone.publish import open_target
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
    "--format", "fmt", type=click.Choice(PROGRESS_VIEW.formats()), default="text", show_default=True
)
@click.option("--apply", "apply_", is_flag=True, help="Act: pull requests and emergency kills.")
@click.option("--now", default=None, help="Judge as of this RFC 3339 time (default: now).")
@click.option(
    "--to", "to", default=None, help="Publish target for roll-backs (default: publish.target)."
)
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
    to: str | None,
    gh: str,
    key_file: Path | None,
    repo: Path | None,
) -> None:
    """Advance, hold or roll back each gated progression on its metric gates.

    Exit 1 when some gate could not be judged (a metric source failed)."""
    root = resolve_repo(repo)
    project = load_valid_project(root)
    decisions = progressions.decide(root, project, env=env, flag=flag, now=_instant(now))
    click.echo(PROGRESS_VIEW.render(fmt, decisions), nl=False)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and os.environ.get("GITHUB_ACTIONS") == "true":
        with open(summary, "a", encoding="utf-8") as out:
            out.write(PROGRESS_VIEW.render("markdown", decisions))
    if apply_:
        kill = _emergency_kill(root, key_file, to)
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


def _emergency_kill(
    root: Path, key_file: Path | None, to: str | None
) -> progress_apply.KillAction | None:
    """The roll-back action: ``flagstone kill --emergency`` (signed override, reconcile
    pull request), unless an override already holds the flag; None without a key."""
    if key_file is None and not os.environ.get(emergency.EMERGENCY_KEY_ENV_VARIABLE, "").strip():
        return None

    def kill(decision: progressions.Decision, reason: str) -> str:
        project = read_project(root)
        keyring = emergency.emergency_keyring(project)
        name = project.config.name if project.config else ""
        store = open_target(project, to)
        current = emergency.read_overrides(store, decision.environment, keyring, name)
        if current.overrides and decision.flag in current.overrides.live(time.time()):
            return f"already killed by emergency override (overrides version {current.version})"
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the report alone
            emergency_kill(
                flag=decision.flag,
                environment=decision.environment,
                reason=reason,
                key_files=(key_file,) if key_file else (),
                undo=False,
                expires="7d",
                by="flagstone progress",
                to=to,
                reconcile=True,
                repo=root,
            )
        return "emergency kill published; the reconcile pull request records it in git"

    return kill
