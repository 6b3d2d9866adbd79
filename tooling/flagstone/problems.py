"""Findings as data: ``Problem`` and the reporters that render lists of them.

Validation and lint yield ``Problem`` values; one reporter registry renders them as
``text``, ``json`` or ``github`` (workflow-command annotations plus a Markdown job
summary when ``GITHUB_STEP_SUMMARY`` is set). ``auto`` picks ``github`` under GitHub
Actions and ``text`` elsewhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

from flagstone import escape

Level = Literal["error", "warning", "info"]
LEVELS: tuple[Level, ...] = ("error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding at a place in the repository.

    ``path`` is relative to the repository root with forward slashes; ``line`` and
    ``col`` are 1-based (0 when the finding is about a whole file).
    """

    path: str
    line: int
    col: int
    rule: str
    level: Level
    message: str
    hint: str | None = None

    def format_line(self) -> str:
        """``path:line:col: message`` — the form tests and editors match on."""
        return f"{self.location()}: {self.message}"

    def location(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.col}"
        return self.path

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.col, self.rule, self.message)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Deterministic order: by file, then position, then rule."""
    return sorted(set(problems), key=Problem.sort_key)


def count_levels(problems: Iterable[Problem]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(LEVELS, 0)
    for problem in problems:
        counts[problem.level] += 1
    return counts


def summary_line(problems: Sequence[Problem], *, checked: str) -> str:
    counts = count_levels(problems)
    if not problems:
        return f"{checked}: no problems"
    parts = [f"{n} {level}{'s' if n != 1 else ''}" for level, n in counts.items() if n]
    return f"{checked}: " + ", ".join(parts)


# --- reporters ---------------------------------------------------------------------------

Reporter = Callable[[Sequence[Problem], str, TextIO], None]


def report_text(problems: Sequence[Problem], checked: str, out: TextIO) -> None:
    """``file:line:col: level: message [rule]`` lines, then hints, then a summary; each
    line escaped for a terminal (paths, messages and hints quote repository text)."""
    lines = []
    for p in problems:
        lines.append(f"{p.location()}: {p.level}: {p.message} [{p.rule}]")
        if p.hint:
            lines.append(f"    hint: {p.hint}")
    lines.append(summary_line(problems, checked=checked))
    out.write(escape.guard_lines("".join(escape.terminal(line) + "\n" for line in lines)))


def report_json(problems: Sequence[Problem], checked: str, out: TextIO) -> None:
    """One JSON document: ``{"checked", "counts", "problems": [...]}``."""
    document = {
        "checked": checked,
        "counts": count_levels(problems),
        "problems": [asdict(p) for p in problems],
    }
    out.write(escape.json_text(json.dumps(document, indent=2, ensure_ascii=False)) + "\n")


def github_annotation(p: Problem) -> str:
    command = {"error": "error", "warning": "warning", "info": "notice"}[p.level]
    props = [f"file={escape.workflow_property(p.path)}"]
    if p.line:
        props += [f"line={p.line}", f"col={p.col}"]
    props.append(f"title={escape.workflow_property(p.rule)}")
    message = p.message + (f" (hint: {p.hint})" if p.hint else "")
    return f"::{command} {','.join(props)}::{escape.workflow_data(message)}"


def markdown_summary(problems: Sequence[Problem], checked: str) -> str:
    """A Markdown table for ``GITHUB_STEP_SUMMARY`` (every cell ``escape.markdown``)."""
    lines = [f"### {escape.markdown(summary_line(problems, checked=checked))}", ""]
    if problems:
        lines += ["| level | location | rule | message |", "|---|---|---|---|"]
        for p in problems:
            message = p.message + (f" — {p.hint}" if p.hint else "")
            location, rule = escape.markdown_code(p.location()), escape.markdown_code(p.rule)
            lines.append(f"| {p.level} | {location} | {rule} | {escape.markdown(message)} |")
    return "\n".join(lines) + "\n"


def report_github(problems: Sequence[Problem], checked: str, out: TextIO) -> None:
    """Workflow-command annotations on stdout; a Markdown table in the job summary."""
    for p in problems:
        out.write(github_annotation(p) + "\n")
    out.write(escape.terminal(summary_line(problems, checked=checked)) + "\n")
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as summary:
            summary.write(markdown_summary(problems, checked))


REPORTER_BY_NAME: dict[str, Reporter] = {
    "text": report_text,
    "json": report_json,
    "github": report_github,
}
FORMAT_CHOICES = ("auto", *REPORTER_BY_NAME)


def resolve_format(name: str) -> str:
    """``auto`` means ``github`` inside GitHub Actions, ``text`` elsewhere."""
    if name == "auto":
        return "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text"
    return name


def report(problems: Sequence[Problem], *, fmt: str, checked: str, out: TextIO) -> None:
    REPORTER_BY_NAME[resolve_format(fmt)](sort_problems(problems), checked, out)
