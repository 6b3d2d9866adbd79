"""The operator registry (issue 16, item 2): every place that lists or documents the
operators agrees with ``flagstone.operators``, and its two additions (list-valued
attributes, ``cidr``) behave as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flagstone.engine import Snapshot
from flagstone.flagd_export.clauses import ELEMENT_TRANSLATORS, TRANSLATORS
from flagstone.operators import OPERATOR_NAMES, OPERATORS, check_values, operator_table

ROOT = Path(__file__).parents[1]
# The schemas with clauses (flag and project schemas have none), and their copies.
SCHEMA_FILES = [
    path
    for folder in (ROOT / "schemas", ROOT / "tooling" / "flagstone" / "schemas")
    for path in sorted(folder.glob("*.schema.json"))
    if '"op"' in path.read_text("utf-8")
]


def _op_enums(node: Any) -> list[list[str]]:
    """Every ``enum`` of a property named ``op`` in a schema, outside ``if`` conditions
    (which name groups of operators)."""
    found: list[list[str]] = []
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict) and isinstance(properties.get("op"), dict):
            enum = properties["op"].get("enum")
            if isinstance(enum, list) and len(enum) > 1:
                found.append(enum)
        for key, child in node.items():
            if key != "if":
                found.extend(_op_enums(child))
    elif isinstance(node, list):
        for child in node:
            found.extend(_op_enums(child))
    return found


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_schema_lists_exactly_the_registry_operators(path: Path) -> None:
    schema = json.loads(path.read_text("utf-8"))
    text = path.read_text("utf-8")
    enums = _op_enums(schema)
    assert enums, f"{path.name} has clauses but no op list"
    assert [e for e in enums if e != list(OPERATOR_NAMES)] == []
    if "The operator: `" in text:
        assert f"The operator: `{' '.join(OPERATOR_NAMES)}`." in text


def test_the_snapshot_schema_knows_which_operators_take_only_strings() -> None:
    # An operator takes only strings when a number is refused (and it takes values).
    string_only = [
        name
        for name, operator in OPERATORS.items()
        if operator.takes_values and check_values(name, [1]) is not None
    ]
    for path in (ROOT / "schemas" / "snapshot.schema.json",):
        schema = json.loads(path.read_text("utf-8"))
        conditions = schema["definitions"]["clause"]["allOf"]
        lists = [c["if"]["properties"]["op"].get("enum") for c in conditions]
        assert string_only in lists


def test_the_clause_schemas_are_all_checked() -> None:
    names = sorted(p.name for p in SCHEMA_FILES)
    assert names == sorted(
        ["release.schema.json", "segment.schema.json", "snapshot.schema.json"] * 2
    )


def test_schema_copies_are_byte_identical() -> None:
    for path in sorted((ROOT / "schemas").glob("*.schema.json")):
        copy = ROOT / "tooling" / "flagstone" / "schemas" / path.name
        assert copy.read_bytes() == path.read_bytes()


def test_the_operator_table_in_the_docs_is_the_registry() -> None:
    docs = (ROOT / "docs" / "snapshot-format.md").read_text("utf-8")
    assert operator_table() in docs


def test_flagd_translates_exactly_the_operators_the_registry_does_not_refuse() -> None:
    translated = {name for name, o in OPERATORS.items() if o.flagd_refusal is None}
    assert set(TRANSLATORS) == translated
    assert set(ELEMENT_TRANSLATORS) <= translated


# -- list-valued attributes (the conformance vectors in tests/conformance/lists.json hold
#    the language-neutral cases; these cover every operator) --

ONE_MATCHING_VALUE: dict[str, tuple[list[Any], Any, Any]] = {
    # op: (clause values, an attribute value that matches, one that does not)
    "eq": (["a"], "a", "b"),
    "neq": (["a"], "b", "a"),
    "in": (["a", 5], 5, 6),
    "not_in": (["a"], "b", "a"),
    "contains": (["dmi"], "admin", "user"),
    "starts_with": (["ad"], "admin", "user"),
    "ends_with": (["in"], "admin", "user"),
    "matches": (["^ad.*n$"], "admin", "user"),
    "lt": ([5], 4, 5),
    "lte": ([5], 5, 6),
    "gt": ([5], 6, 5),
    "gte": ([5], 5, 4),
    "semver_eq": (["1.2.3"], "1.2.3", "1.2.4"),
    "semver_lt": (["1.2.3"], "1.2.2", "1.2.3"),
    "semver_lte": (["1.2.3"], "1.2.3", "1.2.4"),
    "semver_gt": (["1.2.3"], "1.2.4", "1.2.3"),
    "semver_gte": (["1.2.3"], "1.2.3", "1.2.2"),
    "before": (["2026-01-01T00:00:00Z"], "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"),
    "after": (["2026-01-01T00:00:00Z"], "2026-01-01T00:00:01Z", "2026-01-01T00:00:00Z"),
    "cidr": (["10.0.0.0/8"], "10.1.2.3", "11.0.0.1"),
}


def _evaluate(clause: dict[str, Any], context: dict[str, Any]) -> bool:
    payload = {
        "format": "flagstone.snapshot/1",
        "flags": {
            "f": {
                "type": "boolean",
                "variations": {"on": True, "off": False},
                "off_variation": "off",
                "enabled": True,
                "rules": [
                    {"name": "plain", "condition": clause, "serve": {"variation": "on"}},
                ],
                "default": {"variation": "off"},
            },
            "negated": {
                "type": "boolean",
                "variations": {"on": True, "off": False},
                "off_variation": "off",
                "enabled": True,
                "rules": [
                    {"name": "not", "condition": {"not": clause}, "serve": {"variation": "on"}},
                ],
                "default": {"variation": "off"},
            },
        },
    }
    snapshot = Snapshot.from_payload(payload)
    plain = snapshot.evaluate("f", context).value
    negated = snapshot.evaluate("negated", context).value
    assert negated is (not plain)  # not negates the whole clause
    return bool(plain)


def test_every_operator_has_a_list_case() -> None:
    assert set(ONE_MATCHING_VALUE) == set(OPERATORS) - {"exists"}


@pytest.mark.parametrize("op", sorted(ONE_MATCHING_VALUE))
@pytest.mark.parametrize("attribute", ["tags", "account.tags"])
def test_a_list_attribute_matches_when_any_element_matches(op: str, attribute: str) -> None:
    values, hit, miss = ONE_MATCHING_VALUE[op]
    clause = {"attribute": attribute, "op": op, "values": values}

    def context(value: Any) -> dict[str, Any]:
        if attribute == "tags":
            return {"key": "k", "tags": value}
        return {"key": "k", "account": {"tags": value}}

    assert _evaluate(clause, context(hit)) is True
    assert _evaluate(clause, context(miss)) is False
    assert _evaluate(clause, context([miss, hit])) is True
    assert _evaluate(clause, context([miss, miss])) is False
    assert _evaluate(clause, context([])) is False
    assert _evaluate(clause, context([None, miss])) is False
    assert _evaluate(clause, context((miss, hit))) is True  # a tuple from Python code


def test_exists_asks_only_whether_the_attribute_is_there() -> None:
    clause = {"attribute": "tags", "op": "exists", "values": []}
    assert _evaluate(clause, {"key": "k", "tags": []}) is True
    assert _evaluate(clause, {"key": "k", "tags": [None]}) is True
    assert _evaluate(clause, {"key": "k"}) is False


def test_contains_on_a_list_element_is_a_substring_or_an_equal_element() -> None:
    clause = {"attribute": "tags", "op": "contains", "values": ["adm", 5]}
    assert _evaluate(clause, {"key": "k", "tags": ["administrator"]}) is True
    assert _evaluate(clause, {"key": "k", "tags": [4, 5]}) is True
    assert _evaluate(clause, {"key": "k", "tags": [["adm"]]}) is False
    assert _evaluate(clause, {"key": "k", "tags": 5}) is False  # a number contains nothing


# -- cidr --


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.0", False),
        ("192.168.1.7", True),
        ("192.168.2.7", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.0.0.1", False),  # an IPv4-mapped IPv6 address is an IPv6 address
        ("10.0.0.1/32", False),  # a network is not an address
        ("not an address", False),
        ("", False),
        (167772161, False),  # the integer form of 10.0.0.1: addresses are strings
        (None, False),
    ],
)
def test_cidr_matches_addresses_in_any_listed_network(address: Any, expected: bool) -> None:
    clause = {
        "attribute": "ip",
        "op": "cidr",
        "values": ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"],
    }
    context = {"key": "k"} if address is None else {"key": "k", "ip": address}
    assert _evaluate(clause, context) is expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "an IPv4 or IPv6 network"),
        ("banana", "an IPv4 or IPv6 network"),
        (10, None),
    ],
)
def test_cidr_values_are_checked(value: Any, words: str | None) -> None:
    problem = check_values("cidr", ["192.168.0.0/16", value])
    assert problem is not None
    assert problem.index == 1
    if words is None:
        assert "is not a string" in problem.message
    else:
        assert problem.hint is not None and words in problem.hint
    assert check_values("cidr", ["10.0.0.1", "::1", "2001:db8::/32"]) is None
