"""Authoring commands: ``new``, ``stage add|remove|set``, ``target add|remove`` and
``segment new|add|remove``. Each validates the would-be repository and runs the rollout
guardrails before writing, prints what it wrote and the semantic change, and
regenerates CODEOWNERS when ownership changes (see ``flagstone.authoring``)."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone import authoring
from flagstone.cli.common import repo_option, resolve_repo
from flagstone.edit import VALUE_TYPES
from flagstone.escape import guard_lines, terminal
from flagstone.model import FLAG_KINDS


def _print(result: authoring.AuthoringResult) -> None:
    for path in result.written:
        click.echo(f"wrote {path}")
    for change in result.changes:  # summaries quote names contributors wrote
        click.echo(guard_lines(terminal(f"  {change.line()}")))
    for note in result.notes:
        click.echo(guard_lines(terminal(f"note: {note}")), err=True)


env_option = click.option(
    "--env", "env", required=True, help="Environment whose release file to edit."
)


@click.command("new")
@click.argument("key")
@click.option("--owner", required=True, help="Owning team id (declared in flagstone.yaml).")
@click.option(
    "--type", "value_type", type=click.Choice(VALUE_TYPES), default="boolean", show_default=True
)
@click.option("--kind", type=click.Choice(FLAG_KINDS), default="release", show_default=True)
@click.option("--name", default=None, help="Display name (default: from the key).")
@click.option(
    "--description",
    default=None,
    help="What the flag changes (default: a TODO placeholder that lint reports).",
)
@click.option(
    "--expires", default=None, help="YYYY-MM-DD for temporary flags (default: 90 days from today)."
)
@click.option(
    "--variations",
    default=None,
    metavar="LIST",
    help="Comma-separated variations: names (boolean: two, the first true) or name=JSON "
    "pairs, e.g. 'control,treatment' or 'low=10,high=50'.",
)
@click.option(
    "--serve",
    default=None,
    metavar="VARIATION",
    help="The variation the progression rolls out (default: the first that is not off).",
)
@click.option(
    "--progression",
    default=None,
    metavar="STAGES",
    help="Rollout stages in every environment, e.g. 'staff,beta-testers,1%,10%,50%,100%': "
    "segment keys and percentages (stages named after the segment, or Npct).",
)
@click.option(
    "--bake",
    default=None,
    metavar="DURATION",
    help="Minimum time each stage runs before the next, e.g. 24h (needs --progression).",
)
@repo_option
def new(
    key: str,
    owner: str,
    value_type: str,
    kind: str,
    name: str | None,
    description: str | None,
    expires: str | None,
    variations: str | None,
    serve: str | None,
    progression: str | None,
    bake: str | None,
    repo: Path | None,
) -> None:
    """Create flags/KEY/flag.yaml and a disabled release file for every environment
    (with the --progression stages, at the first one), and regenerate CODEOWNERS."""
    _print(
        authoring.new_flag(
            resolve_repo(repo),
            key,
            owner=owner,
            value_type=value_type,
            kind=kind,
            name=name,
            description=description,
            expires=expires,
            variations=variations,
            serve=serve,
            progression=progression,
            bake=bake,
        )
    )


@click.group("stage")
def stage() -> None:
    """Add, remove or change a progression's stages in one environment."""


@stage.command("add")
@click.argument("flag")
@click.argument("name")
@env_option
@click.option("--percent", default=None, help="Share of contexts reached, 0-100.")
@click.option(
    "--segments",
    "segments",
    multiple=True,
    help="Segment keys reached (comma-separated or repeated).",
)
@click.option("--bake", default=None, help="Minimum time at this stage, e.g. 24h.")
@click.option("--at", "at", default=None, help="Scheduled start, e.g. 2026-12-03T09:00Z.")
@click.option("--before", default=None, metavar="STAGE", help="Insert before this stage.")
@click.option("--after", default=None, metavar="STAGE", help="Insert after this stage.")
@repo_option
def stage_add(
    flag: str,
    name: str,
    env: str,
    percent: str | None,
    segments: tuple[str, ...],
    bake: str | None,
    at: str | None,
    before: str | None,
    after: str | None,
    repo: Path | None,
) -> None:
    """Add stage NAME to FLAG's progression in --env (default: at the end)."""
    _print(
        authoring.add_stage(
            resolve_repo(repo),
            flag,
            env,
            name,
            percent=percent,
            segments=segments,
            bake=bake,
            at=at,
            before=before,
            after=after,
        )
    )


@stage.command("remove")
@click.argument("flag")
@click.argument("name")
@env_option
@repo_option
def stage_remove(flag: str, name: str, env: str, repo: Path | None) -> None:
    """Remove stage NAME (not the current one) from FLAG's progression in --env."""
    _print(authoring.remove_stage(resolve_repo(repo), flag, env, name))


@stage.command("set")
@click.argument("flag")
@click.argument("name")
@env_option
@click.option("--percent", default=None, help="Share of contexts reached ('none' removes it).")
@click.option(
    "--segments",
    "segments",
    multiple=True,
    help="Segment keys reached, replacing the stage's list ('none' removes it).",
)
@click.option("--bake", default=None, help="Minimum time at this stage ('none' removes it).")
@click.option("--at", "at", default=None, help="Scheduled start ('none' removes it).")
@repo_option
def stage_set(
    flag: str,
    name: str,
    env: str,
    percent: str | None,
    segments: tuple[str, ...],
    bake: str | None,
    at: str | None,
    repo: Path | None,
) -> None:
    """Change stage NAME's percent, segments, bake or schedule in --env."""
    _print(
        authoring.set_stage(
            resolve_repo(repo),
            flag,
            env,
            name,
            percent=percent,
            segments=segments or None,
            bake=bake,
            at=at,
        )
    )


@click.group("target")
def target() -> None:
    """Serve a variation to individual context keys in one environment."""


@target.command("add")
@click.argument("flag")
@click.argument("keys", nargs=-1, required=True)
@env_option
@click.option("--variation", required=True, help="The variation these keys get.")
@repo_option
def target_add(
    flag: str, keys: tuple[str, ...], env: str, variation: str, repo: Path | None
) -> None:
    """Target KEYS (context keys) to --variation of FLAG in --env."""
    _print(authoring.add_targets(resolve_repo(repo), flag, env, variation, keys))


@target.command("remove")
@click.argument("flag")
@click.argument("keys", nargs=-1, required=True)
@env_option
@repo_option
def target_remove(flag: str, keys: tuple[str, ...], env: str, repo: Path | None) -> None:
    """Stop targeting KEYS individually for FLAG in --env."""
    _print(authoring.remove_targets(resolve_repo(repo), flag, env, keys))


@click.group("segment")
def segment() -> None:
    """Create segments and change who is in them."""


@segment.command("new")
@click.argument("key")
@click.option("--owner", required=True, help="Owning team id (declared in flagstone.yaml).")
@click.option("--name", default=None, help="Display name (default: from the key).")
@click.option("--description", default=None, help="Who is in it and why.")
@click.option("--include", multiple=True, help="Context keys always in (comma-separated).")
@repo_option
def segment_new(
    key: str,
    owner: str,
    name: str | None,
    description: str | None,
    include: tuple[str, ...],
    repo: Path | None,
) -> None:
    """Create segments/KEY.yaml and regenerate CODEOWNERS."""
    _print(
        authoring.new_segment(
            resolve_repo(repo),
            key,
            owner=owner,
            name=name,
            description=description,
            include=include,
        )
    )


def _members(add: bool) -> click.Command:
    verb = "Add" if add else "Remove"

    def run(key: str, members: tuple[str, ...], exclude: bool, repo: Path | None) -> None:
        _print(
            authoring.change_segment_members(
                resolve_repo(repo),
                key,
                members,
                add=add,
                listing="exclude" if exclude else "include",
            )
        )

    run.__doc__ = f"{verb} context keys {'to' if add else 'from'} segment KEY's include list."
    command = repo_option(run)
    command = click.option(
        "--exclude", is_flag=True, help="The exclude list instead (keys never in)."
    )(command)
    command = click.argument("members", nargs=-1, required=True)(command)
    command = click.argument("key")(command)
    return click.command("add" if add else "remove")(command)


segment.add_command(_members(True))
segment.add_command(_members(False))
