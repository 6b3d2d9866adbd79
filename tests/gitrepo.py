"""Build real git repositories in temporary folders for history tests.

``GitRepo`` runs the real ``git`` binary with a fixed identity and clock per commit
(``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` environment variables), so commit ids, authors and
dates are reproducible and several authors can be simulated without touching any
global configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

EXAMPLE_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PARTS = ("flagstone.yaml", "flags", "segments")


@dataclass(frozen=True)
class Author:
    name: str
    email: str


ALICE = Author("Alice Example", "alice@example.com")
BOB = Author("Bob Example", "bob@example.com")
CAROL = Author("Carol Example", "carol@example.com")


class GitRepo:
    """A git work tree under ``path`` whose commits carry chosen authors and dates."""

    def __init__(self, path: Path, *, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.clock = "2026-11-01T09:00:00Z"
        self.git("init", "-q", "-b", branch)

    def git(self, *args: str, author: Author = ALICE, date: str | None = None) -> str:
        when = date or self.clock
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
            "GIT_AUTHOR_DATE": when,
            "GIT_COMMITTER_DATE": when,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def write(self, rel: str, text: str) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return target

    def replace(self, rel: str, old: str, new: str) -> None:
        target = self.path / rel
        text = target.read_text(encoding="utf-8")
        if old not in text:
            raise AssertionError(f"{old!r} not in {rel}")
        target.write_text(text.replace(old, new, 1), encoding="utf-8")

    def remove(self, rel: str) -> None:
        self.git("rm", "-r", "-q", rel)

    def copy_example(self) -> None:
        """The repository's own example flags, teams and segments."""
        for part in EXAMPLE_PARTS:
            source = EXAMPLE_ROOT / part
            if source.is_dir():
                shutil.copytree(source, self.path / part)
            else:
                shutil.copy2(source, self.path / part)

    def commit(self, subject: str, *, author: Author = ALICE, date: str | None = None) -> str:
        if date:
            self.clock = date
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", subject, author=author)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def branch(self, name: str, start: str = "HEAD") -> None:
        self.git("checkout", "-q", "-b", name, start)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)

    def merge(
        self, branch: str, subject: str, *, author: Author = ALICE, date: str | None = None
    ) -> str:
        """A merge commit (never fast-forward), as a pull-request merge makes."""
        if date:
            self.clock = date
        self.git("merge", "-q", "--no-ff", "-m", subject, branch, author=author)
        return self.head()

    def move(self, old: str, new: str) -> None:
        self.git("mv", old, new)

    def revert(self, commit: str, *, author: Author = ALICE, date: str | None = None) -> str:
        if date:
            self.clock = date
        self.git("revert", "--no-edit", commit, author=author)
        return self.head()
