"""Differential test: Flagstone's engine against flagd's own evaluator on the export.

Every flag of the example repository (both environments) and of the conformance
vectors is exported with ``flagstone.flagd_export`` and loaded into the real
``FlagdCore`` (openfeature-flagd-core). Generated contexts — values taken from the
flags' own clauses and their neighbours, wrong types, missing and null attributes,
nested objects replaced by strings and lists, versions with ``v`` prefixes and
padding, timestamps in every RFC 3339 form and some impossible dates — are evaluated
by both at several instants around every scheduled stage. The served variation (and
value) must be identical for every evaluation, and flagd's reason must be the one
docs/readme/flagd.md maps ours to.

flagd reads the clock itself (``$flagd.timestamp`` is ``int(time.time())``); the test
gives its targeting module a fixed clock per instant, and gives the engine the same
instant.
"""

from __future__ import annotations

import importlib
import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from flagstone.compile import compile_environment
from flagstone.engine import Snapshot, parse_timestamp
from flagstone.flagd_export import export_flagd
from flagstone.operators import OPERATORS as REGISTRY
from flagstone.validate import load_valid_project

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = sorted((ROOT / "tests" / "conformance").glob("*.json"))
TARGETING_MODULE = importlib.import_module(
    "openfeature.contrib.tools.flagd.core.targeting.targeting"
)
BASE_TIME = 1_795_000_000  # 2026-11-18, before the example's scheduled stage

# How flagd's reason relates to ours (documented in docs/readme/flagd.md).
REASONS = {
    "DISABLED": {"STATIC"},
    "DEFAULT": {"STATIC", "DEFAULT", "TARGETING_MATCH"},
    "TARGETING_MATCH": {"TARGETING_MATCH", "STATIC"},
    "SPLIT": {"TARGETING_MATCH"},
    "PREREQUISITE_FAILED": {"TARGETING_MATCH"},
}
# Flags may be left out only for these documented reasons: flagd has no regular
# expressions and no array-valued object flags (tested in test_flagd_export.py).
ACCEPTED_REFUSALS = (
    "flagd has no regular expressions",
    "is a JSON list",
    *(o.flagd_refusal for o in REGISTRY.values() if o.flagd_refusal is not None),
)


class FixedClock:
    """Stands in for the ``time`` module inside flagd's targeting module."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def payloads() -> Iterator[tuple[str, dict[str, Any]]]:
    project = load_valid_project(ROOT)
    for env in project.environments:
        yield f"example:{env}", compile_environment(project, env)
    for path in CONFORMANCE:
        yield f"conformance:{path.stem}", json.loads(path.read_text())["snapshot"]


# ---------------------------------------------------------------------------
# Context generation from what the flags look at.


def walk_conditions(condition: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if "attribute" in condition:
        yield condition
    for combinator in ("all", "any"):
        for part in condition.get(combinator, []):
            yield from walk_conditions(part)
    if "not" in condition:
        yield from walk_conditions(condition["not"])


def collect(payload: Mapping[str, Any]) -> tuple[dict[str, list[Any]], list[str], list[float]]:
    """attribute -> interesting values, interesting keys, scheduled instants."""
    attributes: dict[str, list[Any]] = {}
    keys: list[str] = []
    instants: list[float] = []
    conditions: list[Mapping[str, Any]] = []
    for segment in payload["segments"].values():
        keys += segment.get("include", []) + segment.get("exclude", [])
        conditions += segment.get("rules", [])
    for flag in payload["flags"].values():
        for target in flag.get("targets", []):
            keys += target["keys"]
        for rule in flag.get("rules", []):
            conditions.append(rule["condition"])
            split = rule["serve"].get("split")
            if split:
                attributes.setdefault(split.get("bucket_by", "key"), [])
        default = flag.get("default", {})
        spec = default.get("split") or default.get("progression")
        if spec:
            attributes.setdefault(spec.get("bucket_by", "key"), [])
        for stage in default.get("progression", {}).get("stages", []):
            if stage.get("at"):
                instants.append(parse_timestamp(stage["at"]) or 0.0)
    for condition in conditions:
        for clause in walk_conditions(condition):
            values = attributes.setdefault(clause["attribute"], [])
            values += neighbours(clause["op"], clause.get("values", []))
    attributes.pop("key", None)
    return attributes, sorted(set(keys)), sorted(set(instants))


WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -3,
    4.0,
    -7.0,
    2.5,
    "",
    "text",
    [],
    ["x"],
    {},
    {"a": 1},
]


def neighbours(op: str, values: list[Any]) -> list[Any]:
    """Values that sit on, next to and around a clause's own values."""
    out: list[Any] = []
    for value in values:
        out.append(value)
        if isinstance(value, bool):
            out += [not value, int(value), str(value).lower(), [value]]
        elif isinstance(value, (int, float)):
            out += [value - 1, value + 1, value - 0.5, value + 0.25, float(value), str(value)]
            out += [True, [value], -value]
        elif op.startswith("semver_"):
            out += semver_neighbours(value)
        elif op in ("before", "after"):
            out += time_neighbours(value)
        else:
            out += [value.upper(), value + "x", "x" + value, value[1:], value[:-1], [value]]
            out += [value + "\n", value * 2, f"é{value}", {"v": value}]
    return out


def semver_neighbours(version: str) -> list[Any]:
    core = version.split("-")[0].split("+")[0]
    major, minor, patch = (int(p) for p in core.split("."))
    return [
        f"{major}.{minor}.{patch + 1}",
        f"{major}.{minor}.{max(patch - 1, 0)}",
        f"{major}.{minor + 1}.0",
        f"{max(major - 1, 0)}.9.9",
        f"{major + 1}.0.0",
        f"{major}.{minor}.{patch}-rc.1",
        f"{major}.{minor}.{patch}-alpha",
        f"{major}.{minor}.{patch}-0.3.7",
        f"{major}.{minor}.{patch}+build.5",
        f"{max(major - 1, 0)}.{minor}",  # padded by flagd, invalid for Flagstone
        f"{major - 1 if major else 0}",
        f"{max(major - 1, 0)}-rc.1.2",
        f"v{max(major - 1, 0)}.{minor}.{patch}",
        f"V{major + 1}.0.0",
        f"0{major}.{minor}.{patch}",
        f"{major}.{minor}.{patch}.4",
        f"{major}.{minor}.{patch}-",
        f"{max(major - 1, 0)}.{minor}.{patch}-beta.{'1' * 40}",
        f"{max(major - 1, 0)}.{'1' * 30}.0",
        f"{max(major - 1, 0)}.{'1' * 70}",
        f"{max(major - 1, 0)}.{'2' * 40}.{'3' * 40}",
        float(major),
        major,
    ]


def time_neighbours(stamp: str) -> list[Any]:
    instant = parse_timestamp(stamp) or 0.0
    date, clock = stamp[:10], stamp[11:19]
    return [
        instant,
        instant - 1,
        instant + 1,
        int(instant) + 0.5,
        f"{date}t{clock}z",
        f"{date}T{clock}.000001Z",
        f"{date}T{clock}.5Z",
        f"{date}T{clock}.123456789Z",
        f"{date}T{clock}.0000001Z",
        f"{date}T{clock}+00:00",
        f"{date}T{clock}-00:00",
        f"{date}T{clock}+01:00",
        f"{date}T{clock}-01:30",
        f"{date}T{clock}+23:59",
        f"{date}T{clock}+24:00",
        f"{date}T{clock}+05:60",
        f"{date}T{clock}",
        f"{date} {clock}Z",
        f"{date}T23:59:59Z",
        f"{date}T00:00:00Z",
        f"{date}T24:00:00Z",
        f"{date}T12:60:00Z",
        f"{date}T12:00:60Z",
        "2024-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2000-02-29T12:00:00+02:00",
        "2026-13-01T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1969-12-31T23:59:59.999999Z",
        "2026-1-01T00:00:00Z",
        "２０２６-11-01T00:00:00Z",
        float("inf"),
    ]


def random_text(rng: random.Random) -> str:
    alphabet = "abcXYZ019.-+@_ é"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def attribute_value(rng: random.Random, candidates: list[Any]) -> Any:
    roll = rng.random()
    if candidates and roll < 0.55:
        return rng.choice(candidates)
    if candidates and roll < 0.7:
        # A list-valued attribute: any element may match (LaunchDarkly's rule).
        return [rng.choice([*candidates, *WRONG_TYPES]) for _ in range(rng.randint(0, 3))]
    if roll < 0.85:
        return rng.choice(WRONG_TYPES)
    return random_text(rng) if rng.random() < 0.5 else rng.randint(-(10**6), 10**6)


def set_path(context: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = context
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def contexts(payload: Mapping[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    attributes, keys, _ = collect(payload)
    generated = []
    for i in range(count):
        context: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.4 and keys:
            context["key"] = rng.choice(keys)
        elif roll < 0.9:
            context["key"] = f"user-{rng.randint(0, 10**6)}"
        elif roll < 0.95:
            context["key"] = ""
        for path, candidates in attributes.items():
            if rng.random() < 0.75:
                set_path(context, path, attribute_value(rng, candidates))
        if i % 17 == 0 and attributes:
            # A nested attribute's parent that is not an object.
            path = rng.choice(list(attributes))
            head = path.split(".")[0]
            context[head] = rng.choice(["plain", ["a", "b"], 7, None])
        generated.append(context)
    return generated


def instants_for(scheduled: list[float]) -> list[float]:
    times = {BASE_TIME}
    for at in scheduled:
        times |= {at - 1, at, at + 1, at + 86_400 * 30}
    return sorted(times)


# ---------------------------------------------------------------------------
# The two evaluators.


class Flagd:
    """FlagdCore loaded with one export, evaluating at a chosen instant."""

    def __init__(self, document: dict[str, Any], types: Mapping[str, str]) -> None:
        self.core = FlagdCore()
        self.core.set_flags(json.loads(json.dumps(document)))
        self.resolvers = {
            key: {
                "boolean": self.core.resolve_boolean_value,
                "string": self.core.resolve_string_value,
                "number": self.core.resolve_float_value,
                "json": self.core.resolve_object_value,
            }[flag_type]
            for key, flag_type in types.items()
        }

    def evaluate(self, key: str, context: Mapping[str, Any]) -> tuple[Any, Any, str]:
        attributes = {k: v for k, v in context.items() if k != "key"}
        evaluation_context = EvaluationContext(context.get("key"), attributes)
        try:
            result = self.resolvers[key](key, None, evaluation_context)
        except OpenFeatureError as error:
            return None, None, f"ERROR {type(error).__name__}: {error}"
        return result.variant, result.value, str(result.reason)


def differential(
    name: str,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    *,
    segments: str = "inline",
) -> Counter[str]:
    """Evaluate ``count`` generated contexts per instant with both evaluators; fail on
    any difference. Returns counts of evaluations and of reason pairs."""
    differences = find_differences(name, payload, monkeypatch, count, segments=segments)
    assert not differences, "\n".join(map(repr, differences[:10]))
    return differences.tally


class Differences(list[tuple[Any, ...]]):
    tally: Counter[str]


def find_differences(
    name: str,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    *,
    segments: str = "inline",
) -> Differences:
    export = export_flagd(payload, segments=segments, skip_unsupported=True)
    unexpected = [r for r in export.refused if not any(m in r.reason for m in ACCEPTED_REFUSALS)]
    assert not unexpected, unexpected
    flags = sorted(export.document["flags"])
    snapshot = Snapshot.from_payload(payload)
    flagd = Flagd(export.document, {k: payload["flags"][k]["type"] for k in flags})
    _, _, scheduled = collect(payload)
    tally: Counter[str] = Counter()
    differences = Differences()
    differences.tally = tally
    for at in instants_for(scheduled):
        monkeypatch.setattr(TARGETING_MODULE, "time", FixedClock(at))
        for context in contexts(payload, count, seed=int(at) ^ len(name)):
            for key in flags:
                ours = snapshot.evaluate(key, context, at=at)
                variant, value, reason = flagd.evaluate(key, context)
                tally["evaluations"] += 1
                tally[f"{ours.reason}->{reason}"] += 1
                same_value = value == ours.value and type(value) is type(ours.value)
                if payload["flags"][key]["type"] == "number":
                    same_value = value == ours.value  # flagd's float resolver
                if (
                    variant != ours.variation
                    or not same_value
                    or reason not in REASONS.get(ours.reason, set())
                ):
                    differences.append((name, key, at, context, ours, variant, value, reason))
    return differences


# (payload, contexts per instant): sized so the file runs in a few seconds while
# evaluating over 10,000 (flag, context, instant) triples.
DIFFERENTIAL_CASES = [
    ("example:staging", 600),
    ("example:production", 300),
    ("conformance:lists", 300),
    ("conformance:operators", 600),
    ("conformance:progressions", 300),
    ("conformance:segments", 600),
    ("conformance:splits", 1000),
    ("conformance:targeting", 400),
]


@pytest.mark.parametrize(("name", "count"), DIFFERENTIAL_CASES)
def test_engine_and_flagd_serve_the_same_variations(
    name: str, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = dict(payloads())[name]
    tally = differential(name, payload, monkeypatch, count)
    assert tally["evaluations"] >= count


def test_at_least_ten_thousand_evaluations_in_total() -> None:
    """Every payload is covered, and the cases together evaluate over 10,000
    (flag, context, instant) triples (recomputed here without evaluating)."""
    counts = dict(DIFFERENTIAL_CASES)
    total = 0
    for name, payload in payloads():
        export = export_flagd(payload, skip_unsupported=True)
        _, _, scheduled = collect(payload)
        total += counts[name] * len(instants_for(scheduled)) * len(export.document["flags"])
    assert total >= 10_000, total


@pytest.mark.parametrize("path", CONFORMANCE, ids=lambda p: p.stem)
def test_conformance_cases_through_flagd(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each language-neutral conformance case, evaluated by flagd on the export, gives
    the expected variation and value."""
    vectors = json.loads(path.read_text())
    export = export_flagd(vectors["snapshot"], skip_unsupported=True)
    exported = export.document["flags"]
    types = {k: vectors["snapshot"]["flags"][k]["type"] for k in exported}
    flagd = Flagd(export.document, types)
    checked = 0
    for case in vectors["cases"]:
        if case["flag"] not in exported or case["expect"]["reason"] == "ERROR":
            continue  # unknown flags and invalid contexts are the engine's API, not flags
        at = parse_timestamp(case["at"]) if case.get("at") else BASE_TIME
        monkeypatch.setattr(TARGETING_MODULE, "time", FixedClock(at or BASE_TIME))
        variant, value, reason = flagd.evaluate(case["flag"], case["context"])
        expect = case["expect"]
        assert (variant, value) == (expect["variation"], expect["value"]), (case, reason)
        assert reason in REASONS[expect["reason"]], (case, reason)
        checked += 1
    assert checked >= 0.9 * len(vectors["cases"]) - 20


# ---------------------------------------------------------------------------
# Constructs the example and the vectors do not exercise.


def flag(
    variations: dict[str, Any],
    *,
    rules: list[dict[str, Any]] | None = None,
    default: dict[str, Any] | None = None,
    off: str | None = None,
    enabled: bool = True,
    prerequisites: list[dict[str, str]] | None = None,
    targets: list[dict[str, Any]] | None = None,
    flag_type: str = "string",
) -> dict[str, Any]:
    first = next(iter(variations))
    return {
        "type": flag_type,
        "kind": "release",
        "variations": variations,
        "off_variation": off or first,
        "enabled": enabled,
        "prerequisites": prerequisites or [],
        "targets": targets or [],
        "rules": rules or [],
        "default": default or {"variation": first},
    }


def rule(name: str, condition: dict[str, Any], serve: str = "yes") -> dict[str, Any]:
    return {"name": name, "condition": condition, "serve": {"variation": serve}}


def clause(attribute: str, op: str, *values: Any) -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "values": list(values)}


YES_NO = {"no": "no", "yes": "yes"}


def extras_payload() -> dict[str, Any]:
    """Constructs beyond the example repository and the conformance vectors."""
    flags = {
        "contains-mixed": flag(
            YES_NO, rules=[rule("c", clause("tags", "contains", "beta", 3, True))]
        ),
        "literal-regex": flag(
            YES_NO,
            rules=[
                rule("r1", clause("email", "matches", "^qa-", r"@acme\.com$", "^exact$")),
                rule("r2", clause("path", "matches", "admin|root", "^/a\\.b$")),
            ],
        ),
        "nested-index-paths": flag(
            YES_NO,
            rules=[
                rule("length", clause("profile.length", "gte", 2)),
                rule("index", clause("profile.tags.0", "eq", "x")),
                rule("exists", clause("profile.name", "exists")),
            ],
        ),
        "neq-mixed": flag(YES_NO, rules=[rule("n", clause("tier", "not_in", "gold", 2, False))]),
        "float-bounds": flag(
            YES_NO,
            rules=[
                rule("lt", clause("score", "lt", 0.1, -2.5)),
                rule("gte", clause("score", "gte", 10, 1e6)),
            ],
        ),
        "fractional-time": flag(
            YES_NO,
            rules=[
                rule("after", clause("seen_at", "after", "2026-06-01T00:00:00.25Z")),
                rule("before", clause("seen_at", "before", "2025-01-01T00:00:00+05:30")),
            ],
        ),
        "semver-eq": flag(
            YES_NO, rules=[rule("eq", clause("version", "semver_eq", "1.2.3", "2.0.0-rc.1"))]
        ),
        "numbers": flag(
            {"low": 0.5, "mid": 2, "high": 1e9},
            flag_type="number",
            rules=[rule("mid", clause("score", "gt", 1), "mid")],
            default={
                "split": {
                    "bucket_by": "org_id",
                    "seed": "numbers-2026",
                    "weights": [
                        {"variation": "low", "weight": 0},
                        {"variation": "high", "weight": 33333},
                        {"variation": "mid", "weight": 66667},
                    ],
                }
            },
        ),
        "single-share-split": flag(
            YES_NO,
            default={
                "split": {
                    "bucket_by": "org_id",
                    "seed": "s",
                    "weights": [
                        {"variation": "no", "weight": 0},
                        {"variation": "yes", "weight": 100000},
                    ],
                }
            },
        ),
        "disabled": flag(YES_NO, enabled=False, off="no", rules=[rule("r", clause("x", "exists"))]),
        "needs-disabled": flag(
            YES_NO,
            prerequisites=[{"flag": "disabled", "variation": "no"}],
            default={"variation": "yes"},
        ),
        "chain-a": flag(
            YES_NO,
            prerequisites=[{"flag": "chain-b", "variation": "yes"}],
            targets=[{"variation": "yes", "keys": ["k-1", "k-2"]}],
            rules=[rule("beta", {"segment": "beta"})],
            default={"variation": "no"},
        ),
        "chain-b": flag(
            YES_NO,
            prerequisites=[{"flag": "chain-c", "variation": "yes"}],
            default={
                "split": {
                    "bucket_by": "key",
                    "seed": "chain-b",
                    "weights": [
                        {"variation": "yes", "weight": 70000},
                        {"variation": "no", "weight": 30000},
                    ],
                }
            },
        ),
        "chain-c": flag(
            YES_NO,
            rules=[rule("not staff", {"not": {"segment": "staff"}})],
            default={"variation": "no"},
        ),
        "unscheduled-start": flag(
            YES_NO,
            default={
                "progression": {
                    "variation": "yes",
                    "baseline": "no",
                    "bucket_by": "org_id",
                    "seed": "unscheduled-start",
                    "current": None,
                    "stages": [
                        {
                            "name": "staff",
                            "segments": ["staff"],
                            "weight": 0,
                            "at": "2027-01-10T00:00:00Z",
                            "bake": None,
                        },
                        {
                            "name": "late",
                            "segments": [],
                            "weight": 50000,
                            "at": "2027-01-05T00:00:00Z",
                            "bake": None,
                        },
                        {
                            "name": "all",
                            "segments": ["beta"],
                            "weight": 100000,
                            "at": "2027-02-01T12:30:00Z",
                            "bake": None,
                        },
                    ],
                }
            },
        ),
    }
    segments = {
        "staff": {
            "include": ["k-1"],
            "exclude": ["k-9"],
            "rules": [clause("email", "ends_with", "@acme.com")],
        },
        "beta": {
            "include": ["k-3"],
            "exclude": [],
            "rules": [{"segment": "staff"}, clause("beta", "eq", True)],
        },
    }
    return {
        "format": "flagstone.snapshot/1",
        "project": "extras",
        "environment": "test",
        "version": 3,
        "published_at": None,
        "expires": None,
        "source": {"commit": None, "ref": None},
        "digest": None,
        "flags": flags,
        "segments": segments,
    }


def test_extra_constructs_serve_the_same_variations(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = extras_payload()
    export = export_flagd(payload)
    assert sorted(export.document["flags"]) == sorted(payload["flags"])
    # 13 instants (around three scheduled stages) x 70 contexts x 15 flags.
    tally = differential("extras", payload, monkeypatch, 70)
    assert tally["evaluations"] >= 10_000


@pytest.mark.parametrize(
    "name", ["example:production", "conformance:segments", "conformance:progressions"]
)
def test_evaluators_mode_serves_the_same_variations(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = dict(payloads())[name]
    document = export_flagd(payload, segments="evaluators", skip_unsupported=True).document
    assert document.get("$evaluators"), "segments should be shared evaluators"
    assert '"$ref"' in json.dumps(document["flags"])
    differential(name, payload, monkeypatch, 100, segments="evaluators")


# ---------------------------------------------------------------------------
# The guards are what make the export exact: without them flagd differs.


def served_by_both(payload: dict[str, Any], key: str, context: dict[str, Any]) -> tuple[Any, Any]:
    """(engine's variation, flagd's variant) for one context, now."""
    export = export_flagd(payload, skip_unsupported=True)
    flagd = Flagd(export.document, {key: payload["flags"][key]["type"]})
    return Snapshot.from_payload(payload).evaluate(key, context).variation, flagd.evaluate(
        key, context
    )[0]


@pytest.mark.parametrize(
    ("flag_key", "context"),
    [
        ("op-lt", {"key": "u", "age": True}),  # true < 18 in JSONLogic
        ("op-eq-bool", {"key": "u", "beta": 1}),  # 1 == true
        ("op-gte", {"key": "u", "score": "1000"}),  # "1000" >= 100 in JSONLogic
    ],
)
def test_without_the_type_guards_flagd_differs(
    flag_key: str, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import flagstone.flagd_export.clauses as module

    payload = dict(payloads())["conformance:operators"]
    ours, theirs = served_by_both(payload, flag_key, context)
    assert ours == theirs
    monkeypatch.setitem(module.KIND_TESTS, "number", lambda value: True)
    monkeypatch.setitem(module.KIND_TESTS, "boolean", lambda value: True)
    monkeypatch.setattr(module, "is_number", lambda value: True)
    ours, theirs = served_by_both(payload, flag_key, context)
    assert ours != theirs


def test_without_the_semver_guard_flagd_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    import flagstone.flagd_export.clauses as module

    payload = dict(payloads())["example:production"]
    # "4.9" is no version for Flagstone, so staff get the rollout; flagd's sem_ver pads
    # it to 4.9.0 < 5.0.0, which the "old android app" rule serves off.
    padded = {"key": "u-5", "email": "a@acme.com", "platform": "android", "app_version": "4.9"}
    assert served_by_both(payload, "new-checkout", padded) == ("on", "on")
    monkeypatch.setattr(module, "semver_core_has_two_dots", lambda path: True)
    assert served_by_both(payload, "new-checkout", padded) == ("on", "off")
