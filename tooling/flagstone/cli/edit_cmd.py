"""Comment-preserving edit commands (``new`` and the other authoring commands are in
``authoring_cmd``): ``advance``, ``rollout``, ``kill``,
``enable`` and ``archive``. Each validates the would-be repository before writing and
prints the semantic diff it made."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone import edit as edits
from flagstone.cli.common import emergency_key_option, repo_option, resolve_repo
from flagstone.errors import UsageError
from flagstone.escape import guard_lines, terminal


def _print(result: edits.EditResult) -> None:
    if result.note:
        click.echo(result.note)
    for notice in result.notices:
        click.echo(guard_lines(terminal(notice)))  # they quote rule names too
    for path in result.written:
        click.echo(f"wrote {path}")
    for change in result.changes:  # summaries quote names contributors wrote
        click.echo(guard_lines(terminal(f"  {change.line()}")))


env_option = click.option(
    "--env", "env", required=True, help="Environment whose release file to edit."
)
force_option = click.option(
    "--force",
    is_flag=True,
    default=False,
    help="Write even when the rollout guardrails refuse the edit (CI still checks).",
)


@click.command("advance")
@click.argument("flag")
@env_option
@click.option("--to", "to", default=None, help="Stage to move to (default: the next one).")
@force_option
@repo_option
def advance(flag: str, env: str, to: str | None, force: bool, repo: Path | None) -> None:
    """Move a progression's current stage forward (or to --to STAGE)."""
    _print(edits.advance(resolve_repo(repo), flag, env, to, force=force))


@click.command("rollout")
@click.argument("flag")
@env_option
@click.option(
    "--percent", type=float, required=True, help="Share of contexts, 0-100, up to 3 decimals."
)
@force_option
@repo_option
def rollout(flag: str, env: str, percent: float, force: bool, repo: Path | None) -> None:
    """Set the rolled-out share: move a progression to the stage with that percent (or
    set the current stage's percent), or set a two-way split."""
    _print(edits.rollout(resolve_repo(repo), flag, env, percent, force=force))


def _switch(name: str, enabled: bool, summary: str) -> click.Command:
    """``kill`` and ``enable``: the same edit of ``enabled`` with opposite values."""

    def run(flag: str, env: str, force: bool, repo: Path | None) -> None:
        _print(edits.set_enabled(resolve_repo(repo), flag, env, enabled, force=force))

    run.__doc__ = summary
    command = env_option(force_option(repo_option(run)))
    return click.command(name)(click.argument("flag")(command))


@click.command("kill")
@click.argument("flag")
@env_option
@click.option(
    "--emergency",
    is_flag=True,
    help="Also force FLAG off within seconds through a signed emergency override, and "
    "open a pull request with the kill (see docs/readme/emergency.md).",
)
@click.option("--reason", default="", help="Why (required with --emergency; recorded and signed).")
@emergency_key_option
@click.option("--undo", is_flag=True, help="With --emergency: remove FLAG's override (signed).")
@click.option(
    "--expires", default="7d", show_default=True, help="With --emergency: how long it holds."
)
@click.option("--by", default=None, help="Who is acting (default: $GITHUB_ACTOR / git user.email).")
@click.option("--to", "to", default=None, help="Target URL (default: publish.target).")
@click.option(
    "--no-pr", "no_pr", is_flag=True, help="With --emergency: no reconcile branch or pull request."
)
@repo_option
def kill(
    flag: str,
    env: str,
    emergency: bool,
    reason: str,
    key_files: tuple[Path, ...],
    undo: bool,
    expires: str,
    by: str | None,
    to: str | None,
    no_pr: bool,
    repo: Path | None,
) -> None:
    """Disable FLAG in one environment: everyone gets its off variation.

    Without --emergency this edits the release file (enabled: false) for a pull request.
    With --emergency it publishes a signed override that SDKs apply within seconds, then
    commits the same edit on a branch flagstone/kill/FLAG-ENV and opens a pull request.
    """
    if not emergency:
        extras = [
            name
            for name, used in (
                ("--reason", bool(reason)),
                ("--key", bool(key_files)),
                ("--undo", undo),
                ("--by", by is not None),
                ("--to", to is not None),
                ("--no-pr", no_pr),
            )
            if used
        ]
        if extras:
            raise UsageError(f"{', '.join(extras)} only apply with --emergency")
        _print(edits.set_enabled(resolve_repo(repo), flag, env, False))
        return
    from flagstone.cli.overrides_cmd import emergency_kill

    emergency_kill(
        flag=flag,
        environment=env,
        reason=reason,
        key_files=key_files,
        undo=undo,
        expires=expires,
        by=by,
        to=to,
        reconcile=not no_pr,
        repo=repo,
    )


enable = _switch("enable", True, "Enable FLAG in one environment.")


@click.command("archive")
@click.argument("flag")
@repo_option
def archive(flag: str, repo: Path | None) -> None:
    """Mark FLAG archived; refused while another live flag has it as a prerequisite."""
    _print(edits.archive(resolve_repo(repo), flag))
