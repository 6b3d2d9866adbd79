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

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flagstone.errors import LoadError, RepositoryError
from flagstone.loader import Document, RepositoryBounds, load_file
from flagstone.problems import Problem

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


def _load(path: Path, root: Path, problems: list[Problem]) -> Document | None:
    try:
        return load_file(path, root=root)
    except LoadError as exc:
        problems.append(exc.problem)
        return None


def _leaves(path: Path, inside: RepositoryBounds, problems: list[Problem]) -> bool:
    """Whether ``path`` is a symbolic link leading out of the repository (then reported).

    Only links are resolved: a real file in a folder that is inside is inside too, so the
    walk below checks each entry it steps into and nothing else (cheap at 10,000 flags)."""
    if not inside.leads_outside(path):
        return False
    problems.append(inside.problem(path))
    return True


def read_project(root: Path) -> Project:
    """Load every file of the repository at ``root`` (in sorted, deterministic order).

    A file or folder that is a symbolic link leading outside the repository is reported
    and not read: nothing outside the repository reaches the output. Links that stay
    inside are followed."""
    root = root.resolve()
    inside = RepositoryBounds(root)
    problems: list[Problem] = []
    stray: dict[str, str] = {}
    config_path = root / PROJECT_FILE
    config_doc = (
        None if _leaves(config_path, inside, problems) else _load(config_path, root, problems)
    )
    config = ProjectConfig(config_doc) if config_doc is not None else None

    flags: dict[str, Flag] = {}
    unreadable_flags: set[str] = set()
    unreadable_segments: set[str] = set()
    flags_dir = root / FLAGS_DIR
    if not _leaves(flags_dir, inside, problems) and flags_dir.is_dir():
        for entry in sorted(flags_dir.iterdir()):
            rel = entry.relative_to(root).as_posix()
            if entry.name.startswith("."):
                continue
            if _leaves(entry, inside, problems):
                unreadable_flags.add(entry.name)
                continue
            if not entry.is_dir():
                stray[rel] = "flags live in flags/<key>/flag.yaml"
                continue
            definition = entry / FLAG_FILE
            if _leaves(definition, inside, problems):
                unreadable_flags.add(entry.name)
                continue
            if not definition.is_file():
                stray[rel] = f"flag directory has no {FLAG_FILE}"
                continue
            flag_doc = _load(definition, root, problems)
            if flag_doc is None:
                unreadable_flags.add(entry.name)
                continue
            flag = Flag(entry.name, flag_doc)
            for release_path in sorted(entry.iterdir()):
                if release_path.name == FLAG_FILE or release_path.name.startswith("."):
                    continue
                release_rel = release_path.relative_to(root).as_posix()
                if _leaves(release_path, inside, problems):
                    continue
                if release_path.suffix != ".yaml" or not release_path.is_file():
                    stray[release_rel] = "release files are named <environment>.yaml"
                    continue
                release_doc = _load(release_path, root, problems)
                if release_doc is not None:
                    flag.releases[release_path.stem] = ReleaseConfig(
                        flag.key, release_path.stem, release_doc
                    )
            flags[flag.key] = flag

    segments: dict[str, Segment] = {}
    segments_dir = root / SEGMENTS_DIR
    if not _leaves(segments_dir, inside, problems) and segments_dir.is_dir():
        for entry in sorted(segments_dir.iterdir()):
            rel = entry.relative_to(root).as_posix()
            if entry.name.startswith("."):
                continue
            if _leaves(entry, inside, problems):
                unreadable_segments.add(entry.stem)
                continue
            if entry.suffix != ".yaml" or not entry.is_file():
                stray[rel] = "segments live in segments/<key>.yaml"
                continue
            segment_doc = _load(entry, root, problems)
            if segment_doc is not None:
                segments[entry.stem] = Segment(entry.stem, segment_doc)
            else:
                unreadable_segments.add(entry.stem)

    return Project(
        root, config, flags, segments, problems, stray, unreadable_flags, unreadable_segments
    )
