"""``flagstone usage``: evaluations per flag and environment from Prometheus, against
what the repository intends (see ``flagstone.usage``)."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone.cli.common import output_file_option, repo_option, resolve_repo, write_output_file
from flagstone.errors import UsageError
from flagstone.usage import (
    DEFAULT_DAYS,
    DEFAULT_TIMEOUT,
    USAGE_VIEW,
    evaluation_counts,
    prometheus_url,
    render,
    usage_report,
)
from flagstone.validate import load_valid_project


@click.command()
@click.option(
    "--prometheus",
    "url",
    metavar="URL",
    default=None,
    help="Prometheus base URL (default: FLAGSTONE_PROMETHEUS_URL, then "
    "telemetry.prometheus_url in flagstone.yaml).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=DEFAULT_DAYS,
    show_default=True,
    help="Look back this many days.",
)
@click.option(
    "--env",
    "environments",
    multiple=True,
    metavar="ENV",
    help="Only this environment (repeatable; default: all).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(USAGE_VIEW.formats()),
    default="text",
    show_default=True,
    help="Report format; save json for `flagstone lint --usage FILE`.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for each Prometheus query.",
)
@click.option(
    "--fail-on-findings",
    is_flag=True,
    help="Exit 1 when any flag has a finding (stale, share mismatch, missing attribute, …).",
)
@output_file_option("report")
@repo_option
def usage(
    url: str | None,
    days: int,
    environments: tuple[str, ...],
    fmt: str,
    timeout: float,
    fail_on_findings: bool,
    output: Path | None,
    repo: Path | None,
) -> int:
    """Report per flag and environment the evaluations of the last --days days (from
    flagstone_evaluations_total in Prometheus), the share served per variation against
    the share intended, and enabled flags nobody evaluates."""
    project = load_valid_project(resolve_repo(repo))
    base = prometheus_url(project, url)
    for env in environments:
        if env not in project.environments:
            known = ", ".join(project.environments) or "none"
            raise UsageError(f"--env: unknown environment {env!r} (project environments: {known})")
    counts = evaluation_counts(base, days, timeout=timeout)
    report = usage_report(project, counts, source=base, days=days, environments=environments)
    text = render(report, fmt)
    if output is not None:
        write_output_file(output, text.encode("utf-8"))
    else:
        click.echo(text, nl=False)
    return 1 if fail_on_findings and any(u.findings for u in report.flags) else 0
