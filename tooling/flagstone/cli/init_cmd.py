"""``flagstone init [DIR]``: scaffold a new flag repository."""

from __future__ import annotations

from pathlib import Path

import click

from flagstone.scaffold import (
    DEFAULT_ACTION,
    DEFAULT_ENVIRONMENTS,
    DEFAULT_SCAFFOLD_TARGET,
    ScaffoldOptions,
    default_project_name,
    repository_settings,
    scaffold_repository,
)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path("."), required=False)
@click.option("--project", default=None, help="Project key (default: from the directory name).")
@click.option(
    "--environments",
    default=",".join(DEFAULT_ENVIRONMENTS),
    show_default=True,
    help="Comma-separated environments, the production-like one last.",
)
@click.option(
    "--admins",
    default=None,
    metavar="HANDLE",
    help="GitHub team owning the repository (default: @<project>/platform).",
)
@click.option(
    "--action",
    default=DEFAULT_ACTION,
    show_default=True,
    metavar="OWNER/REPO@REF",
    help="The Flagstone action the workflow uses (also the pre-commit hooks repository).",
)
@click.option(
    "--target",
    default=DEFAULT_SCAFFOLD_TARGET,
    show_default=True,
    metavar="URL",
    help="Where CI publishes snapshots: s3://BUCKET/PREFIX, gs://…, az://…, https://… "
    "(file:// is refused inside GitHub Actions).",
)
def init(
    directory: Path,
    project: str | None,
    environments: str,
    admins: str | None,
    action: str,
    target: str,
) -> int:
    """Scaffold a flag repository in DIRECTORY (default: here) that passes validate,
    lint and codeowners --check as written. Never overwrites a file: if any would be,
    nothing is written. An existing .gitignore gets the key patterns it lacks appended."""
    project = project or default_project_name(directory)
    options = ScaffoldOptions(
        project=project,
        environments=tuple(e.strip() for e in environments.split(",") if e.strip()),
        admins=admins or f"@{project.replace('.', '-').replace('_', '-')}/platform",
        action=action,
        target=target,
    )
    result = scaffold_repository(directory, options)
    for path in result.created:
        click.echo(f"created {path}")
    for path in result.extended:
        click.echo(f"extended {path} (added the key patterns it lacked)")
    settings = repository_settings(target)
    click.echo(f"\nFlag repository '{project}' created in {directory}, publishing to {target}.")
    if target.startswith("file:"):
        click.echo(
            "  Note: CI refuses to publish to file:// (the runner's disk is thrown away); set\n"
            "  the FLAGSTONE_PUBLISH_TARGET variable below, or run init again with --target."
        )
    click.echo("\nSet these in the GitHub repository (Settings > Secrets and variables > Actions):")
    width = max(len(s.name) for s in settings)
    for setting in settings:
        optional = "" if setting.required else " (optional)"
        click.echo(f"  {setting.kind:<8} {setting.name:<{width}}  {setting.value}{optional}")
    click.echo(
        "\nNext:\n"
        "  1. Put your team handles in flagstone.yaml, then run `flagstone codeowners`.\n"
        "  2. `flagstone keygen --note 'CI key'`: add the printed entry to signing.keys in\n"
        "     flagstone.yaml and store the private key as the FLAGSTONE_SIGNING_KEY secret.\n"
        "  3. `pre-commit install`, commit, push: pull requests get checks and a diff comment,\n"
        "     pushes to main publish signed snapshots."
    )
    return 0
