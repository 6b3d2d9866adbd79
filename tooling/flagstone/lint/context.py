"""What a lint rule is given besides the project: the time and the change history.

Both are injectable so that time-based rules are testable: ``LintContext.now`` is the
moment the rules judge against, and ``ChangeTimes.last_changed`` says when a file last
changed — from ``git log`` when the repository is a git work tree and the file is
committed and clean, from the file's modification time otherwise.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flagstone.model import Project
from flagstone.problems import Level, Problem

if TYPE_CHECKING:
    from flagstone.usage import UsageReport


class ChangeTimes(Protocol):
    def last_changed(self, rel: str) -> datetime:
        """When the file at ``rel`` (relative to the repository root) last changed."""
        ...


def _git(root: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


@dataclass
class RepositoryChangeTimes:
    """Last-change times from git history, falling back to file modification times."""

    root: Path
    _in_git: bool | None = field(default=None, init=False)

    def in_git(self) -> bool:
        if self._in_git is None:
            self._in_git = _git(self.root, "rev-parse", "--is-inside-work-tree") == "true"
        return self._in_git

    def last_changed(self, rel: str) -> datetime:
        if self.in_git() and not _git(self.root, "status", "--porcelain", "--", rel):
            committed = _git(self.root, "log", "-1", "--format=%cI", "--", rel)
            if committed:
                return datetime.fromisoformat(committed).astimezone(UTC)
        # Not in git, untracked, or changed since the last commit: the file itself says.
        return datetime.fromtimestamp((self.root / rel).stat().st_mtime, UTC)


@dataclass(frozen=True)
class FixedChangeTimes:
    """Change times given outright (tests, or callers that know better)."""

    times: Mapping[str, datetime]
    default: datetime

    def last_changed(self, rel: str) -> datetime:
        return self.times.get(rel, self.default)


@dataclass(frozen=True)
class LintContext:
    now: datetime
    history: ChangeTimes
    # A saved `flagstone usage` report (`lint --usage FILE`), for rules about live traffic.
    usage: UsageReport | None = None


class Rule(Protocol):
    """What every module in ``flagstone.lint.rules`` provides."""

    __doc__: str | None
    ID: str
    DEFAULT_LEVEL: Level
    OPTIONS: Mapping[str, Any]

    def check(
        self, project: Project, options: Mapping[str, Any], context: LintContext
    ) -> Iterator[Problem]: ...
