"""``flagstone export --format flagd --env E [-o FILE]``: the flagd flag definition."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flagstone.cli.common import output_file_option, repo_option, resolve_repo, write_output_file
from flagstone.compile import compile_environment, git_source
from flagstone.errors import ExportError
from flagstone.flagd_export import (
    SEGMENT_MODES,
    FlagdRefused,
    export_flagd,
    flagd_json,
    located_refusal,
)
from flagstone.validate import load_valid_project


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["flagd"]),
    default="flagd",
    show_default=True,
    help="Export format.",
)
@click.option("--env", "env", required=True, help="Environment to export.")
@output_file_option("definition")
@click.option(
    "--segments",
    "segments",
    type=click.Choice(SEGMENT_MODES),
    default="inline",
    show_default=True,
    help="Write segment tests where they are used, or once as flagd $evaluators.",
)
@click.option(
    "--skip-unsupported",
    is_flag=True,
    help="Leave out flags flagd cannot evaluate exactly (listed on stderr) instead of failing.",
)
@repo_option
def export(
    fmt: str,
    env: str,
    output: Path | None,
    segments: str,
    skip_unsupported: bool,
    repo: Path | None,
) -> None:
    """Export one environment as a flagd flag definition (JSON).

    The definition is translated from the compiled snapshot, so flagd providers in any
    language serve the same variations as Flagstone's engine. A flag flagd cannot
    evaluate exactly is an error (exit 1) naming the flag and the construct.
    """
    root = resolve_repo(repo)
    project = load_valid_project(root)
    payload = compile_environment(project, env, source=git_source(root))
    try:
        result = export_flagd(
            payload, segments=segments, skip_unsupported=skip_unsupported, checked=True
        )
    except FlagdRefused as error:
        raise ExportError(located_refusal(project, env, error.refusal), hint=error.hint) from None
    for refusal in result.refused:
        click.echo(f"warning: left out {located_refusal(project, env, refusal)}", err=True)
    data = flagd_json(result.document)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    write_output_file(output, data)
    count = len(result.document["flags"])
    click.echo(f"wrote {output} ({count} flags, {len(data)} bytes)", err=True)
