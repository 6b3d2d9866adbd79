"""Why an evaluation came out as it did, in one line: the "why" of ``flagstone eval``.

Reads the snapshot's flag spec next to the ``Details`` the engine returned; the engine
itself stays a hot path that never builds text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flagstone.engine import (
    DISABLED,
    ERROR,
    PREREQUISITE_FAILED,
    TARGETING_MATCH,
    Details,
    Snapshot,
)


def _percent_text(weight: int) -> str:
    return f"{weight / 1000:g}%"


def explain(
    snapshot: Snapshot,
    flag_key: str,
    context: Mapping[str, Any],
    details: Details,
    *,
    at: float | None = None,
) -> str:
    """One line saying why ``details`` came out for ``context``: which target, rule,
    prerequisite or stage decided, and for percentages the context's bucket."""
    if details.reason == ERROR:
        return f"error {details.error_code}: {details.error_message}"
    spec = snapshot.flags[flag_key]
    if details.reason == DISABLED:
        return f"the flag is disabled in {snapshot.environment or 'this environment'}; serving the off variation"
    if details.reason == PREREQUISITE_FAILED:
        required = next(
            (
                p["variation"]
                for p in spec.get("prerequisites", [])
                if p.get("flag") == details.rule
            ),
            "?",
        )
        served = snapshot.evaluate(str(details.rule), context, at=at)
        return (
            f"prerequisite {details.rule} serves {served.variation!r} ({served.reason}), "
            f"not {required!r}; serving the off variation"
        )
    if details.reason == TARGETING_MATCH and details.rule is None:
        return f"key {context.get('key')!r} is individually targeted for {details.variation!r}"
    # Rule and stage names may coincide: whether a rule decided is asked of the rules.
    decided_by_rule = snapshot.matching_rule(flag_key, context) == details.rule
    rules = spec.get("rules", []) if decided_by_rule else []
    rule = next((r for r in rules if r.get("name") == details.rule), None)
    default = spec.get("default", {})
    progression = default.get("progression") if details.rule is not None and rule is None else None
    if rule is not None:
        where = f"rule {details.rule!r} matched"
        split = rule["serve"].get("split")
        return where if split is None else f"{where}; {_split_text(split, details)}"
    if progression is not None:
        return _progression_text(progression, details)
    split = default.get("split")
    if split is not None:
        return f"no target or rule matched; default {_split_text(split, details)}"
    return f"no target or rule matched; serving the default variation {details.variation!r}"


def _bucket_text(spec: Mapping[str, Any], details: Details) -> str:
    source = f"seed {spec.get('seed')!r}, by {spec.get('bucket_by', 'key')!r}"
    if details.bucket is None:
        return (
            f"the context has no bucketable {spec.get('bucket_by', 'key')!r} (a string or integer)"
        )
    return f"bucket {details.bucket} of 100000 ({source})"


def _split_text(split: Mapping[str, Any], details: Details) -> str:
    weights = ", ".join(f"{w['variation']} {_percent_text(w['weight'])}" for w in split["weights"])
    outcome = _bucket_text(split, details)
    if details.bucket is None:
        outcome += "; it gets the first variation"
    return f"split [{weights}]: {outcome} → {details.variation!r}"


def _progression_text(progression: Mapping[str, Any], details: Details) -> str:
    stage = next(s for s in progression["stages"] if s["name"] == details.rule)
    stage_text = f"progression stage {stage['name']!r} ({_percent_text(stage['weight'])})"
    if details.reason == TARGETING_MATCH:
        segments = ", ".join(stage["segments"])
        return f"in a segment of progression stage {stage['name']!r} ({segments}); every stage up to the active one counts"
    if details.bucket is None:
        return f"{stage_text}: {_bucket_text(progression, details)}; it gets the baseline {details.variation!r}"
    side = "below" if details.variation == progression["variation"] else "not below"
    return f"{stage_text}: {_bucket_text(progression, details)} is {side} {stage['weight']} → {details.variation!r}"
