"""Comment-preserving edits of flag files (``new`` and the other authoring commands are in
``flagstone.authoring``, built on the same splices): ``advance``, ``rollout``, ``kill``,
``enable`` and ``archive``.

An edit changes the text of a file only where its value changes: the parser's marks
(start and end offset of every node) locate the scalar to replace, or the spot where a
missing key goes (after the last entry of a block mapping at its indentation, or before
the ``}`` of a flow mapping). Every other byte — comments, indentation, quoting, flow
style, blank lines — stays as it was. A replaced string keeps its quote style.

Before anything is written, the edited text is read back with ruamel.yaml's
round-trip loader (a second, independent YAML 1.2 parser) to check it carries the new
value at the edited place, and the whole would-be repository (a temporary copy) is
validated with ``flagstone.validate.validate_project``; an edit that adds an error is
refused with ``EditError``. The rollout guardrails then judge the would-be repository
as ``check-change`` will (``flagstone.guardrails.edit_findings``): an edit that adds a
guardrail error (a step over ``max_step``, an increase before the bake, …) is refused
with the fix named, unless ``force``. Files are then replaced atomically (write +
rename), and the semantic diff of the edit is returned for printing.

``rollout --percent N`` on a progression moves ``current`` to the first stage whose
percent is N; when no stage has N, it sets the percent of the current stage (kept
between its neighbours' percents). On a two-variation split default it gives N% to the
variation that is not the off variation and the rest to the other.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from flagstone import guardrails
from flagstone.diff import Change, diff_projects
from flagstone.errors import EditError, UsageError
from flagstone.loader import RepositoryBounds, resolve_plain
from flagstone.model import (
    FLAG_FILE,
    FLAGS_DIR,
    PROJECT_FILE,
    SEGMENTS_DIR,
    Flag,
    Project,
    read_project,
)
from flagstone.problems import Problem
from flagstone.rollout import Progression, percent_text, read_progression
from flagstone.safefiles import write_file_atomically
from flagstone.validate import validate_project

PathKey = tuple[str | int, ...]
VALUE_TYPES = ("boolean", "string", "number", "json")
SCAFFOLD_VARIATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "boolean": ({"on": True, "off": False}, "off"),
    "string": ({"control": "control", "treatment": "treatment"}, "control"),
    "number": ({"low": 0, "high": 1}, "low"),
    "json": ({"off": {}, "on": {"enabled": True}}, "off"),
}
DEFAULT_LIFETIME_DAYS = 90


# --- text surgery ----------------------------------------------------------------------------


def _compose(text: str, rel: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{rel}:{mark.line + 1}:{mark.column + 1}" if mark is not None else rel
        raise EditError(
            f"{where}: cannot be edited, it is not valid YAML ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(node, yaml.MappingNode):
        raise EditError(f"{rel}: cannot be edited, the file is not a mapping")
    return node


def _child(node: yaml.Node, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]  # type: ignore[no-any-return]
    return None


def scalar_text(value: Any, *, style: str | None = None) -> str:
    """A YAML token for ``value``; a string keeps ``style`` (``'`` or ``"``) and is quoted
    whenever the plain form would read as something else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return percent_text(Decimal(str(value)))
    text = str(value)
    if style == "'":
        return "'" + text.replace("'", "''") + "'"
    plain_ok = (
        text
        and resolve_plain(text) == text
        and text.strip() == text
        and not any(c in text for c in ":#{}[],&*!|>'\"%@`")
        and not text.startswith(("-", "?"))
    )
    if style == '"' or not plain_ok:
        return json.dumps(text, ensure_ascii=False)
    return text


@dataclass
class TextFile:
    """One file being edited: its original text and the text after the edits so far."""

    rel: str
    original: str
    text: str = ""
    expected: dict[PathKey, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.text = self.text or self.original

    def set(self, where: PathKey, value: Any) -> None:
        """Set the scalar at ``where`` (its parent must exist), inserting the key if absent."""
        root = _compose(self.text, self.rel)
        parent: yaml.Node | None = root
        for key in where[:-1]:
            parent = _child(parent, key) if parent is not None else None
        if parent is None:
            raise EditError(f"{self.rel}: no {'.'.join(map(str, where[:-1]))} to edit")
        last = where[-1]
        node = _child(parent, last)
        if node is not None:
            if not isinstance(node, yaml.ScalarNode):
                raise EditError(f"{self.rel}: {'.'.join(map(str, where))} is not a single value")
            style = node.style if node.style in ("'", '"') else None
            token = scalar_text(value, style=style)
            start, end = node.start_mark.index, node.end_mark.index
            self.text = self.text[:start] + token + self.text[end:]
        elif isinstance(parent, yaml.MappingNode) and isinstance(last, str):
            self.text = _insert_key(self.text, parent, last, scalar_text(value))
        else:
            raise EditError(f"{self.rel}: cannot add {'.'.join(map(str, where))}")
        self.expected[where] = value

    def verify(self) -> None:
        """Read the original and the edited text back with ruamel.yaml (an independent
        parser): each edited place has its new value and every other value is unchanged."""
        original, edited = _round_trip(self.original, self.rel), _round_trip(self.text, self.rel)
        for where, value in self.expected.items():
            found: Any = edited
            parent: Any = original
            for key in where[:-1]:
                found, parent = found[key], parent[key]
            found = found[where[-1]]
            if found != value or isinstance(found, bool) != isinstance(value, bool):
                raise EditError(
                    f"{self.rel}: the edit reads back as {found!r}, not {value!r}; nothing written"
                )
            parent[where[-1]] = found
        if original != edited:
            raise EditError(f"{self.rel}: the edit would change other values too; nothing written")


def _round_trip(text: str, rel: str) -> Any:
    try:
        return YAML(typ="rt", pure=True).load(text)
    except Exception as exc:  # ruamel raises many unrelated types
        raise EditError(
            f"{rel}: the edit would not parse ({type(exc).__name__}); nothing written"
        ) from None


def _blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _insert_key(text: str, mapping: yaml.MappingNode, key: str, token: str) -> str:
    entry = f"{scalar_text(key)}: {token}"
    if mapping.flow_style:
        close = text.rindex("}", 0, mapping.end_mark.index)
        before = text[mapping.start_mark.index + 1 : close].strip()
        return text[:close] + (", " if before else "") + entry + text[close:]
    if not mapping.value:
        raise EditError(f"cannot add {key!r} to an empty block mapping")
    indent = mapping.value[0][0].start_mark.column
    last_value = mapping.value[-1][1]
    end = last_value.end_mark
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.split("\n")  # YAML marks count "\n" line breaks; keep every other byte
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    at_line = min(end.line if end.column == 0 else end.line + 1, len(lines))
    # A block collection's end mark lies past the comments after it; the new key goes
    # right after the last line of content, so those comments keep their place.
    if not (isinstance(last_value, yaml.ScalarNode) and last_value.style in ("|", ">")):
        while at_line > last_value.start_mark.line + 1 and _blank_or_comment(lines[at_line - 1]):
            at_line -= 1
    if at_line == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    lines.insert(at_line, " " * indent + entry + newline)
    return "".join(lines)


# --- applying an edit -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditResult:
    written: list[str]
    changes: list[Change]
    note: str | None = None
    # Guardrail notices for the person editing: restores allowed within the window,
    # and with --force the errors written past.
    notices: list[str] = field(default_factory=list)


def _copy_project(root: Path, target: Path) -> None:
    # Links that lead out of the repository are recreated as links to the same place, so
    # the copy is read with the same refusals as the original (nothing outside is copied
    # in); links that stay inside are copied as what they point at.
    bounds = RepositoryBounds(root)

    def outside_links(folder: str, names: list[str]) -> set[str]:
        return {name for name in names if bounds.leads_outside(Path(folder) / name)}

    for name in (PROJECT_FILE, FLAGS_DIR, SEGMENTS_DIR, "schemas"):
        source = root / name
        if bounds.leads_outside(source):
            os.symlink(os.path.realpath(source), target / name)
        elif source.is_dir():
            shutil.copytree(source, target / name, ignore=outside_links)
            for link in _outside_links_below(source, bounds):
                copy = target / link.relative_to(root)
                if copy.parent.is_dir():
                    os.symlink(os.path.realpath(link), copy)
        elif source.is_file():
            shutil.copy2(source, target / name)


def _outside_links_below(folder: Path, bounds: RepositoryBounds) -> list[Path]:
    found = []
    for directory, subfolders, files in os.walk(folder):
        for name in (*subfolders, *files):
            if bounds.leads_outside(Path(directory) / name):
                found.append(Path(directory) / name)
        subfolders[:] = [n for n in subfolders if not bounds.leads_outside(Path(directory) / n)]
    return found


def _problem_key(problem: Problem) -> tuple[str, str, str]:
    return (problem.path, problem.rule, problem.message)


def apply_texts(
    root: Path,
    project: Project,
    texts: Mapping[str, str],
    *,
    note: str | None = None,
    force: bool = False,
    now: float | None = None,
    check_guardrails: bool = True,
) -> EditResult:
    """Validate the repository with ``texts`` (path -> new content) in place of its
    files and run the rollout guardrails on it (as ``check-change`` will, at ``now``),
    then write them atomically. Refuse with ``EditError`` if validation errors appear,
    or guardrail errors unless ``force``."""
    before_errors = {_problem_key(p) for p in validate_project(project) if p.level == "error"}
    with tempfile.TemporaryDirectory(prefix="flagstone-edit-") as scratch:
        copy = Path(scratch)
        _copy_project(root, copy)
        for rel, text in texts.items():
            target = copy / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="")
        after = read_project(copy)
        new_errors = [
            p
            for p in validate_project(after)
            if p.level == "error" and _problem_key(p) not in before_errors
        ]
        if new_errors:
            more = f" (and {len(new_errors) - 1} more)" if len(new_errors) > 1 else ""
            raise EditError(
                f"edit refused, the result would be invalid: {new_errors[0].format_line()}{more}"
            )
        findings = (
            guardrails.edit_findings(root, project, after, now=now) if check_guardrails else []
        )
        refusals = [p for p in findings if p.level == "error"]
        if refusals and not force:
            first = refusals[0]
            more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
            fix = f"{first.hint}; " if first.hint else ""
            raise EditError(
                f"edit refused by guardrails: {first.format_line()}{more}",
                hint=f"{fix}--force writes anyway (CI still checks)",
            )
        notices = [f"notice: {p.message}" for p in findings if p.level == "info"]
        notices += [f"forced past guardrails: {p.format_line()}" for p in refusals]
        changes = diff_projects(project, after)
    for rel, text in texts.items():
        # Never through a link planted in the repository (a flags/<key> folder that
        # leads elsewhere): folders below the root are walked without following links.
        write_file_atomically(
            root / rel, text.encode("utf-8"), mode=None, expected_dir=root, create_dirs=True
        )
    return EditResult(sorted(texts), changes, note, notices)


def _unreadable(project: Project, rel: str) -> None:
    """Refuse to edit around a file that exists but does not parse: say where it breaks."""
    for problem in project.problems:
        if problem.path == rel:
            raise EditError(f"cannot edit: {problem.format_line()}", hint=f"fix {rel} first")


def _flag(project: Project, key: str) -> Flag:
    flag = project.flags.get(key)
    if flag is None:
        _unreadable(project, f"{FLAGS_DIR}/{key}/{FLAG_FILE}")
        raise UsageError(f"no flag {key!r} (flags live in flags/<key>/flag.yaml)")
    return flag


def _release_file(project: Project, flag: Flag, env: str) -> TextFile:
    if project.config is None:
        _unreadable(project, PROJECT_FILE)
    if env not in project.environments:
        raise UsageError(
            f"unknown environment {env!r} (declared: {', '.join(project.environments) or 'none'})"
        )
    release = flag.releases.get(env)
    if release is None:
        rel = f"{FLAGS_DIR}/{flag.key}/{env}.yaml"
        _unreadable(project, rel)
        raise EditError(f"{rel} does not exist", hint="create the release file first")
    return TextFile(release.doc.rel, release.doc.path.read_bytes().decode("utf-8"))


@dataclass(frozen=True, slots=True)
class Guard:
    """How an edit meets the guardrails: ``force`` writes past their errors; ``now``
    is the time they judge at (the current time when None)."""

    force: bool = False
    now: float | None = None
    check: bool = True  # False for edits that only lower exposure (a kill)


def _finish(
    root: Path,
    project: Project,
    files: Sequence[TextFile],
    note: str | None = None,
    guard: Guard = Guard(),
) -> EditResult:
    for file in files:
        file.verify()
    changed = {f.rel: f.text for f in files if f.text != f.original}
    if not changed:
        return EditResult([], [], note or "nothing to change")
    return apply_texts(
        root,
        project,
        changed,
        note=note,
        force=guard.force,
        now=guard.now,
        check_guardrails=guard.check,
    )


# --- the edits --------------------------------------------------------------------------------


def set_enabled(
    root: Path,
    flag_key: str,
    env: str,
    enabled: bool,
    *,
    force: bool = False,
    now: float | None = None,
) -> EditResult:
    """``kill`` (False) or ``enable`` (True) a flag in one environment."""
    project = read_project(root)
    file = _release_file(project, _flag(project, flag_key), env)
    file.set(("enabled",), enabled)
    # A kill only lowers exposure: it is never refused, so it does not wait on a check.
    return _finish(root, project, [file], guard=Guard(force, now, check=enabled))


def _progression(
    project: Project, flag: Flag, env: str, *, works_on: str
) -> tuple[TextFile, Mapping[str, Any], Progression]:
    file = _release_file(project, flag, env)
    default = flag.releases[env].default
    plan = read_progression(default.get("progression")) if isinstance(default, Mapping) else None
    if plan is None:
        raise EditError(f"{file.rel}: default is not a progression", hint=works_on)
    return file, default["progression"], plan


def advance(
    root: Path,
    flag_key: str,
    env: str,
    to: str | None = None,
    *,
    force: bool = False,
    now: float | None = None,
) -> EditResult:
    """Move a progression's ``current`` to the next stage, or to stage ``to``."""
    project = read_project(root)
    flag = _flag(project, flag_key)
    file, progression, plan = _progression(
        project, flag, env, works_on="advance moves `current` of a `default: {progression: …}`"
    )
    names = [stage.name for stage in plan.stages]
    current = progression.get("current")
    index = names.index(current) if current in names else -1
    if to is None:
        if index + 1 >= len(names):
            raise EditError(f"{file.rel}: already at the last stage {current!r}")
        target = names[index + 1]
    elif to not in names:
        raise UsageError(f"no stage {to!r} in {file.rel} (stages: {', '.join(names)})")
    else:
        target = to
    file.set(("default", "progression", "current"), target)
    note = f"rolled back to {target}" if names.index(target) < index else None
    return _finish(root, project, [file], note, Guard(force, now))


def rollout(
    root: Path,
    flag_key: str,
    env: str,
    percent: float,
    *,
    force: bool = False,
    now: float | None = None,
) -> EditResult:
    """Set the share of the rolled-out variation (see the module docstring)."""
    if not 0 <= percent <= 100:
        raise UsageError(f"--percent {percent} is not between 0 and 100")
    wanted = Decimal(str(percent))
    if wanted != wanted.quantize(Decimal("0.001")):
        raise UsageError(f"--percent {percent} has more than 3 decimals")
    project = read_project(root)
    flag = _flag(project, flag_key)
    release = flag.releases.get(env)
    default = release.default if release else None
    if isinstance(default, Mapping) and isinstance(default.get("split"), Mapping):
        return _rollout_split(root, project, flag, env, default["split"], wanted, Guard(force, now))
    file, progression, plan = _progression(
        project,
        flag,
        env,
        works_on="rollout sets a progression or a two-way split default; edit the file for others",
    )
    stages = progression["stages"]
    for stage in plan.stages:
        if stage.percent == wanted and "percent" in stages[stage.index]:
            file.set(("default", "progression", "current"), stage.name)
            return _finish(root, project, [file], guard=Guard(force, now))
    current = plan.current_stage
    if current is None:
        raise EditError(
            f"{file.rel}: no stage has {percent_text(wanted)}% and no stage is current",
            hint="set current first with `flagstone advance`",
        )
    position = plan.stages.index(current)
    lower = plan.stages[position - 1].percent if position > 0 else Decimal(0)
    upper = plan.stages[position + 1].percent if position + 1 < len(plan.stages) else Decimal(100)
    if not lower <= wanted <= upper:
        raise EditError(
            f"{file.rel}: {percent_text(wanted)}% for stage {current.name!r} would break the stage order "
            f"({percent_text(lower)}% … {percent_text(upper)}%)",
            hint="advance to another stage instead",
        )
    file.set(("default", "progression", "stages", current.index, "percent"), wanted)
    return _finish(root, project, [file], guard=Guard(force, now))


def _rollout_split(
    root: Path,
    project: Project,
    flag: Flag,
    env: str,
    split: Mapping[str, Any],
    wanted: Decimal,
    guard: Guard,
) -> EditResult:
    file = _release_file(project, flag, env)
    variations = list(split)
    if len(variations) != 2:
        raise EditError(
            f"{file.rel}: rollout sets two-way splits only; this split has {len(variations)} variations"
        )
    rolled = next((v for v in variations if v != flag.off_variation), variations[1])
    other = next(v for v in variations if v != rolled)
    file.set(("default", "split", rolled), wanted)
    file.set(("default", "split", other), Decimal(100) - wanted)
    return _finish(root, project, [file], guard=guard)


def archive(root: Path, flag_key: str) -> EditResult:
    """Set ``archived: true``; refused while a live flag has this one as a prerequisite."""
    project = read_project(root)
    flag = _flag(project, flag_key)
    dependents = sorted(
        other.key
        for other in project.flags.values()
        if not other.archived
        and other.key != flag_key
        and any(isinstance(p, Mapping) and p.get("flag") == flag_key for p in other.prerequisites)
    )
    if dependents:
        raise EditError(
            f"{flag_key} is a prerequisite of {', '.join(dependents)}; archiving it would turn them off",
            hint=f"remove the prerequisite from {', '.join(dependents)} first",
        )
    file = TextFile(flag.doc.rel, flag.doc.path.read_bytes().decode("utf-8"))
    file.set(("archived",), True)
    return _finish(root, project, [file])
