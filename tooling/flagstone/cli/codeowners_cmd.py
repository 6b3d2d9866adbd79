"""``flagstone codeowners [--check]``: write or check the generated CODEOWNERS block."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flagstone.cli.common import findings_format_option, repo_option, resolve_repo
from flagstone.errors import ValidationFailed
from flagstone.model import read_project
from flagstone.ownership import CODEOWNERS_PATH, codeowners_report, write_codeowners
from flagstone.problems import report, resolve_format


@click.command()
@click.option(
    "--check", is_flag=True, help="Do not write; exit 1 with a diff if the file is out of date."
)
@findings_format_option
@repo_option
def codeowners(check: bool, fmt: str, repo: Path | None) -> int:
    """Write (or check) the generated ownership block of .github/CODEOWNERS.

    flag.yaml files go to the flag's owner, <env>.yaml files to the delegate for that
    environment (else the owner), segments to their owner, and flagstone.yaml, schemas/
    and .github/ to the admins. Lines outside the block are kept as they are.
    """
    project = read_project(resolve_repo(repo))
    if project.problems:
        raise ValidationFailed(project.problems)
    result = codeowners_report(project)
    fmt = resolve_format(fmt)
    problems = list(result.problems)
    if check:
        drift = result.drift()
        if drift is not None:
            # The diff is for people; JSON consumers get the drift finding alone on stdout.
            (sys.stderr if fmt == "json" else sys.stdout).write(result.diff())
            problems.append(drift)
    elif result.unmapped:
        click.echo(f"{CODEOWNERS_PATH} not written: some files have no owner to map", err=True)
    elif write_codeowners(result):
        click.echo(f"wrote {CODEOWNERS_PATH}", err=True)
    else:
        click.echo(f"{CODEOWNERS_PATH} is up to date", err=True)
    report(problems, fmt=fmt, checked=CODEOWNERS_PATH, out=sys.stdout)
    return 1 if any(p.level == "error" for p in problems) else 0
