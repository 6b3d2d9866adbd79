"""Propose a change as a pull request, the GitOps way, without touching the caller's
work tree: the change is made in a temporary ``git worktree`` of the base branch,
committed on a branch of its own, pushed to ``origin`` and opened as a pull request
through the GitHub CLI (``gh``).

Re-running with the same change is idempotent: a branch whose content already matches
is not pushed again, and an open pull request for the branch is updated (its body),
never duplicated. Where there is no ``origin`` or no ``gh``, the branch is made locally
and the commands that would finish the job are returned for a person to run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flagstone import gitops
from flagstone.errors import GitError

GH_TIMEOUT = 60


@dataclass(slots=True)
class Proposal:
    branch: str
    base: str
    title: str
    commit: str | None = None
    changed: bool = False
    pushed: bool = False
    number: int | None = None
    url: str | None = None
    created: bool = False
    auto_merge: bool = False
    commands: list[str] = field(default_factory=list)


def commit_environment(top: Path) -> dict[str, str]:
    """The environment for ``git commit``: a committer identity only where git has none
    (a fresh CI runner), so a bot's commits never fail for want of a name."""
    env = dict(os.environ)
    try:
        configured = gitops.git_text(top, "config", "user.email")
    except GitError:
        configured = ""
    if not configured and not env.get("GIT_COMMITTER_EMAIL"):
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


def _has_origin(top: Path) -> bool:
    try:
        return "origin" in gitops.git_text(top, "remote").split()
    except GitError:
        return False


def _gh(args: list[str], cwd: Path, gh: str) -> str:
    try:
        done = subprocess.run(
            [gh, *args], cwd=cwd, capture_output=True, text=True, timeout=GH_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"gh {args[0]} took longer than {GH_TIMEOUT}s") from None
    if done.returncode != 0:
        cause = (done.stderr or done.stdout).strip().splitlines()
        raise GitError(f"gh {' '.join(args[:2])} failed: {cause[0] if cause else done.returncode}")
    return done.stdout


def _open_pull_request(cwd: Path, branch: str, gh: str) -> tuple[int, str] | None:
    out = _gh(["pr", "list", "--head", branch, "--state", "open", "--json", "number,url"], cwd, gh)
    try:
        found = json.loads(out or "[]")
    except ValueError:
        raise GitError("gh pr list answered something that is not JSON") from None
    if isinstance(found, list) and found and isinstance(found[0], dict):
        return int(found[0]["number"]), str(found[0].get("url", ""))
    return None


def _create_args(branch: str, base: str, title: str, body_file: str, *, gh: str) -> list[str]:
    return [
        gh,
        "pr",
        "create",
        "--head",
        branch,
        "--base",
        base,
        "--title",
        title,
        "--body-file",
        body_file,
    ]


def propose(
    root: Path,
    *,
    branch: str,
    title: str,
    body: str,
    edit: Callable[[Path], None],
    auto_merge: bool = False,
    gh: str = "gh",
) -> Proposal:
    """Make ``edit(flag_repo_dir)`` on a fresh copy of the base branch and propose it."""
    top = Path(gitops.git_text(root, "rev-parse", "--show-toplevel"))
    prefix = gitops.repo_prefix(root)
    base_ref = gitops.default_branch(root) or "HEAD"
    base = (
        base_ref.removeprefix("origin/")
        if base_ref != "HEAD"
        else gitops.git_text(top, "rev-parse", "--abbrev-ref", "HEAD")
    )
    proposal = Proposal(branch=branch, base=base, title=title)
    scratch = Path(tempfile.mkdtemp(prefix="flagstone-propose-"))
    work = scratch / "tree"
    gitops.git(top, "worktree", "add", "--quiet", "--detach", str(work), base_ref)
    try:
        edit(work / prefix if prefix else work)
        gitops.git(work, "add", "-A")
        if not gitops.git_text(work, "status", "--porcelain"):
            return proposal
        done = subprocess.run(
            ["git", "commit", "--quiet", "--no-verify", "-m", title, "-m", body],
            cwd=work,
            env=commit_environment(top),
            capture_output=True,
            text=True,
            timeout=gitops.GIT_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            cause = (done.stderr or done.stdout).strip().splitlines()
            raise GitError(f"git commit failed: {cause[0] if cause else done.returncode}")
        proposal.commit = gitops.git_text(work, "rev-parse", "HEAD")
        proposal.changed = True
        gitops.git(top, "branch", "--force", branch, proposal.commit)
        body_file = scratch / "body.md"
        body_file.write_text(body, encoding="utf-8")
        if not _has_origin(top):
            proposal.commands = [
                shlex.join(["git", "push", "-u", "origin", branch]),
                shlex.join(_create_args(branch, base, title, "BODY.md", gh="gh")),
            ]
            return proposal
        remote = gitops.git_text(top, "ls-remote", "--heads", "origin", f"refs/heads/{branch}")
        remote_sha = remote.split()[0] if remote else None
        same = False
        if remote_sha:
            gitops.git(top, "fetch", "--quiet", "origin", f"refs/heads/{branch}")
            same = gitops.git_text(top, "rev-parse", f"{remote_sha}^{{tree}}") == gitops.git_text(
                top, "rev-parse", f"{proposal.commit}^{{tree}}"
            )
        if not same:
            lease = f"--force-with-lease=refs/heads/{branch}:{remote_sha or ''}"
            gitops.git(
                top, "push", "--quiet", lease, "origin", f"{proposal.commit}:refs/heads/{branch}"
            )
            proposal.pushed = True
        if shutil.which(gh) is None:
            proposal.commands = [shlex.join(_create_args(branch, base, title, "BODY.md", gh="gh"))]
            return proposal
        existing = _open_pull_request(top, branch, gh)
        if existing:
            proposal.number, proposal.url = existing
            _gh(["pr", "edit", str(proposal.number), "--body-file", str(body_file)], top, gh)
        else:
            out = _gh(_create_args(branch, base, title, str(body_file), gh=gh)[1:], top, gh)
            proposal.created = True
            proposal.url = out.strip().splitlines()[-1] if out.strip() else None
            found = _open_pull_request(top, branch, gh)
            if found:
                proposal.number, proposal.url = found
        if auto_merge:
            _gh(["pr", "merge", branch, "--auto", "--squash"], top, gh)
            proposal.auto_merge = True
        return proposal
    finally:
        with contextlib.suppress(GitError):
            gitops.git(top, "worktree", "remove", "--force", str(work))
        shutil.rmtree(scratch, ignore_errors=True)
