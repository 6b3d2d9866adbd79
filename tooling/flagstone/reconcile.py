"""Git stays the source of truth after an emergency kill.

``flagstone kill --emergency`` forces a flag off within seconds through the signed
overrides object; this module then writes the same kill (``enabled: false``) into the
release file on a branch ``flagstone/kill/<flag>-<env>``, commits it with the reason
and the override version, pushes it when there is an ``origin`` remote, and opens a
pull request with ``gh`` when it is on PATH (otherwise it prints the commands).

The edit is made in a temporary ``git worktree`` of HEAD, so the user's checkout (its
branch, index and uncommitted changes) is never touched. When the pull request is
merged and published, ``publish`` retires the override (``retire_reconciled`` in
``flagstone.emergency``... see ``flagstone.cli.publish_cmd``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flagstone import edit as edits
from flagstone.errors import FlagstoneError, GitError

_GIT_TIMEOUT = 120


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


def _git(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GitError(f"cannot run git {args[0]}: {error}") from None


def _checked(done: subprocess.CompletedProcess[str], what: str) -> str:
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise GitError(f"{what} failed: {detail[-1] if detail else f'exit {done.returncode}'}")
    return done.stdout.strip()


def _identity_environment(root: Path) -> dict[str, str]:
    """The environment for ``git commit``: a committer identity only when none is set
    (a fresh CI runner has none)."""
    env = dict(os.environ)
    if not _git(root, "config", "user.email").stdout.strip():
        actions = bool(env.get("GITHUB_ACTIONS"))
        name = "github-actions[bot]" if actions else "flagstone"
        email = (
            "41898282+github-actions[bot]@users.noreply.github.com"
            if actions
            else "flagstone@localhost"
        )
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", name)
            env.setdefault(f"GIT_{role}_EMAIL", email)
    return env


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
    the module docstring). Raises GitError when git itself fails."""
    branch = reconcile_branch(flag, environment)
    result = ReconcileResult(branch)
    toplevel = Path(_checked(_git(root, "rev-parse", "--show-toplevel"), "git rev-parse"))
    relative = root.resolve().relative_to(toplevel.resolve())
    base = _git(root, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    if base in ("", "HEAD"):
        base = os.environ.get("GITHUB_REF_NAME") or "main"
    exists = _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").returncode == 0
    message = commit_message(
        flag,
        environment,
        reason=reason,
        override_version=override_version,
        by=by,
        url=overrides_url,
    )
    workspace = Path(tempfile.mkdtemp(prefix="flagstone-kill-"))
    tree = workspace / "tree"
    try:
        if exists:
            _checked(_git(root, "worktree", "add", str(tree), branch), "git worktree add")
        else:
            _checked(
                _git(root, "worktree", "add", "-b", branch, str(tree), "HEAD"), "git worktree add"
            )
        flag_root = tree / relative
        try:
            edited = edits.set_enabled(flag_root, flag, environment, False)
        except FlagstoneError as error:
            raise GitError(
                f"cannot write the kill into the release file: {error.message}"
            ) from None
        if edited.written:
            paths = [str((relative / rel).as_posix()) for rel in edited.written]
            _checked(_git(tree, "add", "--", *paths), "git add")
            _checked(
                _git(tree, "commit", "-q", "-m", message, env=_identity_environment(root)),
                "git commit",
            )
        else:
            result.notes.append(f"{flag} is already disabled in {environment} on {branch}")
        result.commit = _checked(_git(tree, "rev-parse", "HEAD"), "git rev-parse")
    finally:
        _git(root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(workspace, ignore_errors=True)

    push = ["git", "push", "-u", "origin", branch]
    if _git(root, "remote", "get-url", "origin").returncode == 0:
        pushed = _git(root, "push", "-u", "origin", branch)
        result.pushed = pushed.returncode == 0
        if not result.pushed:
            result.notes.append(f"git push failed: {(pushed.stderr or '').strip()[:300]}")
            result.todo.append(shlex.join(push))
    else:
        result.todo.append(shlex.join(push))
    title = f"Kill {flag} in {environment} (emergency override {override_version})"
    body = (
        f"{message}\nThis pull request was opened by `flagstone kill --emergency`. "
        "Until it is merged and published, the flag is held off by the emergency override "
        f"only; `flagstone overrides show {flag} --env {environment}` shows it."
    )
    create = [
        gh,
        "pr",
        "create",
        "--head",
        branch,
        "--base",
        base,
        "--title",
        title,
        "--body",
        body,
    ]
    found = shutil.which(gh)
    if found is None or result.todo:
        result.todo.append(shlex.join(["gh", *create[1:]]))
        return result
    try:
        opened = subprocess.run(
            [found, *create[1:]], cwd=root, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        result.notes.append(f"gh failed: {error}")
        result.todo.append(shlex.join(["gh", *create[1:]]))
        return result
    if opened.returncode == 0:
        result.pull_request = opened.stdout.strip() or "opened"
    else:
        result.notes.append(f"gh pr create failed: {(opened.stderr or '').strip()[:300]}")
        result.todo.append(shlex.join(["gh", *create[1:]]))
    return result
