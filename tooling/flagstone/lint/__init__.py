"""The linter: a registry of rules, their configuration, suppressions and the runner.

Rules live one per module in ``flagstone.lint.rules`` (yamllint's layout). Levels and
options come from ``flagstone.yaml``::

    lint:
      rules:
        fully-rolled-out: {level: error, max_age_days: 60}
        key-naming: {level: off}

Unknown rule ids, unknown options, bad levels and options of the wrong type are
reported as ``lint-config`` findings (and the default is used). A finding is suppressed
by a comment on its line, or on the comment lines just above it, that gives a reason::

    expires: "2026-01-31"  # flagstone: disable=stale-temporary-flag -- removal in PR 812

A suppression without a reason is itself a ``lint-suppression`` error and suppresses
nothing; one that names an unknown rule, or matches no finding, is reported too.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from flagstone.lint.context import LintContext, RepositoryChangeTimes, Rule
from flagstone.lint.rules import (
    empty_segment,
    experiment_without_split,
    expiry_too_far,
    fully_rolled_out,
    gate_few_samples,
    key_naming,
    large_target_list,
    missing_description,
    operational_percentage,
    placeholder_description,
    prerequisite_unavailable,
    progression_behind_schedule,
    self_delegation,
    single_variation_split,
    split_bucket_attribute,
    stale_temporary_flag,
    temporary_without_expires,
    unevaluated_flag,
    unreachable_rule,
    unused_segment,
    unused_variation,
)
from flagstone.loader import Document
from flagstone.model import PROJECT_FILE, Project
from flagstone.problems import LEVELS, Level, Problem, sort_problems

_RULE_MODULES: tuple[Rule, ...] = (
    stale_temporary_flag,
    temporary_without_expires,
    expiry_too_far,
    fully_rolled_out,
    missing_description,
    placeholder_description,
    key_naming,
    unused_segment,
    empty_segment,
    unused_variation,
    unreachable_rule,
    experiment_without_split,
    single_variation_split,
    operational_percentage,
    split_bucket_attribute,
    progression_behind_schedule,
    large_target_list,
    prerequisite_unavailable,
    self_delegation,
    gate_few_samples,
    unevaluated_flag,
)
RULES: dict[str, Rule] = {rule.ID: rule for rule in sorted(_RULE_MODULES, key=lambda r: r.ID)}

CONFIG_RULE = "lint-config"
SUPPRESSION_RULE = "lint-suppression"
OFF = "off"


def unknown_rule_hint(rule_id: str) -> str:
    """``did you mean …?`` for a near miss, else a pointer to the list of rules."""
    close = difflib.get_close_matches(rule_id, RULES, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else "see `flagstone lint --list-rules`"


def rule_summary(rule: Rule) -> str:
    """The first paragraph (one sentence) of the rule's documentation, on one line."""
    return " ".join((rule.__doc__ or "").strip().split("\n\n")[0].split())


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSetting:
    level: Level | None  # None: off
    options: Mapping[str, Any]


def _option_type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, type(default))


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number ≥ 0"
    if isinstance(default, list):
        return "a list of strings"
    return "a string"


def resolve_settings(project: Project) -> tuple[dict[str, RuleSetting], list[Problem]]:
    """Each rule's level and options from ``flagstone.yaml``, and what is wrong there."""
    problems: list[Problem] = []
    doc = project.config.doc if project.config else None
    configured = (project.config.lint.get("rules") if project.config else None) or {}

    def complain(where: tuple[str | int, ...], message: str, hint: str | None = None) -> None:
        if doc is not None:
            problems.append(doc.problem(where, message, rule=CONFIG_RULE, hint=hint, key=True))
        else:
            problems.append(Problem(PROJECT_FILE, 0, 0, CONFIG_RULE, "error", message, hint))

    if not isinstance(configured, dict):
        complain(("lint", "rules"), "lint.rules must be a mapping of rule id to settings")
        configured = {}
    for rule_id in configured:
        if rule_id not in RULES:
            complain(
                ("lint", "rules", rule_id),
                f"unknown lint rule '{rule_id}'",
                unknown_rule_hint(rule_id),
            )

    settings: dict[str, RuleSetting] = {}
    for rule_id, rule in RULES.items():
        level: Level | None = rule.DEFAULT_LEVEL
        options = dict(rule.OPTIONS)
        raw = configured.get(rule_id)
        if raw is not None and not isinstance(raw, dict):
            complain(("lint", "rules", rule_id), f"settings of '{rule_id}' must be a mapping")
            raw = {}
        for name, value in (raw or {}).items():
            where = ("lint", "rules", rule_id, name)
            if name == "level":
                if value == OFF:
                    level = None
                elif value in LEVELS:
                    level = value
                else:
                    complain(
                        where, f"level of '{rule_id}' must be one of error, warning, info, off"
                    )
            elif name not in rule.OPTIONS:
                known = ", ".join(sorted(rule.OPTIONS)) or "none"
                complain(where, f"unknown option '{name}' for rule '{rule_id}' (options: {known})")
            elif not _option_type_ok(rule.OPTIONS[name], value):
                complain(
                    where,
                    f"option '{name}' of '{rule_id}' must be {_type_name(rule.OPTIONS[name])}",
                )
            else:
                options[name] = value
        settings[rule_id] = RuleSetting(level, options)
    return settings, problems


def rule_catalog(project: Project | None = None) -> list[dict[str, Any]]:
    """Every rule with its level and options (as configured in ``project``, if given),
    summary and documentation: what ``flagstone lint --list-rules`` shows."""
    settings = resolve_settings(project)[0] if project is not None else {}
    catalog = []
    for rule_id, rule in RULES.items():
        setting = settings.get(rule_id, RuleSetting(rule.DEFAULT_LEVEL, rule.OPTIONS))
        catalog.append(
            {
                "id": rule_id,
                "level": setting.level or OFF,
                "default_level": rule.DEFAULT_LEVEL,
                "options": dict(setting.options),
                "summary": rule_summary(rule),
                "doc": (rule.__doc__ or "").strip(),
            }
        )
    return catalog


# --- suppressions -----------------------------------------------------------------------

_SUPPRESSION = re.compile(r"(?:^|\s)#\s*flagstone:\s*disable=(?P<body>.*)$")
_REASON_SEPARATOR = re.compile(r"\s--(?:\s|$)")


@dataclass(slots=True)
class Suppression:
    path: str
    line: int  # where the comment is
    col: int
    rules: tuple[str, ...]
    reason: str | None
    applies_to: frozenset[int]  # lines it covers (0: the whole file)
    used: set[str] = field(default_factory=set)


def parse_suppressions(doc: Document) -> list[Suppression]:
    """Every ``# flagstone: disable=…`` comment of a file, with the lines it covers.

    A comment at the end of a line covers that line; a comment on a line of its own
    covers the next line that is not a comment; comments before the first content line
    also cover the whole file (findings about the file itself, such as its name).
    """
    try:
        text = doc.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if "flagstone:" not in text:
        return []
    found: list[Suppression] = []
    pending: list[Suppression] = []  # own-line comments waiting for their content line
    seen_content = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        match = _SUPPRESSION.search(line)
        own_line = stripped.startswith("#")
        if match:
            listed, *rest = _REASON_SEPARATOR.split(match.group("body"), maxsplit=1)
            reason = rest[0] if rest else ""
            covers = {number}
            if own_line and not seen_content:
                covers.add(0)
            suppression = Suppression(
                doc.rel,
                number,
                line.index("#", match.start()) + 1,
                tuple(rule.strip() for rule in listed.split(",") if rule.strip()),
                reason.strip() or None,
                frozenset(covers),
            )
            found.append(suppression)
            if own_line:
                pending.append(suppression)
        if stripped and not own_line:
            seen_content = True
            for waiting in pending:
                waiting.applies_to = waiting.applies_to | {number}
            pending = []
    return found


def apply_suppressions(
    project: Project, problems: Sequence[Problem], enabled: set[str]
) -> list[Problem]:
    """Drop findings covered by a valid suppression; add findings about suppressions."""
    by_path: dict[str, list[Suppression]] = {}
    for doc in project.documents():
        by_path[doc.rel] = parse_suppressions(doc)
    kept: list[Problem] = []
    for problem in problems:
        covering = [
            s
            for s in by_path.get(problem.path, [])
            if s.reason and problem.rule in s.rules and problem.line in s.applies_to
        ]
        for suppression in covering:
            suppression.used.add(problem.rule)
        if not covering or problem.rule in (CONFIG_RULE, SUPPRESSION_RULE):
            kept.append(problem)
    for suppressions in by_path.values():
        for s in suppressions:
            kept += _suppression_findings(s, enabled)
    return kept


def _suppression_findings(s: Suppression, enabled: set[str]) -> list[Problem]:
    def finding(level: Level, message: str, hint: str) -> Problem:
        return Problem(s.path, s.line, s.col, SUPPRESSION_RULE, level, message, hint)

    listed = ",".join(s.rules) or "?"
    if not s.rules:
        return [
            finding(
                "error", "suppression names no rule", "write `# flagstone: disable=<rule> -- <why>`"
            )
        ]
    findings = [
        finding("error", f"suppression names unknown rule '{rule}'", unknown_rule_hint(rule))
        for rule in s.rules
        if rule not in RULES
    ]
    if s.reason is None:
        findings.append(
            finding(
                "error",
                f"suppression of {listed} gives no reason, so it suppresses nothing",
                f"write `# flagstone: disable={listed} -- <why>`",
            )
        )
        return findings
    findings += [
        finding(
            "warning", f"suppression of '{rule}' matches no finding", "remove the stale suppression"
        )
        for rule in s.rules
        if rule in RULES and rule in enabled and rule not in s.used
    ]
    return findings


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LintResult:
    problems: list[Problem]
    settings: dict[str, RuleSetting]

    @property
    def failed(self) -> bool:
        return any(problem.level == "error" for problem in self.problems)


def lint_project(project: Project, context: LintContext | None = None) -> LintResult:
    """Run every enabled rule over ``project`` and apply suppressions.

    ``context`` defaults to the current time and the repository's git history.
    """
    if context is None:
        context = LintContext(now=datetime.now(UTC), history=RepositoryChangeTimes(project.root))
    settings, problems = resolve_settings(project)
    findings: list[Problem] = []
    for rule_id, setting in settings.items():
        if setting.level is None:
            continue
        rule = RULES[rule_id]
        findings += [
            problem if problem.rule != rule_id else replace(problem, level=setting.level)
            for problem in rule.check(project, setting.options, context)
        ]
    enabled = {rule_id for rule_id, setting in settings.items() if setting.level is not None}
    problems += apply_suppressions(project, findings, enabled)
    return LintResult(sort_problems(problems), settings)


def rules_markdown() -> str:
    """``docs/lint-rules.md``: every rule's documentation, generated from the modules."""
    parts = [
        "# Lint rules",
        "",
        "Generated from the rule modules in `tooling/flagstone/lint/rules/` by",
        "`python3 -m flagstone.lint > docs/lint-rules.md`; a test keeps it current.",
        "Set levels and options in `flagstone.yaml` under `lint.rules.<id>`",
        "(`level: error|warning|info|off`). Suppress one finding with a reason:",
        "`# flagstone: disable=<id> -- <why>` on its line or the line above.",
        "",
        "| rule | default level | options |",
        "|---|---|---|",
    ]
    for rule_id, rule in RULES.items():
        options = (
            ", ".join(f"`{name}: {json.dumps(value)}`" for name, value in rule.OPTIONS.items())
            or "—"
        )
        parts.append(f"| [`{rule_id}`](#{rule_id}) | {rule.DEFAULT_LEVEL} | {options} |")
    for rule_id, rule in RULES.items():
        doc = (rule.__doc__ or "").strip()
        parts += ["", f"## {rule_id}", "", _rst_to_markdown(doc)]
    return "\n".join(parts) + "\n"


def _rst_to_markdown(doc: str) -> str:
    """Turn ``Title::`` + indented blocks into fenced YAML blocks."""
    out: list[str] = []
    in_block = False
    for line in doc.splitlines():
        if in_block and line and not line.startswith("    "):
            out += ["```", ""]
            in_block = False
        if line.endswith("::"):
            out += [line[:-1], "", "```yaml"]
            in_block = True
            continue
        if in_block:
            if line.strip():
                out.append(line[4:])
            continue
        out.append(line)
    if in_block:
        out.append("```")
    text = "\n".join(out)
    return re.sub(r"```yaml\n\n", "```yaml\n", text)
