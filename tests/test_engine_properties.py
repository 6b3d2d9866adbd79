"""Property tests of the engine (hypothesis, bounded in examples and data size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagstone.engine import (
    DEFAULT,
    DISABLED,
    ERROR,
    PREREQUISITE_FAILED,
    SPLIT,
    TARGETING_MATCH,
    Snapshot,
)
from test_engine import flag_spec, snapshot_payload

CONFORMANCE = Path(__file__).parent / "conformance"
REASONS = {DEFAULT, TARGETING_MATCH, SPLIT, DISABLED, PREREQUISITE_FAILED, ERROR}


def _rollout(weight: int, seed: str) -> dict[str, Any]:
    stage = {"name": "s", "segments": [], "weight": weight, "at": None, "bake": None}
    progression = {
        "variation": "on",
        "baseline": "off",
        "bucket_by": "key",
        "seed": seed,
        "current": "s",
        "stages": [stage],
    }
    return {"progression": progression}


def _split(seed: str, weights: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "split": {
            "bucket_by": "key",
            "seed": seed,
            "weights": [{"variation": v, "weight": w} for v, w in weights],
        }
    }


keys = st.text(min_size=0, max_size=30)
weights = st.integers(min_value=0, max_value=100_000)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.text(max_size=20),
    low=weights,
    high=weights,
    sample=st.lists(keys, min_size=1, max_size=200),
)
def test_raising_a_percentage_never_removes_a_key(
    seed: str, low: int, high: int, sample: list[str]
) -> None:
    low, high = min(low, high), max(low, high)
    snapshot = Snapshot.from_payload(
        snapshot_payload(
            {
                "before": flag_spec(default=_rollout(low, seed)),
                "after": flag_spec(default=_rollout(high, seed)),
            }
        )
    )
    for key in sample:
        if snapshot.evaluate("before", {"key": key}).variation == "on":
            assert snapshot.evaluate("after", {"key": key}).variation == "on"


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.text(min_size=1, max_size=16))
def test_a_25_percent_rollout_reaches_25_percent_of_100000_keys(seed: str) -> None:
    snapshot = Snapshot.from_payload(
        snapshot_payload({"f": flag_spec(default=_rollout(25_000, seed))})
    )
    evaluate = snapshot.evaluate
    reached = sum(evaluate("f", {"key": f"user-{i}"}).value for i in range(100_000))
    assert 24_500 <= reached <= 25_500


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.text(min_size=1, max_size=12), second=st.text(min_size=1, max_size=12))
def test_two_50_50_splits_with_different_seeds_are_independent(first: str, second: str) -> None:
    if first == second:
        second += "-2"
    halves = [("control", 50_000), ("treatment", 50_000)]
    variations = {"control": "control", "treatment": "treatment"}
    flags = {
        name: flag_spec(
            default=_split(seed, halves),
            type="string",
            variations=variations,
            off_variation="control",
        )
        for name, seed in (("one", first), ("two", second))
    }
    snapshot = Snapshot.from_payload(snapshot_payload(flags))
    cells: dict[tuple[str | None, str | None], int] = {}
    total = 40_000
    for i in range(total):
        context = {"key": f"user-{i}"}
        pair = (
            snapshot.evaluate("one", context).variation,
            snapshot.evaluate("two", context).variation,
        )
        cells[pair] = cells.get(pair, 0) + 1
    # Independence: each of the four combinations holds a quarter (±1 point ≈ 4.6 σ).
    assert len(cells) == 4
    for count in cells.values():
        assert abs(count / total - 0.25) < 0.01


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
attribute_names = st.sampled_from(
    [
        "key",
        "tier",
        "email",
        "app_version",
        "age",
        "score",
        "signup",
        "country",
        "groups",
        "org",
        "account",
        "plan",
    ]
)
contexts = st.dictionaries(attribute_names | st.text(max_size=8), json_values, max_size=8)


def _all_snapshots() -> list[Snapshot]:
    return [
        Snapshot.from_payload(json.loads(path.read_text(encoding="utf-8"))["snapshot"])
        for path in sorted(CONFORMANCE.glob("*.json"))
    ]


SNAPSHOTS = _all_snapshots()


@settings(max_examples=150, deadline=None)
@given(
    context=contexts | json_values, default=json_values, at=st.none() | st.floats(allow_nan=True)
)
def test_evaluation_never_raises_on_arbitrary_json(
    context: Any, default: Any, at: float | None
) -> None:
    for snapshot in SNAPSHOTS:
        for flag_key in snapshot.flags:
            details = snapshot.evaluate(flag_key, context, default, at=at)
            assert details.reason in REASONS
            if details.reason == ERROR:
                assert details.value is default
                # GENERAL means an exception was caught inside the engine: a bug.
                assert details.error_code in {
                    "FLAG_NOT_FOUND",
                    "TYPE_MISMATCH",
                    "INVALID_CONTEXT",
                }, details
            else:
                assert details.variation in snapshot.flags[flag_key]["variations"]
