"""``flagstone compile --env E [-o FILE]``: the unsigned snapshot payload as canonical JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flagstone.cli.common import (
    cache_option,
    output_file_option,
    repo_option,
    resolve_repo,
    write_output_file,
)
from flagstone.compile import compiled_bytes, git_source
from flagstone.toolcache import cached_documents
from flagstone.validate import load_valid_project


@click.command("compile")
@click.option("--env", "env", required=True, help="Environment to compile.")
@output_file_option("payload")
@repo_option
@cache_option
def compile_(env: str, output: Path | None, repo: Path | None, no_cache: bool) -> None:
    """Compile one environment to the snapshot payload (canonical JSON, RFC 8785).

    The payload is unsigned and unpublished: version 0, no published_at or expires.
    `source` records the git HEAD when the repository is a git work tree.
    """
    root = resolve_repo(repo)
    with cached_documents(root, use=not no_cache) as documents:
        project = load_valid_project(root, documents=documents)
        data, digest = compiled_bytes(project, env, source=git_source(root))
    if output is None:
        # Exact bytes when piped (they are what gets signed); a newline for a terminal.
        sys.stdout.buffer.write(data + b"\n" if sys.stdout.isatty() else data)
        sys.stdout.buffer.flush()
        return
    write_output_file(output, data)
    click.echo(f"wrote {output} ({len(data)} bytes, {digest})", err=True)
