"""JSONLogic building blocks for the flagd export: ``and``/``or``/``not`` with constants
folded, ``if`` chains, ``let`` (JSONLogic has no variables), ``fractional`` in the
bucketing form of docs/design.md §4, and type tests whose results do not depend on
JSONLogic's loose coercions (``1 == true``, ``"5" < 6``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Logic = Any  # a JSONLogic expression: JSON value

# ---------------------------------------------------------------------------
# Type tests that do not depend on JSONLogic's coercions (see flagstone.flagd_export).

# cat() writes booleans as "true"/"false" in JavaScript and "True"/"False" in Python;
# no number is written as any of these.
_BOOLEAN_TEXTS = ["true", "false", "True", "False"]


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


def and_(*parts: Logic) -> Logic:
    return _junction("and", parts, neutral=True)


def or_(*parts: Logic) -> Logic:
    return _junction("or", parts, neutral=False)


def not_(part: Logic) -> Logic:
    if isinstance(part, bool):
        return not part
    return {"!": part}


def is_string(value: Logic) -> Logic:
    return {"starts_with": [value, ""]}


def _is_number_or_boolean(value: Logic) -> Logic:
    # x + 0 is x only for numbers and booleans (true + 0 is 1, and true == 1 in Python).
    return {"===": [value, {"+": [value, 0]}]}


def is_boolean(value: Logic) -> Logic:
    return and_({"in": [value, [True, False]]}, {"in": [{"cat": [value]}, _BOOLEAN_TEXTS]})


def is_number(value: Logic) -> Logic:
    return and_(_is_number_or_boolean(value), not_({"in": [{"cat": [value]}, _BOOLEAN_TEXTS]}))


def is_integer(value: Logic) -> Logic:
    """True for integers, which the engine buckets, and false for floats, which it
    does not, even integral ones.

    ``cat`` prints an integral float below 1e15 (``5.0``) as ``5``; multiplied by the
    integer 10^16 it stays an integer if it was one and becomes a float printed with an
    exponent (``5e+16``) if it was a float. Only ``0.0`` cannot be told from ``0``.
    """
    text = {"cat": [value]}
    return and_(
        is_number(value),
        {"===": [{"%": [value, 1]}, 0]},
        not_({"in": [".", text]}),
        not_({"in": ["e", text]}),
        not_({"in": ["e", {"cat": [{"*": [value, 10**16]}]}]}),
    )


def is_list(value: Logic) -> Logic:
    return or_({"some": [value, True]}, {"===": [value, []]})


def is_finite(value: Logic) -> Logic:
    return {"<=": [-1.7976931348623157e308, value, 1.7976931348623157e308]}


# ``let`` binds computed values with a one-element ``reduce``: the body sees them as
# ``current.0``, ``current.1``, … (and nothing else of the context, so a nested ``let``
# passes on what it still needs); writing a computed value twice would double the
# expression.
def let(values: Sequence[Logic], body: Callable[[list[Logic]], Logic]) -> Logic:
    names = [{"var": f"current.{i}"} for i in range(len(values))]
    return {"reduce": [[list(values)], body(names), None]}


def floor_div(a: Logic, b: int) -> Logic:
    """floor(a / b) for a >= 0 (JSONLogic's / is true division)."""
    return {"/": [{"-": [a, {"%": [a, b]}]}, b]}


def fractional(seed: str, value: Logic, shares: list[tuple[str, int]]) -> Logic:
    """``fractional`` in the ``cat`` form of docs/design.md §4 (or the only variant left when a
    single share has all the weight; flagd needs at least two)."""
    if len(shares) == 1:
        return shares[0][0]
    return {"fractional": [{"cat": [seed, value]}, *([v, w] for v, w in shares)]}


def if_chain(branches: list[tuple[Logic, Logic]], otherwise: Logic) -> Logic:
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
