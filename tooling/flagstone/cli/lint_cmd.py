"""``flagstone lint``: run the lint rules (``--list-rules`` to see them)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from flagstone.cli.common import findings_format_option, repo_option, resolve_repo
from flagstone.errors import FlagstoneError, UsageError, ValidationFailed
from flagstone.lint import lint_project, rule_catalog
from flagstone.lint.context import LintContext, RepositoryChangeTimes
from flagstone.model import Project, read_project
from flagstone.problems import report, resolve_format
from flagstone.usage import UsageReport, read_usage_report
from flagstone.validate import validate_project


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now: '{value}' is not an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _read_usage(path: Path) -> UsageReport:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UsageError(f"--usage: cannot read {path}: {reason}") from None
    return read_usage_report(text, str(path))


def _list_rules(project: Project | None, fmt: str) -> None:
    rows = rule_catalog(project)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    width = max(len(row["id"]) for row in rows)
    for row in rows:
        shown = " ".join(f"{name}={json.dumps(value)}" for name, value in row["options"].items())
        click.echo(
            f"{row['id']:<{width}}  {row['level']:<7}  {row['summary']}"
            + (f"  [{shown}]" if shown else "")
        )
    click.echo(f"{len(rows)} rules; full documentation: docs/lint-rules.md")


@click.command()
@click.option(
    "--list-rules", is_flag=True, help="List the rules with their levels, options and summaries."
)
@click.option(
    "--now",
    "now_text",
    metavar="TIME",
    default=None,
    help="Judge time-based rules as of this ISO 8601 date or time (default: now).",
)
@click.option(
    "--usage",
    "usage_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A report saved by `flagstone usage --format json`, for unevaluated-flag.",
)
@findings_format_option
@repo_option
def lint(
    list_rules: bool, now_text: str | None, usage_file: Path | None, fmt: str, repo: Path | None
) -> int:
    """Check the repository against the lint rules; exit 1 on any error-level finding.

    Levels and options are set in flagstone.yaml under lint.rules.<rule-id>. Suppress
    one finding with `# flagstone: disable=<rule> -- <reason>` on its line or above it.
    """
    fmt = resolve_format(fmt)
    if list_rules:
        try:
            project: Project | None = read_project(resolve_repo(repo))
        except FlagstoneError:  # listing rules needs no repository
            project = None
        _list_rules(project, fmt)
        return 0
    project = read_project(resolve_repo(repo))
    problems = validate_project(project)
    if any(p.level == "error" for p in problems):
        raise ValidationFailed(problems)
    usage = _read_usage(usage_file) if usage_file is not None else None
    context = LintContext(
        now=_parse_now(now_text), history=RepositoryChangeTimes(project.root), usage=usage
    )
    result = lint_project(project, context)
    report(result.problems, fmt=fmt, checked="lint", out=sys.stdout)
    return 1 if result.failed else 0
