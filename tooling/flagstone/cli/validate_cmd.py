"""``flagstone validate [PATHS…]``: schema and reference checks of the repository."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flagstone.cli.common import cache_option, findings_format_option, repo_option, resolve_repo
from flagstone.errors import UsageError
from flagstone.problems import report
from flagstone.toolcache import cached_documents
from flagstone.validate import select_problems, validate_repository


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@repo_option
@findings_format_option
@cache_option
def validate(paths: tuple[Path, ...], repo: Path | None, fmt: str, no_cache: bool) -> None:
    """Check the repository's files against their schemas and each other.

    The whole repository is always checked (references cross files); PATHS only
    restrict which files' findings are reported. Exit 1 when there are errors.
    """
    root = resolve_repo(repo)
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
        try:
            path.resolve().relative_to(root)
        except ValueError:
            raise UsageError(f"{path} is outside the flag repository at {root}") from None
    with cached_documents(root, use=not no_cache) as documents:
        project, all_problems = validate_repository(root, documents=documents)
    problems = select_problems(all_problems, root, paths)
    files = len(list(project.documents())) + len(project.problems)
    checked = f"{project.config.name if project.config else root.name}: {files} files checked"
    report(problems, fmt=fmt, checked=checked, out=sys.stdout)
    if any(problem.level == "error" for problem in problems):
        raise click.exceptions.Exit(1)
