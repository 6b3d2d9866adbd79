"""``flagstone kill --emergency`` / ``--undo`` and ``flagstone overrides list|show|clear``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from flagstone import emergency
from flagstone.cli.common import emergency_key_option, repo_option, resolve_repo
from flagstone.compile import compile_environment
from flagstone.envelope import parse_timestamp
from flagstone.errors import EnvelopeError, FlagstoneError, GitError, RepositoryError, UsageError
from flagstone.model import Project, read_project
from flagstone.overrides import OverrideEntry
from flagstone.publish import (
    LATEST,
    MAX_SNAPSHOT_BYTES,
    PublishedSnapshot,
    Publisher,
    PublishResult,
    open_target,
)
from flagstone.reconcile import reconcile_kill


def _project(root: Path, environment: str, flag: str | None = None) -> Project:
    """The project, read without requiring it to be valid: an unrelated broken file must
    not stop an emergency kill."""
    project = read_project(root)
    if project.config is None:
        raise RepositoryError(f"{root}/flagstone.yaml cannot be read")
    if environment not in project.environments:
        raise UsageError(
            f"unknown environment {environment!r} "
            f"(project environments: {', '.join(project.environments) or 'none'})"
        )
    if flag is not None and flag not in project.flags and flag not in project.unreadable_flags:
        raise UsageError(f"unknown flag {flag!r}", hint="flags live in flags/<key>/flag.yaml")
    return project


def _snapshot_in_force(
    project: Project, to: str | None, environment: str
) -> PublishedSnapshot | None:
    """What latest.json says about itself (for the record in the override entry only)."""
    store = open_target(project, to)
    path = f"{environment}/{LATEST}"
    try:
        found = store.get_optional(path, max_bytes=MAX_SNAPSHOT_BYTES)
        if found is None or found.data is None:
            return None
        name = project.config.name if project.config else ""
        return PublishedSnapshot.from_envelope(found.data, path, name, environment)
    except Exception:  # informational only: the kill must not wait for or fail on it
        return None


def emergency_kill(
    *,
    flag: str,
    environment: str,
    reason: str,
    key_files: tuple[Path, ...],
    undo: bool,
    expires: str,
    by: str | None,
    to: str | None,
    reconcile: bool,
    repo: Path | None,
) -> None:
    root = resolve_repo(repo)
    project = _project(root, environment, flag)
    keyring = emergency.emergency_keyring(project)
    keys = emergency.resolve_emergency_keys(key_files)
    emergency.check_signers(keys, keyring)
    actor = by or emergency.who_acts(root=root)
    now = time.time()
    store = open_target(project, to)
    name = project.config.name if project.config else ""
    if undo:
        change = emergency.remove_change(
            [flag], action="undo", by=actor, now=now, reason=reason.strip()
        )
    else:
        if not reason.strip():
            raise UsageError("--reason is required with --emergency: say why the flag is killed")
        snapshot = _snapshot_in_force(project, to, environment)
        change = emergency.kill_change(
            flag,
            reason=reason,
            by=actor,
            now=now,
            expires_after=expires,
            snapshot_version=snapshot.version if snapshot else None,
            commit=snapshot.commit if snapshot else None,
        )
    written = emergency.write_overrides(
        store,
        project_name=name,
        environment=environment,
        keys=keys,
        keyring=keyring,
        change=change,
    )
    verb = "restored" if undo else "killed"
    click.echo(
        f"{verb} {flag} in {environment}: overrides version {written.version} → {written.url}"
    )
    click.echo(
        f"  {len(written.entries)} override(s) in force; SDKs apply it within their override "
        "poll interval (default 5 s)"
    )
    flagd = emergency.rewrite_flagd(project, store, environment, written.entries)
    if flagd:
        click.echo(f"  flagd export rewritten: {flagd}")
    if undo or not reconcile:
        if not undo:
            click.echo(f"  reconcile git yourself: flagstone kill {flag} --env {environment}")
        return
    try:
        result = reconcile_kill(
            root,
            flag,
            environment,
            reason=reason.strip(),
            override_version=written.version,
            by=actor,
            overrides_url=written.url,
        )
    except GitError as error:
        click.echo(
            f"warning: the override is in force, but git is not reconciled: {error}", err=True
        )
        click.echo(
            f"  reconcile by hand: flagstone kill {flag} --env {environment}, commit, open a PR",
            err=True,
        )
        return
    click.echo(f"reconcile: {result.commit or '?'} on branch {result.branch}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    if result.pull_request:
        click.echo(f"  pull request: {result.pull_request}")
    for command in result.todo:
        click.echo(f"  run: {command}")


@click.group("overrides")
def overrides() -> None:
    """Emergency overrides in force (signed kill-only objects next to latest.json)."""


def _entry_json(entry: OverrideEntry, now: float) -> dict[str, Any]:
    return {"flag": entry.flag, **entry.to_json(), "in_force": entry.live(now)}


env_option = click.option("--env", "environment", required=True, help="Environment.")
to_option = click.option("--to", "to", default=None, help="Target URL (default: publish.target).")
format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def _current(repo: Path | None, environment: str, to: str | None) -> emergency.CurrentOverrides:
    root = resolve_repo(repo)
    project = _project(root, environment)
    keyring = emergency.emergency_keyring(project)
    name = project.config.name if project.config else ""
    return emergency.read_overrides(open_target(project, to), environment, keyring, name)


@overrides.command("list")
@env_option
@to_option
@format_option
@repo_option
def list_(environment: str, to: str | None, fmt: str, repo: Path | None) -> None:
    """The overrides of one environment (verified against signing.emergency.keys)."""
    current = _current(repo, environment, to)
    now = time.time()
    entries = list(current.overrides.entries.values()) if current.overrides else []
    if fmt == "json":
        document = {
            "environment": environment,
            "version": current.version,
            "overrides": [_entry_json(entry, now) for entry in entries],
        }
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    if current.overrides is None:
        click.echo(f"{environment}: no overrides object (nothing overridden)")
        return
    click.echo(
        f"{environment}: overrides version {current.version}, {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    )
    for entry in entries:
        state = "in force" if entry.live(now) else "EXPIRED"
        click.echo(
            f"  {entry.flag}: off since {entry.at} by {entry.by}, expires {entry.expires} "
            f"({state}) — {entry.reason}"
        )


@overrides.command("show")
@click.argument("flag")
@env_option
@to_option
@format_option
@repo_option
def show(flag: str, environment: str, to: str | None, fmt: str, repo: Path | None) -> None:
    """One flag's override, if any (exit 1 when it has none)."""
    current = _current(repo, environment, to)
    entry = current.overrides.entries.get(flag) if current.overrides else None
    if entry is None:
        click.echo(f"{flag} has no emergency override in {environment}")
        raise SystemExit(1)
    now = time.time()
    if fmt == "json":
        click.echo(json.dumps(_entry_json(entry, now), indent=2, sort_keys=True))
        return
    click.echo(
        f"{flag} in {environment}: forced to its off variation (overrides version {current.version})"
    )
    click.echo(f"  reason:  {entry.reason}")
    click.echo(f"  by:      {entry.by} at {entry.at}")
    click.echo(
        f"  expires: {entry.expires}{'' if entry.live(now) else ' (EXPIRED: no longer applied)'}"
    )
    if entry.snapshot_version is not None or entry.commit is not None:
        click.echo(
            f"  made against snapshot {entry.snapshot_version} ({(entry.commit or '?')[:12]})"
        )


@overrides.command("clear")
@click.argument("flags", nargs=-1)
@env_option
@click.option("--reason", default="", help="Why (recorded in the signed history).")
@emergency_key_option
@click.option("--by", default=None, help="Who is acting (default: git user.email / $GITHUB_ACTOR).")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an overrides object that fails verification (its entries are dropped).",
)
@to_option
@repo_option
def clear(
    flags: tuple[str, ...],
    environment: str,
    reason: str,
    key_files: tuple[Path, ...],
    by: str | None,
    force: bool,
    to: str | None,
    repo: Path | None,
) -> None:
    """Remove the overrides of FLAGS (all of them when none is named), signed."""
    if force and flags:
        raise UsageError("--force clears every override; name no flags with it")
    root = resolve_repo(repo)
    project = _project(root, environment)
    keyring = emergency.emergency_keyring(project)
    keys = emergency.resolve_emergency_keys(key_files)
    actor = by or emergency.who_acts(root=root)
    store = open_target(project, to)
    written = emergency.write_overrides(
        store,
        project_name=project.config.name if project.config else "",
        environment=environment,
        keys=keys,
        keyring=keyring,
        change=emergency.remove_change(
            list(flags) or None, action="clear", by=actor, now=time.time(), reason=reason
        ),
        replace_unverifiable=force,
    )
    click.echo(
        f"cleared {', '.join(flags) or 'every override'} in {environment}: overrides version "
        f"{written.version}, {len(written.entries)} left → {written.url}"
    )
    flagd = emergency.rewrite_flagd(project, store, environment, written.entries)
    if flagd:
        click.echo(f"  flagd export rewritten: {flagd}")


def retire_reconciled_overrides(
    project: Project, publisher: Publisher, results: list[PublishResult], *, quiet: bool
) -> None:
    """After ``publish``: retire emergency overrides that the published snapshots agree
    with (the reconcile pull request was merged), when the emergency key is available
    ($FLAGSTONE_EMERGENCY_KEY); otherwise print the command that would. An override
    left in place changes nothing while git also disables the flag."""
    keys = None
    if os.environ.get(emergency.EMERGENCY_KEY_ENV_VARIABLE, "").strip():
        keys = emergency.resolve_emergency_keys()
    actor = emergency.who_acts(root=project.root)
    for result in results:
        environment = result.environment

        def payload(environment: str = environment) -> dict[str, Any]:
            return compile_environment(project, environment, source=publisher.source)

        try:
            outcome = emergency.retire_reconciled(
                project, publisher.store, environment, payload, keys, by=actor
            )
        except FlagstoneError as error:
            click.echo(f"warning: {environment}: overrides not checked: {error}", err=True)
            continue
        if outcome is None:
            continue
        flags = ", ".join(outcome.reconciled)
        if outcome.retired is not None:
            if not quiet:
                click.echo(
                    f"{environment}: retired the emergency override of {flags} (git now "
                    f"disables it too): overrides version {outcome.retired.version}"
                )
            flagd = emergency.rewrite_flagd(
                project, publisher.store, environment, outcome.retired.entries
            )
            if flagd and not quiet:
                click.echo(f"  flagd export rewritten: {flagd}")
        elif not quiet:
            click.echo(
                f"{environment}: git now disables {flags}, which an emergency override also "
                f"holds off; retire it with the emergency key: {outcome.command}"
            )


def override_events(
    root: Path,
    *,
    flag: str | None,
    environment: str | None,
    since: float | None,
    until: float | None,
    to: str | None,
) -> list[emergency.OverrideEvent]:
    """The emergency override events of the store's history, for ``flagstone log``."""
    project = read_project(root)
    if project.config is None:
        raise RepositoryError(f"{root}/flagstone.yaml cannot be read")
    try:
        keyring: emergency.EmergencyKeyring | None = emergency.emergency_keyring(project)
    except UsageError:
        keyring = None  # listed, marked unverified
    store = open_target(project, to)
    events = []
    for name in [environment] if environment else project.environments:
        for event in emergency.override_history(store, name, keyring, project.config.name):
            if flag is not None and flag not in event.flags:
                continue
            moment = _instant(event.at)
            if since is not None and (moment is None or moment < since):
                continue
            if until is not None and (moment is None or moment > until):
                continue
            events.append(event)
    return sorted(events, key=lambda event: (event.at, event.environment, event.version))


def _instant(text: str) -> float | None:
    try:
        return parse_timestamp(text, "time")
    except EnvelopeError:
        return None


def render_override_events(events: list[emergency.OverrideEvent]) -> str:
    lines = ["", "emergency overrides (signed history in the store):"]
    if not events:
        lines.append("  none")
    for event in events:
        mark = "" if event.verified else "  [UNVERIFIED: signature does not check]"
        flags = ", ".join(event.flags) or "every flag"
        reason = f" — {event.reason}" if event.reason else ""
        lines.append(
            f"  {event.at}  {event.environment}  v{event.version}  {event.action} {flags} "
            f"by {event.by}{reason}{mark}"
        )
    return "\n".join(lines) + "\n"
