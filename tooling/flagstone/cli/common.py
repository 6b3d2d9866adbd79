"""Options and helpers shared by the click commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from flagstone.errors import FileAccessError, UsageError
from flagstone.model import find_root
from flagstone.problems import FORMAT_CHOICES
from flagstone.render import View
from flagstone.safefiles import write_file_atomically

F = TypeVar("F", bound=Callable[..., Any])


def repo_option(func: F) -> F:
    """``--repo DIR``: the flag repository (default: found upward from the cwd)."""
    return click.option(
        "--repo",
        "repo",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Flag repository root (default: the nearest directory with flagstone.yaml).",
    )(func)


def cache_option(func: F) -> F:
    """``--no-cache``: neither read nor write ``.flagstone/cache/`` (``flagstone.toolcache``)."""
    return click.option(
        "--no-cache",
        "no_cache",
        is_flag=True,
        help="Do not use .flagstone/cache/ (also: FLAGSTONE_NO_CACHE=1).",
    )(func)


def emergency_key_option(func: F) -> F:
    """``--key FILE`` (repeatable) for commands that sign emergency overrides."""
    return click.option(
        "--key",
        "key_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Emergency key file (default: $FLAGSTONE_EMERGENCY_KEY).",
    )(func)


def findings_format_option(func: F) -> F:
    """``--format auto|text|json|github`` for commands that report Problems."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMAT_CHOICES),
        default="auto",
        show_default=True,
        help="Output format; auto picks github inside GitHub Actions.",
    )(func)


def view_format_option(view: View[Any], help: str | None = None) -> Callable[[F], F]:
    """``--format`` with the formats registered for ``view`` (``flagstone.render``)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(view.formats()),
        default=view.default,
        show_default=True,
        help=help,
    )


def echo_view(view: View[Any], fmt: str, data: Any) -> None:
    """Print ``data`` rendered in ``fmt`` (the renderer ends its own lines)."""
    click.echo(view.render(fmt, data), nl=False)


def resolve_repo(repo: Path | None) -> Path:
    """The repository root from ``--repo`` or the current directory."""
    return find_root(repo if repo is not None else Path.cwd())


def output_file_option(what: str) -> Callable[[F], F]:
    """``-o/--output FILE`` for commands that print a document to stdout by default."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        default=None,
        help=f"Write the {what} to FILE instead of standard output.",
    )


def write_output_file(path: Path, data: bytes) -> None:
    """Write ``-o FILE`` whole or not at all (``safefiles``: a temporary file next to it,
    renamed over it; a destination that is a symbolic link is refused, not replaced).
    A path that cannot be written is a one-line usage error (exit 2)."""
    try:
        write_file_atomically(path, data)
    except FileAccessError as error:
        raise UsageError(error.message, hint=error.hint) from None
