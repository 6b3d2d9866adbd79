"""Property test: for randomly generated conditions (every operator, nested all/any/not,
segments) and randomly generated contexts, flagd's evaluation of the export serves the
same variation as Flagstone's engine. Hypothesis explores value shapes the fixed
payloads of test_flagd_differential.py do not."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flagstone.engine import Snapshot
from flagstone.flagd_export import export_flagd
from flagstone.operators import OPERATORS as REGISTRY
from test_flagd_differential import attribute_value, neighbours, set_path

ATTRIBUTES = ["plan", "n", "v", "t", "tags", "account.tier", "key"]
TEXT = st.text(alphabet="abAB01.-+@ é:TZ", max_size=8)
NUMBERS = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 3)),
)
SCALARS = st.one_of(TEXT, NUMBERS, st.booleans())
SEMVERS = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 12),
    st.sampled_from(["", "rc.1", "alpha", "0.3", "beta.11"]),
)
INSTANTS = st.datetimes(
    min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def rfc3339(moment: datetime, form: int) -> str:
    if form == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == 1:
        return moment.strftime("%Y-%m-%dt%H:%M:%S.%fz")
    shifted = moment + timedelta(hours=2, minutes=30)
    return shifted.strftime("%Y-%m-%dT%H:%M:%S") + "+02:30"


TIMESTAMPS = st.builds(rfc3339, INSTANTS, st.integers(0, 2))
LITERAL_PATTERNS = st.builds(
    lambda start, body, end: (
        ("^" if start else "") + body.replace(".", "\\.") + ("$" if end else "")
    ),
    st.booleans(),
    st.text(alphabet="ab.@", min_size=1, max_size=4),
    st.booleans(),
)


def values_for(op: str) -> st.SearchStrategy[list[Any]]:
    if op == "exists":
        return st.just([])
    if op in ("starts_with", "ends_with"):
        return st.lists(TEXT, min_size=1, max_size=3)
    if op == "matches":
        return st.lists(LITERAL_PATTERNS, min_size=1, max_size=2)
    if op in ("lt", "lte", "gt", "gte"):
        return st.lists(NUMBERS, min_size=1, max_size=2)
    if op.startswith("semver_"):
        return st.lists(SEMVERS, min_size=1, max_size=2)
    if op in ("before", "after"):
        return st.lists(TIMESTAMPS, min_size=1, max_size=2)
    return st.lists(SCALARS, min_size=1, max_size=3)


# Every operator flagd can evaluate (the registry names the others and why not).
OPERATORS = [name for name, o in REGISTRY.items() if o.flagd_refusal is None]

CLAUSES = st.builds(
    lambda attribute, op_values: {
        "attribute": attribute,
        "op": op_values[0],
        "values": op_values[1],
    },
    st.sampled_from(ATTRIBUTES),
    st.sampled_from(OPERATORS).flatmap(lambda op: values_for(op).map(lambda v: (op, v))),
)
CONDITIONS = st.recursive(
    st.one_of(CLAUSES, st.just({"segment": "seg"})),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(inner, min_size=1, max_size=3).map(lambda c: {"any": c}),
        inner.map(lambda c: {"not": c}),
    ),
    max_leaves=4,
)


def clauses_of(condition: Any) -> list[dict[str, Any]]:
    if isinstance(condition, dict):
        if "op" in condition:
            return [condition]
        return [c for part in condition.values() for c in clauses_of(part)]
    if isinstance(condition, list):
        return [c for part in condition for c in clauses_of(part)]
    return []


def build_contexts(seed: int, clauses: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Contexts from a seeded generator (cheap, so hypothesis spends its time on the
    conditions): values on and around the clauses' own values, and wrong types."""
    rng = random.Random(seed)
    pool: dict[str, list[Any]] = {}
    for clause in clauses:
        values = clause["values"]
        if clause["op"] == "matches":  # texts the (plain-text) patterns describe
            values = [p.removeprefix("^").removesuffix("$").replace("\\.", ".") for p in values]
        pool.setdefault(clause["attribute"], []).extend(neighbours(clause["op"], values))
    contexts = []
    for _ in range(count):
        context: dict[str, Any] = {}
        if rng.random() < 0.6:
            context["key"] = rng.choice(["k-1", "k-2", "k-3", "other", ""])
        for attribute in ATTRIBUTES[:-1]:
            if rng.random() < 0.7:
                set_path(context, attribute, attribute_value(rng, pool.get(attribute, [])))
        contexts.append(context)
    return contexts


def payload_of(condition: dict[str, Any], segment_rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "flagstone.snapshot/1",
        "project": "prop",
        "environment": "test",
        "version": 1,
        "published_at": None,
        "expires": None,
        "source": {"commit": None, "ref": None},
        "digest": None,
        "segments": {"seg": {"include": ["k-1"], "exclude": ["k-2"], "rules": [segment_rule]}},
        "flags": {
            "f": {
                "type": "string",
                "kind": "release",
                "variations": {"no": "no", "yes": "yes"},
                "off_variation": "no",
                "enabled": True,
                "prerequisites": [],
                "targets": [{"variation": "yes", "keys": ["k-3"]}],
                "rules": [{"name": "r", "condition": condition, "serve": {"variation": "yes"}}],
                "default": {"variation": "no"},
            }
        },
    }


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    condition = draw(CONDITIONS)
    segment_rule = draw(CLAUSES)
    seed = draw(st.integers(0, 2**32))
    contexts = build_contexts(seed, [*clauses_of(condition), segment_rule], 20)
    return payload_of(condition, segment_rule), contexts


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_random_conditions_evaluate_the_same(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    payload, contexts = case
    snapshot = Snapshot.from_payload(payload)
    core = FlagdCore()
    core.set_flags(json.loads(json.dumps(export_flagd(payload).document)))
    for context in contexts:
        ours = snapshot.evaluate("f", context)
        attributes = {k: v for k, v in context.items() if k != "key"}
        theirs = core.resolve_string_value(
            "f", "default", EvaluationContext(context.get("key"), attributes)
        )
        assert theirs.variant == ours.variation, (payload["flags"]["f"]["rules"], context, ours)
