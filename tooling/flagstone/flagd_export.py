"""Export one environment's snapshot payload as a flagd flag definition.

The export reads the COMPILED payload (docs/snapshot-format.md), the same input the
engine evaluates, so Flagstone and flagd decide from one source. Every construct is
translated to JSONLogic as flagd evaluates it (openfeature-flagd-core 2.x, which runs
panzi-json-logic plus flagd's ``fractional``, ``sem_ver``, ``starts_with`` and
``ends_with``), with guards wherever JSONLogic's loose semantics differ from
Flagstone's strict ones:

* Types. JSONLogic compares loosely (``1 == true``, ``"5" < 6``); Flagstone says a
  value of the wrong type makes a clause false. Every clause first tests the
  attribute's JSON type with operations whose results do not depend on coercion:
  ``starts_with(x, "")`` is true only for strings; ``x === x + 0`` only for numbers and
  booleans, which ``cat(x)`` then tells apart (``true``/``false``, in either case).
* Missing attributes. ``var`` gives null for absent and null values alike, which is
  Flagstone's notion of missing. ``var`` also indexes strings and lists (``a.0``,
  ``a.length``) where Flagstone only walks objects; such path parts get a guard that
  the parent is not a string or list.
* Flags are always ``ENABLED``. A flagd ``DISABLED`` flag serves the caller's code
  default; a disabled Flagstone flag serves its off variation, so it is exported as an
  enabled flag with no targeting whose ``defaultVariant`` is the off variation.
* Prerequisites do not exist in flagd: the prerequisite flag's whole decision is
  inlined and compared with the required variation.
* Splits and progressions use ``fractional`` in the ``cat`` form of DESIGN §4
  (bit-compatible bucketing), behind a guard that the bucketing attribute is a string
  or an integer (Flagstone does not bucket other values: a split serves its first
  variation and a progression its baseline). Scheduled stages compare ``at`` with
  ``$flagd.timestamp``.
* ``semver_*`` accepts only strict SemVer 2.0.0; flagd's ``sem_ver`` also accepts a
  ``v`` prefix and pads ``1.2`` to ``1.2.0``. The guard rejects the prefix and counts
  the dots of the version core with a ``reduce`` over its first 64 characters.
* ``before``/``after`` accept RFC 3339 strings and epoch numbers; JSONLogic has no date
  type, so strings are checked character by character (calendar dates, zone, fraction)
  and converted to epoch seconds with arithmetic (days from civil), accepting exactly
  what the engine's parser accepts. Computed values are bound once with a one-element
  ``reduce``, JSONLogic having no variables.
* ``matches`` (a regular expression) has no flagd operator. Patterns that are plain
  text with ``^``/``$`` anchors and top-level ``|`` are translated to string tests;
  any other pattern is refused.

Whatever cannot be reproduced exactly raises ``ExportError`` naming the flag and the
construct (or, with ``skip_unsupported``, leaves the flag out and reports it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flagstone.engine import Snapshot, parse_semver, parse_timestamp
from flagstone.errors import ConflictError, ExportError
from flagstone.model import Project
from flagstone.store import IfMatch, SnapshotStore, WriteMode

FLAGD_SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
TOTAL_WEIGHT = 100_000
SEGMENT_MODES = ("inline", "evaluators")

# JSON numbers beyond ±(2^53 - 1) do not survive every flagd implementation's parser.
MAX_SAFE_INTEGER = 2**53 - 1
# The semver guard reads this many leading characters of a version string.
SEMVER_SCAN = 64

Logic = Any  # a JSONLogic expression: JSON value


@dataclass(frozen=True, slots=True)
class Place:
    """Where a refused construct is written: ``path`` inside the flag's release file for
    the environment (``release``), its ``flag.yaml`` (``flag``), or the file of
    ``segment`` (``segment``)."""

    file: Literal["release", "flag", "segment"]
    path: tuple[str | int, ...] = ()
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A flag left out of an export, why, and where the construct is written."""

    flag: str
    reason: str
    place: Place | None = None

    def message(self) -> str:
        return f"flag {self.flag!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class FlagdExport:
    """The flagd document and the flags that could not be exported (only with
    ``skip_unsupported``)."""

    document: dict[str, Any]
    refused: tuple[Refusal, ...] = field(default_factory=tuple)


class FlagdRefused(ExportError):
    """A flag cannot be exported to flagd; ``refusal`` says which, why and where."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            f"cannot export {refusal.message()}",
            hint="flagd cannot evaluate this exactly as Flagstone does; change the flag, "
            "or pass --skip-unsupported to leave such flags out",
        )
        self.refusal = refusal


class _Unsupported(Exception):
    """A construct with no exact flagd form; carries the construct's description and,
    once known, where it is written (the innermost place wins)."""

    def __init__(self, message: str, place: Place | None = None) -> None:
        super().__init__(message)
        self.place = place

    def within(self, prefix: str, place: Place | None) -> _Unsupported:
        """The same problem described from an enclosing construct."""
        return _Unsupported(f"{prefix}: {self}", self.place or place)


def export_flagd(
    payload: Mapping[str, Any],
    *,
    segments: str = "inline",
    skip_unsupported: bool = False,
) -> FlagdExport:
    """The flagd flag definition of one snapshot payload.

    ``segments`` is ``inline`` (each segment test written where it is used) or
    ``evaluators`` (shared ``$evaluators`` referenced with ``$ref``). Raises
    ``ExportError`` naming the first flag that cannot be reproduced exactly, unless
    ``skip_unsupported`` is set, in which case such flags are left out and listed in
    ``FlagdExport.refused``. Raises ``SnapshotFormatError`` for a payload that does not
    have the snapshot form.
    """
    if segments not in SEGMENT_MODES:
        raise ExportError(f"unknown segment mode {segments!r} (one of: {', '.join(SEGMENT_MODES)})")
    # Export only what the engine accepts (raises SnapshotFormatError naming the place),
    # so the translation below can rely on the snapshot form.
    Snapshot.from_payload(payload)
    translator = _Translator(payload, use_evaluators=segments == "evaluators")
    flags: dict[str, Any] = {}
    refused: list[Refusal] = []
    for key in sorted(translator.flag_specs):
        try:
            flags[key] = translator.flag_definition(key)
        except _Unsupported as problem:
            refusal = Refusal(key, str(problem), problem.place)
            if not skip_unsupported:
                raise FlagdRefused(refusal) from None
            refused.append(refusal)

    document: dict[str, Any] = {"$schema": FLAGD_SCHEMA_URL}
    metadata = translator.metadata()
    if metadata:
        document["metadata"] = metadata
    document["flags"] = flags
    used = translator.used_evaluators(flags)
    if used:
        document["$evaluators"] = used
    return FlagdExport(document, tuple(refused))


def located_refusal(project: Project, env: str, refusal: Refusal) -> str:
    """The refusal as ``file:line:col: cannot export …`` when its place is known."""
    text = f"cannot export {refusal.message()}"
    place, flag = refusal.place, project.flags.get(refusal.flag)
    document = None
    if place is None:
        return text
    if place.file == "release" and flag is not None and env in flag.releases:
        document = flag.releases[env].doc
    elif place.file == "flag" and flag is not None:
        document = flag.doc
    elif place.file == "segment" and place.segment in project.segments:
        document = project.segments[place.segment].doc
    if document is None:
        return text
    line, col = document.position(place.path)
    return f"{document.rel}:{line}:{col}: {text}"


def check_flagd_export(project: Project, env: str, payload: Mapping[str, Any]) -> None:
    """Raise ``ExportError`` (with ``file:line:col``) if any flag of ``payload``, compiled
    from ``project``'s environment ``env``, cannot be exported to flagd."""
    try:
        export_flagd(payload)
    except FlagdRefused as error:
        raise ExportError(located_refusal(project, env, error.refusal), hint=error.hint) from None


def flagd_json(document: Mapping[str, Any]) -> bytes:
    """The document as UTF-8 JSON text in a fixed key order, newline-terminated.

    Indented for reading down to a depth; deeper logic is written on one line, since
    indenting deeply nested JSONLogic multiplies the file's size.
    """
    return (_pretty(document, 0) + "\n").encode()


_INLINE_WIDTH = 88
_PRETTY_DEPTH = 7


def _pretty(value: Any, depth: int) -> str:
    compact = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    if depth >= _PRETTY_DEPTH or len(compact) + 2 * depth <= _INLINE_WIDTH:
        return compact
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, Mapping) and value:
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, depth + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value:
        items = [inner + _pretty(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return compact


# ---------------------------------------------------------------------------
# Publishing next to the signed snapshot (``publish.flagd: true``).

FLAGD_OBJECT = "flagd.json"
# Each lost race costs a read and a write; this many in a row means something is wrong.
_MAX_WRITE_ATTEMPTS = 20


def flagd_enabled(publish_config: Mapping[str, Any]) -> bool:
    """Whether ``flagstone.yaml``'s ``publish.flagd`` asks for ``<env>/flagd.json``."""
    return publish_config.get("flagd") is True


def write_flagd_export(store: SnapshotStore, environment: str, payload: Mapping[str, Any]) -> str:
    """Write the flagd export of a just-published payload to ``<env>/flagd.json`` and
    return its location.

    The file is NOT signed (flagd does not verify signatures); its ``metadata.version``
    is the snapshot version it was made from. Publishers can race, so it is replaced
    only with a conditional write, and never by an older version than the one there.
    Raises ``ExportError`` if a flag cannot be exported (check first with
    ``check_flagd_export``, before publishing anything).
    """
    version = int(payload.get("version") or 0)
    data = flagd_json(export_flagd(payload).document)
    path = f"{environment}/{FLAGD_OBJECT}"
    for _attempt in range(_MAX_WRITE_ATTEMPTS):
        found = store.get_optional(path)
        if (
            found is not None
            and found.data is not None
            and _exported_version(found.data) >= version
        ):
            return store.location(path)  # a newer (or the same) export is there
        mode: WriteMode = (
            "create" if found is None or found.data is None else IfMatch(found.etag or "")
        )
        try:
            store.put(path, data, mode=mode)
        except ConflictError:
            continue
        return store.location(path)
    raise ConflictError(
        f"gave up writing {store.location(path)} after {_MAX_WRITE_ATTEMPTS} lost races"
    )


def _exported_version(data: bytes) -> int:
    try:
        version = json.loads(data)["metadata"]["version"]
        return int(version)
    except (ValueError, KeyError, TypeError):
        return -1  # not ours, or damaged: replace it


# ---------------------------------------------------------------------------
# Type tests that do not depend on JSONLogic's coercions (see the module docstring).

# cat() writes booleans as "true"/"false" in JavaScript and "True"/"False" in Python;
# no number is written as any of these.
_BOOLEAN_TEXTS = ["true", "false", "True", "False"]
# Path parts flagd's var reads from a string or list (an index or .length).
_INDEXING_PATH_PART = re.compile(r"length|0|[1-9][0-9]*")
_LITERAL_CHARS = re.compile(r"[^.^$*+?{}\[\]\\|()]")


def _flatten(operator: str, parts: Sequence[Logic]) -> list[Logic]:
    flat: list[Logic] = []
    for part in parts:
        if isinstance(part, dict) and list(part) == [operator]:
            flat.extend(part[operator])
        else:
            flat.append(part)
    return flat


def _junction(operator: str, parts: Sequence[Logic], *, neutral: bool) -> Logic:
    """``and`` (neutral element True) or ``or`` (False) of ``parts``, constants folded."""
    kept = [p for p in _flatten(operator, parts) if p is not neutral]
    if any(p is (not neutral) for p in kept):
        return not neutral
    if not kept:
        return neutral
    return kept[0] if len(kept) == 1 else {operator: kept}


def _and(*parts: Logic) -> Logic:
    return _junction("and", parts, neutral=True)


def _or(*parts: Logic) -> Logic:
    return _junction("or", parts, neutral=False)


def _not(part: Logic) -> Logic:
    if isinstance(part, bool):
        return not part
    return {"!": part}


def is_string(value: Logic) -> Logic:
    return {"starts_with": [value, ""]}


def _is_number_or_boolean(value: Logic) -> Logic:
    # x + 0 is x only for numbers and booleans (true + 0 is 1, and true == 1 in Python).
    return {"===": [value, {"+": [value, 0]}]}


def is_boolean(value: Logic) -> Logic:
    return _and({"in": [value, [True, False]]}, {"in": [{"cat": [value]}, _BOOLEAN_TEXTS]})


def is_number(value: Logic) -> Logic:
    return _and(_is_number_or_boolean(value), _not({"in": [{"cat": [value]}, _BOOLEAN_TEXTS]}))


def is_integer(value: Logic) -> Logic:
    """True for integers, which the engine buckets, and false for floats, which it
    does not, even integral ones.

    ``cat`` prints an integral float below 1e15 (``5.0``) as ``5``; multiplied by the
    integer 10^16 it stays an integer if it was one and becomes a float printed with an
    exponent (``5e+16``) if it was a float. Only ``0.0`` cannot be told from ``0``.
    """
    text = {"cat": [value]}
    return _and(
        is_number(value),
        {"===": [{"%": [value, 1]}, 0]},
        _not({"in": [".", text]}),
        _not({"in": ["e", text]}),
        _not({"in": ["e", {"cat": [{"*": [value, 10**16]}]}]}),
    )


def _is_list(value: Logic) -> Logic:
    return _or({"some": [value, True]}, {"===": [value, []]})


def _is_finite(value: Logic) -> Logic:
    return {"<=": [-1.7976931348623157e308, value, 1.7976931348623157e308]}


# ---------------------------------------------------------------------------
# Clause translation.

_KIND_TESTS: dict[str, Callable[[Logic], Logic]] = {
    "string": is_string,
    "number": is_number,
    "boolean": is_boolean,
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _Unsupported(f"the clause value {value!r} is not a JSON number")
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            raise _Unsupported(f"the clause value {value} is beyond ±2^53 - 1")
        return "number"
    if isinstance(value, str):
        return "string"
    raise _Unsupported(f"the clause value {value!r} is not a string, number or boolean")


def _by_kind(values: Sequence[Any]) -> dict[str, list[Any]]:
    if not values:
        raise _Unsupported("a clause without values")
    grouped: dict[str, list[Any]] = {}
    for value in values:
        members = grouped.setdefault(_kind(value), [])
        if value not in members:  # one kind per list, so == is exact here
            members.append(value)
    return grouped


def _equals_any(value: Logic, values: Sequence[Any]) -> Logic:
    parts: list[Logic] = []
    for kind, members in _by_kind(values).items():
        membership = {"in": [value, members]}
        # A string never equals a non-string in Python, so the type test is implied.
        parts.append(membership if kind == "string" else _and(_KIND_TESTS[kind](value), membership))
    return _or(*parts)


def _equals_none(value: Logic, values: Sequence[Any]) -> Logic:
    # Present, of a type one of the values has, and equal to none of them.
    return _or(
        *(
            _and(_KIND_TESTS[kind](value), _not({"in": [value, members]}))
            for kind, members in _by_kind(values).items()
        )
    )


def _contains(value: Logic, values: Sequence[Any]) -> Logic:
    item: Logic = {"var": ""}
    parts: list[Logic] = []
    for kind, members in _by_kind(values).items():
        if kind == "string":
            # in(needle, haystack): substring of a string, member of a list.
            parts.extend({"in": [member, value]} for member in members)
        else:
            test = _and(_KIND_TESTS[kind](item), {"in": [item, members]})
            parts.append({"some": [value, test]})
    return _or(*parts)


def _compare_numbers(value: Logic, op: str, values: Sequence[Any]) -> Logic:
    numbers = []
    for member in values:
        if _kind(member) != "number":
            raise _Unsupported(f"{op!r} compares numbers; {member!r} is not one")
        numbers.append(member)
    # Any-of collapses to one bound, as in the engine.
    bound = max(numbers) if op in ("lt", "lte") else min(numbers)
    symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
    return _and(is_number(value), {symbol: [value, bound]})


_SEMVER_SYMBOL = {
    "semver_eq": "=",
    "semver_lt": "<",
    "semver_lte": "<=",
    "semver_gt": ">",
    "semver_gte": ">=",
}


def _semver_core_has_two_dots(path: str) -> Logic:
    """True when the version core (the text before the first ``-`` or ``+``) of the string
    at ``path`` has at least two dots, read from its first SEMVER_SCAN characters.

    The accumulator counts dots until it reaches 2 (then stays), or becomes -1 at a
    ``-``/``+`` seen first. A core with fewer than two dots in its first 64 characters
    and no end in sight (a number over 30 digits long) is treated as not a version.
    """
    accumulator = {"var": "accumulator"}
    current = {"var": "current"}
    step = {
        "if": [
            {"in": [accumulator, [-1, 2]]},
            accumulator,
            {"in": [current, ["-", "+"]]},
            -1,
            {"===": [current, "."]},
            {"+": [accumulator, 1]},
            accumulator,
        ]
    }

    def scan(count: int) -> Logic:
        characters = [{"var": f"{path}.{i}"} for i in range(count)]
        return {"===": [{"reduce": [characters, step, 0]}, 2]}

    # Most versions are short: read 16 characters for them, 64 for the rest.
    return {"if": [{"<=": [{"var": f"{path}.length"}, 16]}, scan(16), scan(SEMVER_SCAN)]}


def _compare_semver(value: Logic, path: str, op: str, values: Sequence[Any]) -> Logic:
    for member in values:
        if not isinstance(member, str) or parse_semver(member) is None:
            raise _Unsupported(f"{member!r} is not a strict semantic version")
    symbol = _SEMVER_SYMBOL[op]
    comparisons = _or(*({"sem_ver": [value, symbol, member]} for member in values))
    return _and(
        is_string(value),
        _not({"starts_with": [value, "v"]}),
        _not({"starts_with": [value, "V"]}),
        _semver_core_has_two_dots(path),
        comparisons,
    )


def _literal_regex_branch(branch: str) -> tuple[bool, str, bool] | None:
    """(anchored at start, literal text, anchored at end) of a pattern branch that is
    plain text, or None."""
    start = branch.startswith("^")
    body = branch[1:] if start else branch
    end = body.endswith("$") and not body.endswith("\\$")
    if end:
        body = body[:-1]
    text = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body) or body[i + 1].isalnum() or body[i + 1] == "_":
                return None  # classes like \d, \w, \b, or an escape such as \n
            text.append(body[i + 1])
            i += 2
            continue
        if not _LITERAL_CHARS.fullmatch(char):
            return None
        text.append(char)
        i += 1
    return start, "".join(text), end


def _split_alternatives(pattern: str) -> list[str]:
    branches, current, i = [], [], 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            current.append(pattern[i : i + 2])
            i += 2
            continue
        if pattern[i] == "|":
            branches.append("".join(current))
            current = []
        else:
            current.append(pattern[i])
        i += 1
    branches.append("".join(current))
    return branches


def _matches(value: Logic, values: Sequence[Any]) -> Logic:
    parts = []
    for pattern in values:
        for branch in _split_alternatives(str(pattern)):
            parsed = _literal_regex_branch(branch)
            if parsed is None:
                raise _Unsupported(
                    f"'matches' with the regular expression {pattern!r}: flagd has no regular "
                    "expressions (only plain text with ^, $ and | can be translated)"
                )
            start, text, end = parsed
            # Python's $ also matches before a final newline.
            endings = [text, text + "\n"]
            if start and end:
                parts.append({"in": [value, endings]})
            elif start:
                parts.append({"starts_with": [value, text]})
            elif end:
                parts.extend({"ends_with": [value, ending]} for ending in endings)
            else:
                parts.append({"in": [text, value]})
    return _and(is_string(value), _or(*parts))


# ---------------------------------------------------------------------------
# RFC 3339 timestamps in JSONLogic, for before/after.
#
# JSONLogic has no variables, and writing a computed value twice doubles the
# expression. ``_let`` binds values with a one-element ``reduce``: the body sees them
# as ``current.0``, ``current.1``, … (and nothing else of the context, so a nested
# ``_let`` passes on what it still needs).

_MONTH_DAYS = {"01": 31, "03": 31, "04": 30, "05": 31, "06": 30, "07": 31, "08": 31, "09": 30,
               "10": 31, "11": 30, "12": 31}  # fmt: skip
_DIGITS = [str(d) for d in range(10)]
_MAX_FRACTION_DIGITS = 9


def _let(values: Sequence[Logic], body: Callable[[list[Logic]], Logic]) -> Logic:
    names = [{"var": f"current.{i}"} for i in range(len(values))]
    return {"reduce": [[list(values)], body(names), None]}


def _floor_div(a: Logic, b: int) -> Logic:
    """floor(a / b) for a >= 0 (JSONLogic's / is true division)."""
    return {"/": [{"-": [a, {"%": [a, b]}]}, b]}


def _days_from_civil(year: Logic, month: Logic, day: Logic) -> Logic:
    """Days since 1970-01-01 of a proleptic Gregorian date, years 1–9999 (Howard
    Hinnant's days_from_civil; every operand of % and floor division is >= 0)."""

    def with_year_of_era(v: list[Logic]) -> Logic:
        y, month, day = v
        era = _floor_div(y, 400)
        return _let([y, month, day, era], with_era)

    def with_era(v: list[Logic]) -> Logic:
        y, month, day, era = v
        year_of_era = {"-": [y, {"*": [era, 400]}]}
        shifted_month = {"if": [{">": [month, 2]}, {"-": [month, 3]}, {"+": [month, 9]}]}
        day_of_year = {
            "+": [_floor_div({"+": [{"*": [153, shifted_month]}, 2]}, 5), {"-": [day, 1]}]
        }
        return _let([year_of_era, era, day_of_year], with_day_of_year)

    def with_day_of_year(v: list[Logic]) -> Logic:
        year_of_era, era, day_of_year = v
        day_of_era = {
            "-": [
                {
                    "+": [
                        {"*": [year_of_era, 365]},
                        _floor_div(year_of_era, 4),
                        day_of_year,
                    ]
                },
                _floor_div(year_of_era, 100),
            ]
        }
        return {"-": [{"+": [{"*": [era, 146097]}, day_of_era]}, 719468]}

    march_based_year = {"-": [year, {"if": [{"<=": [month, 2]}, 1, 0]}]}
    return _let([march_based_year, month, day], with_year_of_era)


def _text_number(text: Logic, start: int, length: int) -> Logic:
    # "+" turns digit text into a number (the digits are checked first).
    return {"+": [{"substr": [text, start, length]}, 0]}


def _character(text: Logic, index: int) -> Logic:
    """The character at ``index`` of the string that the ``var`` expression ``text`` reads."""
    return {"var": f"{text['var']}.{index}"}


def _all_digits(text: Logic, indexes: Sequence[int]) -> Logic:
    return _and(*({"in": [_character(text, i), _DIGITS]} for i in indexes))


def _rfc3339_compare(path: str, symbol: str, bound: float) -> Logic:
    """True when the string at ``path`` is an RFC 3339 date-time the engine accepts
    (``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)``, T and Z in either case, real calendar
    dates, hours < 24, offsets under a day) and its instant ``symbol`` (< or >) ``bound``.

    The instant is computed the way the engine's datetime arithmetic computes it (at
    most 6 fraction digits; (seconds × 10^6 + microseconds) / 10^6), so equal
    instants compare equal on both sides.
    """
    text = {"var": path}

    def with_fields(v: list[Logic]) -> Logic:
        text, year, month, day, hour, minute, second, length, month_text = v
        leap = _or(
            _and({"===": [{"%": [year, 4]}, 0]}, _not({"===": [{"%": [year, 100]}, 0]})),
            {"===": [{"%": [year, 400]}, 0]},
        )
        month_cases: list[Logic] = [{"===": [month_text, "02"]}, {"if": [leap, 29, 28]}]
        for month_digits, days in _MONTH_DAYS.items():
            month_cases.extend([{"===": [month_text, month_digits]}, days])
        date_time_valid = _and(
            _all_digits(text, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]),
            {"===": [_character(text, 4), "-"]},
            {"===": [_character(text, 7), "-"]},
            {"in": [_character(text, 10), ["T", "t"]]},
            {"===": [_character(text, 13), ":"]},
            {"===": [_character(text, 16), ":"]},
            {">=": [year, 1]},
            {"<=": [1, day, {"if": [*month_cases, 0]}]},
            {"<=": [hour, 23]},
            {"<=": [minute, 59]},
            {"<=": [second, 59]},
        )
        local_seconds = {
            "+": [
                {"*": [_days_from_civil(year, month, day), 86400]},
                {"*": [hour, 3600]},
                {"*": [minute, 60]},
                second,
            ]
        }
        # The zone is "Z"/"z" (1 character) or "±HH:MM" (6); 0 means neither.
        zone_length = {
            "if": [
                {"in": [{"substr": [text, -1]}, ["Z", "z"]]},
                1,
                {"in": [{"substr": [text, -6, 1]}, ["+", "-"]]},
                6,
                0,
            ]
        }
        return _and(
            date_time_valid,
            _let([text, length, local_seconds, zone_length], with_zone),
        )

    def with_zone(v: list[Logic]) -> Logic:
        text, length, local_seconds, zone_length = v
        # Between the seconds and the zone: nothing, or "." and 1–9 digits.
        fraction_length = {"-": [{"-": [length, 19]}, zone_length]}  # "-" takes two
        fraction_valid = _or(
            {"===": [fraction_length, 0]},
            _and(
                {"<=": [2, fraction_length, 1 + _MAX_FRACTION_DIGITS]},
                {"===": [_character(text, 19), "."]},
                *(
                    _or(
                        {">=": [i, {"+": [19, fraction_length]}]},
                        {"in": [_character(text, i), _DIGITS]},
                    )
                    for i in range(20, 20 + _MAX_FRACTION_DIGITS)
                ),
            ),
        )
        offset_hours = {"+": [{"substr": [text, -5, 2]}, 0]}
        offset_minutes = {"+": [{"substr": [text, -2, 2]}, 0]}
        offset = {"+": [{"*": [offset_hours, 3600]}, {"*": [offset_minutes, 60]}]}
        zone_valid = _or(
            {"===": [zone_length, 1]},
            _and(
                {"===": [zone_length, 6]},
                *({"in": [{"substr": [text, i, 1]}, _DIGITS]} for i in (-5, -4, -2, -1)),
                {"===": [{"substr": [text, -3, 1]}, ":"]},
                # datetime takes any two-digit minutes if the offset is under a day.
                {"<": [offset, 86400]},
            ),
        )
        utc_seconds = {
            "if": [
                {"===": [zone_length, 1]},
                local_seconds,
                {"===": [{"substr": [text, -6, 1]}, "+"]},
                {"-": [local_seconds, offset]},
                {"+": [local_seconds, offset]},
            ]
        }
        fraction_digits = {"if": [{">": [fraction_length, 0]}, {"-": [fraction_length, 1]}, 0]}
        # The engine keeps at most 6 fraction digits (datetime's microseconds): pad the
        # digits with zeros and keep 6. With no fraction this is 0.
        micros = {
            "+": [
                {
                    "substr": [
                        {"cat": [{"substr": [text, 20, fraction_digits]}, "000000"]},
                        0,
                        6,
                    ]
                },
                0,
            ]
        }
        instant = {"/": [{"+": [{"*": [utc_seconds, 1_000_000]}, micros]}, 1_000_000]}
        return _and({">": [zone_length, 0]}, fraction_valid, zone_valid, {symbol: [instant, bound]})

    fields = [
        text,
        _text_number(text, 0, 4),
        _text_number(text, 5, 2),
        _text_number(text, 8, 2),
        _text_number(text, 11, 2),
        _text_number(text, 14, 2),
        _text_number(text, 17, 2),
        {"var": f"{path}.length"},
        {"substr": [text, 5, 2]},
    ]
    # The length test first: shorter strings never reach the arithmetic.
    return _and(
        {"<=": [19 + 1, {"var": f"{path}.length"}, 19 + 1 + _MAX_FRACTION_DIGITS + 6]},
        _let(fields, with_fields),
    )


def _compare_time(value: Logic, path: str, op: str, values: Sequence[Any]) -> Logic:
    instants = []
    for member in values:
        instant = parse_timestamp(member) if isinstance(member, str) else None
        if instant is None:
            raise _Unsupported(f"{member!r} is not an RFC 3339 timestamp")
        instants.append(instant)
    before = op == "before"
    bound = max(instants) if before else min(instants)
    symbol = "<" if before else ">"
    number_test = _and(is_number(value), _is_finite(value), {symbol: [value, bound]})
    return _or(number_test, _and(is_string(value), _rfc3339_compare(path, symbol, bound)))


# ---------------------------------------------------------------------------
# The translator.


@dataclass(slots=True)
class _Translator:
    payload: Mapping[str, Any]
    use_evaluators: bool
    flag_specs: Mapping[str, Any] = field(init=False)
    segment_specs: Mapping[str, Any] = field(init=False)
    evaluators: dict[str, Logic] = field(default_factory=dict)
    _segments_in_progress: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        flags = self.payload.get("flags")
        segments = self.payload.get("segments", {})
        if not isinstance(flags, Mapping) or not isinstance(segments, Mapping):
            raise ExportError("the payload has no flags/segments objects; is it a snapshot?")
        self.flag_specs = flags
        self.segment_specs = segments

    def metadata(self) -> dict[str, str]:
        metadata = {}
        project, environment = self.payload.get("project"), self.payload.get("environment")
        if isinstance(project, str) and isinstance(environment, str):
            metadata["flagSetId"] = f"{project}/{environment}"
        version = self.payload.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            metadata["version"] = str(version)
        digest = self.payload.get("digest")
        if isinstance(digest, str):
            metadata["flagstoneDigest"] = digest
        return metadata

    def used_evaluators(self, flags: Mapping[str, Any]) -> dict[str, Logic]:
        text = json.dumps(flags)
        return {
            name: rule
            for name, rule in sorted(self.evaluators.items())
            if json.dumps({"$ref": name}) in text
        }

    # -- flags --

    def flag_definition(self, key: str) -> dict[str, Any]:
        spec = self._flag(key)
        variants = dict(spec["variations"])
        try:
            _check_variants(variants)
        except _Unsupported as problem:
            raise _Unsupported(str(problem), Place("flag", ("variations",))) from None
        off = spec["off_variation"]
        definition: dict[str, Any] = {"state": "ENABLED", "variants": variants}
        if not spec.get("enabled"):
            definition["defaultVariant"] = off
            return definition
        branches = self._branches(key, spec, stack=[key])
        if "variation" in spec["default"]:
            # Null falls back to defaultVariant; flagd then reports reason DEFAULT.
            definition["defaultVariant"] = spec["default"]["variation"]
            targeting = _if_chain(branches, None)
        else:
            # Splits and progressions always name a variant; defaultVariant is only what
            # a provider serves if its evaluator fails.
            definition["defaultVariant"] = off
            targeting = _if_chain(branches, self._default(key, spec))
        if isinstance(targeting, str):  # every condition folded to a constant
            definition["defaultVariant"] = targeting
        elif targeting is not None:
            definition["targeting"] = targeting
        return definition

    def _flag(self, key: str) -> Mapping[str, Any]:
        spec = self.flag_specs.get(key)
        if not isinstance(spec, Mapping):
            raise _Unsupported(f"prerequisite flag {key!r} is not in the snapshot")
        return spec

    def served_variation(self, key: str, stack: list[str]) -> Logic:
        """An expression giving the variation key flag ``key`` serves (never null)."""
        if key in stack:
            raise _Unsupported(f"prerequisite cycle {' -> '.join([*stack, key])}")
        spec = self._flag(key)
        if not spec.get("enabled"):
            return spec["off_variation"]
        try:
            branches = self._branches(key, spec, stack=[*stack, key])
            return _if_chain(branches, self._default(key, spec))
        except _Unsupported as problem:
            raise _Unsupported(f"prerequisite {key!r}: {problem}") from None  # placed by caller

    def _branches(
        self, key: str, spec: Mapping[str, Any], stack: list[str]
    ) -> list[tuple[Logic, Logic]]:
        branches: list[tuple[Logic, Logic]] = []
        failed = []
        for i, prerequisite in enumerate(spec.get("prerequisites", [])):
            try:
                served = self.served_variation(prerequisite["flag"], stack)
            except _Unsupported as problem:
                # Point at the prerequisite entry of the flag being exported.
                raise _Unsupported(str(problem), Place("flag", ("prerequisites", i))) from None
            failed.append({"!==": [served, prerequisite["variation"]]})
        if failed:
            branches.append((_or(*failed), spec["off_variation"]))
        targeting_key = {"var": "targetingKey"}
        for target in spec.get("targets", []):
            if target["keys"]:
                branches.append(
                    ({"in": [targeting_key, list(target["keys"])]}, target["variation"])
                )
        for i, rule in enumerate(spec.get("rules", [])):
            try:
                condition = self.condition(rule["condition"])
            except _Unsupported as problem:
                raise problem.within(
                    f"rule {rule.get('name')!r}", Place("release", ("rules", i, "if"))
                ) from None
            branches.append((condition, self._serve(key, rule["serve"])))
        return branches

    def _default(self, key: str, spec: Mapping[str, Any]) -> Logic:
        default = spec["default"]
        if "progression" in default:
            return self._progression(key, default["progression"])
        return self._serve(key, default)

    def _serve(self, key: str, serve: Mapping[str, Any]) -> Logic:
        if "variation" in serve:
            return serve["variation"]
        split = serve["split"]
        weights = [(w["variation"], w["weight"]) for w in split["weights"]]
        first = weights[0][0]
        bucketed = _fractional(
            split.get("seed", key), self._bucket_value(split), [(v, w) for v, w in weights if w > 0]
        )
        return {"if": [self._bucketable(split), bucketed, first]}

    def _bucket_value(self, spec: Mapping[str, Any]) -> Logic:
        return self._attribute(spec.get("bucket_by", "key"))[0]

    def _bucketable(self, spec: Mapping[str, Any]) -> Logic:
        value, guard = self._attribute(spec.get("bucket_by", "key"))
        return _and(guard, _or(is_string(value), is_integer(value)))

    def _progression(self, key: str, progression: Mapping[str, Any]) -> Logic:
        variation, baseline = progression["variation"], progression["baseline"]
        stages = progression["stages"]
        names = [stage["name"] for stage in stages]
        current = progression.get("current")
        active = names.index(current) if current is not None else -1
        bucket_value = self._bucket_value(progression)
        bucketable = self._bucketable(progression)
        seed = progression.get("seed", key)

        def stage_decision(index: int) -> Logic:
            if index < 0:
                return baseline
            ring = [s for stage in stages[: index + 1] for s in stage.get("segments", [])]
            weight = stages[index]["weight"]
            if weight == 0:
                by_bucket: Logic = baseline
            else:
                shares = [(variation, weight), (baseline, TOTAL_WEIGHT - weight)]
                by_bucket = {
                    "if": [
                        bucketable,
                        _fractional(seed, bucket_value, [s for s in shares if s[1] > 0]),
                        baseline,
                    ]
                }
            if not ring:
                return by_bucket
            in_ring = _or(*(self.segment(s) for s in dict.fromkeys(ring)))
            return {"if": [in_ring, variation, by_bucket]}

        scheduled: list[tuple[Logic, Logic]] = []
        for index in range(len(stages) - 1, active, -1):
            at = stages[index].get("at")
            if at is None:
                continue
            instant = parse_timestamp(at)
            if instant is None or instant != int(instant):
                raise _Unsupported(
                    f"stage {names[index]!r} has 'at' {at!r}, not whole seconds",
                    Place("release", ("default", "progression", "stages", index, "at")),
                )
            scheduled.append(
                ({">=": [{"var": "$flagd.timestamp"}, int(instant)]}, stage_decision(index))
            )
        return _if_chain(scheduled, stage_decision(active))

    # -- conditions --

    def condition(self, spec: Mapping[str, Any]) -> Logic:
        if "segment" in spec:
            return self.segment(spec["segment"])
        if "all" in spec:
            return _and(*(self.condition(c) for c in spec["all"]))
        if "any" in spec:
            return _or(*(self.condition(c) for c in spec["any"]))
        if "not" in spec:
            return _not(self.condition(spec["not"]))
        return self.clause(spec["attribute"], spec["op"], spec.get("values", []))

    def clause(self, attribute: str, op: str, values: Sequence[Any]) -> Logic:
        value, guard = self._attribute(attribute)
        path = value["var"]
        if op == "exists":
            test: Logic = {"!==": [value, None]}
        elif op in ("eq", "in"):
            test = _equals_any(value, values)
        elif op in ("neq", "not_in"):
            test = _equals_none(value, values)
        elif op == "contains":
            test = _contains(value, values)
        elif op in ("starts_with", "ends_with"):
            test = _and(is_string(value), _or(*({op: [value, v]} for v in _strings(op, values))))
        elif op == "matches":
            test = _matches(value, values)
        elif op in ("lt", "lte", "gt", "gte"):
            test = _compare_numbers(value, op, values)
        elif op in _SEMVER_SYMBOL:
            test = _compare_semver(value, path, op, values)
        elif op in ("before", "after"):
            test = _compare_time(value, path, op, values)
        else:
            raise _Unsupported(f"unknown operator {op!r}")
        return _and(guard, test)

    def _attribute(self, attribute: str) -> tuple[Logic, Logic]:
        """The ``var`` expression of an attribute, and a guard that is true when flagd's
        ``var`` reads the same value the engine does (True when no guard is needed)."""
        parts = attribute.split(".")
        if parts[0] in ("targetingKey", "$flagd"):
            raise _Unsupported(
                f"attribute {attribute!r}: {parts[0]!r} is reserved in flagd's context"
            )
        if parts[0] == "key":
            parts[0] = "targetingKey"
        guards = []
        for i in range(1, len(parts)):
            if _INDEXING_PATH_PART.fullmatch(parts[i]):
                # flagd's var indexes strings and lists here; the engine reads only objects.
                parent = {"var": ".".join(parts[:i])}
                guards.append(_and(_not(is_string(parent)), _not(_is_list(parent))))
        return {"var": ".".join(parts)}, _and(*guards)

    def segment(self, key: str) -> Logic:
        if self.use_evaluators and not self._segments_in_progress:
            if key not in self.evaluators:
                self.evaluators[key] = self._segment_logic(key)
            if isinstance(self.evaluators[key], bool):
                return self.evaluators[key]  # an empty segment; evaluators must be rules
            rule_text = json.dumps(self.evaluators[key])
            if "\\" in rule_text:
                # flagd-core substitutes $ref with re.sub, which mangles backslash escapes
                # (non-ASCII text, quotes, control characters) in the shared rule.
                raise _Unsupported(
                    f"segment {key!r} has text flagd's $evaluators substitution cannot carry "
                    "(non-ASCII or escaped characters); export with --segments inline",
                    Place("segment", (), key),
                )
            return {"$ref": key}
        return self._segment_logic(key)

    def _segment_logic(self, key: str) -> Logic:
        spec = self.segment_specs.get(key)
        if not isinstance(spec, Mapping):
            raise _Unsupported(f"segment {key!r} is not in the snapshot")
        if key in self._segments_in_progress:
            raise _Unsupported(f"segment cycle {' -> '.join([*self._segments_in_progress, key])}")
        self._segments_in_progress.append(key)
        targeting_key = {"var": "targetingKey"}
        include = list(spec.get("include", []))
        exclude = list(spec.get("exclude", []))
        rules = []
        try:
            for j, condition in enumerate(spec.get("rules", [])):
                try:
                    rules.append(self.condition(condition))
                except _Unsupported as problem:
                    raise problem.within(
                        f"segment {key!r}", Place("segment", ("rules", j), key)
                    ) from None
        finally:
            self._segments_in_progress.pop()
        included = _or({"in": [targeting_key, include]} if include else False, *rules)
        if not exclude:
            return included
        return _and(_not({"in": [targeting_key, exclude]}), included)


def _strings(op: str, values: Sequence[Any]) -> list[str]:
    for value in values:
        if not isinstance(value, str):
            raise _Unsupported(f"{op!r} compares text; {value!r} is not a string")
    return list(values)


def _fractional(seed: str, value: Logic, shares: list[tuple[str, int]]) -> Logic:
    """``fractional`` in the ``cat`` form of DESIGN §4 (or the only variant left when a
    single share has all the weight; flagd needs at least two)."""
    if len(shares) == 1:
        return shares[0][0]
    return {"fractional": [{"cat": [seed, value]}, *([v, w] for v, w in shares)]}


def _if_chain(branches: list[tuple[Logic, Logic]], otherwise: Logic) -> Logic:
    """``if c1 then r1 elif c2 then r2 … else otherwise`` with constant conditions folded."""
    arguments: list[Logic] = []
    for condition, result in branches:
        if condition is False:
            continue
        if condition is True:
            otherwise = result
            break
        arguments.extend([condition, result])
    if not arguments:
        return otherwise
    return {"if": [*arguments, otherwise]}


def _check_variants(variants: Mapping[str, Any]) -> None:
    """flagd's schema types a flag by its variants: all booleans, all strings, all
    numbers or all objects."""
    kinds = set()
    for name, value in variants.items():
        if isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, (int, float)):
            if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
                raise _Unsupported(f"variation {name!r} is {value}, beyond ±2^53 - 1")
            kinds.add("number")
        elif isinstance(value, str):
            kinds.add("string")
        elif isinstance(value, Mapping):
            kinds.add("object")
        else:
            raise _Unsupported(
                f"variation {name!r} is a JSON {type(value).__name__}; flagd object flags "
                "need JSON objects"
            )
    if len(kinds) > 1:
        raise _Unsupported(
            f"variations mix {', '.join(sorted(kinds))} values; flagd flags have one type"
        )
