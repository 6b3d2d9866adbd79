"""The toolchain's cache: work already done, found again by what it was done on.

A 10,000-flag repository is 30,000 YAML files; parsing them with positions takes as
long as PyYAML takes, every time. ``validate``, ``compile``, ``eval``, ``check-change``
and ``diff`` keep what they worked out in ``<repository>/.flagstone/cache/`` so the next
run parses only the files that changed.

What is kept, and what it is keyed by:

* ``worktree``: every working-tree file read, by path: its stat signature, the SHA-256
  of its bytes and the loaded document (data and positions) or its load problem. A file
  whose size, times, inode and mode are unchanged is taken by its recorded digest without
  being read (as git's index does); any other file is read and hashed, and its entry is
  used only if that digest matches. A file modified (or its status changed) less than
  ``RACY_SECONDS`` before it was recorded gets no signature (a later change within the
  same clock tick could keep the same times), so it is read and hashed next time. Which
  schema kinds a document passed is kept beside it. Values and positions stay packed
  (``marshal`` bytes; positions as numbers along the values) until a command reads them.
* ``worktree-listings``: the sorted entries of each folder the last walk listed, with
  the folder's stat signature (adding, removing or renaming an entry changes it);
  listings with a symbolic link in them are not kept.
* ``revision-<tree id>``: the loaded files of one git tree (``check-change``/``diff``
  read the base revision from git). A tree id names its content exactly.
* ``worktree-walk``: the outcome of the last whole walk of the repository (which files
  are flags, releases and segments, what is stray) with the stat signature of every
  folder it depended on, taken before it was looked into. While those are unchanged the
  folders hold the same entries, so the walk is replayed with one ``lstat`` per file; a
  flag's folder that changed is listed again alone; a link, a folder or nothing where a
  file was, or any other change, walks the repository again (``model.read_project``).
* ``validate``: the last findings with the digest of every input they came from; used
  only when the inputs hash to the same digest. ``validate-flags``: each flag's
  findings under the digest of what they depend on (``validate._KeptFlagFindings``).
* ``compile-flags-<env>``: each flag's compiled canonical bytes in one environment under
  the digest of what it is compiled from; the payload is joined from them
  (``compile._KeptFragments``).
* ``base-summary-<tree id>``: what ``check-change`` and ``diff`` need to know of a whole
  base revision to read only the flags a change touches (``flagstone.worktree_change``;
  the newest few are kept).

Trust. The cache is not a source of truth: every entry carries the tool version it was
made by (the package version, the Python and PyYAML versions and a fingerprint of the
package's source files) and an HMAC-SHA256 under a key that lives outside the
repository (``$XDG_CACHE_HOME/flagstone/toolcache.key``, else ``~/.cache/…``; made on
first use, mode 0600). An entry from another version, another user, a truncated or
altered file, or one committed to the repository by someone else fails the check and is
ignored and rebuilt. Only an entry that passed is decoded (with ``marshal``: plain
values only, no code). Entries are written with ``safefiles.write_file_atomically``
(a reader sees an old entry or a new one; a link planted in the cache folder is refused,
not written through), so concurrent runs are safe: the last writer wins.

Turning it off: ``--no-cache`` on the command line, or ``FLAGSTONE_NO_CACHE=1``. When the
key cannot be read or made, or the folder cannot be written, the commands run without
the cache. Deleting ``.flagstone/cache/`` is always safe. Results with and without the
cache are the same bytes (tests compare them).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import marshal
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flagstone.errors import FlagstoneError, LoadError
from flagstone.gcpause import cyclic_gc_paused
from flagstone.loader import MAX_BYTES, Document, loads, read_document
from flagstone.problems import Problem
from flagstone.safefiles import read_regular_file, write_file_atomically

if TYPE_CHECKING:
    from flagstone.model import Project

CACHE_FOLDER = ".flagstone/cache"
NO_CACHE_VARIABLE = "FLAGSTONE_NO_CACHE"
KEY_FILE_NAME = "toolcache.key"
RACY_SECONDS = 2.0
MAX_ENTRY_BYTES = 1024 * 1024 * 1024
_MAGIC = b"flagstone-toolcache 1\n"
_DIGEST_SIZE = 32
_HEADER = len(_MAGIC) + 2 * _DIGEST_SIZE
_ENTRY_SUFFIX = ".entry"
# A delta of at most this share of the base is written on its own; above it, the whole
# working-tree entry is rewritten (writing 30,000 documents takes a second).
_DELTA_SHARE = 0.05


def cache_disabled() -> bool:
    """Whether ``FLAGSTONE_NO_CACHE`` asks for no cache (any value but ``""`` and ``0``)."""
    return os.environ.get(NO_CACHE_VARIABLE, "") not in ("", "0")


@lru_cache(maxsize=1)
def tool_version() -> bytes:
    """A digest naming this exact toolchain: entries from any other are not used."""
    import yaml

    import flagstone

    package = Path(flagstone.__file__).parent
    fingerprint = hashlib.sha256()
    for text in (flagstone.__version__, sys.version, yaml.__version__, str(yaml.__with_libyaml__)):
        fingerprint.update(text.encode() + b"\0")
    for folder, _, names in sorted(os.walk(package)):
        for name in sorted(names):
            if name.endswith(".py") or name.endswith(".json"):
                status = os.stat(os.path.join(folder, name))
                rel = os.path.relpath(os.path.join(folder, name), package)
                fingerprint.update(f"{rel}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return fingerprint.digest()


def key_file() -> Path:
    """Where the user's cache key lives (outside every repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flagstone" / KEY_FILE_NAME


def user_key() -> bytes | None:
    """The user's 32-byte cache key, made on first use; None when it cannot be had."""
    path = key_file()
    for _ in range(2):
        try:
            key = read_regular_file(path, 64)
        except FileNotFoundError:
            key = b""
        except (FlagstoneError, OSError):
            return None
        if len(key) == _DIGEST_SIZE:
            return key
        if key:
            return None  # someone else's idea of a key: do not guess, run without cache
        try:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
            write_file_atomically(
                path, secrets.token_bytes(_DIGEST_SIZE), mode=0o600, replace=False
            )
        except FlagstoneError:
            continue  # another process made it first (or the folder is not ours): read it
        except OSError:
            return None
    return None


class ToolCache:
    """The entries of one repository's cache folder, checked before they are used."""

    def __init__(self, root: Path, key: bytes, version: bytes) -> None:
        self.root = root
        self.folder = root / CACHE_FOLDER
        self._key = key
        self._version = version

    @classmethod
    def for_repository(cls, root: Path) -> ToolCache | None:
        """The cache of the repository at ``root``; None when turned off or unavailable."""
        if cache_disabled():
            return None
        key = user_key()
        return None if key is None else cls(root, key, tool_version())

    def _path(self, name: str) -> Path:
        if not name or not all(c.isalnum() or c in "-_." for c in name) or name[0] == ".":
            raise ValueError(f"bad cache entry name {name!r}")
        return self.folder / (name + _ENTRY_SUFFIX)

    def _seal(self, name: str, body: bytes | memoryview) -> bytes:
        mac = hmac.new(self._key, _MAGIC + self._version + name.encode() + b"\0", "sha256")
        mac.update(body)
        return mac.digest()

    def get(self, name: str) -> Any:
        """The value stored under ``name``, or None when there is none that checks out."""
        try:
            raw = read_regular_file(self._path(name), MAX_ENTRY_BYTES)
        except (FlagstoneError, OSError):
            return None
        if len(raw) < _HEADER or not raw.startswith(_MAGIC):
            return None
        version = raw[len(_MAGIC) : len(_MAGIC) + _DIGEST_SIZE]
        mac = raw[len(_MAGIC) + _DIGEST_SIZE : _HEADER]
        body = memoryview(raw)[_HEADER:]  # no copy of an entry of tens of megabytes
        if version != self._version or not hmac.compare_digest(mac, self._seal(name, body)):
            return None
        try:
            return marshal.loads(body)  # our own bytes: the HMAC says so
        except (EOFError, ValueError, TypeError):  # pragma: no cover - sealed, so well formed
            return None

    def put(self, name: str, value: Any) -> None:
        """Store ``value`` (plain values only) under ``name``; a failure only costs speed."""
        body = marshal.dumps(value)
        data = _MAGIC + self._version + self._seal(name, body) + body
        with contextlib.suppress(FlagstoneError, OSError):
            write_file_atomically(  # not flushed: a torn entry fails its check
                self._path(name),
                data,
                mode=0o600,
                expected_dir=self.root,
                create_dirs=True,
                durable=False,
            )


def digest_of(parts: Iterable[object]) -> str:
    """One SHA-256 over the ``repr`` of each part (plain values: stable)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _problem_values(problem: Problem) -> tuple[Any, ...]:
    return (
        problem.path,
        problem.line,
        problem.col,
        problem.rule,
        problem.level,
        problem.message,
        problem.hint,
    )


def problem_from(values: tuple[Any, ...]) -> Problem:
    return Problem(*values)


def problems_values(problems: Iterable[Problem]) -> list[tuple[Any, ...]]:
    return [_problem_values(problem) for problem in problems]


class ListedEntry:
    """One entry of a folder listing kept in the cache: what the repository walk asks of
    an ``os.DirEntry`` (listings with a symbolic link in them are never kept)."""

    __slots__ = ("_kind", "name", "path")

    def __init__(self, folder: str, name: str, kind: str) -> None:
        self.name = name
        self.path = os.path.join(folder, name)
        self._kind = kind

    def is_symlink(self) -> bool:
        return False

    def is_dir(self) -> bool:
        return self._kind == "d"

    def is_file(self) -> bool:
        return self._kind == "f"


FolderEntry = os.DirEntry[str] | ListedEntry


def _signature(status: os.stat_result, now: int | None = None) -> tuple[int, ...] | None:
    """What must stay the same for a file or folder to be taken as unchanged; None for
    one changed moments ago (a later change in the same clock tick could keep it)."""
    if now is None:
        now = time.time_ns()
    if now - max(status.st_mtime_ns, status.st_ctime_ns) < RACY_SECONDS * 1e9:
        return None
    return (
        status.st_mode,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
        status.st_ino,
        status.st_dev,
    )


# An entry's result: ("document", packed data, packed marks, valid kinds) or
# ("problem", values). Data and marks stay marshal bytes until a document is read: an
# entry of 30,000 documents then decodes in milliseconds, not a quarter of a second.
_Result = tuple[Any, ...]


def _result_of(document: Document | None, problem: Problem | None) -> _Result:
    if document is not None:
        return ("document", document.packed_data(), document.packed(), ())
    assert problem is not None
    return ("problem", _problem_values(problem))


class DocumentCache:
    """Loaded documents found again by their file's content (see the module docstring).

    Every document it hands out is remembered with its content digest and the schema
    kinds that content is known to pass (validate skips those checks)."""

    def __init__(self, cache: ToolCache, name: str = "worktree") -> None:
        self.cache = cache
        self.name = name
        base = cache.get(name)
        delta = cache.get(name + "-delta")
        self.base: dict[str, Any] = base if isinstance(base, dict) else {}
        self.delta: dict[str, Any] = delta if isinstance(delta, dict) and base is not None else {}
        self.seen: dict[str, Any] = {}
        self.fresh: set[str] = set()
        self._walk: Any = None
        # folder -> (stat signature, [(name, kind)]): kept, and listed in this run.
        self._listings: dict[str, Any] | None = None
        self.listed: dict[str, Any] = {}
        self.listings_changed = False
        # id(document) -> (document, content digest, schema kinds it is known to pass);
        # the document is held so that its id is never reused for another one.
        self.digests: dict[int, tuple[Document, str, tuple[str, ...]]] = {}

    def listing(self, folder: str) -> list[FolderEntry]:
        """The entries of ``folder`` sorted by name, like a sorted ``os.scandir``; taken
        from the cache while the folder's own stat signature is unchanged (adding,
        removing or renaming an entry changes its times)."""
        try:
            signature = _signature(os.stat(folder))
        except OSError:
            signature = None
        previous = self._kept_listings().get(folder)
        if signature is not None and previous is not None and previous[0] == signature:
            self.listed[folder] = previous
            return [ListedEntry(folder, name, kind) for name, kind in previous[1]]
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        if signature is not None and not any(entry.is_symlink() for entry in entries):
            kinds = [
                (entry.name, "d" if entry.is_dir() else "f" if entry.is_file() else "o")
                for entry in entries
            ]
            self.listed[folder] = (signature, kinds)
            self.listings_changed = True
        return list(entries)

    def _kept_listings(self) -> dict[str, Any]:
        """The folder listings kept by the last walk (an entry of their own, read only
        when a folder is listed: a replayed walk lists none)."""
        if self._listings is None:
            stored = self.cache.get(self.name + "-listings")
            self._listings = stored if isinstance(stored, dict) else {}
        return self._listings

    # The repository walk, replayed (``model.read_project``): the walk's outcome is kept
    # with the stat signature of every folder it depends on; while none of them changed,
    # the same folders hold the same entries, and only the files need a look (one
    # ``lstat`` each, as git's index does) instead of listing 10,000 folders again.

    def folder_signature(self, folder: str) -> tuple[int, ...] | None:
        """The stat signature of a folder the walk depends on (taken before the walk
        looks inside it); None when it cannot be had or the folder changed moments ago."""
        try:
            status = os.lstat(folder)
        except OSError:
            return None
        return _signature(status) if stat.S_ISDIR(status.st_mode) else None

    def recorded_walk(self) -> Any:
        """What ``keep_walk`` kept (unchecked plain values), or None."""
        if self._walk is None:
            self._walk = self.cache.get(self.name + "-walk")
        return self._walk

    def keep_walk(self, walk: Any) -> None:
        """Keep the outcome of a repository walk (written only when it changed)."""
        if self.recorded_walk() != walk:
            self.cache.put(self.name + "-walk", walk)
            self._walk = walk

    def changed_folders(self, folders: Iterable[tuple[str, Any]]) -> list[int] | None:
        """The indexes of the folders whose signature is not the one recorded with them
        (or was not settled when recorded); None when one is no longer a folder."""
        now = time.time_ns()
        lstat, is_dir = os.lstat, stat.S_ISDIR
        changed: list[int] = []
        for index, (folder, signature) in enumerate(folders):
            try:
                status = lstat(folder)
            except OSError:
                return None
            if not is_dir(status.st_mode):
                return None
            if signature is None or _signature(status, now) != signature:
                changed.append(index)
        return changed

    def replay(self, prefix: str, rels: Iterable[str]) -> list[Document] | None:
        """The documents at ``prefix + rel`` for each ``rel``, like ``load``, or None when
        one is no longer a regular file (a link, a folder, gone) or no longer loads: the
        walk's outcome changed, so the caller walks the repository again."""
        # This runs for each of 30,000 files: ``_signature``, ``_previous`` and
        # ``_document`` are written out inline.
        settled = time.time_ns() - RACY_SECONDS * 1e9
        lstat, is_regular = os.lstat, stat.S_ISREG
        delta_get, base_get = self.delta.get, self.base.get
        seen, digests = self.seen, self.digests
        documents: list[Document] = []
        append = documents.append
        for rel in rels:
            path = prefix + rel
            try:
                status = lstat(path)
            except OSError:
                return None
            mode, mtime, ctime = status.st_mode, status.st_mtime_ns, status.st_ctime_ns
            if not is_regular(mode):
                return None
            previous = delta_get(rel) or base_get(rel)
            if (
                previous is not None
                and max(mtime, ctime) <= settled
                and previous[0]
                == (mode, status.st_size, mtime, ctime, status.st_ino, status.st_dev)
            ):
                result = previous[2]
                if result[0] != "document":
                    return None
                seen[rel] = previous
                document = Document(path, rel, None, packed_marks=result[2], packed_data=result[1])
                digests[id(document)] = (document, previous[1], result[3])
                append(document)
            else:
                try:
                    append(self.load(path, rel))
                except LoadError:
                    return None
        return documents

    def _previous(self, rel: str) -> Any:
        entry = self.delta.get(rel)
        return self.base.get(rel) if entry is None else entry

    def load(self, path: str, rel: str, *, max_bytes: int = MAX_BYTES) -> Document:
        """The document at ``path`` (the caller checked links), like ``read_document``."""
        try:
            status = os.stat(path)
        except OSError:
            return read_document(path, rel, max_bytes=max_bytes)  # its own error message
        signature = _signature(status)
        previous = self._previous(rel)
        if signature is not None and previous is not None and previous[0] == signature:
            digest, result = previous[1], previous[2]
        else:
            try:
                raw = read_regular_file(path, max_bytes, follow_symlinks=True)
            except (FlagstoneError, OSError):
                return read_document(path, rel, max_bytes=max_bytes)  # its own error message
            digest = hashlib.sha256(raw).hexdigest()
            if previous is not None and previous[1] == digest:
                result = previous[2]
            else:
                result = self._parse(raw, rel, path, max_bytes)
            self.fresh.add(rel)
        if previous is None or previous[0] != signature:
            self.fresh.add(rel)
        self.seen[rel] = (signature, digest, result)
        return self._document(result, path, rel, digest)

    def load_bytes(self, raw: bytes, rel: str, address: str) -> Document:
        """A document from bytes named by ``address`` (a git blob id), like ``loads``."""
        previous = self._previous(rel)
        if previous is not None and previous[1] == address:
            result = previous[2]
        else:
            result = self._parse(raw, rel, rel, MAX_BYTES)
            self.fresh.add(rel)
        self.seen[rel] = (None, address, result)
        return self._document(result, rel, rel, address)

    def known(self, rel: str, address: str) -> Document | None:
        """The document recorded for ``rel`` with this content address, if any; raises
        ``LoadError`` when that content could not be loaded."""
        previous = self._previous(rel)
        if previous is None or previous[1] != address:
            return None
        self.seen[rel] = previous
        return self._document(previous[2], rel, rel, address)

    @staticmethod
    def _parse(raw: bytes, rel: str, path: str, max_bytes: int) -> _Result:
        try:
            return _result_of(loads(raw, rel=rel, path=path, max_bytes=max_bytes), None)
        except LoadError as error:
            return _result_of(None, error.problem)

    def _document(self, result: _Result, path: str, rel: str, digest: str) -> Document:
        if result[0] != "document":
            raise LoadError(problem_from(result[1]))
        document = Document(path, rel, None, packed_marks=result[2], packed_data=result[1])
        self.digests[id(document)] = (document, digest, result[3])
        return document

    def known_valid(self, document: Document, kind: str) -> bool:
        """Whether the document's content is known to pass the schema of ``kind``."""
        known = self.digests.get(id(document))
        return known is not None and kind in known[2]

    def mark_valid(self, document: Document, kind: str) -> None:
        """Remember that the document's content passes the schema of ``kind``."""
        known = self.digests.get(id(document))
        if known is None or kind in known[2]:
            return
        digest, kinds = known[1], tuple(sorted({*known[2], kind}))
        self.digests[id(document)] = (document, digest, kinds)
        entry = self.seen.get(document.rel)
        if entry is not None and entry[1] == digest and entry[2][0] == "document":
            self.seen[document.rel] = (entry[0], digest, (*entry[2][:3], kinds))
            self.fresh.add(document.rel)

    def digest(self, document: Document) -> str | None:
        """The content digest of a document this cache handed out (else None)."""
        known = self.digests.get(id(document))
        return None if known is None else known[1]

    def result(self, name: str, inputs: str) -> Any:
        """The value kept by ``keep_result(name, inputs, …)``; None for other inputs."""
        stored = self.cache.get(name)
        if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == inputs:
            return stored[1]
        return None

    def keep_result(self, name: str, inputs: str, value: Any) -> None:
        """Keep ``value`` as what ``name`` is for ``inputs`` (one per name: the last)."""
        self.cache.put(name, (inputs, value))

    def save(self) -> None:
        """Write what changed: a small delta beside the base, or a new base; the
        folder listings of this run when one was new."""
        if self.listings_changed:
            self.cache.put(self.name + "-listings", self.listed)
            self._listings, self.listed, self.listings_changed = self.listed, {}, False
        changed = {rel: self.seen[rel] for rel in self.fresh if rel in self.seen}
        if not changed:
            return
        delta = {**self.delta, **changed}
        if self.base and len(delta) <= _DELTA_SHARE * len(self.base):
            self.cache.put(self.name + "-delta", delta)
        else:
            self.cache.put(self.name, self.seen)
            self.cache.put(self.name + "-delta", {})
        self.base, self.delta, self.fresh = self.seen, {}, set()


def project_inputs_digest(project: Project, *extra: object) -> str | None:
    """One digest of everything a result about ``project`` was worked out from: each
    document's path and content digest, the load problems, the stray and unreadable
    files, and ``extra``. None when a document did not come from the cache (a file
    reached through a symbolic link is read afresh: its content digest is not known)."""
    cache = project.documents_cache
    if cache is None:
        return None
    # Paths and hex digests hold no NUL: joined with it, they cannot run together.
    files: list[str] = []
    known = cache.digests.get  # ``cache.digest``, inline: 30,000 documents
    for doc in project.documents():
        entry = known(id(doc))
        if entry is None:
            return None
        files += (doc.rel, entry[1])
    listed = hashlib.sha256("\0".join(files).encode("utf-8", "surrogatepass")).hexdigest()
    return digest_of(
        [
            str(project.root),
            project.environments,
            listed,
            problems_values(project.problems),
            sorted(project.stray_files.items()),
            (sorted(project.unreadable_flags), sorted(project.unreadable_segments)),
            *extra,
        ]
    )


@contextlib.contextmanager
def cached_documents(root: Path, *, use: bool = True) -> Iterator[DocumentCache | None]:
    """The working-tree document cache of the repository at ``root`` for one command
    (None when turned off or unavailable); what changed is saved when the block ends."""
    # Entries hold millions of small containers and no cycles: with the collector on,
    # decoding them costs several times as much (flagstone.gcpause).
    with cyclic_gc_paused():
        cache = ToolCache.for_repository(root) if use else None
        documents = DocumentCache(cache) if cache is not None else None
        try:
            yield documents
        finally:
            if documents is not None:
                documents.save()
