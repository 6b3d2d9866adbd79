"""``changed_flags`` (what ``on_change`` and ``flags_changed`` report) is sound: a flag it
does not report evaluates exactly as before, for every context tried — whether the
change was to the flag itself, a segment it uses (directly or through another segment)
or a prerequisite."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.engine import Snapshot
from flagstone.sdk.changes import changed_flags
from sdk_support import make_payload

USERS = [f"u{i}" for i in range(6)]
CONTEXTS = [{"key": user} for user in USERS] + [{"key": "x", "tier": t} for t in ("a", "b")]
FLAG_KEYS = [f"f{i}" for i in range(5)]
SEGMENT_KEYS = ["s0", "s1", "s2"]


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    segments: dict[str, Any] = {}
    for index, key in enumerate(SEGMENT_KEYS):
        rules: list[Any] = []
        if draw(st.booleans()):
            rules.append({"attribute": "tier", "op": "eq", "values": [draw(st.sampled_from("ab"))]})
        if index > 0 and draw(st.booleans()):  # segments may use earlier segments
            rules.append({"segment": SEGMENT_KEYS[draw(st.integers(0, index - 1))]})
        segments[key] = {
            "include": draw(st.lists(st.sampled_from(USERS), unique=True, max_size=3)),
            "exclude": draw(st.lists(st.sampled_from(USERS), unique=True, max_size=1)),
            "rules": rules,
        }
    flags: dict[str, Any] = {}
    for index, key in enumerate(FLAG_KEYS):
        if not draw(st.booleans()) and index > 0:
            continue  # flags come and go
        rules = []
        if draw(st.booleans()):
            rules.append(
                {
                    "name": "members",
                    "condition": {"segment": draw(st.sampled_from(SEGMENT_KEYS))},
                    "serve": {"variation": "on"},
                }
            )
        earlier = [k for k in FLAG_KEYS[:index] if k in flags]
        prerequisites = (
            [{"flag": draw(st.sampled_from(earlier)), "variation": "on"}]
            if earlier and draw(st.booleans())
            else []
        )
        on_keys = draw(st.lists(st.sampled_from(USERS), unique=True, max_size=2))
        flags[key] = {
            "type": "boolean",
            "kind": "release",
            "variations": {"on": True, "off": False},
            "off_variation": "off",
            "enabled": draw(st.booleans()),
            "prerequisites": prerequisites,
            "targets": [{"variation": "on", "keys": on_keys}] if on_keys else [],
            "rules": rules,
            "default": {"variation": draw(st.sampled_from(["on", "off"]))},
        }
    return make_payload(1, flags, segments)


def answers(snapshot: Snapshot, key: str) -> list[tuple[Any, str | None]]:
    return [
        (d.value, d.variation)
        for d in (snapshot.evaluate(key, context, None) for context in CONTEXTS)
    ]


@st.composite
def edited(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with one to three small edits, so most of it stays the same."""
    flags = copy.deepcopy(payload["flags"])
    segments = copy.deepcopy(payload["segments"])
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["include", "tier", "enabled", "default", "targets"]))
        if edit == "include":
            segment = segments[draw(st.sampled_from(SEGMENT_KEYS))]
            segment["include"] = draw(st.lists(st.sampled_from(USERS), unique=True, max_size=3))
        elif edit == "tier":
            segment = segments[draw(st.sampled_from(SEGMENT_KEYS))]
            segment["rules"] = [
                {"attribute": "tier", "op": "eq", "values": [draw(st.sampled_from("ab"))]}
            ] + [rule for rule in segment["rules"] if "segment" in rule]
        else:
            flag = flags[draw(st.sampled_from(sorted(flags)))]
            if edit == "enabled":
                flag["enabled"] = not flag["enabled"]
            elif edit == "default":
                flag["default"] = {"variation": draw(st.sampled_from(["on", "off"]))}
            else:
                keys = draw(st.lists(st.sampled_from(USERS), unique=True, max_size=2))
                flag["targets"] = [{"variation": "on", "keys": keys}] if keys else []
    return make_payload(2, flags, segments)


@st.composite
def snapshot_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    old = draw(snapshots())
    new = draw(st.one_of(edited(old), snapshots()))
    return old, new


@settings(max_examples=60, deadline=None)
@given(pair=snapshot_pairs())
def test_unreported_flags_evaluate_as_before(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair
    before, after = Snapshot.from_payload(old), Snapshot.from_payload(new)
    changed = changed_flags(before.flags, before.segments, after.flags, after.segments)
    assert changed >= (set(before.flags) ^ set(after.flags))
    for key in set(before.flags) & set(after.flags):
        if key not in changed:
            assert answers(before, key) == answers(after, key), key


@settings(max_examples=10, deadline=None)
@given(snapshot=snapshots())
def test_identical_content_changes_nothing(snapshot: dict[str, Any]) -> None:
    parsed = Snapshot.from_payload(snapshot)
    copy = Snapshot.from_payload(make_payload(2, snapshot["flags"], snapshot["segments"]))
    assert changed_flags(parsed.flags, parsed.segments, copy.flags, copy.segments) == frozenset()


def test_changes_reach_flags_through_nested_segments_and_prerequisites() -> None:
    def flag(**fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"type": "boolean", "variations": {"on": True, "off": False}}
        return {**base, **fields}

    segments = {
        "inner": {"include": ["u1"], "exclude": [], "rules": []},
        "outer": {"include": [], "exclude": [], "rules": [{"segment": "inner"}]},
        "unused": {"include": [], "exclude": [], "rules": []},
    }
    flags = {
        "by-rule": flag(rules=[{"name": "r", "condition": {"not": {"segment": "outer"}}}]),
        "by-stage": flag(default={"progression": {"stages": [{"segments": ["outer"]}]}}),
        "needs-rule": flag(prerequisites=[{"flag": "by-rule", "variation": "on"}]),
        "needs-needs": flag(prerequisites=[{"flag": "needs-rule", "variation": "on"}]),
        "unrelated": flag(rules=[{"name": "r", "condition": {"segment": "unused"}}]),
    }
    new_segments = {**segments, "inner": {"include": ["u1", "u2"], "exclude": [], "rules": []}}
    assert changed_flags(flags, segments, flags, new_segments) == {
        "by-rule",
        "by-stage",
        "needs-rule",
        "needs-needs",
    }
