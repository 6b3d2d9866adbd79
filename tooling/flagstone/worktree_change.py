"""The change from a base revision to the working tree, narrowed by git to what it touches.

``check-change`` and ``diff`` compare two states of a repository. Read whole, a
10,000-flag repository is two reads of 30,000 files and a comparison of every flag,
seconds even from the toolchain cache. Git already knows which files differ between a
commit and the working tree (its index keeps each file's stat signature), so
``narrowed_projects`` reads only the flags those files belong to, on both sides, and
returns two ``Project`` values holding just them (and the project file). Everything
``diff_projects`` and the guardrails say about a flag depends on that flag alone, with
three exceptions, each read in too:

* a flag removed or archived is judged against the flags that have it as a
  prerequisite: those flags are read as well;
* a segment that changed is judged through the flags that use it (directly, or through
  segments that refer to it): every segment and those flags are read;
* a release whose progression repeats a stage name can draw a warning while unchanged
  (``guardrails._Checker.skipped_stages``): such flags are always read.

Which flags have which prerequisites and use which segments is known from the base
revision alone (a flag the change does not touch is as it was there), so it is kept
per base tree in the toolchain cache (``flagstone.toolcache``) as a summary made the
first time that base is read whole. Without the cache (or before that summary exists)
the caller reads the base whole anyway and ``narrowed_by_base`` makes the summary from
it on the spot, so the working tree is still read only where the change touches it. A
flag the change does not touch yields nothing on either side, and the narrowed projects
give the same findings and the same diff, byte for byte, as the whole ones (tests
compare them).

The narrowing is not used, and the caller reads everything, whenever its premise could
fail: no summary for the base tree (or the cache is off), a base with a file that does
not load, a symbolic link, a submodule or a hidden segment file among its project files
(the working-tree reader and the revision reader treat those differently); the project
file changed (it steers every rule); a path git marks assume-unchanged or skip-worktree,
an unmerged path, a nested repository; git attributes that may make a file's working-tree
bytes differ from its blob (``filter``, ``ident``, ``working-tree-encoding``); or any
git failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flagstone import gitops
from flagstone.errors import GitError
from flagstone.model import FLAGS_DIR, PROJECT_FILE, SEGMENTS_DIR, Project, read_project
from flagstone.rollout import progression_spec
from flagstone.toolcache import CACHE_FOLDER, ToolCache

SUMMARY_PREFIX = "base-summary-"
SUMMARY_FORMAT = 1
KEPT_SUMMARIES = 8
# Past this many flags to read, reading everything costs about the same.
MAX_NARROWED_FLAGS = 2000
_ATTRIBUTE_WORDS = (b"filter", b"ident", b"working-tree-encoding")
_PROJECT_PARTS = (PROJECT_FILE, FLAGS_DIR, SEGMENTS_DIR)


def _pathspecs(prefix: str) -> list[str]:
    top = f"{prefix}/" if prefix else ""
    return [f":(top,literal){top}{part}" for part in _PROJECT_PARTS]


def base_tree(root: Path, commit: str) -> str:
    """The id of the flag repository's folder in ``commit`` (the summary's key)."""
    return gitops.git_text(root, "rev-parse", "--verify", "--quiet", f"{commit}:./")


def _summary_name(tree: str) -> str:
    return SUMMARY_PREFIX + tree


# --- the summary of a base revision ----------------------------------------------------------


_SCALARS = (str, int, float, bool, type(None))


def segments_mentioned(value: Any) -> set[str]:
    """Every segment key a release file (or any YAML value) could refer to: ``segment:``
    values and the entries of ``segments:`` lists anywhere in it; a superset of what
    the diff and the guardrails look up, never less. (A loop over a stack, not a
    recursion: it runs over every release of the base when its summary is made.)"""
    found: set[str] = set()
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        kind = type(node)
        if kind is list:
            children: Iterable[Any] = node
        elif kind is dict or isinstance(node, Mapping):
            segment = node.get("segment")
            if isinstance(segment, str):
                found.add(segment)
            listed = node.get("segments")
            if listed is None:
                pass
            elif isinstance(listed, str):
                found.update({listed, *listed})
            elif isinstance(listed, (list, Mapping)):
                found.update(map(str, listed))
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        for child in children:
            if type(child) not in _SCALARS:
                push(child)
    return found


def repeats_a_stage_name(data: Any) -> bool:
    """Whether the release data's progression names two stages alike (as
    ``flagstone.rollout.read_progression`` names them); an unchanged release can then
    draw a warning (``guardrails._Checker.skipped_stages``)."""
    spec = progression_spec(data)
    stages = spec.get("stages") if spec is not None else None
    if not isinstance(stages, list):
        return False
    names = [str(s.get("name")) if isinstance(s, Mapping) else str(s) for s in stages]
    return len(set(names)) != len(names)


def _base_is_regular(root: Path, commit: str) -> bool:
    """Whether every project path of ``commit`` is a plain file both readers read alike:
    no symbolic link, no submodule, no hidden segment file, names in UTF-8."""
    prefix = gitops.repo_prefix(root)
    out = gitops.git(root, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *_pathspecs(prefix))
    listing = b"\0" + out
    if b"\x00120000 " in listing or b"\x00160000 " in listing:
        return False
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return False
    top = f"{prefix}/" if prefix else ""
    return f"\t{top}{SEGMENTS_DIR}/." not in text


def summarize_base(root: Path, commit: str, base: Project) -> dict[str, Any]:
    """What narrowing needs to know of the whole base revision (plain values)."""
    dependents: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    always: list[str] = []
    for key, flag in base.flags.items():
        for prerequisite in flag.prerequisites:
            required = prerequisite.get("flag")
            if isinstance(required, str):
                dependents.setdefault(required, []).append(key)
        mentioned: set[str] = set()
        repeats = False
        for release in flag.releases.values():
            mentioned |= segments_mentioned(release.doc.data)
            repeats = repeats or repeats_a_stage_name(release.doc.data)
        for segment in mentioned:
            users.setdefault(segment, []).append(key)
        if repeats:
            always.append(key)
    regular = not base.problems and _base_is_regular(root, commit)
    return {
        "format": SUMMARY_FORMAT,
        "regular": regular,
        "dependents": dependents,
        "segment_users": users,
        "always": always,
    }


def remember_base(root: Path, commit: str, base: Project, cache: ToolCache | None) -> None:
    """Keep the summary of ``base`` (the whole project at ``commit``) unless kept already;
    a git failure only means no summary."""
    if cache is None:
        return
    try:
        name = _summary_name(base_tree(root, commit))
        if cache.get(name) is None:
            _keep(cache, name, summarize_base(root, commit, base))
    except GitError:
        return


def _keep(cache: ToolCache, name: str, summary: dict[str, Any]) -> None:
    """Store a base's summary, and remove all but the ``KEPT_SUMMARIES`` newest (one is
    written per base read whole: they would pile up as branches move)."""
    cache.put(name, summary)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    opened: list[int] = []
    try:
        # Folder by folder, never through a link: nothing outside the cache is removed.
        folder = os.open(cache.root, os.O_RDONLY | os.O_DIRECTORY)
        opened.append(folder)
        for part in CACHE_FOLDER.split("/"):
            folder = os.open(part, flags, dir_fd=folder)
            opened.append(folder)
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(SUMMARY_PREFIX) and entry.is_file(follow_symlinks=False):
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
        for _, stale in sorted(found, reverse=True)[KEPT_SUMMARIES:]:
            os.unlink(stale, dir_fd=folder)
    except OSError:
        return  # another run pruned first, or the folder is not ours: only space is lost
    finally:
        for descriptor in opened:
            os.close(descriptor)


def narrowed_by_base(
    root: Path, commit: str, base: Project, cache: ToolCache | None
) -> tuple[Project, Project] | None:
    """``narrowed_projects`` for a caller that has just read the base whole (no cache, or
    none for this base yet): its summary is made from ``base`` (and kept, with a cache),
    so the working tree is still read only where the change touches it."""
    try:
        summary = summarize_base(root, commit, base)
        if cache is not None:
            name = _summary_name(base_tree(root, commit))
            if cache.get(name) is None:
                _keep(cache, name, summary)
    except GitError:
        return None
    return _narrowed(root, commit, summary) if summary["regular"] else None


def _summary(cache: ToolCache, tree: str) -> dict[str, Any] | None:
    value = cache.get(_summary_name(tree))
    if (
        not isinstance(value, dict)
        or value.get("format") != SUMMARY_FORMAT
        or value.get("regular") is not True
    ):
        return None
    return value


# --- what git says changed -------------------------------------------------------------------


def _run_together(root: Path, commands: list[list[str]]) -> list[bytes]:
    """Run several read-only git commands at once (each walks the work tree or the
    index; together they take as long as the slowest); ``GitError`` if any fails."""
    processes = [
        subprocess.Popen(
            ["git", *arguments],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for arguments in commands
    ]
    outputs: list[bytes] = []
    failed = False
    for process in processes:
        try:
            out, _ = process.communicate(timeout=gitops.GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            failed = True
            continue
        failed = failed or process.returncode != 0
        outputs.append(out)
    if failed:
        raise GitError("git failed while listing changed files")
    return outputs


def _attributes_may_convert(paths: Iterable[str]) -> bool:
    """Whether one of the attribute files at ``paths`` (those that exist) may set an
    attribute that makes working-tree bytes differ from the blob's."""
    for path in paths:
        try:
            with open(path, "rb") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        except OSError:
            return True
        if any(word in text for word in _ATTRIBUTE_WORDS):
            return True
    return False


def _attribute_files(
    root: Path, prefix: str, repository_file: str, config: bytes, tracked_or_new: Iterable[str]
) -> list[str]:
    """Every attribute file that can apply to the project's paths: the repository's own
    (``info/attributes``), the user's and the system's, ``.gitattributes`` in the
    folders from the work tree's top down to the flag repository, and those below it."""
    files = [str(root / repository_file)]
    configured = [
        entry.partition(b"\n")[2].decode("utf-8", "replace")
        for entry in config.split(b"\0")
        if entry.lower().startswith(b"core.attributesfile\n")
    ]
    if configured:
        files.append(os.path.expanduser(configured[-1]))
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
        os.path.expanduser("~"), ".config"
    )
    files.append(os.path.join(config_home, "git", "attributes"))
    if not os.environ.get("GIT_ATTR_NOSYSTEM"):
        files.append("/etc/gitattributes")
    depth = len(prefix.split("/")) if prefix else 0
    folder = root
    for _ in range(depth + 1):
        files.append(str(folder / ".gitattributes"))
        folder = folder.parent
    top = root.parents[depth - 1] if depth else root
    files.extend(str(top / rel) for rel in tracked_or_new if rel.endswith(".gitattributes"))
    return files


def changed_paths(root: Path, commit: str) -> set[str] | None:
    """Project paths (relative to the flag repository) whose working-tree state differs
    from ``commit``: changed, added (tracked or not, ignored or not) or deleted. None
    when git cannot be taken at its word (see the module docstring)."""
    # Pathspecs relative to ``root`` (the commands run there); output from the top.
    specs = [f":(literal){part}" for part in _PROJECT_PARTS]
    places, config, differing, untracked, index = _run_together(
        root,
        [
            ["rev-parse", "--show-prefix", "--git-path", "info/attributes"],
            ["config", "-z", "--list"],
            ["diff", "--no-relative", "--no-renames", "--no-ext-diff", "--ignore-submodules=none",
             "--name-only", "-z", commit, "--", *specs],
            ["ls-files", "--others", "--full-name", "-z", "--", *specs],
            ["ls-files", "-v", "--full-name", "-z", "--", *specs],
        ],
    )  # fmt: skip
    # Each entry is "<tag> <path>\0"; every tag must be H (counted in C: 30,000 entries).
    if index.count(b"\0") != (b"\0" + index).count(b"\0H "):
        return None  # assume-unchanged, skip-worktree or unmerged: git would not look
    try:
        prefix_line, repository_file = places.decode("utf-8").split("\n")[:2]
        names = [n for n in (differing + b"\0" + untracked).decode("utf-8").split("\0") if n]
        tracked_attributes = (
            [e[2:].decode("utf-8") for e in index.split(b"\0") if e.endswith(b".gitattributes")]
            if b".gitattributes\0" in index
            else []
        )
    except (UnicodeDecodeError, ValueError):
        return None
    if any(name.endswith("/") for name in names):
        return None  # a nested repository: git does not look inside
    prefix = prefix_line.rstrip("/")
    attributes = _attribute_files(
        root, prefix, repository_file, config, [*tracked_attributes, *names]
    )
    if _attributes_may_convert(attributes):
        return None
    strip = len(prefix) + 1 if prefix else 0
    return {name[strip:] for name in names if name.startswith(prefix_line)}


# --- the narrowed projects -------------------------------------------------------------------


def _closure(keys: set[str], projects: Iterable[Project]) -> set[str]:
    """``keys`` and every segment whose rules refer to one of them, on either side."""
    grown = set(keys)
    while True:
        more: set[str] = set()
        for project in projects:
            for key, segment in project.segments.items():
                if key in grown:
                    continue
                if segments_mentioned(segment.doc.data) & grown:
                    more.add(key)
        if not more:
            return grown
        grown |= more


def _read_both(
    root: Path, commit: str, flags: set[str], with_segments: bool
) -> tuple[Project, Project]:
    within = [PROJECT_FILE, *(f"{FLAGS_DIR}/{key}/" for key in sorted(flags))]
    if with_segments:
        within.append(f"{SEGMENTS_DIR}/")
    blobs = gitops.tree_files(root, commit, within=within)
    paths = sorted(
        rel for rel in blobs if not rel.startswith(f"{FLAGS_DIR}/") or rel.split("/")[1] in flags
    )
    contents: dict[str, bytes] = {}
    with gitops.BlobReader(root) as reader:
        for rel, data in zip(paths, reader.read_many([blobs[p] for p in paths]), strict=True):
            if data is not None:
                contents[rel] = data
    before = gitops.project_from_files(root, contents)
    after = read_project(root, only_flags=flags, only_segments=None if with_segments else ())
    return before, after


def _key_of(path: str) -> str:
    """The segment key of a file ``segments/<key>.yaml`` (as both readers name it)."""
    return Path(path).stem


def narrowed_projects(
    root: Path, commit: str, cache: ToolCache | None
) -> tuple[Project, Project] | None:
    """The base revision ``commit`` and the working tree, each holding only what the
    change between them touches (see the module docstring); None when that cannot be
    told safely, and the caller reads both whole."""
    if cache is None:
        return None
    try:
        summary = _summary(cache, base_tree(root, commit))
    except GitError:
        return None
    return None if summary is None else _narrowed(root, commit, summary)


def _narrowed(
    root: Path, commit: str, summary: Mapping[str, Any]
) -> tuple[Project, Project] | None:
    try:
        changed = changed_paths(root, commit)
        if changed is None:
            return None
        flags: set[str] = set(summary["always"])
        segments_changed = False
        for rel in changed:
            parts = rel.split("/")
            if rel == PROJECT_FILE or len(parts) < 2 or not parts[1]:
                return None
            if parts[0] == FLAGS_DIR and not parts[1].startswith("."):
                flags.add(parts[1])
            elif parts[0] == SEGMENTS_DIR:
                segments_changed = True
        if segments_changed:
            # Every segment on both sides: which ones differ, and which refer to those.
            before, after = _read_both(root, commit, set(), with_segments=True)
            differing = {
                key
                for key in set(before.segments) | set(after.segments)
                if key not in before.segments
                or key not in after.segments
                or before.segments[key].doc.data != after.segments[key].doc.data
            }
            differing |= {_key_of(p.path) for p in (*before.problems, *after.problems)}
            users: Mapping[str, list[str]] = summary["segment_users"]
            for segment in _closure(differing, (before, after)):
                flags.update(users.get(segment, ()))
        dependents: Mapping[str, list[str]] = summary["dependents"]
        for key in list(flags):
            flags.update(dependents.get(key, ()))
        if len(flags) > MAX_NARROWED_FLAGS:
            return None
        return _read_both(root, commit, flags, with_segments=segments_changed)
    except GitError:
        return None
