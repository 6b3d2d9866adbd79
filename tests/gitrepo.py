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
        self.git("rm", "-r", "-q", "-f", rel)

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


def run_cli(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``flagstone ARGS`` in-process from ``cwd``: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from flagstone.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
                code = 0
            except SystemExit as exit_:
                code = int(exit_.code or 0)
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


# Commits of the shared history scenario, by name -> (date, author, PR number or None).
HISTORY = {
    "initial": ("2026-11-01T09:00:00Z", ALICE, None),
    "advance": ("2026-11-02T10:00:00Z", ALICE, 12),  # merge of Bob's branch
    "rename": ("2026-11-03T10:00:00Z", CAROL, 13),
    "bm25": ("2026-11-04T10:00:00Z", BOB, 14),
    "revert": ("2026-11-05T10:00:00Z", ALICE, None),
    "tester": ("2026-11-06T10:00:00Z", CAROL, 15),
    "readme": ("2026-11-07T10:00:00Z", BOB, None),
}


def build_history(path: Path) -> dict[str, str]:
    """The example repository with a realistic history on ``main``: a merged pull
    request (authored by Bob, merged by Alice), a squash-merged rename, a change and its
    revert, a segment edit, a commit touching no flag file, and an unmerged branch.
    Returns commit ids by the names of ``HISTORY``."""
    repo = GitRepo(path)
    shas: dict[str, str] = {}
    repo.copy_example()
    shas["initial"] = repo.commit("Initial flags", author=ALICE, date=HISTORY["initial"][0])
    repo.branch("advance-checkout")
    repo.replace("flags/new-checkout/production.yaml", "current: beta", "current: ten")
    repo.commit("Advance new-checkout to ten", author=BOB, date="2026-11-02T09:00:00Z")
    repo.checkout("main")
    shas["advance"] = repo.merge(
        "advance-checkout",
        "Merge pull request #12 from acme/advance-checkout",
        author=ALICE,
        date=HISTORY["advance"][0],
    )
    repo.move("flags/search-ranking", "flags/search-order")
    shas["rename"] = repo.commit(
        "Rename search-ranking to search-order (#13)", author=CAROL, date=HISTORY["rename"][0]
    )
    repo.replace("flags/search-order/production.yaml", "default: classic", "default: bm25")
    shas["bm25"] = repo.commit("Serve bm25 by default (#14)", author=BOB, date=HISTORY["bm25"][0])
    shas["revert"] = repo.revert(shas["bm25"], author=ALICE, date=HISTORY["revert"][0])
    repo.replace("segments/beta-testers.yaml", "include: [", "include: [tester-99, ")
    shas["tester"] = repo.commit(
        "Add tester-99 to beta (#15)", author=CAROL, date=HISTORY["tester"][0]
    )
    repo.write("README.md", "# flags\n")
    shas["readme"] = repo.commit("Add a readme", author=BOB, date=HISTORY["readme"][0])
    repo.branch("unmerged-kill")
    repo.replace("flags/payments-v2/production.yaml", "enabled: true", "enabled: false")
    repo.commit("Kill payments-v2 (#16)", author=BOB, date="2026-11-08T10:00:00Z")
    repo.checkout("main")
    return shas
