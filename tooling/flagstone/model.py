"""The domain: a flag repository read from disk into typed objects.

``read_project(root)`` loads every file of the repository (docs/design.md §1) and never raises
for bad content: files that cannot be parsed become ``Problem`` values in
``Project.problems`` and are left out of the model. Checking the content is the job of
``flagstone.validate``; ``flagstone.validate.load_valid_project`` is what commands that
need a correct repository call.

Every object keeps its ``Document`` so any finding can point at ``file:line:col``, and
its raw ``data`` (plain JSON-like values) for the schema validator and the compiler;
the typed properties read that data with the defaults of the schemas applied.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flagstone.errors import LoadError, RepositoryError
from flagstone.loader import Document, RepositoryBounds, load_file, read_document
from flagstone.problems import Problem

if TYPE_CHECKING:
    from flagstone.toolcache import DocumentCache, FolderEntry

PROJECT_FILE = "flagstone.yaml"
FLAGS_DIR = "flags"
SEGMENTS_DIR = "segments"
FLAG_FILE = "flag.yaml"
KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
FLAG_KINDS = ("release", "experiment", "operational", "permission")


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` that holds ``flagstone.yaml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    raise RepositoryError(
        f"no {PROJECT_FILE} found in {here} or any parent directory",
        hint="run inside a flag repository, pass --repo DIR, or create one with `flagstone init`",
    )


@dataclass(slots=True)
class Team:
    id: str
    github: str


def _mapping(value: Any) -> dict[str, Any]:
    """A copy of ``value`` if it is a mapping, else empty: a wrong type is a schema error
    that validate reports at its position; every other reader must not crash on it."""
    return dict(value) if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """A copy of ``value`` if it is a list, else empty (see ``_mapping``)."""
    return list(value) if isinstance(value, list) else []


@dataclass(slots=True)
class ProjectConfig:
    """``flagstone.yaml``."""

    doc: Document

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data if isinstance(self.doc.data, dict) else {}

    @property
    def name(self) -> str:
        return str(self.data.get("project", ""))

    @property
    def environments(self) -> list[str]:
        environments = self.data.get("environments")
        if not isinstance(environments, list):
            return []  # a schema error, reported by validate; commands must not crash on it
        return [e for e in environments if isinstance(e, str)]

    @property
    def teams(self) -> dict[str, Team]:
        teams = _mapping(self.data.get("teams"))
        return {
            team_id: Team(team_id, str((spec or {}).get("github", "")))
            for team_id, spec in teams.items()
            if isinstance(spec, dict) or spec is None
        }

    @property
    def admins(self) -> str | None:
        admins = self.data.get("admins")
        return str(admins) if admins is not None else None

    @property
    def signing(self) -> dict[str, Any]:
        return _mapping(self.data.get("signing"))

    @property
    def publish(self) -> dict[str, Any]:
        return _mapping(self.data.get("publish"))

    @property
    def lint(self) -> dict[str, Any]:
        return _mapping(self.data.get("lint"))

    @property
    def guardrails(self) -> dict[str, Any]:
        return _mapping(self.data.get("guardrails"))


@dataclass(slots=True)
class ReleaseConfig:
    """``flags/<flag>/<env>.yaml``: how one flag is served in one environment."""

    flag_key: str
    environment: str
    doc: Document

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data if isinstance(self.doc.data, dict) else {}

    @property
    def enabled(self) -> bool:
        return bool(self.data.get("enabled", False))

    @property
    def targets(self) -> dict[str, list[str]]:
        return {
            str(v): [str(k) for k in _list(keys)]
            for v, keys in _mapping(self.data.get("targets")).items()
        }

    @property
    def rules(self) -> list[dict[str, Any]]:
        return [rule for rule in _list(self.data.get("rules")) if isinstance(rule, dict)]

    @property
    def default(self) -> Any:
        """A variation key, ``{"split": …}`` or ``{"progression": …}``; None if absent."""
        return self.data.get("default")


@dataclass(slots=True)
class Flag:
    """``flags/<key>/flag.yaml`` plus its release files."""

    key: str
    doc: Document
    releases: dict[str, ReleaseConfig] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data if isinstance(self.doc.data, dict) else {}

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.key))

    @property
    def description(self) -> str | None:
        return self.data.get("description")

    @property
    def owner(self) -> str | None:
        return self.data.get("owner")

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "release"))

    @property
    def temporary(self) -> bool:
        return bool(self.data.get("temporary", self.kind in ("release", "experiment")))

    @property
    def expires(self) -> str | None:
        return self.data.get("expires")

    @property
    def archived(self) -> bool:
        return bool(self.data.get("archived", False))

    @property
    def tags(self) -> list[str]:
        return _list(self.data.get("tags"))

    @property
    def variations(self) -> dict[str, Any]:
        return _mapping(self.data.get("variations"))

    @property
    def off_variation(self) -> str | None:
        value = self.data.get("off_variation")
        return str(value) if value is not None else None

    @property
    def prerequisites(self) -> list[dict[str, str]]:
        return [p for p in _list(self.data.get("prerequisites")) if isinstance(p, dict)]

    @property
    def delegate(self) -> dict[str, str]:
        return _mapping(self.data.get("delegate"))

    @property
    def value_type(self) -> str:
        """``boolean``, ``string``, ``number`` or ``json``: declared, else inferred."""
        declared = self.data.get("type")
        if declared:
            return str(declared)
        return infer_type(list(self.variations.values()))

    def owner_for(self, environment: str) -> str | None:
        """Who approves changes to this flag's release file in ``environment``."""
        return self.delegate.get(environment, self.owner)


@dataclass(slots=True)
class Segment:
    """``segments/<key>.yaml``."""

    key: str
    doc: Document

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data if isinstance(self.doc.data, dict) else {}

    @property
    def owner(self) -> str | None:
        return self.data.get("owner")

    @property
    def include(self) -> list[str]:
        return [str(k) for k in _list(self.data.get("include"))]

    @property
    def exclude(self) -> list[str]:
        return [str(k) for k in _list(self.data.get("exclude"))]

    @property
    def rules(self) -> list[Any]:
        return [rule for rule in _list(self.data.get("rules")) if isinstance(rule, dict)]


@dataclass(slots=True)
class Project:
    """Everything in one flag repository."""

    root: Path
    config: ProjectConfig | None
    flags: dict[str, Flag]
    segments: dict[str, Segment]
    problems: list[Problem] = field(default_factory=list)
    # Files present but not part of the model (wrong place or name): rel path -> why.
    stray_files: dict[str, str] = field(default_factory=dict)
    # Keys whose file exists but could not be parsed (its LoadError is in ``problems``):
    # references to them are not "unknown", so checks do not pile a second error on it.
    unreadable_flags: set[str] = field(default_factory=set)
    unreadable_segments: set[str] = field(default_factory=set)
    # The cache the documents came from (``flagstone.toolcache``), when one was used.
    documents_cache: DocumentCache | None = None

    @property
    def environments(self) -> list[str]:
        return self.config.environments if self.config else []

    def documents(self) -> Iterator[Document]:
        if self.config:
            yield self.config.doc
        for flag in self.flags.values():
            yield flag.doc
            yield from (release.doc for release in flag.releases.values())
        yield from (segment.doc for segment in self.segments.values())


def value_type(value: Any) -> str:
    """The flag type of one variation value: ``boolean``, ``number``, ``string`` or ``json``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "json"


def infer_type(values: list[Any]) -> str:
    """The flag type implied by its variation values (``json`` for objects/arrays/mixes)."""
    kinds = {value_type(value) for value in values}
    return kinds.pop() if len(kinds) == 1 else "json"


class _RepositoryWalk:
    """Reads the files of one repository, with plain ``os.scandir`` (pathlib costs seconds
    at 30,000 files). A file is read by ``load_file`` with the link checks only when a
    symbolic link is on its way; otherwise nothing on the way can lead outside."""

    def __init__(
        self, root: Path, problems: list[Problem], documents: DocumentCache | None
    ) -> None:
        self.root = root
        self.documents = documents
        self.prefix = str(root).rstrip(os.sep) + os.sep
        self.inside = RepositoryBounds(root)
        self.problems = problems
        # The folders whose entries decided the outcome, each with its stat signature
        # taken before it was looked into (``DocumentCache.replay``); None once the
        # outcome cannot be replayed (a link on the way, a folder changed moments ago).
        self.folders: list[tuple[str, Any]] | None = [] if documents is not None else None

    def leaves(self, path: str, is_link: bool) -> bool:
        """Whether ``path`` is a link leading out of the repository (then reported)."""
        if is_link:
            self.folders = None
        return is_link and _leaves(Path(path), self.inside, self.problems)

    def watch(self, folder: str) -> None:
        """Record the signature of ``folder`` before the walk looks inside it."""
        if self.folders is not None and self.documents is not None:
            signature = self.documents.folder_signature(folder)
            if signature is None:
                self.folders = None
            else:
                self.folders.append((folder, signature))

    def load(self, path: str, rel: str, linked: bool) -> Document | None:
        try:
            if linked:
                return load_file(Path(path), root=self.root)
            if self.documents is not None:
                return self.documents.load(path, rel)
            return read_document(path, rel)
        except LoadError as exc:
            self.problems.append(exc.problem)
            return None

    def entries(self, folder: str) -> Sequence[FolderEntry]:
        """The entries of ``folder``, sorted by name (from the cache when it is unchanged)."""
        if self.documents is not None:
            return self.documents.listing(folder)
        return _entries(folder)


def _entries(folder: str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as listing:
        return sorted(listing, key=lambda entry: entry.name)


def _leaves(path: Path, inside: RepositoryBounds, problems: list[Problem]) -> bool:
    """Whether ``path`` is a symbolic link leading out of the repository (then reported).

    Only links are resolved: a real file in a folder that is inside is inside too, so the
    walk below checks each entry it steps into and nothing else (cheap at 10,000 flags)."""
    if not inside.leads_outside(path):
        return False
    problems.append(inside.problem(path))
    return True


def read_project(
    root: Path,
    *,
    documents: DocumentCache | None = None,
    only_flags: Collection[str] | None = None,
    only_segments: Collection[str] | None = None,
) -> Project:
    """Load every file of the repository at ``root`` (in sorted, deterministic order).

    A file or folder that is a symbolic link leading outside the repository is reported
    and not read: nothing outside the repository reaches the output. Links that stay
    inside are followed. With ``documents`` (``flagstone.toolcache``), files whose content
    was loaded before are not parsed again, and while no folder the last whole walk
    depended on changed, the walk is replayed from the cache (one ``lstat`` per file).

    ``only_flags`` / ``only_segments`` read a part: the folders ``flags/<key>`` and the
    files ``segments/<key>.yaml`` of those keys only, each exactly as a whole read would
    (``flagstone.worktree_change`` reads the flags a change touches this way)."""
    root = root.resolve()
    whole = only_flags is None and only_segments is None
    if documents is not None and whole:
        replayed = _replayed_walk(root, documents)
        if replayed is not None:
            return replayed
    problems: list[Problem] = []
    walk = _RepositoryWalk(root, problems, documents)
    stray: dict[str, str] = {}
    config_path = os.path.join(root, PROJECT_FILE)
    config_link = os.path.islink(config_path)
    config_doc = (
        None
        if walk.leaves(config_path, config_link)
        else walk.load(config_path, PROJECT_FILE, config_link)
    )
    config = ProjectConfig(config_doc) if config_doc is not None else None

    flags: dict[str, Flag] = {}
    unreadable_flags: set[str] = set()
    unreadable_segments: set[str] = set()
    flags_dir = os.path.join(root, FLAGS_DIR)
    flags_link = os.path.islink(flags_dir)
    flags_present = not walk.leaves(flags_dir, flags_link) and os.path.isdir(flags_dir)
    if flags_present:
        walk.watch(flags_dir)
        for entry in walk.entries(flags_dir):
            name = entry.name
            if name.startswith(".") or (only_flags is not None and name not in only_flags):
                continue
            entry_link = entry.is_symlink()
            if walk.leaves(entry.path, entry_link):
                unreadable_flags.add(name)
                continue
            rel = f"{FLAGS_DIR}/{name}"
            if not entry.is_dir():
                stray[rel] = "flags live in flags/<key>/flag.yaml"
                continue
            linked = flags_link or entry_link
            walk.watch(entry.path)
            definition = os.path.join(entry.path, FLAG_FILE)
            definition_link = os.path.islink(definition)
            if walk.leaves(definition, definition_link):
                unreadable_flags.add(name)
                continue
            if not os.path.isfile(definition):
                stray[rel] = f"flag directory has no {FLAG_FILE}"
                continue
            flag_doc = walk.load(definition, f"{rel}/{FLAG_FILE}", linked or definition_link)
            if flag_doc is None:
                unreadable_flags.add(name)
                continue
            flag = Flag(name, flag_doc)
            for release in walk.entries(entry.path):
                release_name = release.name
                if release_name == FLAG_FILE or release_name.startswith("."):
                    continue
                release_rel = f"{rel}/{release_name}"
                release_link = release.is_symlink()
                if walk.leaves(release.path, release_link):
                    continue
                if not release_name.endswith(".yaml") or not release.is_file():
                    stray[release_rel] = "release files are named <environment>.yaml"
                    continue
                release_doc = walk.load(release.path, release_rel, linked or release_link)
                if release_doc is not None:
                    environment = release_name[: -len(".yaml")]
                    flag.releases[environment] = ReleaseConfig(name, environment, release_doc)
            flags[name] = flag

    segments: dict[str, Segment] = {}
    segments_dir = os.path.join(root, SEGMENTS_DIR)
    segments_link = os.path.islink(segments_dir)
    segments_present = not walk.leaves(segments_dir, segments_link) and os.path.isdir(segments_dir)
    if segments_present:
        walk.watch(segments_dir)
        for entry in walk.entries(segments_dir):
            name = entry.name
            if name.startswith("."):
                continue
            key = Path(name).stem
            if only_segments is not None and key not in only_segments:
                continue
            entry_link = entry.is_symlink()
            if walk.leaves(entry.path, entry_link):
                unreadable_segments.add(key)
                continue
            rel = f"{SEGMENTS_DIR}/{name}"
            if not name.endswith(".yaml") or not entry.is_file():
                stray[rel] = "segments live in segments/<key>.yaml"
                continue
            segment_doc = walk.load(entry.path, rel, segments_link or entry_link)
            if segment_doc is not None:
                segments[key] = Segment(key, segment_doc)
            else:
                unreadable_segments.add(key)

    project = Project(
        root,
        config,
        flags,
        segments,
        problems,
        stray,
        unreadable_flags,
        unreadable_segments,
        documents,
    )
    if documents is not None and walk.folders is not None and whole and not problems:
        present = (config_doc is not None, flags_present, segments_present)
        documents.keep_walk(_walk_record(project, present, walk.folders))
    return project


# What ``_walk_record`` keeps; a change of layout changes the tool version anyway.
_WALK_RECORD = "walk 1"


def _walk_record(
    project: Project, present: tuple[bool, ...], folders: list[tuple[str, Any]]
) -> tuple[Any, ...]:
    """The outcome of a walk that met no link and no unreadable file, as plain values
    (``present``: whether it found ``flagstone.yaml``, ``flags/``, ``segments/``)."""
    return (
        _WALK_RECORD,
        str(project.root),
        present,
        folders,
        [
            (key, flag.doc.rel, [(env, release.doc.rel) for env, release in flag.releases.items()])
            for key, flag in project.flags.items()
        ],
        [(key, segment.doc.rel) for key, segment in project.segments.items()],
        list(project.stray_files.items()),
    )


_TOP_ENTRIES = (PROJECT_FILE, FLAGS_DIR, SEGMENTS_DIR)


def _replayed_walk(root: Path, documents: DocumentCache) -> Project | None:
    """The project a walk of ``root`` would read, replayed from the last walk's record
    while every folder it depended on is unchanged (``DocumentCache.replay``); None
    when it cannot be (then the repository is walked)."""
    record = documents.recorded_walk()
    if not isinstance(record, tuple) or len(record) != 7 or record[0] != _WALK_RECORD:
        return None
    _, recorded_root, present, folders, flag_rows, segment_rows, stray = record
    prefix = str(root).rstrip(os.sep) + os.sep
    if recorded_root != str(root) or len(present) != len(_TOP_ENTRIES):
        return None
    for name, was_there in zip(_TOP_ENTRIES, present, strict=True):
        if not was_there and os.path.lexists(prefix + name):
            return None  # a file or folder that is there now (one that was is checked below)
    changed = documents.changed_folders(folders)
    if changed is None:
        return None
    if changed:
        # A flag's folder changed (an editor that saves by renaming, a checkout): only
        # that folder is listed again; any other change walks the whole repository.
        folders, flag_rows = list(folders), list(flag_rows)
        row_of = {
            prefix + FLAGS_DIR + os.sep + row[0]: index for index, row in enumerate(flag_rows)
        }
        for index in changed:
            folder = folders[index][0]
            row = row_of.get(folder)
            if row is None:
                return None
            key, flag_rel, _ = flag_rows[row]
            listed = _flag_folder_again(folder, key, documents)
            if listed is None:
                return None
            folders[index] = (folder, listed[0])
            flag_rows[row] = (key, flag_rel, listed[1])
            inside = f"{FLAGS_DIR}/{key}/"  # what was stray there is gone: it holds none now
            stray = [(rel, why) for rel, why in stray if not rel.startswith(inside)]
    rels: list[str] = [PROJECT_FILE] if present[0] else []
    for _, flag_rel, releases in flag_rows:
        rels.append(flag_rel)
        rels.extend(rel for _, rel in releases)
    rels.extend(rel for _, rel in segment_rows)
    loaded = documents.replay(prefix, rels)
    if loaded is None:
        return None
    docs = iter(loaded)
    config = ProjectConfig(next(docs)) if present[0] else None
    flags: dict[str, Flag] = {}
    for key, _, releases in flag_rows:
        flag = flags[key] = Flag(key, next(docs))
        for env, _ in releases:
            flag.releases[env] = ReleaseConfig(key, env, next(docs))
    segments = {key: Segment(key, next(docs)) for key, _ in segment_rows}
    if changed:
        documents.keep_walk(
            (_WALK_RECORD, str(root), present, folders, flag_rows, segment_rows, stray)
        )
    return Project(root, config, flags, segments, [], dict(stray), set(), set(), documents)


def _flag_folder_again(
    folder: str, key: str, documents: DocumentCache
) -> tuple[Any, list[tuple[str, str]]] | None:
    """The signature and release files of a flag's folder listed again, when it holds
    only what a walk takes without a second look (its ``flag.yaml`` and release files,
    no link, nothing stray); None otherwise (then the repository is walked)."""
    signature = documents.folder_signature(folder)  # before the listing
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return None
    releases: list[tuple[str, str]] = []
    definition = False
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_symlink() or not entry.is_file():
            return None
        if name == FLAG_FILE:
            definition = True
        elif name.endswith(".yaml"):
            releases.append((name[: -len(".yaml")], f"{FLAGS_DIR}/{key}/{name}"))
        else:
            return None
    return (signature, releases) if definition else None
