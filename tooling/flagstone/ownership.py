"""CODEOWNERS generation and checking: progressive delegation as GitHub enforces it.

Ownership lives in the flag repository itself: ``admins`` in ``flagstone.yaml``,
``owner`` and ``delegate`` in each ``flags/<key>/flag.yaml`` and ``owner`` in each
``segments/<key>.yaml``. This module turns it into a marked, generated block of
``.github/CODEOWNERS``::

    flagstone.yaml, schemas/, .github/, CODEOWNERS   -> admins
    flags/<key>/ and flags/<key>/flag.yaml           -> the flag's owner
    flags/<key>/<env>.yaml                           -> delegate[env], else the owner
    segments/<key>.yaml                              -> the segment's owner

Lines outside the block are kept byte for byte. GitHub applies the *last* matching
line, so a new block is appended at the end of the file; hand-written lines that come
after an existing block and would override a generated owner are errors (they would
quietly take review away from the declared owners: ``codeowners --check`` exits 1);
lines before it naming one file the block decides (they have no effect) and every
line GitHub itself would reject (``!`` negation, ``[…]`` ranges, ``\\#`` escapes,
malformed owners, a file of 3 MB or more) are reported too.

Whether owners and delegates are declared teams, whether delegated environments exist
and whether handles are well formed is checked by ``flagstone validate``; generation
here only reports what it cannot map and never guesses an owner.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from flagstone.errors import FileTooLargeError, LoadError, ValidationFailed
from flagstone.loader import Document, RepositoryBounds
from flagstone.model import FLAG_FILE, FLAGS_DIR, PROJECT_FILE, SEGMENTS_DIR, Project
from flagstone.problems import Problem
from flagstone.safefiles import read_regular_file, write_file_atomically

CODEOWNERS_PATH = ".github/CODEOWNERS"
BEGIN_MARKER = "# BEGIN flagstone generated — do not edit; run `flagstone codeowners`"
END_MARKER = "# END flagstone generated"
# GitHub reads the first of .github/CODEOWNERS, CODEOWNERS, docs/CODEOWNERS.
IGNORED_CODEOWNERS_PATHS = ("CODEOWNERS", "docs/CODEOWNERS")
MAX_CODEOWNERS_BYTES = 3 * 1024 * 1024  # GitHub ignores larger files
_MAX_READ_BYTES = 4 * MAX_CODEOWNERS_BYTES  # larger ones are not even read (a finding)
RULE = "codeowners"

# GitHub owner syntax: @user, @org/team, or an e-mail address.
_USER = r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"
_USER_HANDLE = re.compile(rf"@{_USER}")
_TEAM_HANDLE = re.compile(rf"@{_USER}/[A-Za-z0-9][A-Za-z0-9_.-]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def is_valid_owner(owner: str) -> bool:
    """Whether GitHub would accept ``owner`` syntactically (``@user``, ``@org/team``, e-mail)."""
    return any(p.fullmatch(owner) for p in (_USER_HANDLE, _TEAM_HANDLE, _EMAIL))


# --- patterns and matching --------------------------------------------------------------


def _translate_segment(segment: str) -> str:
    out = []
    escaped = False
    for char in segment:
        if escaped or char not in "*?\\":
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            out.append("[^/]*")
        else:
            out.append("[^/]")
    return "".join(out)


@lru_cache(maxsize=4096)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The set of repository paths a CODEOWNERS pattern matches, as a regex to fullmatch.

    gitignore rules as GitHub applies them: a slash at the start or in the middle anchors
    the pattern at the root, otherwise it matches at any depth; a trailing slash matches
    only a directory (so everything beneath it); ``*`` and ``?`` stay within one path
    segment; ``**`` spans segments; ``dir/*`` matches direct children only; a pattern
    matching a directory also matches everything beneath it.
    """
    body = pattern.strip("/")
    anchored = pattern.startswith("/") or "/" in body
    directory_only = pattern.endswith("/")
    segments = body.split("/")
    regex = r"\A" if anchored else r"(?:\A|.*/)"
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            regex += ".*" if last else "(?:.*/)?"
        else:
            regex += _translate_segment(segment) + ("" if last else "/")
    if directory_only:
        regex += "/.*"
    elif not pattern.endswith("/*"):
        regex += "(?:/.*)?"
    return re.compile(regex + r"\Z")


@dataclass(frozen=True, slots=True)
class CodeownersLine:
    """One pattern line of a CODEOWNERS file."""

    number: int
    pattern: str
    owners: tuple[str, ...]

    def matches(self, path: str) -> bool:
        return pattern_regex(self.pattern).fullmatch(path) is not None


_UNESCAPED_SPACE = re.compile(r"(?<!\\)\s+")  # `a\ b` is one pattern with a space


def _strip_comment(text: str) -> str:
    # GitHub allows `#` comments at the end of a line, after whitespace.
    match = re.search(r"(?:^|\s)#", text)
    return text[: match.start()] if match else text


def parse_line(number: int, raw: str) -> tuple[CodeownersLine | None, list[str]]:
    """Parse one line; return the pattern line (None for blanks/comments) and what is wrong."""
    text = raw.strip()
    if not text or text.startswith("#"):
        return None, []
    fields = _UNESCAPED_SPACE.split(_strip_comment(text).strip())
    pattern, owners = fields[0], tuple(fields[1:])
    errors = []
    if pattern.startswith("!"):
        errors.append(f"negated pattern '{pattern}' is not supported by GitHub")
    if "[" in pattern or "]" in pattern:
        errors.append(f"character range in '{pattern}' is not supported by GitHub")
    if pattern.startswith("\\#"):
        errors.append(f"escaped '#' in '{pattern}' is not supported by GitHub")
    errors += [
        f"'{owner}' is not a valid owner (use @user, @org/team or an e-mail address)"
        for owner in owners
        if not is_valid_owner(owner)
    ]
    return CodeownersLine(number, pattern, owners), errors


# --- the generated block ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnershipEntry:
    """One generated line: a pattern, its owner team id and that team's handle."""

    pattern: str
    team: str
    handle: str

    def render(self) -> str:
        return f"{self.pattern} {self.handle}"


@dataclass(frozen=True)
class OwnershipPlan:
    """The generated block as sections of entries, plus what could not be mapped."""

    sections: tuple[tuple[str, tuple[OwnershipEntry, ...]], ...]
    problems: tuple[Problem, ...]

    @cached_property
    def entries(self) -> list[OwnershipEntry]:
        return [entry for _, entries in self.sections for entry in entries]

    @cached_property
    def _positions(self) -> dict[str, int]:
        # Generated patterns are all anchored: a file ("/a/b") or a directory ("/a/").
        return {entry.pattern: index for index, entry in enumerate(self.entries)}

    def owner_of_path(self, path: str) -> str | None:
        """The handle the generated block alone gives ``path`` (last match wins)."""
        parts = path.split("/")
        patterns = ["/" + path] + ["/" + "/".join(parts[:n]) + "/" for n in range(1, len(parts))]
        matches = [self._positions[p] for p in patterns if p in self._positions]
        return self.entries[max(matches)].handle if matches else None

    def render_block(self) -> str:
        lines = [
            BEGIN_MARKER,
            "# Generated from flagstone.yaml (admins), flags/*/flag.yaml (owner, delegate)",
            "# and segments/*.yaml (owner). GitHub applies the last matching line, so keep",
            "# this block at the end of the file.",
        ]
        for heading, entries in self.sections:
            lines += ["", f"# {_one_line(heading)}"]
            lines += [entry.render() for entry in entries]
        lines.append(END_MARKER)
        return "\n".join(lines) + "\n"


# Generated patterns are built from flag keys, environment names and fixed paths.
_SAFE_PATTERN = re.compile(r"/[A-Za-z0-9._/-]+")
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    """``text`` with every control or line-breaking character escaped (comment lines)."""
    return _LINE_BREAKING.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def plan_ownership(project: Project) -> OwnershipPlan:
    """Who owns which file of ``project``, in a fixed order (admin files, flags, segments)."""
    teams = project.config.teams if project.config else {}
    # (source file, position in it, why) -> patterns left unmapped because of it
    unmapped: dict[tuple[str, tuple[str | int, ...], str], list[str]] = {}

    def entry(
        pattern: str, team: object, source: str, where: tuple[str | int, ...]
    ) -> Iterator[OwnershipEntry]:
        # Nothing unchecked reaches a CODEOWNERS line: a newline, space, '#' or glob in
        # a name or handle would add or widen rules (codeowners does not run the schema).
        if not _SAFE_PATTERN.fullmatch(pattern):
            why = (
                f"gives the path {pattern!r}, which cannot be written to CODEOWNERS safely "
                "(only letters, digits, '.', '_', '-' and '/')"
            )
        elif isinstance(team, str) and team in teams and teams[team].github:
            handle = teams[team].github
            if is_valid_owner(handle):
                yield OwnershipEntry(pattern, team, handle)
                return
            why = f"names team {team!r}, whose github handle {handle!r} is not a GitHub owner"
        elif team is None:
            why = "has no owner"
        elif not isinstance(team, str) or team not in teams:
            why = f"names team '{team}', which is not declared in {PROJECT_FILE}"
        else:
            why = f"names team '{team}', which has no github handle in {PROJECT_FILE}"
        unmapped.setdefault((source, where, why), []).append(pattern)

    sections: list[tuple[str, tuple[OwnershipEntry, ...]]] = []
    admins = project.config.admins if project.config else None
    admin_patterns = [f"/{PROJECT_FILE}", "/schemas/", "/.github/", f"/{CODEOWNERS_PATH}"]
    sections.append(
        (
            f"Project administration: admins = {admins}",
            tuple(e for p in admin_patterns for e in entry(p, admins, PROJECT_FILE, ("admins",))),
        )
    )
    environments = project.environments
    for key in sorted(project.flags):
        flag = project.flags[key]
        source = f"{FLAGS_DIR}/{key}/{FLAG_FILE}"
        base = f"/{FLAGS_DIR}/{key}/"
        entries = [
            *entry(base, flag.owner, source, ("owner",)),
            *entry(f"{base}{FLAG_FILE}", flag.owner, source, ("owner",)),
        ]
        delegated = []
        for env in environments:
            team = flag.owner_for(env)
            where: tuple[str | int, ...] = ("delegate", env) if env in flag.delegate else ("owner",)
            entries += entry(f"{base}{env}.yaml", team, source, where)
            if env in flag.delegate:
                delegated.append(f"{env} -> {team}")
        heading = f"Flag {key}: owner = {flag.owner}"
        if delegated:
            heading += "; delegated: " + ", ".join(delegated)
        sections.append((heading, tuple(entries)))
    segment_entries: list[OwnershipEntry] = []
    for key in sorted(project.segments):
        segment = project.segments[key]
        source = f"{SEGMENTS_DIR}/{key}.yaml"
        segment_entries += entry(f"/{source}", segment.owner, source, ("owner",))
    if segment_entries:
        sections.append(("Segments", tuple(segment_entries)))
    problems = []
    for (source, where, why), patterns in unmapped.items():
        doc = _document_for(project, source)
        line, col = doc.position(where) if doc else (0, 0)
        problems.append(
            Problem(
                source,
                line,
                col,
                RULE,
                "error",
                f"{source} {why}, so {', '.join(patterns)} cannot be mapped",
                "fix the ownership and run `flagstone validate`",
            )
        )
    return OwnershipPlan(tuple(sections), tuple(problems))


def _document_for(project: Project, rel: str) -> Document | None:
    return next((doc for doc in project.documents() if doc.rel == rel), None)


# --- the file ---------------------------------------------------------------------------

_BEGIN_PREFIX = "# BEGIN flagstone generated"


@dataclass(frozen=True, slots=True)
class CodeownersLayout:
    """A CODEOWNERS text cut around its generated block (``block`` is None if absent)."""

    before: str
    block: str | None
    after: str

    @property
    def after_first_line(self) -> int:
        """1-based number of the first line after the block."""
        return (self.before + (self.block or "")).count("\n") + 1


def split_layout(text: str) -> CodeownersLayout:
    """Find the generated block; raise ``LoadError`` if its markers are broken."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(_BEGIN_PREFIX)]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]

    def broken(index: int, message: str) -> LoadError:
        hint = "restore the markers, or delete the whole block and run `flagstone codeowners`"
        return LoadError(Problem(CODEOWNERS_PATH, index + 1, 1, RULE, "error", message, hint))

    if not begins and not ends:
        return CodeownersLayout(text, None, "")
    if len(begins) > 1:
        raise broken(begins[1], "a second generated block starts here")
    if not begins:
        raise broken(ends[0], "end marker of the generated block without a begin marker")
    start = begins[0]
    if not ends:
        raise broken(start, "generated block has no end marker")
    if ends[0] < start:
        raise broken(ends[0], "end marker of the generated block before its begin marker")
    if len(ends) > 1:
        raise broken(ends[1], "a second end marker of the generated block")
    end = ends[0]
    return CodeownersLayout(
        "".join(lines[:start]), "".join(lines[start : end + 1]), "".join(lines[end + 1 :])
    )


def merge_block(existing: str | None, block: str) -> str:
    """The file with ``block`` in place of the old generated block, or appended at the end.

    Everything outside the block is kept byte for byte.
    """
    if not existing:
        return block
    layout = split_layout(existing)
    if layout.block is not None:
        return layout.before + block + layout.after
    separator = "\n" if existing.endswith("\n") else "\n\n"
    return existing + separator + block


def _candidate_paths(project: Project, plan: OwnershipPlan) -> list[str]:
    """Paths the generated block governs: its file patterns, and files on disk under
    its directory patterns."""
    paths: set[str] = set()
    for entry in plan.entries:
        rel = entry.pattern.strip("/")
        if not entry.pattern.endswith("/"):
            paths.add(rel)
            continue
        directory = project.root / rel
        if directory.is_dir():
            paths.update(
                p.relative_to(project.root).as_posix() for p in directory.rglob("*") if p.is_file()
            )
    return sorted(paths)


_WILDCARDS = re.compile(r"[*?]")
_MOVE_ABOVE = "GitHub applies the last matching line; move this line above the generated block"


def _override_finding(
    line: CodeownersLine, candidates: list[str], plan: OwnershipPlan
) -> Problem | None:
    """A line after the block that gives a generated path another owner."""
    overridden = [
        (path, owner)
        for path in candidates
        if line.matches(path)
        and (owner := plan.owner_of_path(path)) is not None
        and line.owners != (owner,)
    ]
    if not overridden:
        return None
    path, owner = overridden[0]
    now = " ".join(line.owners) or "no owner"
    more = f" and {len(overridden) - 1} more generated path(s)" if len(overridden) > 1 else ""
    message = (
        f"hand-written line after the generated block overrides {path} ({owner} -> {now}){more}"
    )
    # An error, not a warning: GitHub applies the last matching line, so this line quietly
    # takes review of generated paths away from the owners the repository declares.
    return Problem(CODEOWNERS_PATH, line.number, 1, RULE, "error", message, _MOVE_ABOVE)


def _shadowed_finding(line: CodeownersLine, plan: OwnershipPlan) -> Problem | None:
    """A line before the block naming one file the block decides: it has no effect."""
    if _WILDCARDS.search(line.pattern) or line.pattern.endswith("/"):
        return None
    path = line.pattern.lstrip("/")
    owner = plan.owner_of_path(path) if line.pattern.startswith("/") or "/" in path else None
    if owner is None or line.owners == (owner,):
        return None
    return Problem(
        CODEOWNERS_PATH,
        line.number,
        1,
        RULE,
        "warning",
        f"line has no effect: the generated block below gives {path} to {owner}",
        "change the ownership in the flag repository (owner, delegate, admins) instead",
    )


def check_codeowners_text(project: Project, plan: OwnershipPlan, text: str) -> list[Problem]:
    """Everything GitHub would reject in ``text``, hand-written lines after the generated
    block that override a generated owner, and lines before it that the block overrides."""
    problems: list[Problem] = []
    size = len(text.encode("utf-8"))
    if size >= MAX_CODEOWNERS_BYTES:
        message = f"file is {size} bytes; GitHub ignores CODEOWNERS files of 3 MB or more"
        problems.append(Problem(CODEOWNERS_PATH, 0, 0, RULE, "error", message))
    layout = split_layout(text)
    if layout.block is None:
        block_lines = range(0)
    else:
        first = layout.before.count("\n") + 1
        block_lines = range(first, layout.after_first_line)
    candidates: list[str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line, errors = parse_line(number, raw)
        problems += [Problem(CODEOWNERS_PATH, number, 1, RULE, "error", error) for error in errors]
        if line is None or errors or not block_lines or number in block_lines:
            continue
        if number < block_lines.start:
            finding = _shadowed_finding(line, plan)
        else:
            candidates = candidates if candidates is not None else _candidate_paths(project, plan)
            finding = _override_finding(line, candidates, plan)
        if finding is not None:
            problems.append(finding)
    return problems


@dataclass(frozen=True, slots=True)
class CodeownersReport:
    """The CODEOWNERS file as it is and as it should be, and every finding about it."""

    path: Path
    current: str | None
    expected: str
    problems: tuple[Problem, ...]
    unmapped: tuple[Problem, ...]  # files with no owner to map: the block is incomplete

    @property
    def up_to_date(self) -> bool:
        return self.current == self.expected

    def drift(self) -> Problem | None:
        """An error at the first line where the file on disk differs from the expected one."""
        if self.up_to_date:
            return None
        if self.current is None:
            line, message = 0, f"{CODEOWNERS_PATH} does not exist"
        else:
            current, expected = self.current.splitlines(), self.expected.splitlines()
            # Linear on purpose: the file may be megabytes long.
            differing = (
                n
                for n, (a, b) in enumerate(zip(current, expected, strict=False), start=1)
                if a != b
            )
            line = next(differing, min(len(current) + 1, max(len(expected), 1)))
            message = f"{CODEOWNERS_PATH} is out of date with the ownership metadata"
        return Problem(
            CODEOWNERS_PATH,
            line,
            1 if line else 0,
            RULE,
            "error",
            message,
            "run `flagstone codeowners` and commit the result",
        )

    def diff(self) -> str:
        """A unified diff from the file on disk to the expected file."""
        return "".join(
            difflib.unified_diff(
                (self.current or "").splitlines(keepends=True),
                self.expected.splitlines(keepends=True),
                fromfile=f"a/{CODEOWNERS_PATH}",
                tofile=f"b/{CODEOWNERS_PATH}",
            )
        )


def read_codeowners(root: Path) -> str | None:
    path = root / CODEOWNERS_PATH
    bounds = RepositoryBounds(root)
    if bounds.leads_outside(path.parent) or bounds.leads_outside(path):
        raise LoadError(bounds.problem(path))
    if not path.is_file():
        return None
    try:
        raw = read_regular_file(path, _MAX_READ_BYTES, follow_symlinks=True)
    except FileTooLargeError:
        raise LoadError(
            Problem(
                CODEOWNERS_PATH,
                0,
                0,
                RULE,
                "error",
                f"file is over {_MAX_READ_BYTES} bytes; GitHub ignores CODEOWNERS files of 3 MB or more",
            )
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LoadError(
            Problem(CODEOWNERS_PATH, line, 1, RULE, "error", "file is not valid UTF-8")
        ) from None


def codeowners_report(project: Project) -> CodeownersReport:
    """Compare ``.github/CODEOWNERS`` with what the ownership metadata says it should be."""
    plan = plan_ownership(project)
    current = read_codeowners(project.root)
    expected = merge_block(current, plan.render_block())
    problems = [*plan.problems, *check_codeowners_text(project, plan, expected)]
    problems += [
        Problem(
            other,
            0,
            0,
            RULE,
            "warning",
            f"GitHub ignores this file because {CODEOWNERS_PATH} takes precedence",
            f"move its lines into {CODEOWNERS_PATH} (above the generated block) and delete it",
        )
        for other in IGNORED_CODEOWNERS_PATHS
        if (project.root / other).is_file()
    ]
    return CodeownersReport(
        project.root / CODEOWNERS_PATH, current, expected, tuple(problems), plan.problems
    )


def write_codeowners(report: CodeownersReport) -> bool:
    """Write the expected file if it differs; return whether anything changed.

    An incomplete block is never written: ``ValidationFailed`` if ``report.unmapped``.
    """
    if report.unmapped:
        raise ValidationFailed(list(report.unmapped))
    if report.up_to_date:
        return False
    write_file_atomically(
        report.path,
        report.expected.encode("utf-8"),
        mode=None,
        expected_dir=report.path.parent.parent,  # the repository root
        create_dirs=True,
    )
    return True
