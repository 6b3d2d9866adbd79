"""One clause (``attribute op values``) as JSONLogic that flagd evaluates exactly as the
engine does, or ``Unsupported`` naming why it cannot be."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from flagstone.flagd_export.jsonlogic import (
    Logic,
    and_,
    is_boolean,
    is_finite,
    is_list,
    is_number,
    is_string,
    not_,
    or_,
)
from flagstone.flagd_export.refusal import Unsupported
from flagstone.flagd_export.rfc3339 import rfc3339_compare
from flagstone.operators import OPERATORS, parse_semver, parse_timestamp

# JSON numbers beyond ±(2^53 - 1) do not survive every flagd implementation's parser.
MAX_SAFE_INTEGER = 2**53 - 1
# The semver guard reads this many leading characters of a version string.
SEMVER_SCAN = 64
_LITERAL_CHARS = re.compile(r"[^.^$*+?{}\[\]\\|()]")


def translate_clause(value: Logic, op: str, values: Sequence[Any]) -> Logic:
    """The test ``op`` over ``values`` of the attribute read by the ``var`` expression
    ``value`` (without the attribute's path guard), from the operator registry: the
    operator's translator, or its refusal. A list-valued attribute is tested element by
    element (``some``), as the engine does."""
    operator = OPERATORS.get(op)
    if operator is None:
        raise Unsupported(f"unknown operator {op!r}")
    if operator.flagd_refusal is not None:
        raise Unsupported(f"{op!r}: {operator.flagd_refusal}")
    translate = TRANSLATORS[op]
    scalar = translate(value, op, values)
    if not operator.elementwise:
        return scalar
    element = ELEMENT_TRANSLATORS.get(op, translate)({"var": ""}, op, values)
    return {"if": [is_list(value), {"some": [value, element]}, scalar]}


def path_part(path: str, part: str | int) -> str:
    """The ``var`` path of ``part`` under ``path`` ("" is the data itself, as inside
    ``some``)."""
    return f"{path}.{part}" if path else str(part)


KIND_TESTS: dict[str, Callable[[Logic], Logic]] = {
    "string": is_string,
    "number": is_number,
    "boolean": is_boolean,
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise Unsupported(f"the clause value {value!r} is not a JSON number")
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            raise Unsupported(f"the clause value {value} is beyond ±2^53 - 1")
        return "number"
    if isinstance(value, str):
        return "string"
    raise Unsupported(f"the clause value {value!r} is not a string, number or boolean")


def _by_kind(values: Sequence[Any]) -> dict[str, list[Any]]:
    if not values:
        raise Unsupported("a clause without values")
    grouped: dict[str, list[Any]] = {}
    for value in values:
        members = grouped.setdefault(_kind(value), [])
        if value not in members:  # one kind per list, so == is exact here
            members.append(value)
    return grouped


def equals_any(value: Logic, values: Sequence[Any]) -> Logic:
    parts: list[Logic] = []
    for kind, members in _by_kind(values).items():
        membership = {"in": [value, members]}
        # A string never equals a non-string in Python, so the type test is implied.
        parts.append(membership if kind == "string" else and_(KIND_TESTS[kind](value), membership))
    return or_(*parts)


def equals_none(value: Logic, values: Sequence[Any]) -> Logic:
    # Present, of a type one of the values has, and equal to none of them.
    return or_(
        *(
            and_(KIND_TESTS[kind](value), not_({"in": [value, members]}))
            for kind, members in _by_kind(values).items()
        )
    )


def contains(value: Logic, values: Sequence[Any]) -> Logic:
    item: Logic = {"var": ""}
    parts: list[Logic] = []
    for kind, members in _by_kind(values).items():
        if kind == "string":
            # in(needle, haystack): substring of a string, member of a list.
            parts.extend({"in": [member, value]} for member in members)
        else:
            test = and_(KIND_TESTS[kind](item), {"in": [item, members]})
            parts.append({"some": [value, test]})
    return or_(*parts)


def compare_numbers(value: Logic, op: str, values: Sequence[Any]) -> Logic:
    numbers = []
    for member in values:
        if _kind(member) != "number":
            raise Unsupported(f"{op!r} compares numbers; {member!r} is not one")
        numbers.append(member)
    # Any-of collapses to one bound, as in the engine.
    bound = max(numbers) if op in ("lt", "lte") else min(numbers)
    symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
    return and_(is_number(value), {symbol: [value, bound]})


SEMVER_SYMBOL = {
    "semver_eq": "=",
    "semver_lt": "<",
    "semver_lte": "<=",
    "semver_gt": ">",
    "semver_gte": ">=",
}


def semver_core_has_two_dots(path: str) -> Logic:
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
        characters = [{"var": path_part(path, i)} for i in range(count)]
        return {"===": [{"reduce": [characters, step, 0]}, 2]}

    # Most versions are short: read 16 characters for them, 64 for the rest.
    return {"if": [{"<=": [{"var": path_part(path, "length")}, 16]}, scan(16), scan(SEMVER_SCAN)]}


def compare_semver(value: Logic, path: str, op: str, values: Sequence[Any]) -> Logic:
    for member in values:
        if not isinstance(member, str) or parse_semver(member) is None:
            raise Unsupported(f"{member!r} is not a strict semantic version")
    symbol = SEMVER_SYMBOL[op]
    comparisons = or_(*({"sem_ver": [value, symbol, member]} for member in values))
    return and_(
        is_string(value),
        not_({"starts_with": [value, "v"]}),
        not_({"starts_with": [value, "V"]}),
        semver_core_has_two_dots(path),
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


def matches(value: Logic, values: Sequence[Any]) -> Logic:
    parts = []
    for pattern in values:
        for branch in _split_alternatives(str(pattern)):
            parsed = _literal_regex_branch(branch)
            if parsed is None:
                raise Unsupported(
                    f"'matches' with the regular expression {pattern!r}: flagd has no regular "
                    "expressions (only plain text with ^, $ and | can be translated)"
                )
            start, text, end = parsed
            # RE2's $ is the end of the text (not also before a final newline, as in Python).
            if start and end:
                parts.append({"in": [value, [text]]})
            elif start:
                parts.append({"starts_with": [value, text]})
            elif end:
                parts.append({"ends_with": [value, text]})
            else:
                parts.append({"in": [text, value]})
    return and_(is_string(value), or_(*parts))


def compare_time(value: Logic, path: str, op: str, values: Sequence[Any]) -> Logic:
    instants = []
    for member in values:
        instant = parse_timestamp(member) if isinstance(member, str) else None
        if instant is None:
            raise Unsupported(f"{member!r} is not an RFC 3339 timestamp")
        instants.append(instant)
    before = op == "before"
    bound = max(instants) if before else min(instants)
    symbol = "<" if before else ">"
    number_test = and_(is_number(value), is_finite(value), {symbol: [value, bound]})
    return or_(number_test, and_(is_string(value), rfc3339_compare(path, symbol, bound)))


def strings(op: str, values: Sequence[Any]) -> list[str]:
    for value in values:
        if not isinstance(value, str):
            raise Unsupported(f"{op!r} compares text; {value!r} is not a string")
    return list(values)


Translator = Callable[[Logic, str, Sequence[Any]], Logic]


def _affixes(value: Logic, op: str, values: Sequence[Any]) -> Logic:
    return and_(is_string(value), or_(*({op: [value, v]} for v in strings(op, values))))


def _element_contains(element: Logic, op: str, values: Sequence[Any]) -> Logic:
    """``contains`` on one element of a list attribute: a string element containing a
    (string) value, or an element equal to one of the values."""
    parts: list[Logic] = []
    for kind, members in _by_kind(values).items():
        if kind == "string":
            parts.extend(and_(is_string(element), {"in": [m, element]}) for m in members)
        else:
            parts.append(and_(KIND_TESTS[kind](element), {"in": [element, members]}))
    return or_(*parts)


# One translator per operator the registry does not refuse (tests/test_operators.py
# checks the two agree).
TRANSLATORS: dict[str, Translator] = {
    "exists": lambda value, op, values: {"!==": [value, None]},
    "eq": lambda value, op, values: equals_any(value, values),
    "in": lambda value, op, values: equals_any(value, values),
    "neq": lambda value, op, values: equals_none(value, values),
    "not_in": lambda value, op, values: equals_none(value, values),
    "contains": lambda value, op, values: contains(value, values),
    "starts_with": _affixes,
    "ends_with": _affixes,
    "matches": lambda value, op, values: matches(value, values),
    **{
        op: (lambda value, op, values: compare_numbers(value, op, values))
        for op in ("lt", "lte", "gt", "gte")
    },
    **{
        op: (lambda value, op, values: compare_semver(value, value["var"], op, values))
        for op in SEMVER_SYMBOL
    },
    **{
        op: (lambda value, op, values: compare_time(value, value["var"], op, values))
        for op in ("before", "after")
    },
}
# Where an element of a list attribute is tested otherwise than a plain value.
ELEMENT_TRANSLATORS: dict[str, Translator] = {"contains": _element_contains}
