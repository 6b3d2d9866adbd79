"""``flagstone.rollout``: the one reading of progressions, checked against the engine.

The property test writes random progressions as release files, compiles them with the
real compiler, and evaluates many contexts with the real engine at random times: the
stage the rollout module says is active is the stage the engine names
(``Details.rule``), and the share it says is served is what the engine serves (each
context's variation follows its bucket and the active stage's weight exactly; the
overall share is within sampling tolerance).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagstone.compile import compile_environment
from flagstone.engine import Snapshot
from flagstone.errors import SnapshotFormatError
from flagstone.model import read_project
from flagstone.rollout import (
    Stage,
    compiled_progression,
    progression_spec,
    read_progression,
    release_shares,
    release_timeline,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
SCHEDULE = [T0, T0 + DAY, T0 + 2 * DAY]
PROBES = [T0 - 1, T0, T0 + DAY - 1, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]
KEYS = [f"user-{n}" for n in range(1000)]


def at_text(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def example_progression() -> dict[str, Any]:
    release = read_project(REPO_ROOT).flags["new-checkout"].releases["production"]
    spec = progression_spec(release.data)
    assert spec is not None
    return dict(spec)


def test_the_example_progression_stage_by_stage() -> None:
    plan = read_progression(example_progression())
    assert plan is not None
    assert [(s.name, s.percent, s.reach_segments) for s in plan.stages] == [
        ("staff", 0, ("staff",)),
        ("beta", 1, ("staff", "beta-testers")),
        ("ten", 10, ("staff", "beta-testers")),
        ("half", 50, ("staff", "beta-testers")),
        ("ga", 100, ("staff", "beta-testers")),
    ]
    assert plan.current_stage is not None and plan.current_stage.name == "beta"
    half_at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC).timestamp()
    before, on_time = plan.active_stage(half_at - 1), plan.active_stage(half_at)
    assert before is not None and before.name == "beta"
    assert on_time is not None and (on_time.name, on_time.at_text) == (
        "half",
        "2026-12-03T09:00:00Z",
    )
    assert plan.shares(half_at) == {"off": Decimal(50), "on": Decimal(50)}
    assert [(p.at, p.stage.name if p.stage else None) for p in plan.timeline(T0)] == [
        (T0, "beta"),
        (half_at, "half"),
    ]
    assert plan.stages[2].bake == 86400 and plan.stages[2].bake_text == "24h"


def test_a_stage_without_percent_keeps_the_one_before_it() -> None:
    spec = {
        "variation": "on",
        "baseline": "off",
        "current": "cleanup",
        "stages": [{"name": "ga", "percent": 100}, {"name": "cleanup", "segments": ["staff"]}],
    }
    plan = read_progression(spec)
    assert plan is not None and plan.current_stage is not None
    assert plan.current_stage.percent == 100
    assert plan.shares() == {"off": Decimal(0), "on": Decimal(100)}
    data = {"enabled": True, "default": {"progression": spec}}
    assert release_shares(data, "off") == {"off": Decimal(0), "on": Decimal(100)}


def test_release_shares_of_every_default_kind() -> None:
    assert release_shares(None, "off") == {"off": 100}
    assert release_shares({"enabled": False, "default": "on"}, "off") == {"off": 100}
    assert release_shares({"enabled": True, "default": "on"}, "off") == {"on": 100}
    assert release_shares({"enabled": True}, "off") == {"off": 100}
    split = {"enabled": True, "default": {"split": {"a": 12.5, "b": 87.5}}}
    assert release_shares(split, "a") == {"a": Decimal("12.5"), "b": Decimal("87.5")}
    assert [p.shares for p in release_timeline(split, "a", T0)] == [release_shares(split, "a")]


def test_odd_shapes_are_read_without_raising() -> None:
    assert read_progression("nope") is None
    plan = read_progression({"stages": ["x", {"name": "y", "percent": "many"}], "current": "y"})
    assert plan is not None
    assert [(s.name, s.index, s.weight) for s in plan.stages] == [("x", 0, 0), ("y", 1, 0)]
    assert plan.current == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"stages": []}, "snapshot p.stages: a progression needs at least one stage"),
        ({"stages": [{"name": "a", "weight": 100001}]}, "snapshot p.stages[0].weight: expected an integer in [0, 100000], got 100001"),
        ({"stages": [{"name": "a", "at": "soon"}]}, "snapshot p.stages[0].at: 'soon' is not an RFC 3339 timestamp"),
        ({"stages": [{"name": "a"}], "current": "b"}, "snapshot p.current: unknown stage 'b'"),
        ({"stages": [{"name": 3}]}, "snapshot p.stages[0].name: expected a string, got number"),
    ],
)  # fmt: skip
def test_the_snapshot_form_is_checked(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SnapshotFormatError) as caught:
        compiled_progression(spec, "p")
    assert str(caught.value) == message


# --- the property: rollout and the engine agree --------------------------------------------

stage_strategy = st.fixed_dictionaries(
    {},
    optional={
        "percent": st.sampled_from([0, 1, 5, 12.5, 25, 50, 99.999, 100]),
        "segments": st.just(["staff"]),
        "at": st.sampled_from(SCHEDULE),
        "bake": st.sampled_from(["1h", "24h"]),
    },
)


@st.composite
def progressions(draw: st.DrawFn) -> dict[str, Any]:
    stages = draw(st.lists(stage_strategy, min_size=1, max_size=5))
    named = [{"name": f"s{i}", **stage} for i, stage in enumerate(stages)]
    for stage in named:
        if "at" in stage:
            stage["at"] = at_text(stage["at"])
    current = draw(st.none() | st.sampled_from([s["name"] for s in named]))
    spec: dict[str, Any] = {"variation": "on", "baseline": "off", "stages": named}
    if current is not None:
        spec["current"] = current
    return spec


def compiled_snapshot(spec: dict[str, Any]) -> dict[str, Any]:
    """Compile ``spec`` as the production default of flag ``f`` with the real compiler."""
    with tempfile.TemporaryDirectory(prefix="flagstone-rollout-") as scratch:
        root = Path(scratch)
        (root / "flags" / "f").mkdir(parents=True)
        (root / "segments").mkdir()
        (root / "flagstone.yaml").write_text(
            "project: p\nenvironments: [production]\nteams: {eng: {github: '@a/eng'}}\nadmins: eng\n"
        )
        (root / "segments" / "staff.yaml").write_text(
            "name: Staff\nowner: eng\ninclude: [staff-1]\n"
        )
        (root / "flags" / "f" / "flag.yaml").write_text(
            "name: F\nowner: eng\nvariations: {on: true, off: false}\noff_variation: off\n"
        )
        release = {"enabled": True, "default": {"progression": spec}}
        (root / "flags" / "f" / "production.yaml").write_text(json.dumps(release))
        return compile_environment(read_project(root), "production")


def shape(stage: Stage | None) -> tuple[str, int, tuple[str, ...]] | None:
    return (stage.name, stage.weight, stage.reach_segments) if stage else None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=progressions())
def test_rollout_names_the_stage_and_share_the_engine_serves(spec: dict[str, Any]) -> None:
    payload = compiled_snapshot(spec)
    snapshot = Snapshot.from_payload(payload)
    raw = read_progression(spec)
    compiled = compiled_progression(payload["flags"]["f"]["default"]["progression"], "p")
    assert raw is not None
    for when in PROBES:
        stage = raw.active_stage(when)
        # Both forms read the same: the raw YAML and what the compiler wrote.
        assert shape(stage) == shape(compiled.active_stage(when))
        assert raw.shares(when) == compiled.shares(when)
        served_on = 0
        for key in KEYS:
            details = snapshot.evaluate("f", {"key": key}, False, at=when)
            assert details.rule == (stage.name if stage else None)
            if stage is None or stage.weight == 0:
                assert (details.variation, details.bucket) == ("off", None)
                continue
            assert details.bucket is not None
            assert details.variation == ("on" if details.bucket < stage.weight else "off")
            served_on += details.variation == "on"
        share = Decimal(100 * served_on) / len(KEYS)
        assert abs(share - raw.shares(when).get("on", Decimal(0))) < 5
        # A member of a segment of any stage up to the active one gets the variation.
        member = snapshot.evaluate("f", {"key": "staff-1"}, False, at=when)
        if stage is not None and "staff" in stage.reach_segments:
            assert (member.variation, member.reason) == ("on", "TARGETING_MATCH")
        else:
            assert member.reason != "TARGETING_MATCH"
