"""Authoring without hand-editing YAML: ``new`` with a progression, ``stage add|remove|set``,
``target add|remove`` and ``segment new|add|remove``.

Every command here is an edit of the text of one or two files, made like the edits of
``flagstone.edit``: the parser's marks locate the node to change, the spot where a new
key or list item goes, or the lines an item occupies; every other byte (comments,
quoting, flow or block style, blank lines) stays as written. New values are written in
flow style (``- {name: ten, percent: 10}``, ``[user-1, user-2]``).

Each edit is checked three ways before anything is written:

1. **Read-back.** The intended change is also applied to the data read from the
   original text (ruamel.yaml round-trip loader, an independent YAML 1.2 parser); the
   edited text must read back as exactly that data, so nothing else changed.
2. **Validation.** The would-be repository is validated (``edit.apply_texts``); an edit
   that adds an error is refused.
3. **Guardrails.** The rollout guardrails of ``flagstone.yaml`` judge the edited tree as
   ``check-change`` will (``edit.apply_texts`` → ``guardrails.edit_findings``: step
   size by exposure, bake time, serving values, dependencies); an edit that would fail
   them is refused with the guardrail's message.

When the edit changes who owns a file (a new flag or segment), ``.github/CODEOWNERS``
is regenerated, so ``codeowners --check`` (and the pre-commit hook) passes right after.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from flagstone import edit as edits
from flagstone.compile import duration_seconds
from flagstone.errors import EditError, FlagstoneError, UsageError
from flagstone.model import (
    FLAG_FILE,
    FLAG_KINDS,
    FLAGS_DIR,
    KEY_PATTERN,
    SEGMENTS_DIR,
    Project,
    read_project,
)
from flagstone.ownership import CODEOWNERS_PATH, codeowners_report, write_codeowners
from flagstone.rollout import percent_text

PathKey = tuple[str | int, ...]
PLACEHOLDER_DESCRIPTION = "TODO say what this flag changes and when it can be removed."
_PERCENT_TOKEN = re.compile(r"^([0-9]+(?:\.[0-9]{1,3})?)%$")
_DURATION = re.compile(r"^[0-9]+[smhdw]$")


# --- reading the data back ------------------------------------------------------------------


def plain(value: Any) -> Any:
    """ruamel's round-trip objects as plain dicts, lists and scalars (for comparison)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def read_back(text: str, rel: str) -> Any:
    try:
        return plain(YAML(typ="rt", pure=True).load(text))
    except Exception as exc:  # ruamel raises many unrelated types
        raise EditError(
            f"{rel}: the edit would not parse ({type(exc).__name__}); nothing written"
        ) from None


def flow_text(value: Any) -> str:
    """``value`` as one line of flow-style YAML."""
    if isinstance(value, Mapping):
        inner = ", ".join(f"{edits.scalar_text(k)}: {flow_text(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow_text(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value[:4].isdigit() and "T" in value:
        return edits.scalar_text(value, style='"')  # timestamps stay strings for every parser
    return edits.scalar_text(value)


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


# --- text surgery ---------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """Lines with their line breaks (YAML marks count ``\\n``)."""
    parts = text.split("\n")
    return [line + "\n" for line in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _last_content_line(lines: Sequence[str], node: yaml.Node) -> int:
    """0-based index of the last line holding ``node``'s content (a block collection's
    end mark lies past the comments and blank lines after it)."""
    end = node.end_mark
    line = end.line if end.column > 0 else end.line - 1
    line = min(line, len(lines) - 1)
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        return line
    while line > node.start_mark.line and edits._blank_or_comment(lines[line]):
        line -= 1
    return line


def _line_start(lines: Sequence[str], line: int) -> int:
    return sum(len(text) for text in lines[:line])


@dataclass
class YamlFile:
    """One file being authored: its original text, the edited text, and the data the
    edited text must read back as."""

    rel: str
    original: str
    text: str = ""
    expected: Any = None
    new: bool = False

    def __post_init__(self) -> None:
        self.text = self.text or self.original
        if self.expected is None:
            self.expected = read_back(self.original, self.rel) if self.original else {}

    # navigation
    def _root(self) -> yaml.Node:
        return edits._compose(self.text, self.rel)

    def node(self, where: PathKey) -> yaml.Node | None:
        node: yaml.Node | None = self._root()
        for key in where:
            node = edits._child(node, key) if node is not None else None
        return node

    def _need(self, where: PathKey) -> yaml.Node:
        node = self.node(where)
        if node is None:
            raise EditError(f"{self.rel}: no {'.'.join(map(str, where)) or 'document'}")
        return node

    def _expected_at(self, where: PathKey) -> Any:
        data = self.expected
        for key in where:
            data = data[key]
        return data

    def value(self, where: PathKey) -> Any:
        try:
            return copy.deepcopy(self._expected_at(where))
        except (KeyError, IndexError, TypeError):
            return None

    # operations
    def set(self, mapping: PathKey, key: str, value: Any) -> None:
        """Set ``mapping[key]`` to ``value`` (replacing the node, or adding the key)."""
        parent = self._need(mapping)
        if not isinstance(parent, yaml.MappingNode):
            raise EditError(f"{self.rel}: {'.'.join(map(str, mapping))} is not a mapping")
        token = flow_text(value)
        pair = next(((k, v) for k, v in parent.value if k.value == key), None)
        if pair is None:
            self.text = edits._insert_key(self.text, parent, key, token)
        else:
            key_node, node = pair
            if isinstance(node, yaml.ScalarNode) or node.flow_style:
                start, end = node.start_mark.index, node.end_mark.index
                self.text = self.text[:start] + token + self.text[end:]
            else:  # a block collection: the flow form goes after the key's colon
                lines = _lines(self.text)
                last = _last_content_line(lines, node)
                end = _line_start(lines, last) + len(lines[last].rstrip("\r\n"))
                colon = self.text.index(":", key_node.end_mark.index)
                self.text = self.text[: colon + 1] + " " + token + self.text[end:]
        self._expected_at(mapping)[key] = copy.deepcopy(value)

    def delete(self, mapping: PathKey, key: str) -> None:
        """Remove ``mapping[key]`` (its lines in block style, its entry in flow style)."""
        parent = self._need(mapping)
        if not isinstance(parent, yaml.MappingNode):
            raise EditError(f"{self.rel}: {'.'.join(map(str, mapping))} is not a mapping")
        pairs = list(parent.value)
        index = next((i for i, (k, _) in enumerate(pairs) if k.value == key), None)
        if index is None:
            return
        if len(pairs) == 1 and not parent.flow_style:
            raise EditError(f"{self.rel}: cannot remove the only key of a block mapping")
        key_node, value_node = pairs[index]
        if parent.flow_style:
            self.text = self._cut_flow(
                key_node.start_mark.index,
                value_node.end_mark.index,
                [p[0].start_mark.index for p in pairs],
                [p[1].end_mark.index for p in pairs],
                index,
            )
        else:
            self.text = self._cut_lines(key_node, value_node)
        del self._expected_at(mapping)[key]

    def insert_item(self, sequence: PathKey, index: int | None, value: Any) -> None:
        """Insert ``value`` before item ``index`` of a list (``None``: append)."""
        node = self._need(sequence)
        if not isinstance(node, yaml.SequenceNode):
            raise EditError(f"{self.rel}: {'.'.join(map(str, sequence))} is not a list")
        items = list(node.value)
        token = flow_text(value)
        at = len(items) if index is None else index
        if node.flow_style:
            if not items:
                close = self.text.rindex("]", 0, node.end_mark.index)
                self.text = self.text[:close] + token + self.text[close:]
            elif at >= len(items):
                end = items[-1].end_mark.index
                self.text = self.text[:end] + ", " + token + self.text[end:]
            else:
                start = items[at].start_mark.index
                self.text = self.text[:start] + token + ", " + self.text[start:]
        else:
            lines = _lines(self.text)
            first = items[0]
            dash = lines[first.start_mark.line].rindex("-", 0, first.start_mark.column + 1)
            newline = "\r\n" if "\r\n" in self.text else "\n"
            entry = " " * dash + "- " + token + newline
            if at >= len(items):
                after = _last_content_line(lines, items[-1]) + 1
                if after == len(lines) and lines and not lines[-1].endswith("\n"):
                    lines[-1] += newline
            else:
                after = items[at].start_mark.line
            lines.insert(after, entry)
            self.text = "".join(lines)
        target = self._expected_at(sequence)
        target.insert(at, copy.deepcopy(value))

    def delete_item(self, sequence: PathKey, index: int) -> None:
        node = self._need(sequence)
        if not isinstance(node, yaml.SequenceNode) or index >= len(node.value):
            raise EditError(f"{self.rel}: no item {index} in {'.'.join(map(str, sequence))}")
        items = list(node.value)
        if node.flow_style:
            self.text = self._cut_flow(
                items[index].start_mark.index,
                items[index].end_mark.index,
                [i.start_mark.index for i in items],
                [i.end_mark.index for i in items],
                index,
            )
        elif len(items) == 1:
            raise EditError(f"{self.rel}: cannot remove the only item of a block list")
        else:
            self.text = self._cut_lines(items[index], items[index])
        del self._expected_at(sequence)[index]

    def _cut_flow(
        self, start: int, end: int, starts: Sequence[int], ends: Sequence[int], index: int
    ) -> str:
        if index + 1 < len(starts):
            return self.text[:start] + self.text[starts[index + 1] :]
        if index > 0:
            return self.text[: ends[index - 1]] + self.text[end:]
        return self.text[:start] + self.text[end:]

    def _cut_lines(self, first: yaml.Node, last: yaml.Node) -> str:
        lines = _lines(self.text)
        top = first.start_mark.line
        bottom = _last_content_line(lines, last)
        prefix = lines[top][: first.start_mark.column]
        if prefix.strip() not in ("", "-"):
            raise EditError(f"{self.rel}:{top + 1}: cannot remove an entry that shares its line")
        return "".join(lines[:top] + lines[bottom + 1 :])

    def verify(self) -> None:
        edited = read_back(self.text, self.rel)
        if edited != self.expected:
            raise EditError(
                f"{self.rel}: the edit would not read back as intended; nothing written",
                hint="edit this file by hand and report the case",
            )


# --- checks and writing ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthoringResult:
    written: list[str]
    changes: list[Any]
    notes: list[str] = field(default_factory=list)


def _scratch_project(root: Path, texts: Mapping[str, str]) -> tuple[Any, Project]:
    scratch = tempfile.TemporaryDirectory(prefix="flagstone-author-")
    copy_root = Path(scratch.name)
    edits._copy_project(root, copy_root)
    for rel, text in texts.items():
        target = copy_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="")
    return scratch, read_project(copy_root)


def write_files(
    root: Path,
    project: Project,
    files: Sequence[YamlFile],
    *,
    now: float | None = None,
    notes: Sequence[str] = (),
) -> AuthoringResult:
    """Verify, guardrail-check, validate and write ``files``; regenerate CODEOWNERS when
    the edit changes ownership."""
    for file in files:
        file.verify()
    texts = {f.rel: f.text for f in files if f.new or f.text != f.original}
    if not texts:
        return AuthoringResult([], [], [*notes, "nothing to change"])
    scratch, after = _scratch_project(root, texts)
    with scratch:
        owners_before = codeowners_report(project).expected
        owners_after = _codeowners_text(after)
    # Validation and the rollout guardrails (as check-change will judge the change).
    result = edits.apply_texts(root, project, texts, now=now)
    written = list(result.written)
    extra = [*notes, *result.notices]
    if owners_after is not None and owners_after != owners_before:
        report = codeowners_report(read_project(root))
        if (root / CODEOWNERS_PATH).exists() or (root / ".github").is_dir():
            if report.unmapped:
                extra.append(f"{CODEOWNERS_PATH} not regenerated: some files have no owner")
            elif write_codeowners(report):
                written.append(CODEOWNERS_PATH)
    return AuthoringResult(written, list(result.changes), extra)


def _codeowners_text(project: Project) -> str | None:
    try:
        return codeowners_report(project).expected
    except FlagstoneError:
        return None


def _release_file(project: Project, flag_key: str, env: str) -> YamlFile:
    flag = edits._flag(project, flag_key)
    file = edits._release_file(project, flag, env)
    return YamlFile(file.rel, file.original)


# --- parsing command-line values -----------------------------------------------------------


def parse_percent(text: str | float | Decimal, what: str = "--percent") -> Decimal:
    try:
        value = Decimal(str(text).strip().rstrip("%"))
    except InvalidOperation:
        raise UsageError(f"{what} {text!r} is not a number between 0 and 100") from None
    if not value.is_finite() or not 0 <= value <= 100:
        raise UsageError(f"{what} {text!r} is not a number between 0 and 100")
    if value != value.quantize(Decimal("0.001")):
        raise UsageError(f"{what} {text!r} has more than 3 decimals")
    return value.normalize() if value != value.to_integral_value() else Decimal(int(value))


def parse_duration(text: str, what: str = "--bake") -> str:
    if not _DURATION.fullmatch(text) or duration_seconds(text) is None:
        raise UsageError(f"{what} {text!r} is not a duration like 30m, 24h, 2d or 1w")
    return text


def parse_keys(texts: Sequence[str], what: str) -> list[str]:
    """Keys from arguments that may themselves be comma-separated."""
    keys = [part.strip() for text in texts for part in text.split(",") if part.strip()]
    if not keys:
        raise UsageError(f"no {what} given")
    return list(dict.fromkeys(keys))


def _segment_keys(texts: Sequence[str]) -> list[str]:
    keys = parse_keys(texts, "segments")
    for key in keys:
        if not KEY_PATTERN.fullmatch(key):
            raise UsageError(f"{key!r} is not a segment key")
    return keys


def parse_schedule(text: str) -> str:
    """``--at``: a time as RFC 3339 UTC (``…Z``), the form release files hold."""
    from flagstone.timeforms import parse_time, utc_text

    return utc_text(parse_time(text, "--at"))


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    percent: Decimal | None = None
    segments: tuple[str, ...] = ()

    def data(self, bake: str | None = None) -> dict[str, Any]:
        stage: dict[str, Any] = {"name": self.name}
        if self.segments:
            stage["segments"] = list(self.segments)
        if self.percent is not None:
            stage["percent"] = _number(self.percent)
        if bake:
            stage["bake"] = bake
        return stage


def parse_progression(text: str) -> list[StageSpec]:
    """``staff,beta-testers,1%,10%,50%,100%``: a segment key makes a stage reaching that
    segment (named after it), ``N%`` a stage reaching N percent (named ``Npct``)."""
    stages: list[StageSpec] = []
    for token in (part.strip() for part in text.split(",")):
        if not token:
            continue
        match = _PERCENT_TOKEN.fullmatch(token)
        if match:
            percent = parse_percent(match.group(1), "--progression")
            stages.append(StageSpec(f"{percent_text(percent)}pct", percent=percent))
        elif KEY_PATTERN.fullmatch(token):
            stages.append(StageSpec(token, segments=(token,)))
        else:
            raise UsageError(
                f"--progression: {token!r} is neither a segment key nor a percentage like 10%"
            )
    names = [s.name for s in stages]
    if not stages:
        raise UsageError("--progression names no stage")
    if len(set(names)) != len(names):
        raise UsageError(f"--progression repeats a stage: {', '.join(names)}")
    return stages


def parse_variations(text: str, value_type: str) -> tuple[dict[str, Any], str]:
    """``--variations``: ``name=value`` pairs (values read as JSON, else as text) or bare
    names (boolean: exactly two, the first true; string: the name is the value; number:
    0, 1, 2, …). Returns the variations and the off variation (the false one, else the
    first)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) < 2:
        raise UsageError("--variations needs at least two variations")
    variations: dict[str, Any] = {}
    for index, part in enumerate(parts):
        name, has_value, raw = part.partition("=")
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
            raise UsageError(f"--variations: {name!r} is not a variation name")
        if name in variations:
            raise UsageError(f"--variations names {name!r} twice")
        if has_value:
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw.strip()
        elif value_type == "boolean":
            if len(parts) != 2:
                raise UsageError("--variations: a boolean flag has exactly two variations")
            value = index == 0
        elif value_type == "number":
            value = index
        elif value_type == "json":
            value = {"variation": name}
        else:
            value = name
        variations[name] = value
    off = next((n for n, v in variations.items() if v is False), next(iter(variations)))
    return variations, off


# --- new --------------------------------------------------------------------------------------


def new_flag(
    root: Path,
    key: str,
    *,
    owner: str,
    value_type: str = "boolean",
    kind: str = "release",
    name: str | None = None,
    description: str | None = None,
    expires: str | None = None,
    variations: str | None = None,
    serve: str | None = None,
    progression: str | None = None,
    bake: str | None = None,
    today: dt.date | None = None,
    now: float | None = None,
) -> AuthoringResult:
    """``flags/KEY/flag.yaml`` and a disabled release file per environment: with a
    progression (``--progression``) rolling ``serve`` out over the off variation, else
    serving the off variation. CODEOWNERS is regenerated."""
    project = read_project(root)
    if not KEY_PATTERN.fullmatch(key):
        raise UsageError(
            f"{key!r} is not a valid flag key (lowercase letters, digits, '.', '_', '-')"
        )
    if key in project.flags or (root / FLAGS_DIR / key).exists():
        raise EditError(f"{FLAGS_DIR}/{key} already exists")
    if project.config is None:
        edits._unreadable(project, "flagstone.yaml")
    teams = project.config.teams if project.config else {}
    if owner not in teams:
        raise UsageError(f"unknown team {owner!r} (teams: {', '.join(sorted(teams)) or 'none'})")
    if value_type not in edits.VALUE_TYPES:
        raise UsageError(f"unknown type {value_type!r} ({', '.join(edits.VALUE_TYPES)})")
    if kind not in FLAG_KINDS:
        raise UsageError(f"unknown kind {kind!r} ({', '.join(FLAG_KINDS)})")
    if variations:
        values, off = parse_variations(variations, value_type)
    else:
        values, off = copy.deepcopy(edits.SCAFFOLD_VARIATIONS[value_type])
    stages = parse_progression(progression) if progression else []
    if bake is not None:
        parse_duration(bake)
        if not stages:
            raise UsageError("--bake needs --progression (it is the time each stage runs)")
    rolled = serve or next(v for v in values if v != off)
    if rolled not in values or rolled == off:
        raise UsageError(
            f"--serve {rolled!r} is not a variation other than the off variation {off!r}"
        )
    for stage in stages:
        for segment in stage.segments:
            if segment not in project.segments:
                raise UsageError(
                    f"--progression: no segment {segment!r} "
                    f"(segments: {', '.join(sorted(project.segments)) or 'none'})",
                    hint=f"create it first: flagstone segment new {segment} --owner TEAM",
                )
    temporary = kind in ("release", "experiment")
    modeline = "# yaml-language-server: $schema=../../schemas/{}.schema.json\n"
    lines = [
        modeline.format("flag"),
        f"name: {edits.scalar_text(name or key.replace('-', ' ').replace('_', ' ').capitalize())}\n",
        f"description: {edits.scalar_text(description or PLACEHOLDER_DESCRIPTION)}\n",
        f"owner: {edits.scalar_text(owner)}\n",
        f"kind: {kind}\n",
        f"type: {value_type}\n",
        f"temporary: {edits.scalar_text(temporary)}\n",
    ]
    if temporary:
        until = (
            expires
            or (
                (today or dt.date.today()) + dt.timedelta(days=edits.DEFAULT_LIFETIME_DAYS)
            ).isoformat()
        )
        lines.append(f'expires: "{until}"\n')
    lines.append("variations:\n")
    lines += [f"  {edits.scalar_text(k)}: {flow_text(v)}\n" for k, v in values.items()]
    lines.append(f"off_variation: {edits.scalar_text(off)}\n")
    flag_rel = f"{FLAGS_DIR}/{key}/{FLAG_FILE}"
    files = [YamlFile(flag_rel, "", "".join(lines), read_back("".join(lines), flag_rel), True)]
    for env in project.environments:
        rel = f"{FLAGS_DIR}/{key}/{env}.yaml"
        text = modeline.format("release") + "enabled: false\n"
        if stages:
            text += (
                "default:\n  progression:\n"
                f"    variation: {edits.scalar_text(rolled)}\n"
                f"    baseline: {edits.scalar_text(off)}\n"
                f"    current: {stages[0].name}\n"
                "    stages:\n"
            )
            for index, stage in enumerate(stages):
                last = index == len(stages) - 1
                text += f"      - {flow_text(stage.data(None if last else bake))}\n"
        else:
            text += f"default: {edits.scalar_text(off)}\n"
        files.append(YamlFile(rel, "", text, read_back(text, rel), True))
    notes = []
    if not description:
        notes.append(
            f"the description is a placeholder: replace it in {flag_rel} (lint reports it)"
        )
    return write_files(root, project, files, now=now, notes=notes)


# --- stages -----------------------------------------------------------------------------------

_PROGRESSION: PathKey = ("default", "progression")
_STAGES: PathKey = (*_PROGRESSION, "stages")


def _stages(file: YamlFile) -> list[dict[str, Any]]:
    stages = file.value(_STAGES)
    if not isinstance(stages, list):
        raise EditError(
            f"{file.rel}: default is not a progression",
            hint="create the flag with `flagstone new --progression …`, or write the "
            "progression once by hand",
        )
    return stages


def _stage_index(file: YamlFile, stages: Sequence[Mapping[str, Any]], name: str) -> int:
    names = [str(s.get("name")) for s in stages if isinstance(s, Mapping)]
    if name not in names:
        raise UsageError(f"no stage {name!r} in {file.rel} (stages: {', '.join(names)})")
    return names.index(name)


def add_stage(
    root: Path,
    flag_key: str,
    env: str,
    name: str,
    *,
    percent: str | None = None,
    segments: Sequence[str] = (),
    bake: str | None = None,
    at: str | None = None,
    before: str | None = None,
    after: str | None = None,
    now: float | None = None,
) -> AuthoringResult:
    """Insert a stage (default: at the end)."""
    if not KEY_PATTERN.fullmatch(name):
        raise UsageError(f"{name!r} is not a stage name (lowercase letters, digits, '.', '_', '-')")
    if percent is None and not segments:
        raise UsageError("a stage needs --percent or --segments (or both)")
    if before and after:
        raise UsageError("--before and --after exclude each other")
    project = read_project(root)
    file = _release_file(project, flag_key, env)
    stages = _stages(file)
    if any(isinstance(s, Mapping) and s.get("name") == name for s in stages):
        raise UsageError(f"{file.rel} already has a stage {name!r}")
    stage: dict[str, Any] = {"name": name}
    if segments:
        stage["segments"] = _segment_keys(segments)
    if percent is not None:
        stage["percent"] = _number(parse_percent(percent))
    if bake:
        stage["bake"] = parse_duration(bake)
    if at:
        stage["at"] = parse_schedule(at)
    index: int | None = None
    if before:
        index = _stage_index(file, stages, before)
    elif after:
        index = _stage_index(file, stages, after) + 1
    file.insert_item(_STAGES, index, stage)
    return write_files(root, project, [file], now=now)


def remove_stage(
    root: Path, flag_key: str, env: str, name: str, *, now: float | None = None
) -> AuthoringResult:
    """Remove a stage; refused for the current stage (advance or roll back first)."""
    project = read_project(root)
    file = _release_file(project, flag_key, env)
    stages = _stages(file)
    index = _stage_index(file, stages, name)
    if file.value((*_PROGRESSION, "current")) == name:
        raise EditError(
            f"{file.rel}: {name!r} is the current stage",
            hint=f"move current first: flagstone advance {flag_key} --env {env} --to STAGE",
        )
    if len(stages) == 1:
        raise EditError(f"{file.rel}: {name!r} is the only stage")
    file.delete_item(_STAGES, index)
    return write_files(root, project, [file], now=now)


_CLEAR = ("none", "-")


def set_stage(
    root: Path,
    flag_key: str,
    env: str,
    name: str,
    *,
    percent: str | None = None,
    segments: Sequence[str] | None = None,
    bake: str | None = None,
    at: str | None = None,
    now: float | None = None,
) -> AuthoringResult:
    """Change a stage's percent, segments, bake or schedule (``none`` removes one)."""
    if percent is None and segments is None and bake is None and at is None:
        raise UsageError("nothing to set: give --percent, --segments, --bake or --at")
    project = read_project(root)
    file = _release_file(project, flag_key, env)
    stages = _stages(file)
    index = _stage_index(file, stages, name)
    where: PathKey = (*_STAGES, index)
    if not isinstance(file.node(where), yaml.MappingNode):
        raise EditError(f"{file.rel}: stage {name!r} is not a mapping")
    changes: list[tuple[str, Any]] = []
    if percent is not None:
        value = None if percent in _CLEAR else _number(parse_percent(percent))
        changes.append(("percent", value))
    if segments is not None:
        cleared = [s for s in segments if s not in _CLEAR]
        changes.append(("segments", _segment_keys(cleared) if cleared else None))
    if bake is not None:
        changes.append(("bake", None if bake in _CLEAR else parse_duration(bake)))
    if at is not None:
        changes.append(("at", None if at in _CLEAR else parse_schedule(at)))
    for key, value in changes:
        if value is None:
            file.delete(where, key)
        else:
            file.set(where, key, value)
    return write_files(root, project, [file], now=now)


# --- targets ----------------------------------------------------------------------------------


def add_targets(
    root: Path,
    flag_key: str,
    env: str,
    variation: str,
    keys: Sequence[str],
    *,
    now: float | None = None,
) -> AuthoringResult:
    """Serve ``variation`` to these context keys in one environment (a key targeted to
    another variation moves)."""
    wanted = parse_keys(keys, "context keys")
    project = read_project(root)
    flag = edits._flag(project, flag_key)
    if variation not in flag.variations:
        raise UsageError(
            f"{flag_key} has no variation {variation!r} (variations: {', '.join(flag.variations)})"
        )
    file = _release_file(project, flag_key, env)
    _drop_targets(file, wanted, keep=variation)
    targets = file.value(("targets",))
    if not isinstance(targets, dict) or not targets:
        file.set((), "targets", {variation: wanted})
    elif variation not in targets:
        file.set(("targets",), variation, wanted)
    else:
        present = targets[variation] if isinstance(targets[variation], list) else []
        for key in wanted:
            if key not in present:
                file.insert_item(("targets", variation), None, key)
                present.append(key)
    return write_files(root, project, [file], now=now)


def remove_targets(
    root: Path, flag_key: str, env: str, keys: Sequence[str], *, now: float | None = None
) -> AuthoringResult:
    """Stop targeting these context keys individually in one environment."""
    wanted = parse_keys(keys, "context keys")
    project = read_project(root)
    file = _release_file(project, flag_key, env)
    removed = _drop_targets(file, wanted)
    missing = [k for k in wanted if k not in removed]
    if missing:
        raise UsageError(f"{file.rel} does not target {', '.join(missing)}")
    return write_files(root, project, [file], now=now)


def _drop_targets(file: YamlFile, keys: Sequence[str], keep: str | None = None) -> set[str]:
    """Remove ``keys`` from every target list except ``keep``'s; a list left empty goes,
    and ``targets`` goes when nothing is left in it."""
    removed: set[str] = set()
    targets = file.value(("targets",))
    if not isinstance(targets, dict):
        return removed
    for variation, listed in targets.items():
        if variation == keep or not isinstance(listed, list):
            continue
        for key in keys:
            while key in (current := file.value(("targets", variation)) or []):
                position = current.index(key)
                if len(current) == 1:
                    remaining = file.value(("targets",)) or {}
                    if len(remaining) == 1:
                        file.delete((), "targets")
                    else:
                        file.delete(("targets",), variation)
                    removed.add(key)
                    break
                file.delete_item(("targets", variation), position)
                removed.add(key)
    return removed


# --- segments ---------------------------------------------------------------------------------


def new_segment(
    root: Path,
    key: str,
    *,
    owner: str,
    name: str | None = None,
    description: str | None = None,
    include: Sequence[str] = (),
    now: float | None = None,
) -> AuthoringResult:
    """``segments/KEY.yaml`` owned by ``owner``; CODEOWNERS is regenerated."""
    project = read_project(root)
    if not KEY_PATTERN.fullmatch(key):
        raise UsageError(f"{key!r} is not a valid segment key")
    rel = f"{SEGMENTS_DIR}/{key}.yaml"
    if key in project.segments or (root / rel).exists():
        raise EditError(f"{rel} already exists")
    teams = project.config.teams if project.config else {}
    if owner not in teams:
        raise UsageError(f"unknown team {owner!r} (teams: {', '.join(sorted(teams)) or 'none'})")
    text = "# yaml-language-server: $schema=../schemas/segment.schema.json\n"
    text += f"name: {edits.scalar_text(name or key.replace('-', ' ').capitalize())}\n"
    if description:
        text += f"description: {edits.scalar_text(description)}\n"
    text += f"owner: {edits.scalar_text(owner)}\n"
    members = parse_keys(include, "keys") if include else []
    text += f"include: {flow_text(members)}\n"
    return write_files(
        root, project, [YamlFile(rel, "", text, read_back(text, rel), True)], now=now
    )


def _segment_file(project: Project, key: str) -> YamlFile:
    segment = project.segments.get(key)
    rel = f"{SEGMENTS_DIR}/{key}.yaml"
    if segment is None:
        edits._unreadable(project, rel)
        raise UsageError(
            f"no segment {key!r} (segments: {', '.join(sorted(project.segments)) or 'none'})"
        )
    return YamlFile(segment.doc.rel, segment.doc.path.read_bytes().decode("utf-8"))


def change_segment_members(
    root: Path,
    key: str,
    members: Sequence[str],
    *,
    add: bool,
    listing: str = "include",
    now: float | None = None,
) -> AuthoringResult:
    """Add context keys to (or remove them from) a segment's ``include`` or ``exclude``."""
    if listing not in ("include", "exclude"):
        raise UsageError(f"unknown list {listing!r} (include or exclude)")
    wanted = parse_keys(members, "context keys")
    project = read_project(root)
    file = _segment_file(project, key)
    present = file.value((listing,))
    if add:
        if not isinstance(present, list):
            file.set((), listing, wanted)
        else:
            for member in wanted:
                if member not in present:
                    file.insert_item((listing,), None, member)
                    present.append(member)
    else:
        listed = present if isinstance(present, list) else []
        missing = [m for m in wanted if m not in listed]
        if missing:
            raise UsageError(f"{file.rel}: {listing} does not list {', '.join(missing)}")
        for member in wanted:
            current = file.value((listing,)) or []
            if len(current) == 1:
                file.set((), listing, [])
            else:
                file.delete_item((listing,), current.index(member))
    return write_files(root, project, [file], now=now)
