"""Git stays the source of truth after an emergency kill.

``flagstone kill --emergency`` forces a flag off within seconds through the signed
overrides object; this module then writes the same kill (``enabled: false``) into the
release file on a branch ``flagstone/kill/<flag>-<env>``, commits it with the reason
and the override version, pushes it when there is an ``origin`` remote, and opens a
pull request with ``gh`` when it is on PATH (otherwise it prints the commands).

The edit is made in a temporary ``git worktree`` of the default branch by
``flagstone.pullrequest`` (which ``flagstone progress`` shares), so the user's checkout
(its branch, index and uncommitted changes) is never touched. When the pull request is
merged and published, ``publish`` retires the override (``retire_reconciled`` in
``flagstone.emergency``... see ``flagstone.cli.publish_cmd``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flagstone import edit as edits
from flagstone.errors import FlagstoneError, GitError
from flagstone.pullrequest import propose


def reconcile_branch(flag: str, environment: str) -> str:
    return f"flagstone/kill/{flag}-{environment}"


@dataclass
class ReconcileResult:
    """What was done to bring git in line, and what is left for a person to run."""

    branch: str
    commit: str | None = None
    pushed: bool = False
    pull_request: str | None = None  # what gh printed (the PR URL)
    todo: list[str] = field(default_factory=list)  # commands still to run
    notes: list[str] = field(default_factory=list)


def commit_message(
    flag: str, environment: str, *, reason: str, override_version: int, by: str, url: str
) -> str:
    return (
        f"kill {flag} in {environment} (emergency override {override_version})\n\n"
        f"Reason: {reason}\n\n"
        f"{flag} was forced to its off variation in {environment} by emergency override\n"
        f"version {override_version} ({url}), by {by}. Merging this makes git agree;\n"
        "the publish of the merged commit retires the override.\n"
    )


def reconcile_kill(
    root: Path,
    flag: str,
    environment: str,
    *,
    reason: str,
    override_version: int,
    by: str,
    overrides_url: str,
    gh: str = "gh",
) -> ReconcileResult:
    """Commit the kill on ``flagstone/kill/<flag>-<env>`` and open a pull request (see
    the module docstring; ``flagstone.pullrequest`` does the git and GitHub work). Raises
    GitError when git itself fails."""
    branch = reconcile_branch(flag, environment)
    message = commit_message(
        flag,
        environment,
        reason=reason,
        override_version=override_version,
        by=by,
        url=overrides_url,
    )
    title, _, details = message.partition("\n\n")
    body = (
        f"{details}\nThis pull request was opened by `flagstone kill --emergency`. "
        "Until it is merged and published, the flag is held off by the emergency override "
        f"only; `flagstone overrides show {flag} --env {environment}` shows it."
    )

    def write_kill(flag_root: Path) -> None:
        try:
            edits.set_enabled(flag_root, flag, environment, False)
        except FlagstoneError as error:
            raise GitError(
                f"cannot write the kill into the release file: {error.message}"
            ) from None

    proposal = propose(root, branch=branch, title=title, body=body, edit=write_kill, gh=gh)
    result = ReconcileResult(
        branch, commit=proposal.commit, pushed=proposal.pushed, pull_request=proposal.url
    )
    if not proposal.changed:
        result.notes.append(f"{flag} is already disabled in {environment} on {proposal.base}")
    result.todo.extend(proposal.commands)
    return result
