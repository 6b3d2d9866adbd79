"""``flagstone publish``: compile, sign and publish snapshots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from flagstone.cli.common import repo_option, resolve_repo
from flagstone.cli.overrides_cmd import retire_reconciled_overrides
from flagstone.compile import git_source
from flagstone.keys import KEY_ENV_VARIABLE, SigningKeys, select_publish_keys
from flagstone.publish import (
    Publisher,
    PublishResult,
    check_target_reaches_clients,
    open_target,
    selected_environments,
    uncommitted_flag_files,
)
from flagstone.validate import load_valid_project


@click.command()
@click.option(
    "--env",
    "environments",
    multiple=True,
    help="Environment to publish (repeatable). Default: every environment.",
)
@click.option("--to", "to", default=None, help="Target URL (default: publish.target, file://dist).")
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Private key file (repeatable). Default: ${KEY_ENV_VARIABLE}, else a key "
    "`flagstone keygen` wrote to .flagstone/ that signing.keys lists.",
)
@click.option(
    "--dev-key",
    "dev_key",
    is_flag=True,
    help="Local preview: sign with the untrusted development key (.flagstone/), even though "
    "signing.keys lists keys. Refused for remote targets.",
)
@click.option(
    "--allow-local-target",
    is_flag=True,
    help="Allow a file:// or memory:// target inside GitHub Actions (refused there by "
    "default: the runner's disk is thrown away with the job).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option("--force", is_flag=True, help="Publish even if the content is unchanged.")
@click.option(
    "--replace-unverified",
    is_flag=True,
    help="Replace a latest.json that does not verify with flagstone.yaml's keys (forged, or "
    "signed by a removed key); the version follows the highest verified snapshot.",
)
@click.option(
    "--allow-oversized",
    is_flag=True,
    help="Publish (with a warning) a snapshot larger than the SDKs' default max_bytes "
    "(256 MB, counted inflated); without it such a snapshot is refused.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@repo_option
def publish(
    environments: tuple[str, ...],
    to: str | None,
    key_files: tuple[Path, ...],
    dev_key: bool,
    allow_local_target: bool,
    dry_run: bool,
    force: bool,
    replace_unverified: bool,
    allow_oversized: bool,
    fmt: str,
    repo: Path | None,
) -> None:
    """Compile, sign and publish each environment's snapshot.

    Writes <target>/<env>/snapshots/<version>.json, then <target>/<env>/latest.json with a
    conditional write, so racing publishers never overwrite each other or go backwards.
    Inside GitHub Actions ($GITHUB_OUTPUT set) it also writes the step outputs
    <env>-version, <env>-digest, <env>-action, <env>-url and `published`.

    When flagstone.yaml's signing.keys lists keys, only a listed key signs (--key,
    $FLAGSTONE_SIGNING_KEY, or the file `flagstone keygen` wrote); without one it stops
    and says which key is missing. --dev-key is the explicit local preview.
    """
    root = resolve_repo(repo)
    project = load_valid_project(root)
    selected = selected_environments(project, environments)
    store = open_target(project, to)
    # Checked before a key is looked for or created: the target decides whether
    # anything here can reach a client at all.
    check_target_reaches_clients(store.url, allow_local_target=allow_local_target, dry_run=dry_run)
    signing = select_publish_keys(
        root,
        key_files,
        project.config.signing if project.config else {},
        development_key=dev_key,
        create_development_key=not dry_run,
    )
    publisher = Publisher(
        project,
        store,
        signing,
        force=force,
        dry_run=dry_run,
        source=git_source(root),
        replace_unverified=replace_unverified,
        allow_oversized=allow_oversized,
        allow_local_target=allow_local_target,
    )
    if signing.development and not dry_run:
        _warn_development_key(signing, root)
    changed = uncommitted_flag_files(root)
    if changed:
        click.echo(
            f"warning: {len(changed)} flag file(s) have uncommitted changes (e.g. {changed[0]}); "
            "they are published, but source.commit names the commit without them",
            err=True,
        )
    results: list[PublishResult] = []
    for environment in selected:
        result = publisher.publish(environment)
        results.append(result)
        if fmt == "text":
            click.echo(_describe(result))
        for warning in result.warnings:
            click.echo(f"warning: {result.environment}: {warning}", err=True)
    if fmt == "json":
        click.echo(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True))
    _write_github_output(results)
    if not dry_run:
        retire_reconciled_overrides(project, publisher, results, quiet=fmt == "json")


def _describe(result: PublishResult) -> str:
    env = result.environment
    if result.action == "published":
        was = f" (was {result.previous_version})" if result.previous_version else ""
        stored = (
            f", stored gzip-compressed: {result.stored_bytes} bytes"
            if result.compression != "none"
            else ""
        )
        return (
            f"{env}: published version {result.version}{was} → {result.snapshot_url}\n"
            f"  latest: {result.latest_url}\n  digest: {result.digest}; expires {result.expires}\n"
            f"  size: {result.size_bytes} bytes{stored}"
        )
    if result.action == "would-publish":
        change = (
            f"{result.previous_digest} → {result.digest}"
            if result.previous_digest not in (None, result.digest)
            else result.digest
        )
        was = f" (now {result.previous_version})" if result.previous_version else ""
        return (
            f"{env}: would publish version {result.version}{was}, {result.reason}, to "
            f"{result.latest_url}\n  digest: {change}"
        )
    return (
        f"{env}: nothing to publish — version {result.version} at {result.latest_url} is "
        f"current ({result.reason}; --force republishes)\n  digest: {result.digest}"
    )


def _warn_development_key(signing: SigningKeys, root: Path) -> None:
    created = "created just now" if signing.created else "from an earlier run"
    rel = os.path.relpath(signing.source, root)
    click.secho(
        f"WARNING: signing with the UNTRUSTED development key {rel} ({created}).\n"
        "  SDKs and `flagstone verify` reject these snapshots unless that key is trusted\n"
        "  explicitly. For real publishing: `flagstone keygen --note 'CI key'`, add the\n"
        f"  printed entry to signing.keys in flagstone.yaml, and pass the key via {KEY_ENV_VARIABLE}.",
        err=True,
        fg="yellow",
        bold=True,
    )


def _write_github_output(results: list[PublishResult]) -> None:
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    lines = []
    for result in results:
        lines.append(f"{result.environment}-version={result.version or ''}")
        lines.append(f"{result.environment}-digest={result.digest}")
        lines.append(f"{result.environment}-action={result.action}")
        lines.append(f"{result.environment}-url={result.latest_url}")
    published = [r.environment for r in results if r.action == "published"]
    lines.append(f"published={' '.join(published)}")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
