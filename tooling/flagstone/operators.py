"""The clause operators, each defined once.

A clause is ``{attribute, op, values}``. Everything Flagstone knows about an operator is
its ``Operator`` entry in ``OPERATORS``:

* the values it accepts and their checks (``check_value``): ``validate`` reports a bad
  value at its place with ``finding`` as the rule id, and the compiler and the engine
  refuse it;
* its evaluation (``value_test``, and ``inline`` for the hottest ones): the engine
  compiles each clause from these once per snapshot;
* its flagd translation, or the reason flagd cannot evaluate it (``flagd_refusal``):
  ``flagstone.flagd_export.clauses`` keeps one translator per operator that has no
  refusal, and a test checks the two agree;
* one documentation line (``reads``, ``doc``): the operator table of
  docs/snapshot-format.md and the schemas' ``op`` lists are checked against this
  registry by tests/test_operators.py.

Adding an operator is one entry here plus its tests: add the ``Operator`` (name, what it
reads, one doc line, its value test and value check, and either a translator in
``flagd_export/clauses.py`` or a ``flagd_refusal``); add its name to the ``op`` lists of
``schemas/*.json`` (and their copies in ``tooling/flagstone/schemas/``, and the
snapshot schema's list of operators taking only strings when it does); paste
``operator_table()`` into docs/snapshot-format.md; add tests and conformance vectors.
tests/test_operators.py fails until the lists, the table and the translators agree.

**List-valued attributes.** When the attribute's value is a list (``groups: [admin,
beta]``), the clause is true when it holds for **any element**, for every operator but
``exists`` (which asks only whether the attribute is there); an empty list matches
nothing. ``not`` negates the whole clause: ``not: {attribute: groups, op: in, values:
[admin]}`` is true when no element is ``admin``. This is LaunchDarkly's rule.

Standard library plus ``re2``: the SDK imports this module.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from flagstone.records import Record, set_field
from flagstone.regex import check_pattern, compile_search
from flagstone.timestamps import parse_timestamp as parse_timestamp  # re-exported

Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]
ValueTest = Callable[[Any], bool]

# Validate's rule ids for a bad clause value (docs/readme/validate.md).
RULE_CLAUSE_VALUE = "clause-value"
RULE_INVALID_REGEX = "invalid-regex"
RULE_INVALID_SEMVER = "invalid-semver"
RULE_INVALID_TIME = "invalid-time"


# ---------------------------------------------------------------------------
# Literal parsers shared by the checks, the engine and the flagd translator.

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


# Context values reach the parse cache below: it is bounded in entries *and* in the
# length of the text it keeps (at most 16,384 × 256 characters), so a stream of huge
# strings cannot make it hold gigabytes. Longer text is no version Flagstone compares
# (the clause is false). Timestamps: flagstone.timestamps, bounded the same way.
MAX_SEMVER_LENGTH = 256
# Sized for traffic carrying 10,000+ distinct versions: an LRU cache smaller than the
# population a cycle of contexts visits misses every time (eval_bench case (e): 3.3 µs
# per evaluation at 4,096 entries, 1.4 µs at 16,384).
PARSE_CACHE_ENTRIES = 16_384


def parse_semver(text: str) -> SemverKey | None:
    """A SemVer 2.0.0 version as a key ordered by precedence (build metadata ignored),
    or None when ``text`` is not a strict semantic version (no ``v`` prefix, no padding)
    or is longer than ``MAX_SEMVER_LENGTH``."""
    if len(text) > MAX_SEMVER_LENGTH:
        return None
    return _parse_semver(text)


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _parse_semver(text: str) -> SemverKey | None:
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, pre = match.group(1, 2, 3, 4)
    if pre is None:
        # A release ranks above all of its pre-releases.
        return (int(major), int(minor), int(patch), 1, ())
    identifiers = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), 0, identifiers)


def timestamp_of(value: Any) -> float | None:
    """A context value as epoch seconds: an RFC 3339 string or a finite number."""
    if isinstance(value, str):
        return parse_timestamp(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float: no instant, so the clause is false
            return None
        return number if math.isfinite(number) else None
    return None


def json_kind(value: Any) -> str:
    """The JSON type of a value: boolean, number, string, object, array, null or other."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return "null" if value is None else "other"


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1``; ``1`` equals ``1.0``."""
    kind = json_kind(left)
    if kind != json_kind(right):
        return False
    if kind == "object":
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if kind == "array":
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)


# ---------------------------------------------------------------------------
# Value checks: why one clause value cannot be used, or None.


class ValueProblem(Record):
    """Why a clause's values cannot be used: a one-line message, the index of the value
    at fault (None when it is the list as a whole), and what to do when that helps."""

    message: str
    index: int | None
    hint: str | None

    _fields = __slots__ = ("message", "index", "hint")

    def __init__(self, message: str, index: int | None = None, hint: str | None = None) -> None:
        set_field(self, "message", message)
        set_field(self, "index", index)
        set_field(self, "hint", hint)


ValueCheck = Callable[[str, Any], "ValueProblem | None"]


def _text_value(op: str, value: Any) -> ValueProblem | None:
    if isinstance(value, str):
        return None
    return ValueProblem(f"{op!r} compares text; {value!r} is not a string")


def _number_value(op: str, value: Any) -> ValueProblem | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    return ValueProblem(f"{op!r} compares numbers; {value!r} is not a number")


def _semver_value(op: str, value: Any) -> ValueProblem | None:
    if isinstance(value, str) and parse_semver(value) is not None:
        return None
    return ValueProblem(f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")


def _time_value(op: str, value: Any) -> ValueProblem | None:
    if isinstance(value, str) and parse_timestamp(value) is not None:
        return None
    return ValueProblem(f"{value!r} is not an RFC 3339 timestamp (e.g. 2026-12-03T09:00:00Z)")


def _pattern_value(op: str, value: Any) -> ValueProblem | None:
    problem = _text_value(op, value)
    if problem is not None:
        return problem
    pattern = check_pattern(value)
    return None if pattern is None else ValueProblem(pattern.message, hint=pattern.hint)


def _network_value(op: str, value: Any) -> ValueProblem | None:
    problem = _text_value(op, value)
    if problem is not None:
        return problem
    import ipaddress  # on first use: import flagstone.sdk does not pay for it

    try:
        ipaddress.ip_network(value)
    except ValueError as error:
        hint = "an IPv4 or IPv6 network in CIDR form, e.g. 10.0.0.0/8 or 2001:db8::/32"
        with contextlib.suppress(ValueError):  # host bits set: name the network meant
            hint = f"did you mean {ipaddress.ip_network(value, strict=False)}?"
        return ValueProblem(f"{value!r} is not an IP network: {error}", hint=hint)
    return None


# ---------------------------------------------------------------------------
# Value tests: the test of one attribute value (None when missing) for the clause's
# values. Built once per clause; each returns False for a missing value.


def _equality_test(values: Sequence[Any]) -> ValueTest:
    """Does a value equal any of ``values`` (JSON equality)?"""
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if json_kind(v) == "number" and not math.isnan(v))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    composites = tuple(v for v in values if json_kind(v) in ("object", "array"))

    def equals_any(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if isinstance(value, bool):
            return value in booleans
        if isinstance(value, (int, float)):
            return value in numbers
        return any(json_equal(value, c) for c in composites)

    return equals_any


def _inequality_test(values: Sequence[Any]) -> ValueTest:
    equals = _equality_test(values)
    kinds = frozenset(json_kind(v) for v in values)

    def differs(value: Any) -> bool:
        # Missing, or of a type none of the values has: false, like every clause.
        return value is not None and json_kind(value) in kinds and not equals(value)

    return differs


def _contains_test(values: Sequence[Any]) -> ValueTest:
    substrings = tuple(v for v in values if isinstance(v, str))

    def contains(value: Any) -> bool:
        if isinstance(value, str):
            return any(s in value for s in substrings)
        return False

    return contains


def _contains_element_test(values: Sequence[Any]) -> ValueTest:
    """An element of a list attribute: a string containing one of the (string) values,
    or any element equal to one of the values (so ``[5, 6]`` contains ``5``)."""
    substrings = _contains_test(values)
    equals = _equality_test(values)

    def element_contains(value: Any) -> bool:
        return substrings(value) or equals(value)

    return element_contains


def _affix_test(method: Callable[[str, tuple[str, ...]], bool]) -> Callable[..., ValueTest]:
    def build(values: Sequence[Any]) -> ValueTest:
        affixes = tuple(values)

        def has_affix(value: Any) -> bool:
            return isinstance(value, str) and method(value, affixes)

        return has_affix

    return build


def _matches_test(values: Sequence[Any]) -> ValueTest:
    searches = tuple(compile_search(v) for v in values)

    def matches(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        for search in searches:  # noqa: SIM110 - a plain loop is cheaper than any()
            if search(value):
                return True
        return False

    return matches


_NUMBER_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "lt": float.__lt__,
    "lte": float.__le__,
    "gt": float.__gt__,
    "gte": float.__ge__,
}


def _number_test(op: str) -> Callable[[Sequence[Any]], ValueTest]:
    compare = _NUMBER_COMPARISONS[op]
    above_when_huge = op in ("gt", "gte")

    def build(values: Sequence[Any]) -> ValueTest:
        # "any of the values" collapses to one bound: x < any(v) <=> x < max(v), etc.
        numbers = [float(v) for v in values]
        bound = max(numbers) if op in ("lt", "lte") else min(numbers)

        def number_compare(value: Any) -> bool:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            try:
                return compare(float(value), bound)
            except OverflowError:  # an int too large for a float
                return (value > 0) == above_when_huge

        return number_compare

    return build


_SEMVER_ORDERS = {
    "semver_eq": (0,),
    "semver_lt": (-1,),
    "semver_lte": (-1, 0),
    "semver_gt": (1,),
    "semver_gte": (1, 0),
}


def _semver_test(op: str) -> Callable[[Sequence[Any]], ValueTest]:
    wanted = _SEMVER_ORDERS[op]

    def build(values: Sequence[Any]) -> ValueTest:
        keys = tuple(parse_semver(v) for v in values)

        def semver_compare(value: Any) -> bool:
            if value.__class__ is not str and not isinstance(value, str):
                return False
            # parse_semver inlined (the length bound, then the cache): a hot clause.
            version = _parse_semver(value) if len(value) <= MAX_SEMVER_LENGTH else None
            if version is None:
                return False
            for key in keys:  # noqa: SIM110 - a plain loop is cheaper than any() here
                if ((version > key) - (version < key)) in wanted:  # type: ignore[operator]
                    return True
            return False

        return semver_compare

    return build


def _time_test(op: str) -> Callable[[Sequence[Any]], ValueTest]:
    before = op == "before"

    def build(values: Sequence[Any]) -> ValueTest:
        instants = [parse_timestamp(v) or 0.0 for v in values]
        bound = max(instants) if before else min(instants)

        def time_compare(value: Any) -> bool:
            instant = timestamp_of(value)
            if instant is None:
                return False
            return instant < bound if before else instant > bound

        return time_compare

    return build


def _cidr_test(values: Sequence[Any]) -> ValueTest:
    import ipaddress  # on first use: import flagstone.sdk does not pay for it

    networks = tuple(ipaddress.ip_network(v) for v in values)
    ip_address = ipaddress.ip_address

    def in_network(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            address = ip_address(value)
        except ValueError:  # not an IP address: false, like any wrong-typed value
            return False
        for network in networks:  # noqa: SIM110 - a plain loop is cheaper than any()
            if address in network:  # an IPv4 address is never in an IPv6 network
                return True
        return False

    return in_network


def _is_present(value: Any) -> bool:
    return value is not None


def _present_test(values: Sequence[Any]) -> ValueTest:
    return _is_present


# ---------------------------------------------------------------------------
# Inlined clauses: the hottest operators on a top-level attribute, with the read and
# the test in one closure (one Python call less per clause is a measurable share of a
# microsecond-scale evaluation). Each also walks a list-valued attribute itself.


def _inline_in_strings(name: str, values: Sequence[Any]) -> Predicate | None:
    if not all(isinstance(v, str) for v in values):
        return None
    strings = frozenset(values)

    def in_strings(context: Context) -> bool:
        value = context.get(name)
        if isinstance(value, str):
            return value in strings
        if isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, str) and item in strings:
                    return True
        return False

    return in_strings


def _inline_starts_with(name: str, values: Sequence[Any]) -> Predicate | None:
    prefixes = tuple(values)

    def starts_with(context: Context) -> bool:
        value = context.get(name)
        if isinstance(value, str):
            return value.startswith(prefixes)
        if isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, str) and item.startswith(prefixes):
                    return True
        return False

    return starts_with


def _inline_matches(name: str, values: Sequence[Any]) -> Predicate | None:
    if len(values) != 1:
        return None
    search = compile_search(values[0])

    def matches(context: Context) -> bool:
        value = context.get(name)
        if isinstance(value, str):
            return search(value)
        if isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, str) and search(item):
                    return True
        return False

    return matches


def _inline_semver(op: str) -> Callable[[str, Sequence[Any]], Predicate | None]:
    wanted = _SEMVER_ORDERS[op]

    def build(name: str, values: Sequence[Any]) -> Predicate | None:
        if len(values) != 1:
            return None
        key = parse_semver(values[0])
        element_test = _semver_test(op)(values)

        def semver_compare(context: Context) -> bool:
            value = context.get(name)
            if isinstance(value, str):
                version = _parse_semver(value) if len(value) <= MAX_SEMVER_LENGTH else None
                if version is None:
                    return False
                return ((version > key) - (version < key)) in wanted  # type: ignore[operator]
            if isinstance(value, (list, tuple)):
                for item in value:
                    if element_test(item):
                        return True
            return False

        return semver_compare

    return build


# ---------------------------------------------------------------------------
# The registry.


class Operator(Record):
    """One clause operator (see the module docstring for who uses which field)."""

    name: str
    reads: str  # the attribute values it tests, for the documentation table
    doc: str  # one line: when the clause is true
    value_test: Callable[[Sequence[Any]], ValueTest]
    check_value: ValueCheck | None
    takes_values: bool
    finding: str
    # The test of one element of a list-valued attribute (value_test when None); None
    # together with elementwise=False: a list is tested as one value.
    element_test: Callable[[Sequence[Any]], ValueTest] | None
    elementwise: bool
    inline: Callable[[str, Sequence[Any]], Predicate | None] | None
    flagd_refusal: str | None

    _fields = __slots__ = (
        "name",
        "reads",
        "doc",
        "value_test",
        "check_value",
        "takes_values",
        "finding",
        "element_test",
        "elementwise",
        "inline",
        "flagd_refusal",
    )

    def __init__(
        self,
        name: str,
        reads: str,
        doc: str,
        value_test: Callable[[Sequence[Any]], ValueTest],
        check_value: ValueCheck | None = None,
        takes_values: bool = True,
        finding: str = RULE_CLAUSE_VALUE,
        element_test: Callable[[Sequence[Any]], ValueTest] | None = None,
        elementwise: bool = True,
        inline: Callable[[str, Sequence[Any]], Predicate | None] | None = None,
        flagd_refusal: str | None = None,
    ) -> None:
        set_field(self, "name", name)
        set_field(self, "reads", reads)
        set_field(self, "doc", doc)
        set_field(self, "value_test", value_test)
        set_field(self, "check_value", check_value)
        set_field(self, "takes_values", takes_values)
        set_field(self, "finding", finding)
        set_field(self, "element_test", element_test)
        set_field(self, "elementwise", elementwise)
        set_field(self, "inline", inline)
        set_field(self, "flagd_refusal", flagd_refusal)


_SEMVER_READS = "string, strict SemVer 2.0.0 (`1.2.3-rc.1+build`, no `v` prefix)"
_TIME_READS = "RFC 3339 string with a zone (`Z` or `±hh:mm`), or epoch seconds (number)"


def _registry(*operators: Operator) -> dict[str, Operator]:
    return {operator.name: operator for operator in operators}


OPERATORS: Mapping[str, Operator] = _registry(
    Operator(
        "eq",
        "any JSON value",
        "equals one of `values` (JSON equality: `true` ≠ `1`, `1` = `1.0`)",
        _equality_test,
        inline=_inline_in_strings,
    ),
    Operator(
        "neq",
        "same JSON type as some value",
        "equals none of `values`",
        _inequality_test,
    ),
    Operator("in", "any JSON value", "same as `eq`", _equality_test, inline=_inline_in_strings),
    Operator("not_in", "same JSON type as some value", "same as `neq`", _inequality_test),
    Operator(
        "contains",
        "string",
        "has one of the (string) values as a substring; an element of a list attribute may "
        "also equal one of `values`",
        _contains_test,
        element_test=_contains_element_test,
    ),
    Operator(
        "starts_with",
        "string",
        "starts with one of `values` (case-sensitive)",
        _affix_test(str.startswith),
        check_value=_text_value,
        inline=_inline_starts_with,
    ),
    Operator(
        "ends_with",
        "string",
        "ends with one of `values` (case-sensitive)",
        _affix_test(str.endswith),
        check_value=_text_value,
    ),
    Operator(
        "matches",
        "string",
        "one of `values`, a regular expression in the RE2 dialect (docs/readme/validate.md, "
        '"Regular expressions"), is found anywhere (a search: anchor with `^`/`$`)',
        _matches_test,
        check_value=_pattern_value,
        finding=RULE_INVALID_REGEX,
        inline=_inline_matches,
    ),
    *(
        Operator(
            op,
            "number (not boolean)",
            f"is {words} one of the (number) values",
            _number_test(op),
            check_value=_number_value,
        )
        for op, words in (
            ("lt", "less than"),
            ("lte", "less than or equal to"),
            ("gt", "greater than"),
            ("gte", "greater than or equal to"),
        )
    ),
    *(
        Operator(
            op,
            _SEMVER_READS,
            f"{words} one of `values` by SemVer precedence (build metadata ignored)",
            _semver_test(op),
            check_value=_semver_value,
            finding=RULE_INVALID_SEMVER,
            inline=_inline_semver(op),
        )
        for op, words in (
            ("semver_eq", "equals"),
            ("semver_lt", "is lower than"),
            ("semver_lte", "is lower than or equal to"),
            ("semver_gt", "is higher than"),
            ("semver_gte", "is higher than or equal to"),
        )
    ),
    Operator(
        "before",
        _TIME_READS,
        "is strictly before one of `values` (RFC 3339 strings)",
        _time_test("before"),
        check_value=_time_value,
        finding=RULE_INVALID_TIME,
    ),
    Operator(
        "after",
        _TIME_READS,
        "is strictly after one of `values` (RFC 3339 strings)",
        _time_test("after"),
        check_value=_time_value,
        finding=RULE_INVALID_TIME,
    ),
    Operator(
        "exists",
        "anything not null (a list, even empty, is present)",
        "always (`values` is `[]`)",
        _present_test,
        takes_values=False,
        elementwise=False,
    ),
    Operator(
        "cidr",
        "string, an IPv4 or IPv6 address (`10.1.2.3`, `2001:db8::1`)",
        "is in one of `values`, IP networks in CIDR form (`10.0.0.0/8`, `2001:db8::/32`; a "
        "bare address is a /32 or /128)",
        _cidr_test,
        check_value=_network_value,
        flagd_refusal="flagd has no IP network operator",
    ),
)

OPERATOR_NAMES: tuple[str, ...] = tuple(OPERATORS)


def check_values(op: str, values: Sequence[Any]) -> ValueProblem | None:
    """Why ``values`` cannot be used with ``op``, or None if they can."""
    operator = OPERATORS.get(op)
    if operator is None:
        return ValueProblem(f"unknown operator {op!r} (one of: {', '.join(OPERATOR_NAMES)})")
    if not operator.takes_values:
        return None if not values else ValueProblem(f"{op!r} takes no value")
    if not values:
        return ValueProblem(f"{op!r} needs a value")
    for index, value in enumerate(values):
        if value is None:
            return ValueProblem(
                "null matches nothing (a null attribute is missing); test presence with 'exists'",
                index,
            )
        if operator.check_value is not None:
            problem = operator.check_value(op, value)
            if problem is not None:
                return problem.replaced(index=index)
    return None


def clause_test(op: str, values: Sequence[Any]) -> ValueTest:
    """The test of an attribute's value (None when missing) for a checked clause,
    walking a list-valued attribute element by element."""
    operator = OPERATORS[op]
    test = operator.value_test(values)
    if not operator.elementwise:
        return test
    element_test = test if operator.element_test is None else operator.element_test(values)

    def test_value_or_elements(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            for item in value:  # noqa: SIM110 - a plain loop is cheaper than any()
                if element_test(item):
                    return True
            return False
        return test(value)

    return test_value_or_elements


def inlined_clause(name: str, op: str, values: Sequence[Any]) -> Predicate | None:
    """The hot-path closure of a checked clause on the top-level attribute ``name``, or
    None when the operator has none for these values."""
    inline = OPERATORS[op].inline
    return None if inline is None else inline(name, values)


def operator_table() -> str:
    """The operator table of docs/snapshot-format.md, one row per operator."""
    rows = ["| op | attribute value | true when |", "|----|-----------------|-----------|"]
    rows += [f"| `{o.name}` | {o.reads} | {o.doc} |" for o in OPERATORS.values()]
    return "\n".join(rows)
