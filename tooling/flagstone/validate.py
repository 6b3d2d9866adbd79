"""Schema, reference and consistency checks over a whole repository.

``validate_project(project)`` returns every finding as a ``Problem`` (nothing is raised
for bad content), in three passes:

1. **Schema.** Each document is checked against its JSON Schema (``schemas/*.json``, the
   same files editors use). For a large repository the fast path is a compiled
   ``fastjsonschema`` validator per schema, and only a document that fails it is
   re-checked with ``jsonschema`` to explain each error at ``file:line:col`` in words,
   with a "did you mean" hint where one helps. Compiling costs more than it saves on a
   small repository, which ``jsonschema`` checks directly.
2. **References and consistency** (documents that passed their schema only, so the
   shapes are known): unknown teams, environments, segments, variations, prerequisite
   flags and stages; prerequisite and segment cycles; duplicate rule, stage and target
   names; split totals; stage order and schedules; variation types; clause literals
   (regex, semver, timestamps — the engine's own ``check_clause_values``); key names;
   signing keys.
3. **Placement.** Files in the wrong place or with a wrong name.

Each finding has a stable ``rule`` id (the ``RULE_*`` constants) that tests and
``--format json`` consumers can rely on.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

from flagstone.engine import parse_timestamp
from flagstone.envelope import compute_keyid
from flagstone.errors import EnvelopeError, ValidationFailed
from flagstone.gates.checks import RULE_METRIC as RULE_METRIC  # rule ids validate reports
from flagstone.gates.checks import RULE_UNKNOWN_METRIC as RULE_UNKNOWN_METRIC
from flagstone.gates.checks import metric_gate_problems, release_gate_problems
from flagstone.loader import Document, PathKey, cyclic_gc_paused
from flagstone.model import (
    FLAG_FILE,
    FLAGS_DIR,
    KEY_PATTERN,
    PROJECT_FILE,
    SEGMENTS_DIR,
    Flag,
    Project,
    ProjectConfig,
    ReleaseConfig,
    Segment,
    read_project,
    value_type,
)
from flagstone.operators import OPERATORS, check_values
from flagstone.operators import RULE_CLAUSE_VALUE as RULE_CLAUSE_VALUE
from flagstone.operators import RULE_INVALID_REGEX as RULE_INVALID_REGEX
from flagstone.operators import RULE_INVALID_SEMVER as RULE_INVALID_SEMVER
from flagstone.operators import RULE_INVALID_TIME as RULE_INVALID_TIME
from flagstone.problems import Problem, sort_problems
from flagstone.toolcache import (
    DocumentCache,
    digest_of,
    problem_from,
    problems_values,
    project_inputs_digest,
)

if TYPE_CHECKING:
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import ValidationError

RULE_SCHEMA = "schema"
RULE_KEY_NAME = "key-name"
RULE_STRAY_FILE = "stray-file"
RULE_UNKNOWN_TEAM = "unknown-team"
RULE_UNKNOWN_ENVIRONMENT = "unknown-environment"
RULE_UNKNOWN_SEGMENT = "unknown-segment"
RULE_UNKNOWN_VARIATION = "unknown-variation"
RULE_UNKNOWN_PREREQUISITE = "unknown-prerequisite"
RULE_UNKNOWN_STAGE = "unknown-stage"
RULE_PREREQUISITE_CYCLE = "prerequisite-cycle"
RULE_SEGMENT_CYCLE = "segment-cycle"
RULE_DUPLICATE_RULE = "duplicate-rule"
RULE_DUPLICATE_STAGE = "duplicate-stage"
RULE_DUPLICATE_TARGET = "duplicate-target"
RULE_SPLIT_TOTAL = "split-total"
RULE_PERCENT_PRECISION = "percent-precision"
RULE_STAGE_ORDER = "stage-order"
RULE_STAGE_SCHEDULE = "stage-schedule"
RULE_MIXED_TYPES = "mixed-types"
RULE_VARIATION_TYPE = "variation-type"
# RULE_INVALID_REGEX, RULE_INVALID_SEMVER, RULE_INVALID_TIME and RULE_CLAUSE_VALUE come
# from the operator registry: each operator names the rule its bad values break.
RULE_SIGNING_KEY = "signing-key"

SCHEMA_KINDS = ("project", "flag", "release", "segment")


# --- schemas ------------------------------------------------------------------------------


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one file kind (``project``, ``flag``, ``release``, ``segment``)."""
    text = (
        resources.files("flagstone").joinpath("schemas", f"{kind}.schema.json").read_text("utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _fast_validator(kind: str) -> Callable[[Any], Any]:
    validator: Callable[[Any], Any] = fastjsonschema.compile(load_schema(kind))
    return validator


# JSON Schema patterns are ECMAScript regular expressions, where `$` matches only at the
# very end; Python's `$` also matches before a final newline, so "prod\n" would pass a
# key pattern. Both validators read an unescaped `$` as `\Z` (fastjsonschema does this
# itself; jsonschema is given the same pattern keyword below).
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


@cache
def _end_anchored(pattern: str) -> re.Pattern[str]:
    return re.compile(_UNESCAPED_DOLLAR.sub(r"\\Z", pattern))


def _pattern_keyword(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not _end_anchored(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _explaining_validator(kind: str) -> Draft7Validator:
    # Imported here: jsonschema is slow to import and most runs never need it.
    from jsonschema import Draft7Validator, validators

    strict = validators.extend(Draft7Validator, {"pattern": _pattern_keyword})
    validator: Draft7Validator = strict(load_schema(kind))
    return validator


# What a `pattern` means, for messages ("'Bad Key' is not a valid key: …").
_PATTERN_MEANINGS = {
    "^[a-z0-9][a-z0-9._-]{0,127}$": "a valid key (lowercase letters, digits, '.', '_', '-'; "
    "starting with a letter or digit; at most 128 characters)",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$": "a valid variation key (letters, digits, '.', '_', '-'; "
    "starting with a letter or digit)",
    "^[0-9]+[smhdw]$": "a duration like 30s, 15m, 24h, 7d or 2w",
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$": "a date like 2027-03-01",
    "^[0-9a-f]{64}$": "64 lowercase hexadecimal digits",
    "^(file|s3|gs|az|memory)://": "a storage URL (file://, s3://, gs://, az:// or memory://)",
    "^https?://": "an http:// or https:// URL",
    "^[a-z][a-z0-9-]*$": "a rule id (lowercase letters, digits and '-')",
}
_UTC_PATTERN_HINT = "an RFC 3339 UTC time like 2026-12-03T09:00:00Z"
_HANDLE_HINT = "a GitHub handle (@org/team or @user) or an email address"

# What the value of an enum-valued key is called in messages ("unknown operator 'x'").
_ENUM_NOUNS = {"op": "operator", "kind": "kind", "type": "type", "level": "level"}

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "boolean": "true or false",
    "number": "a number",
    "integer": "an integer",
    "null": "nothing",
}
# YAML 1.1 booleans that YAML 1.2 (and Flagstone) read as text.
_YAML11_BOOLEANS = frozenset(
    spelling
    for word in ("yes", "no", "on", "off", "y", "n", "true", "false")
    for spelling in (word, word.capitalize(), word.upper())
) - {"true", "false"}


def _pattern_meaning(pattern: str) -> str:
    if pattern in _PATTERN_MEANINGS:
        return _PATTERN_MEANINGS[pattern]
    if pattern.endswith("Z$"):
        return _UTC_PATTERN_HINT
    if pattern.startswith("^(@"):
        return _HANDLE_HINT
    return f"matching {pattern}"


def label(where: Iterable[str | int]) -> str:
    """``rules[0].if.op`` for the path ``("rules", 0, "if", "op")``."""
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def describe(value: Any) -> str:
    """A short, human description of a YAML value for messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string '{value}'"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


_CONDITION_FORMS = ("segment", "all", "any", "not")


def _allowed_keys(schema: dict[str, Any]) -> list[str]:
    return list(schema.get("properties", {}))


class _SchemaExplainer:
    """Turns jsonschema errors for one document into ``Problem`` values."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        # path -> key names suggested for typos there; a "missing 'x'" for the same
        # object then says nothing new and is dropped.
        self.suggested: dict[PathKey, set[str]] = {}

    def problem(
        self, where: PathKey, text: str, *, hint: str | None = None, key: bool = False
    ) -> Problem:
        prefix = label(where)
        message = f"{prefix}: {text}" if prefix else text
        return self.doc.problem(where, message, rule=RULE_SCHEMA, hint=hint, key=key)

    def key_problem(
        self, where: PathKey, key: str, text: str, *, hint: str | None = None
    ) -> Problem:
        """A finding about the mapping at ``where``, placed on its key ``key``."""
        prefix = label(where)
        message = f"{prefix}: {text}" if prefix else text
        return self.doc.problem((*where, key), message, rule=RULE_SCHEMA, hint=hint, key=True)

    def explain(self, errors: Iterable[ValidationError]) -> list[Problem]:
        errors = sorted(
            errors,
            key=lambda e: (e.validator != "additionalProperties", list(map(str, e.absolute_path))),
        )
        problems: list[Problem] = []
        for error in errors:
            problems.extend(self.explain_one(error))
        return problems

    def explain_one(self, error: ValidationError) -> Iterator[Problem]:
        where: PathKey = tuple(error.absolute_path)
        kind = error.validator
        value = error.validator_value
        instance = error.instance
        custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
        if "propertyNames" in list(error.absolute_schema_path)[-2:]:
            meaning = _pattern_meaning(value) if kind == "pattern" else "allowed"
            yield self.key_problem(where, instance, f"key {_quote(instance)} is not {meaning}")
        elif custom and kind in ("oneOf", "anyOf", "not", "if"):
            if not self._missing_is_typo(where, error):
                yield self.problem(where, str(custom))
        elif kind == "additionalProperties":
            allowed = _allowed_keys(error.schema)
            # A clause is what a condition falls back to, so a typo of another
            # condition form ('segmnt') lands here: suggest those forms too.
            is_clause = "attribute" in allowed and "op" in allowed
            candidates = [*allowed, *_CONDITION_FORMS] if is_clause else allowed
            for extra in sorted(set(instance) - set(allowed)):
                hint = did_you_mean(extra, candidates)
                if hint:
                    meant = hint.split("'")[1]
                    suggested = self.suggested.setdefault(where, set())
                    suggested.update(("attribute", "op") if meant in _CONDITION_FORMS else (meant,))
                elif extra == "gates":
                    hint = "gates belong to a progression: default.progression.gates"
                else:
                    hint = f"allowed keys: {', '.join(allowed)}"
                yield self.key_problem(where, extra, f"unknown key '{extra}'", hint=hint)
        elif kind == "required":
            for name in value:
                if name not in instance and name not in self.suggested.get(where, set()):
                    yield self.problem(where, f"missing required key '{name}'")
        elif kind == "type":
            yield self._type_problem(where, value, instance)
        elif kind == "enum":
            choices = [str(choice) for choice in value]
            hint = did_you_mean(str(instance), choices) if isinstance(instance, str) else None
            noun = _ENUM_NOUNS.get(str(where[-1]) if where else "", "value")
            yield self.problem(
                where,
                f"unknown {noun} {_quote(instance)}",
                hint=hint or f"one of: {', '.join(choices)}",
            )
        elif kind == "pattern":
            yield self.problem(where, f"{_quote(instance)} is not {_pattern_meaning(value)}")
        elif kind in ("minItems", "minProperties", "minLength"):
            yield self.problem(
                where, "must not be empty" if value == 1 else f"needs at least {value} entries"
            )
        elif kind in ("minimum", "exclusiveMinimum"):
            bound = "at least" if kind == "minimum" else "more than"
            yield self.problem(where, f"{instance} is too small: must be {bound} {value}")
        elif kind in ("maximum", "exclusiveMaximum"):
            bound = "at most" if kind == "maximum" else "less than"
            yield self.problem(where, f"{instance} is too large: must be {bound} {value}")
        elif kind == "uniqueItems":
            seen: set[str] = set()
            for index, item in enumerate(instance):
                fingerprint = json.dumps(item, sort_keys=True)
                if fingerprint in seen:
                    yield self.doc.problem(
                        (*where, index),
                        f"{label(where)}: {_quote(item)} is listed twice",
                        rule=RULE_SCHEMA,
                    )
                    return
                seen.add(fingerprint)
            yield self.problem(where, "items must be unique")
        elif custom:
            yield self.problem(where, str(custom))
        else:  # pragma: no cover - every keyword our schemas use is handled above
            yield self.problem(where, error.message)

    def _missing_is_typo(self, where: PathKey, error: ValidationError) -> bool:
        wanted = {
            name
            for sub in error.context or []
            if sub.validator == "required"
            for name in sub.validator_value
        }
        return bool(wanted & self.suggested.get(where, set()))

    def _type_problem(self, where: PathKey, expected: Any, instance: Any) -> Problem:
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_WORDS.get(name, name) for name in names)
        hint = None
        if "boolean" in names and isinstance(instance, str) and instance in _YAML11_BOOLEANS:
            hint = "only true and false are booleans in YAML 1.2; yes/no/on/off are text"
        elif "string" in names and isinstance(instance, (bool, int, float)):
            hint = "quote it to make it text"
        elif where and where[-1] in ("serve", "default") and not isinstance(instance, dict):
            hint = "serve a variation key (quoted if it looks like a number) or {split: {…}}"
        if not where and instance is None:
            return self.problem(where, f"the file is empty; expected {wanted}")
        return self.problem(where, f"expected {wanted}, got {describe(instance)}", hint=hint)


def _quote(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


# Below this many documents, compiling the fast validators costs more than it saves.
FAST_PATH_MIN_DOCUMENTS = 300


def schema_problems(doc: Document, kind: str, *, fast: bool = True) -> list[Problem]:
    """Schema findings for one document (empty when it conforms)."""
    if fast:
        try:
            _fast_validator(kind)(doc.data)
            return []
        except fastjsonschema.JsonSchemaException:
            pass
    errors = list(_explaining_validator(kind).iter_errors(doc.data))
    if not errors:
        if fast:  # the two validators disagree: report, never pass silently
            return [doc.problem((), "does not match its schema", rule=RULE_SCHEMA)]
        return []
    problems = _SchemaExplainer(doc).explain(errors)
    if not problems:  # every error was folded into another; keep the file invalid
        first = errors[0]
        problems = [doc.problem(tuple(first.absolute_path), first.message, rule=RULE_SCHEMA)]
    return problems


# --- cross-file checks -----------------------------------------------------------------------


def _weight(percent: float) -> int | None:
    """Percent in thousandths, or None when it has more than 3 decimals."""
    scaled = percent * 1000
    weight = round(scaled)
    return weight if math.isclose(scaled, weight, abs_tol=1e-6) else None


class _Checker:
    """Reference and consistency checks; runs on schema-valid documents only."""

    def __init__(self, project: Project, valid: set[int]) -> None:
        self.project = project
        self.valid = valid
        self.problems: list[Problem] = []
        config = project.config
        self.config_ok = config is not None and id(config.doc) in valid
        self.teams = set(config.teams) if config and self.config_ok else set()
        self.environments = set(project.environments) if self.config_ok else set()
        # flag key -> the flag names its prerequisites give, where already known (the
        # kept findings hold them: reading them costs decoding the flag's values).
        self.prerequisite_names: dict[str, list[Any]] = {}

    def is_valid(self, doc: Document) -> bool:
        return id(doc) in self.valid

    def add(
        self,
        doc: Document,
        where: PathKey,
        message: str,
        rule: str,
        *,
        hint: str | None = None,
        key: bool = False,
    ) -> None:
        self.problems.append(doc.problem(where, message, rule=rule, hint=hint, key=key))

    def add_file(self, rel: str, message: str, rule: str, hint: str | None = None) -> None:
        self.problems.append(Problem(rel, 0, 0, rule, "error", message, hint))

    def run(self) -> list[Problem]:
        self.check_project()
        cache = self.project.documents_cache
        kept = _KeptFlagFindings(self.project, cache) if cache is not None else None
        config = self.project.config
        for flag in self.project.flags.values():
            if kept is not None:
                names = self.prerequisite_names[flag.key] = kept.prerequisite_names(flag)
                key = kept.key(flag, names)
            else:
                key = None
            if kept is not None and key is not None:
                found = kept.get(flag.key, key)
                if found is not None:
                    self.problems.extend(found)
                    continue
            start = len(self.problems)
            self.check_flag(flag)
            if self.config_ok and config is not None:
                for release in flag.releases.values():
                    self.problems.extend(release_gate_problems(release, config))
            if kept is not None and key is not None:
                kept.put(flag, key, self.problems[start:], names)
        if kept is not None:
            kept.save()
        for segment in self.project.segments.values():
            self.check_segment(segment)
        self.check_prerequisite_cycles()
        self.check_segment_cycles()
        if self.config_ok:
            self.problems.extend(metric_gate_problems(self.project))
        stray = {**self.project.stray_files, **_misnamed_root_entries(self.project.root)}
        for rel, why in sorted(stray.items()):
            self.add_file(
                rel,
                "not part of the flag repository layout, so it is ignored",
                RULE_STRAY_FILE,
                why,
            )
        return self.problems

    # project ------------------------------------------------------------------------------

    def check_project(self) -> None:
        config = self.project.config
        if config is None or not self.config_ok:
            return
        self.check_team(config.doc, ("admins",), config.admins)
        reserved = FLAG_FILE.removesuffix(".yaml")
        if reserved in config.environments:
            self.add(
                config.doc,
                ("environments", config.environments.index(reserved)),
                f"'{reserved}' cannot be an environment: flags/<key>/{FLAG_FILE} is the flag definition",
                RULE_KEY_NAME,
            )
        signing = config.signing
        self.check_keyring(config, signing, ("signing",))
        emergency = signing.get("emergency")
        if isinstance(emergency, dict):
            self.check_keyring(config, emergency, ("signing", "emergency"))
            snapshot_keys = {entry.get("public") for entry in signing.get("keys") or []}
            for index, entry in enumerate(emergency.get("keys") or []):
                if entry.get("public") in snapshot_keys:
                    self.add(
                        config.doc,
                        ("signing", "emergency", "keys", index, "public"),
                        "an emergency key must not also be a snapshot signing key",
                        RULE_SIGNING_KEY,
                        hint="generate a separate key with `flagstone keygen` for emergencies",
                    )

    def check_keyring(self, config: ProjectConfig, signing: dict[str, Any], at: PathKey) -> None:
        """The keyids and threshold of a ``signing:`` (or ``signing.emergency:``) keyring."""
        keys = signing.get("keys") or []
        for index, entry in enumerate(keys):
            try:
                expected = compute_keyid(bytes.fromhex(entry["public"]))
            except (ValueError, EnvelopeError):  # pragma: no cover - the schema pins 64 hex digits
                continue
            if entry["keyid"] != expected:
                self.add(
                    config.doc,
                    (*at, "keys", index, "keyid"),
                    f"keyid does not match the public key (expected {expected})",
                    RULE_SIGNING_KEY,
                    hint="copy the keyid printed by `flagstone keygen`",
                )
        threshold = signing.get("threshold", 1)
        if keys and threshold > len(keys):
            self.add(
                config.doc,
                (*at, "threshold"),
                f"threshold {threshold} is more than the {len(keys)} trusted key(s)",
                RULE_SIGNING_KEY,
            )

    def check_team(self, doc: Document, where: PathKey, team: str | None) -> None:
        if not self.config_ok or team is None or team in self.teams:
            return
        self.add(
            doc,
            where,
            f"unknown team '{team}'",
            RULE_UNKNOWN_TEAM,
            hint=did_you_mean(team, self.teams)
            or f"declared teams: {', '.join(sorted(self.teams)) or 'none'}",
        )

    def check_environment(self, doc: Document, where: PathKey, environment: str) -> None:
        if not self.config_ok or environment in self.environments:
            return
        self.add(
            doc,
            where,
            f"unknown environment '{environment}'",
            RULE_UNKNOWN_ENVIRONMENT,
            hint=did_you_mean(environment, self.environments)
            or f"environments: {', '.join(self.project.environments)}",
            key=True,
        )

    def check_key_name(self, rel: str, what: str, key: str) -> None:
        if not KEY_PATTERN.fullmatch(key):
            self.add_file(
                rel,
                f"{what} '{key}' is not {_PATTERN_MEANINGS['^[a-z0-9][a-z0-9._-]{0,127}$']}",
                RULE_KEY_NAME,
            )

    # flags --------------------------------------------------------------------------------

    def check_flag(self, flag: Flag) -> None:
        self.check_key_name(flag.doc.rel.rsplit("/", 1)[0], "flag key", flag.key)
        for environment, release in flag.releases.items():
            if self.config_ok and environment not in self.environments:
                self.add_file(
                    release.doc.rel,
                    f"release file for undeclared environment '{environment}'",
                    RULE_UNKNOWN_ENVIRONMENT,
                    did_you_mean(environment, self.environments)
                    or f"environments: {', '.join(self.project.environments)}",
                )
            if self.is_valid(release.doc):
                self.check_release(flag, release)
        if not self.is_valid(flag.doc):
            return
        doc = flag.doc
        self.check_team(doc, ("owner",), flag.owner)
        for environment, team in flag.delegate.items():
            self.check_environment(doc, ("delegate", environment), environment)
            self.check_team(doc, ("delegate", environment), team)
        if flag.expires is not None and not _is_real_date(flag.expires):
            self.add(doc, ("expires",), f"'{flag.expires}' is not a real date", RULE_INVALID_TIME)
        self.check_variation(flag, doc, ("off_variation",), flag.off_variation)
        self.check_variation_types(flag)
        for index, prerequisite in enumerate(flag.prerequisites):
            other = self.project.flags.get(prerequisite["flag"])
            if other is None and prerequisite["flag"] in self.project.unreadable_flags:
                continue  # its parse error is reported on its own file
            if other is None:
                self.add(
                    doc,
                    ("prerequisites", index, "flag"),
                    f"unknown prerequisite flag '{prerequisite['flag']}'",
                    RULE_UNKNOWN_PREREQUISITE,
                    hint=did_you_mean(prerequisite["flag"], self.project.flags),
                )
            elif self.is_valid(other.doc):
                self.check_variation(
                    other, doc, ("prerequisites", index, "variation"), prerequisite["variation"]
                )

    def check_variation(
        self, flag: Flag, doc: Document, where: PathKey, variation: str | None, *, key: bool = False
    ) -> None:
        # Without a schema-valid flag.yaml its variations are unknown: nothing to compare.
        if variation is None or not self.is_valid(flag.doc) or variation in flag.data["variations"]:
            return
        known = list(flag.data["variations"])
        self.add(
            doc,
            where,
            f"unknown variation '{variation}' of flag '{flag.key}'",
            RULE_UNKNOWN_VARIATION,
            hint=did_you_mean(variation, known) or f"variations: {', '.join(known)}",
            key=key,
        )

    def check_variation_types(self, flag: Flag) -> None:
        variations = flag.data["variations"]
        declared = flag.data.get("type")
        if declared == "json":
            return
        if declared is not None:
            for name, value in variations.items():
                if value_type(value) != declared:
                    self.add(
                        flag.doc,
                        ("variations", name),
                        f"variation '{name}' is {describe(value)}, but the flag's type is {declared}",
                        RULE_VARIATION_TYPE,
                    )
            return
        kinds = {value_type(value) for value in variations.values()}
        if len(kinds) <= 1:
            return
        names = list(variations)
        first_kind = value_type(variations[names[0]])
        odd = next(name for name in names if value_type(variations[name]) != first_kind)
        self.add(
            flag.doc,
            ("variations", odd),
            f"variation values mix types: '{names[0]}' is {first_kind}, '{odd}' is {value_type(variations[odd])}",
            RULE_MIXED_TYPES,
            hint="give every variation the same type, or declare `type: json`",
        )

    def check_release(self, flag: Flag, release: ReleaseConfig) -> None:
        doc = release.doc
        data = release.data
        targeted: dict[str, str] = {}
        for variation, keys in (data.get("targets") or {}).items():
            self.check_variation(flag, doc, ("targets", variation), variation, key=True)
            for index, key in enumerate(keys):
                if key in targeted:
                    self.add(
                        doc,
                        ("targets", variation, index),
                        f"'{key}' is targeted under both '{targeted[key]}' and '{variation}'",
                        RULE_DUPLICATE_TARGET,
                    )
                else:
                    targeted[key] = variation
        rule_names: set[str] = set()
        for index, rule in enumerate(data.get("rules") or []):
            where: PathKey = ("rules", index)
            if rule["name"] in rule_names:
                self.add(
                    doc,
                    (*where, "name"),
                    f"duplicate rule name '{rule['name']}'",
                    RULE_DUPLICATE_RULE,
                )
            rule_names.add(rule["name"])
            self.check_condition(doc, (*where, "if"), rule["if"])
            self.check_serve(flag, doc, (*where, "serve"), rule["serve"])
        default = data.get("default")
        if isinstance(default, dict) and "progression" in default:
            self.check_progression(flag, doc, ("default", "progression"), default["progression"])
        elif default is not None:
            self.check_serve(flag, doc, ("default",), default)

    def check_serve(self, flag: Flag, doc: Document, where: PathKey, serve: Any) -> None:
        if isinstance(serve, str):
            self.check_variation(flag, doc, where, serve)
            return
        split: dict[str, float] = serve["split"]
        weights = []
        for variation, percent in split.items():
            self.check_variation(flag, doc, (*where, "split", variation), variation, key=True)
            weights.append(self.check_percent(doc, (*where, "split", variation), percent))
        # Too many decimals is reported per percent; the total is only meaningful without them.
        if None not in weights and sum(w for w in weights if w is not None) != 100_000:
            self.add(
                doc,
                (*where, "split"),
                f"split percents add up to {_format_percent(sum(split.values()))}, not 100",
                RULE_SPLIT_TOTAL,
            )

    def check_percent(self, doc: Document, where: PathKey, percent: float) -> int | None:
        weight = _weight(percent)
        if weight is None:
            self.add(
                doc,
                where,
                f"{percent} has more than 3 decimals",
                RULE_PERCENT_PRECISION,
                hint="percents are counted in thousandths",
            )
        return weight

    def check_progression(
        self, flag: Flag, doc: Document, where: PathKey, progression: dict[str, Any]
    ) -> None:
        self.check_variation(flag, doc, (*where, "variation"), progression["variation"])
        self.check_variation(flag, doc, (*where, "baseline"), progression["baseline"])
        names: list[str] = []
        reach: tuple[str, float] | None = None
        schedule: tuple[str, float, str] | None = None
        for index, stage in enumerate(progression["stages"]):
            here: PathKey = (*where, "stages", index)
            name = stage["name"]
            if name in names:
                self.add(
                    doc, (*here, "name"), f"duplicate stage name '{name}'", RULE_DUPLICATE_STAGE
                )
            names.append(name)
            for position, segment in enumerate(stage.get("segments") or []):
                self.check_segment_ref(doc, (*here, "segments", position), segment)
            if "percent" in stage:
                percent = stage["percent"]
                self.check_percent(doc, (*here, "percent"), percent)
                if reach is not None and percent < reach[1]:
                    self.add(
                        doc,
                        (*here, "percent"),
                        f"stage '{name}' reaches {_format_percent(percent)}%, less than the "
                        f"{_format_percent(reach[1])}% of stage '{reach[0]}' before it",
                        RULE_STAGE_ORDER,
                        hint="stages are cumulative: percents never go down",
                    )
                else:
                    reach = (name, percent)
            if "at" in stage:
                instant = parse_timestamp(stage["at"])
                if instant is None:
                    self.add(
                        doc,
                        (*here, "at"),
                        f"'{stage['at']}' is not a real date and time",
                        RULE_INVALID_TIME,
                    )
                else:
                    if instant != int(instant):
                        # The snapshot keeps whole seconds; compile refuses to round.
                        self.add(
                            doc,
                            (*here, "at"),
                            f"'{stage['at']}': a stage starts on a whole second",
                            RULE_INVALID_TIME,
                            hint="drop the fraction of a second",
                        )
                    if schedule is not None and instant <= schedule[1]:
                        self.add(
                            doc,
                            (*here, "at"),
                            f"stage '{name}' is scheduled at {stage['at']}, not after stage "
                            f"'{schedule[0]}' at {schedule[2]}",
                            RULE_STAGE_SCHEDULE,
                            hint="scheduled times must increase from stage to stage",
                        )
                    schedule = (name, instant, stage["at"])
        current = progression["current"]
        if current not in names:
            self.add(
                doc,
                (*where, "current"),
                f"current stage '{current}' is not one of the stages",
                RULE_UNKNOWN_STAGE,
                hint=did_you_mean(current, names) or f"stages: {', '.join(names)}",
            )

    # conditions and segments --------------------------------------------------------------

    def check_segment_ref(self, doc: Document, where: PathKey, segment: str) -> None:
        if segment in self.project.segments or segment in self.project.unreadable_segments:
            return
        self.add(
            doc,
            where,
            f"unknown segment '{segment}'",
            RULE_UNKNOWN_SEGMENT,
            hint=did_you_mean(segment, self.project.segments)
            or f"segments: {', '.join(sorted(self.project.segments)) or 'none'}",
        )

    def check_condition(self, doc: Document, where: PathKey, condition: dict[str, Any]) -> None:
        if "segment" in condition:
            self.check_segment_ref(doc, (*where, "segment"), condition["segment"])
        elif "all" in condition or "any" in condition:
            group = "all" if "all" in condition else "any"
            for index, child in enumerate(condition[group]):
                self.check_condition(doc, (*where, group, index), child)
        elif "not" in condition:
            self.check_condition(doc, (*where, "not"), condition["not"])
        else:
            op = condition["op"]
            values = (
                [condition["value"]]
                if "value" in condition
                else list(condition.get("values") or [])
            )
            problem = check_values(op, values)
            if problem is not None:
                # The value at fault at its own place, with what to write instead.
                at: PathKey = (*where, "value") if "value" in condition else (*where, "values")
                if "values" in condition and problem.index is not None:
                    at = (*at, problem.index)
                operator = OPERATORS.get(op)
                rule = RULE_CLAUSE_VALUE if operator is None else operator.finding
                self.add(doc, at, problem.message, rule, hint=problem.hint)

    def check_segment(self, segment: Segment) -> None:
        self.check_key_name(segment.doc.rel, "segment key", segment.key)
        if not self.is_valid(segment.doc):
            return
        self.check_team(segment.doc, ("owner",), segment.owner)
        for index, rule in enumerate(segment.rules):
            self.check_condition(segment.doc, ("rules", index), rule)

    # cycles -------------------------------------------------------------------------------

    def check_prerequisite_cycles(self) -> None:
        edges: dict[str, list[tuple[str, PathKey]]] = {}
        for key, flag in self.project.flags.items():
            if self.is_valid(flag.doc):
                names = self.prerequisite_names.get(key)
                if names is None:
                    names = [p["flag"] for p in flag.prerequisites]
                edges[key] = [(name, ("prerequisites", i, "flag")) for i, name in enumerate(names)]
        docs = {key: flag.doc for key, flag in self.project.flags.items()}
        self.report_cycles(edges, docs, "prerequisite cycle", RULE_PREREQUISITE_CYCLE)

    def check_segment_cycles(self) -> None:
        edges: dict[str, list[tuple[str, PathKey]]] = {}
        for key, segment in self.project.segments.items():
            if self.is_valid(segment.doc):
                edges[key] = [
                    (ref, where)
                    for index, rule in enumerate(segment.rules)
                    for ref, where in _segment_refs(rule, ("rules", index))
                ]
        docs = {key: segment.doc for key, segment in self.project.segments.items()}
        self.report_cycles(edges, docs, "segment cycle", RULE_SEGMENT_CYCLE)

    def report_cycles(
        self,
        edges: dict[str, list[tuple[str, PathKey]]],
        docs: dict[str, Document],
        what: str,
        rule: str,
    ) -> None:
        for cycle, where in _cycles(edges):
            self.add(docs[cycle[0]], where, f"{what}: " + " -> ".join([*cycle, cycle[0]]), rule)


class _KeptFlagFindings:
    """``check_flag``'s findings per flag, kept in the toolchain cache with the content
    digests of everything they depend on: the flag's files, ``flagstone.yaml``, the
    segment keys, each prerequisite's ``flag.yaml`` (and, when one is missing, every
    flag key, which the hint draws on). A one-flag change checks that flag, and those
    that name it as a prerequisite, again; the others' findings are the ones kept. The
    gate findings of its release files are part of them (they depend on
    ``flagstone.yaml`` too), and so are the flag names its prerequisites give, kept
    with the digest of its ``flag.yaml``: the other flags' values are never decoded."""

    NAME = "validate-flags"

    def __init__(self, project: Project, cache: DocumentCache) -> None:
        self.project = project
        self.cache = cache
        config = project.config
        # What every flag's findings depend on; kept once for the whole entry.
        self.common = digest_of(
            [
                cache.digest(config.doc) if config is not None else None,
                project.environments,
                list(project.segments),
                sorted(project.unreadable_segments),
            ]
        )
        stored = cache.cache.get(self.NAME)
        kept = isinstance(stored, tuple) and len(stored) == 2 and stored[0] == self.common
        # flag key -> (what its findings depend on, findings, flag.yaml digest, names)
        self.previous: dict[str, Any] = stored[1] if kept and isinstance(stored[1], dict) else {}
        self.current: dict[str, Any] = {}
        self.changed = False
        self._flag_keys: str | None = None
        self._known = cache.digests.get  # ``cache.digest``, inline: 10,000 flags

    def prerequisite_names(self, flag: Flag) -> list[Any]:
        """``[p.get("flag") for p in flag.prerequisites]``, kept while ``flag.yaml``'s
        content is the same."""
        stored = self.previous.get(flag.key)
        entry = self._known(id(flag.doc))
        if entry is not None and stored is not None and stored[2] == entry[1]:
            names: list[Any] = stored[3]
            return names
        return [item.get("flag") for item in flag.prerequisites]

    def key(self, flag: Flag, names: list[Any]) -> tuple[str, ...] | None:
        """The content digests of what ``check_flag(flag)`` reads (``names``: its
        prerequisites'); None if a file's is unknown."""
        known = self._known
        entry = known(id(flag.doc))
        if entry is None:
            return None
        parts: tuple[str, ...] = (entry[1],)
        for environment, release in flag.releases.items():
            entry = known(id(release.doc))
            if entry is None:
                return None
            parts += (environment, entry[1])
        for name in names:
            other = self.project.flags.get(name) if isinstance(name, str) else None
            if other is not None:
                entry = known(id(other.doc))
                if entry is None:
                    return None
                parts += ("prerequisite", other.key, entry[1])
            else:
                unreadable = isinstance(name, str) and name in self.project.unreadable_flags
                parts += ("missing", repr(name), str(unreadable), self.flag_keys())
        return parts

    def flag_keys(self) -> str:
        if self._flag_keys is None:
            self._flag_keys = digest_of(
                [list(self.project.flags), sorted(self.project.unreadable_flags)]
            )
        return self._flag_keys

    def get(self, flag_key: str, key: tuple[str, ...]) -> list[Problem] | None:
        stored = self.previous.get(flag_key)
        if stored is None or stored[0] != key:
            return None
        self.current[flag_key] = stored
        return [problem_from(values) for values in stored[1]] if stored[1] else []

    def put(
        self, flag: Flag, key: tuple[str, ...], problems: list[Problem], names: list[Any]
    ) -> None:
        digest = self.cache.digest(flag.doc)
        self.current[flag.key] = (key, problems_values(problems), digest, names)
        self.changed = True

    def save(self) -> None:
        if self.changed or len(self.current) != len(self.previous):
            self.cache.cache.put(self.NAME, (self.common, self.current))


def _misnamed_root_entries(root: Path) -> dict[str, str]:
    """Entries at the root whose names are near misses of ``flags/``, ``segments/`` or
    ``flagstone.yaml`` (``flag/``, ``Segments/``, ``flagstone.yml``): their content
    would be silently ignored. Anything else at the root is none of Flagstone's business.
    """
    layout = {FLAGS_DIR: True, SEGMENTS_DIR: True, PROJECT_FILE: False}  # name -> is a dir
    found: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        if entry.name in layout or entry.name.startswith("."):
            continue
        for meant in difflib.get_close_matches(entry.name.lower(), layout, n=1, cutoff=0.8):
            if entry.is_dir() == layout[meant]:
                found[entry.name] = f"did you mean {meant}{'/' if layout[meant] else ''}?"
    return found


def _is_real_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _format_percent(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _segment_refs(condition: dict[str, Any], where: PathKey) -> Iterator[tuple[str, PathKey]]:
    if "segment" in condition:
        yield condition["segment"], (*where, "segment")
    for group in ("all", "any"):
        for index, child in enumerate(condition.get(group) or []):
            yield from _segment_refs(child, (*where, group, index))
    if "not" in condition:
        yield from _segment_refs(condition["not"], (*where, "not"))


def _cycles(edges: dict[str, list[tuple[str, PathKey]]]) -> list[tuple[list[str], PathKey]]:
    """Each elementary cycle once, starting at its smallest node, with the position of
    that node's edge into the cycle. Nodes are visited in sorted order: deterministic."""
    found: list[tuple[list[str], PathKey]] = []
    seen_cycles: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    stack_edges: list[PathKey] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target, where in edges.get(node, []):
            if state.get(target) == 1:
                start = stack.index(target)
                cycle = stack[start:]
                wheres = [*stack_edges[start:], where]
                pivot = cycle.index(min(cycle))
                rotated = cycle[pivot:] + cycle[:pivot]
                if tuple(rotated) not in seen_cycles:
                    seen_cycles.add(tuple(rotated))
                    found.append((rotated, wheres[pivot]))
            elif target in edges and state.get(target) is None:
                stack_edges.append(where)
                visit(target)
                stack_edges.pop()
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


# --- entry points ----------------------------------------------------------------------------


def _documents_with_kinds(project: Project) -> Iterator[tuple[Document, str]]:
    if project.config is not None:
        yield project.config.doc, "project"
    for flag in project.flags.values():
        yield flag.doc, "flag"
        for release in flag.releases.values():
            yield release.doc, "release"
    for segment in project.segments.values():
        yield segment.doc, "segment"


def validate_project(project: Project) -> list[Problem]:
    """Every finding about ``project`` (load problems included), in file order.

    With a document cache (``flagstone.toolcache``), documents whose content passed their
    schema before are not checked again, and when nothing the findings depend on changed
    the last findings are the answer."""
    cache = project.documents_cache
    inputs = (
        project_inputs_digest(project, sorted(_misnamed_root_entries(project.root).items()))
        if cache is not None
        else None
    )
    if cache is not None and inputs is not None:
        found = cache.result("validate", inputs)
        if found is not None:
            return [problem_from(values) for values in found]
    problems = list(project.problems)
    valid: set[int] = set()
    documents = []
    known = cache.digests.get if cache is not None else None  # ``known_valid``, inline
    for doc, kind in _documents_with_kinds(project):
        entry = known(id(doc)) if known is not None else None
        if entry is not None and kind in entry[2]:
            valid.add(id(doc))
        else:
            documents.append((doc, kind))
    fast = len(documents) >= FAST_PATH_MIN_DOCUMENTS
    for doc, kind in documents:
        found_here = schema_problems(doc, kind, fast=fast)
        if found_here:
            problems.extend(found_here)
        else:
            valid.add(id(doc))
            if cache is not None:
                cache.mark_valid(doc, kind)
    problems.extend(_Checker(project, valid).run())
    problems = sort_problems(problems)
    if cache is not None and inputs is not None:
        cache.keep_result("validate", inputs, problems_values(problems))
    return problems


def select_problems(
    problems: Sequence[Problem], root: Path, paths: Sequence[Path]
) -> list[Problem]:
    """The problems in files at or under ``paths`` (absolute, or relative to the cwd)."""
    if not paths:
        return list(problems)
    prefixes: list[str] = []
    for path in paths:
        resolved = path.resolve()
        try:
            rel = resolved.relative_to(root).as_posix()
        except ValueError:
            continue
        prefixes.append("" if rel == "." else rel)
    return [p for p in problems if any(_is_under(p.path, prefix) for prefix in prefixes)]


def _is_under(rel: str, prefix: str) -> bool:
    return not prefix or rel == prefix or rel.startswith(prefix + "/")


def validate_repository(
    root: Path, *, documents: DocumentCache | None = None
) -> tuple[Project, list[Problem]]:
    """Read the repository at ``root`` and validate it: the project and every finding
    (``documents``: the cache of ``flagstone.toolcache``, if one is used)."""
    with cyclic_gc_paused():
        project = read_project(root, documents=documents)
        return project, validate_project(project)


def load_valid_project(root: Path, *, documents: DocumentCache | None = None) -> Project:
    """Read the repository at ``root``; raise ``ValidationFailed`` if it has errors."""
    project, problems = validate_repository(root, documents=documents)
    if any(p.level == "error" for p in problems):
        raise ValidationFailed(problems)
    return project
