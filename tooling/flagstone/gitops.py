"""Git plumbing for review and audit: revisions, trees and first-parent history.

Everything runs ``git`` as a subprocess in the flag repository (which may be a
subdirectory of the git work tree). Blobs are read through one ``git cat-file --batch``
process per call, so reading a revision or walking history costs a few processes, not
one per file. A repository at a revision becomes a ``Project`` in memory
(``project_at``) with the same layout rules as ``flagstone.model.read_project``; a file
that does not parse becomes a ``Problem`` in ``Project.problems``, never an exception.

Built on it: the audit log (``flagstone.auditlog``) and a flag at a point in time
(``flagstone.flag_at``, for ``flagstone show``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flagstone.errors import GitError, LoadError
from flagstone.loader import Document, loads
from flagstone.model import (
    FLAG_FILE,
    FLAGS_DIR,
    PROJECT_FILE,
    SEGMENTS_DIR,
    Flag,
    Project,
    ProjectConfig,
    ReleaseConfig,
    Segment,
)
from flagstone.problems import Problem
from flagstone.toolcache import DocumentCache, ToolCache

WORKING_TREE = "working tree"
GIT_TIMEOUT = 120
_PR_PATTERNS = (
    re.compile(r"^Merge pull request #(\d+)\b"),
    re.compile(r"\(#(\d+)\)\s*$"),
)


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run ``git ARGS`` in ``cwd``; raise ``GitError`` with git's own first line on failure."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than {GIT_TIMEOUT}s") from None
    if done.returncode != 0:
        cause = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(
            f"git {args[0]} failed: {cause[0] if cause else 'exit ' + str(done.returncode)}"
        )
    return done.stdout


def git_text(cwd: Path, *args: str) -> str:
    return git(cwd, *args).decode("utf-8", "replace").strip()


def repo_prefix(root: Path) -> str:
    """The flag repository's path inside the git work tree (``""`` at the top)."""
    try:
        return git_text(root, "rev-parse", "--show-prefix").rstrip("/")
    except GitError:
        raise GitError(
            f"{root} is not inside a git work tree",
        ) from None


def resolve_revision(root: Path, revision: str) -> str:
    """The commit id ``revision`` names; ``GitError`` with a one-line cause if none."""
    try:
        return git_text(
            root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"
        )
    except GitError:
        raise GitError(f"unknown revision {revision!r}") from None


def _ref_exists(root: Path, ref: str) -> bool:
    try:
        git(root, "rev-parse", "--verify", "--quiet", ref)
    except GitError:
        return False
    return True


def default_branch(root: Path) -> str | None:
    """The branch changes are reviewed against: the pull request's base branch under
    GitHub Actions (``GITHUB_BASE_REF``), else ``origin/HEAD``'s target, else ``main``,
    ``master``, ``origin/main``, ``origin/master``; None if none exists."""
    base_ref = os.environ.get("GITHUB_BASE_REF")
    if base_ref:
        for candidate in (f"origin/{base_ref}", base_ref):
            if _ref_exists(root, f"{candidate}^{{commit}}"):
                return candidate
    try:
        return git_text(root, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD")
    except GitError:
        pass
    for candidate in ("main", "master"):
        if _ref_exists(root, f"refs/heads/{candidate}"):
            return candidate
    for candidate in ("main", "master"):
        if _ref_exists(root, f"refs/remotes/origin/{candidate}"):
            return f"origin/{candidate}"
    return None


def default_base(root: Path) -> str:
    """The merge-base of HEAD with the default branch (HEAD itself when on it, or when
    there is no default branch)."""
    head = resolve_revision(root, "HEAD")
    branch = default_branch(root)
    if branch is None:
        return head
    try:
        return git_text(root, "merge-base", "HEAD", branch)
    except GitError:
        raise GitError(
            f"HEAD and {branch} have no common history here",
            hint="fetch the full history (actions/checkout: fetch-depth: 0) or pass a base revision",
        ) from None


def commit_time(root: Path, revision: str) -> int:
    """Committer time of ``revision`` in epoch seconds."""
    return int(git_text(root, "show", "-s", "--format=%ct", resolve_revision(root, revision)))


def revision_at(root: Path, instant: float, ref: str = "HEAD") -> str | None:
    """The last first-parent commit of ``ref`` committed at or before ``instant``."""
    out = git_text(root, "rev-list", "--first-parent", "-n", "1", f"--before={int(instant)}", ref)
    return out or None


class BlobReader:
    """One ``git cat-file --batch`` process answering many ``REV:path`` requests."""

    def __init__(self, root: Path) -> None:
        self._process = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def read(self, spec: str) -> bytes | None:
        """The blob named by ``spec`` (``REV:path`` or a blob id); None when missing."""
        return self.read_many([spec])[0]

    def read_many(self, specs: Sequence[str], *, batch: int = 64) -> list[bytes | None]:
        """Several blobs, requested in batches to save a round trip per blob (batches stay
        small enough that neither pipe can fill while the other waits)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        found: list[bytes | None] = []
        for start in range(0, len(specs), batch):
            chunk = specs[start : start + batch]
            self._process.stdin.write(b"".join(spec.encode() + b"\n" for spec in chunk))
            self._process.stdin.flush()
            found.extend(self._answer() for _ in chunk)
        return found

    def _answer(self) -> bytes | None:
        assert self._process.stdout is not None
        header = self._process.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            return None
        data = self._process.stdout.read(int(header[2]))
        self._process.stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        self._process.wait(timeout=GIT_TIMEOUT)
        if self._process.stdout:
            self._process.stdout.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_project_path(rel: str) -> bool:
    """Whether ``rel`` (relative to the flag repository, as git names it: no ``.``, no
    doubled or trailing ``/``) is a file the model reads."""
    if rel == PROJECT_FILE:
        return True
    parts = rel.split("/")  # a PurePosixPath per path costs seconds at 30,000 files
    if len(parts) == 3 and parts[0] == FLAGS_DIR and parts[2].endswith(".yaml"):
        return not parts[1].startswith(".") and not parts[2].startswith(".")
    return len(parts) == 2 and parts[0] == SEGMENTS_DIR and parts[1].endswith(".yaml")


def tree_files(root: Path, revision: str, *, within: Sequence[str] | None = None) -> dict[str, str]:
    """Project files at ``revision``: path relative to the flag repository -> blob id;
    with ``within``, only those under these paths (relative to the flag repository)."""
    prefix = repo_prefix(root)
    commit = resolve_revision(root, revision)
    # A pathspec, not ``commit:prefix``: a revision from before the flag repository
    # existed at that path is simply empty.
    top = f"{prefix}/" if prefix else ""
    pathspecs = (
        [f":(top){prefix}"] if within is None else [f":(top,literal){top}{path}" for path in within]
    )
    out = git(root, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *pathspecs)
    strip = len(prefix) + 1 if prefix else 0
    files: dict[str, str] = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, blob = meta.split()
        rel = name.decode("utf-8", "replace")[strip:]
        if kind == b"blob" and mode != b"120000" and is_project_path(rel):
            files[rel] = blob.decode()
    return files


def read_revision(root: Path, revision: str) -> dict[str, bytes]:
    """The bytes of every project file at ``revision``."""
    blobs = tree_files(root, revision)
    contents: dict[str, bytes] = {}
    paths = sorted(blobs)
    with BlobReader(root) as reader:
        for rel, data in zip(paths, reader.read_many([blobs[p] for p in paths]), strict=True):
            if data is not None:
                contents[rel] = data
    return contents


def load_document(rel: str, data: bytes, problems: list[Problem]) -> Document | None:
    """Parse one file's bytes; a parse failure becomes a Problem in ``problems``."""
    try:
        return loads(data, rel=rel, path=Path(rel))
    except LoadError as exc:
        problems.append(exc.problem)
        return None


class DocumentSet:
    """Parsed project files, updated file by file when walking history.

    ``project()`` returns a new ``Project`` each time, but rebuilds only the flags and
    segments whose files changed since the last call; unchanged ``Flag`` and
    ``Segment`` objects are shared between the two, so a diff can skip them by identity.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.documents: dict[str, Document] = {}
        self.problems: dict[str, Problem] = {}
        self._flag_files: dict[str, set[str]] = {}
        self._flags: dict[str, Flag] = {}
        self._segments: dict[str, Segment] = {}
        self._dirty: set[str] = set()  # paths changed since the last project()

    def put(self, rel: str, data: bytes) -> None:
        found: list[Problem] = []
        document = load_document(rel, data, found)
        self.put_loaded(rel, document, found[0] if found else None)

    def put_loaded(self, rel: str, document: Document | None, problem: Problem | None) -> None:
        """Put a file already loaded: its document, or the problem that stopped it."""
        self.remove(rel)
        if document is not None:
            self.documents[rel] = document
        elif problem is not None:
            self.problems[rel] = problem
        parts = rel.split("/")
        if parts[0] == FLAGS_DIR:
            self._flag_files.setdefault(parts[1], set()).add(rel)

    def remove(self, rel: str) -> None:
        self.documents.pop(rel, None)
        self.problems.pop(rel, None)
        parts = rel.split("/")
        if parts[0] == FLAGS_DIR and parts[1] in self._flag_files:
            self._flag_files[parts[1]].discard(rel)
        self._dirty.add(rel)

    def _rebuild_flag(self, key: str) -> None:
        files = self._flag_files.get(key, set())
        definition = self.documents.get(f"{FLAGS_DIR}/{key}/{FLAG_FILE}")
        if definition is None:
            self._flags.pop(key, None)
            return
        flag = Flag(key, definition)
        for rel in sorted(files):
            name = rel.split("/")[2]
            if name != FLAG_FILE and rel in self.documents:
                env = name[: -len(".yaml")]
                flag.releases[env] = ReleaseConfig(key, env, self.documents[rel])
        self._flags[key] = flag

    def project(self) -> Project:
        for rel in self._dirty:
            parts = rel.split("/")
            if parts[0] == FLAGS_DIR:
                self._rebuild_flag(parts[1])
            elif parts[0] == SEGMENTS_DIR:
                key = parts[1][: -len(".yaml")]
                document = self.documents.get(rel)
                if document is None:
                    self._segments.pop(key, None)
                else:
                    self._segments[key] = Segment(key, document)
        self._dirty.clear()
        config_doc = self.documents.get(PROJECT_FILE)
        config = ProjectConfig(config_doc) if config_doc is not None else None
        flags = {key: self._flags[key] for key in sorted(self._flags)}
        segments = {key: self._segments[key] for key in sorted(self._segments)}
        problems = sorted(self.problems.values(), key=Problem.sort_key)
        return Project(self.root, config, flags, segments, problems)


def project_from_files(root: Path, files: Mapping[str, bytes]) -> Project:
    """A ``Project`` from file contents keyed by path relative to the flag repository."""
    documents = DocumentSet(root)
    for rel, data in sorted(files.items()):
        documents.put(rel, data)
    return documents.project()


def project_at(root: Path, revision: str, *, cache: ToolCache | None = None) -> Project:
    """The flag repository as it was at ``revision`` (read from git, not the work tree).

    With ``cache`` (``flagstone.toolcache``), a file whose blob id was loaded before is
    not read from git nor parsed again: a blob id names its content exactly."""
    if cache is None:
        return project_from_files(root, read_revision(root, revision))
    documents = DocumentCache(cache, "revision")
    blobs = tree_files(root, revision)
    loaded: dict[str, tuple[Document | None, Problem | None]] = {}
    missing: list[str] = []
    for rel in sorted(blobs):
        try:
            document = documents.known(rel, blobs[rel])
        except LoadError as error:
            loaded[rel] = (None, error.problem)
            continue
        if document is None:
            missing.append(rel)
        else:
            loaded[rel] = (document, None)
    if missing:
        with BlobReader(root) as reader:
            contents = reader.read_many([blobs[rel] for rel in missing])
        for rel, data in zip(missing, contents, strict=True):
            if data is None:
                continue
            try:
                loaded[rel] = (documents.load_bytes(data, rel, blobs[rel]), None)
            except LoadError as error:
                loaded[rel] = (None, error.problem)
    documents.save()
    files = DocumentSet(root)
    for rel in sorted(loaded):
        files.put_loaded(rel, *loaded[rel])
    return files.project()


def short_revision(revision: str) -> str:
    return revision[:12] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision


# --- history -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileChange:
    """One path changed by a commit, relative to the flag repository."""

    status: str  # A, M, D, R (rename: ``old`` is set), T
    path: str
    old: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    date: str  # committer date (when it landed on this branch), ISO 8601 strict
    timestamp: int  # committer time, epoch seconds
    subject: str
    changes: tuple[FileChange, ...]
    parents: tuple[str, ...] = ()

    @property
    def pull_request(self) -> int | None:
        """The PR number the subject carries: ``Merge pull request #12`` or ``… (#12)``."""
        for pattern in _PR_PATTERNS:
            match = pattern.search(self.subject)
            if match:
                return int(match.group(1))
        return None


_RECORD = "\x1e"
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_STATUS = re.compile(r"[ACDMRTUXB][0-9]*")


def first_parent_history(root: Path, ref: str = "HEAD") -> list[Commit]:
    """Commits of ``ref``'s first-parent chain, oldest first, with the project files each
    changed relative to its first parent (merges included, renames detected)."""
    prefix = repo_prefix(root)
    out = git(
        root,
        "log",
        "--first-parent",
        "--diff-merges=first-parent",
        "--reverse",
        "-M",
        "--name-status",
        "-z",
        f"--format={_RECORD}%H%x00%an%x00%ae%x00%cI%x00%ct%x00%P%x00%s%x00",
        resolve_revision(root, ref),
        "--",
        f":(top){prefix}",
    ).decode("utf-8", "replace")
    # Parsed token by token, by count: a subject or author name may contain any
    # character but NUL (even the record separator), so it is never searched for markers.
    strip = len(prefix) + 1 if prefix else 0
    tokens = out.split("\0")
    commits: list[Commit] = []
    i = 0
    while i < len(tokens):
        head = tokens[i]
        if not head.strip("\n"):
            i += 1  # the terminator of the format, the newline before the changes, the end
            continue
        if not (head.startswith(_RECORD) and _COMMIT_ID.fullmatch(head[1:])):
            raise GitError(f"unexpected `git log` output near {head[:60]!r}")
        header = tokens[i + 1 : i + 7]
        if len(header) != 6 or not header[3].isdigit():
            raise GitError(f"unexpected `git log` output for commit {head[1:13]}")
        name, email, date, stamp, parent_text, subject = header
        i += 7
        changes: list[FileChange] = []
        while i < len(tokens) and not tokens[i].startswith(_RECORD):
            status = tokens[i].strip("\n")
            if not status:
                i += 1
                continue
            if not _STATUS.fullmatch(status):
                raise GitError(f"unexpected `git log` status {status[:20]!r} in {head[1:13]}")
            paths = 2 if status[0] in "RC" else 1
            names = [path[strip:] for path in tokens[i + 1 : i + 1 + paths]]
            if len(names) != paths:
                raise GitError(f"truncated `git log` output for commit {head[1:13]}")
            i += 1 + paths
            if status[0] == "R":
                changes.append(FileChange("R", names[1], names[0]))
            elif status[0] == "C":
                changes.append(FileChange("A", names[1]))
            else:
                changes.append(FileChange(status[0], names[0]))
        parents = tuple(parent_text.split())
        commits.append(
            Commit(head[1:], name, email, date, int(stamp), subject, tuple(changes), parents)
        )
    return commits


def merged_authors(root: Path, commit: Commit) -> tuple[str, ...]:
    """A pull request's author(s), ``Name <email>``, oldest commit first: for a merge
    commit, the authors of the commits it merged (its second parent's side); for any
    other commit (squash or rebase merges, direct pushes), its own author."""
    own = (f"{commit.author_name} <{commit.author_email}>",)
    if len(commit.parents) < 2 or not all(_COMMIT_ID.fullmatch(p) for p in commit.parents):
        return own
    out = git(
        root,
        "log",
        "--reverse",
        "--format=%an%x00%ae%x00",
        f"{commit.parents[0]}..{commit.parents[1]}",
    ).decode("utf-8", "replace")
    tokens = [t.strip("\n") for t in out.split("\0")]
    found: dict[str, None] = {}
    for name, email in zip(tokens[0::2], tokens[1::2], strict=False):
        if name or email:
            found[f"{name} <{email}>"] = None
    return tuple(found) or own


def walk_projects(
    root: Path, commits: Iterable[Commit]
) -> Iterator[tuple[Commit, Project, Project]]:
    """``(commit, project before, project after)`` for each commit, oldest first, starting
    from an empty repository; only the files a commit changed are read and parsed."""
    prefix = repo_prefix(root)
    state = DocumentSet(root)
    before = state.project()
    with BlobReader(root) as reader:
        for commit in commits:
            wanted: list[str] = []
            for change in commit.changes:
                if change.old is not None:
                    state.remove(change.old)
                if change.status == "D" or not is_project_path(change.path):
                    state.remove(change.path)
                else:
                    wanted.append(change.path)
            specs = [
                f"{commit.sha}:{prefix}/{rel}" if prefix else f"{commit.sha}:{rel}"
                for rel in wanted
            ]
            for rel, data in zip(wanted, reader.read_many(specs), strict=True):
                if data is None:
                    state.remove(rel)
                else:
                    state.put(rel, data)
            after = state.project()
            yield commit, before, after
            before = after
