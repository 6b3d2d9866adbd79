"""Reading what release files and segments serve and reference, for the lint rules.

Rules run on validated repositories, but these helpers still tolerate odd shapes
(a rule must never crash on data the schema happens to allow), so every accessor
checks types rather than trusting them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from flagstone.model import Flag, Project, ReleaseConfig
from flagstone.rollout import TOTAL_WEIGHT, Progression, progression_spec, read_progression

Where = tuple[str | int, ...]


def live_flags(project: Project) -> Iterator[Flag]:
    """Flags that are not archived, in key order."""
    for key in sorted(project.flags):
        if not project.flags[key].archived:
            yield project.flags[key]


def live_releases(project: Project) -> Iterator[ReleaseConfig]:
    """Every release file of every live flag (``release.flag_key`` names the flag)."""
    for flag in live_flags(project):
        yield from releases(flag)


def releases(flag: Flag) -> Iterator[ReleaseConfig]:
    """The flag's release files, in environment-name order."""
    yield from (flag.releases[env] for env in sorted(flag.releases))


def progression_of(release: ReleaseConfig) -> dict[str, Any] | None:
    """The raw progression mapping of a release file (see ``flagstone.rollout``)."""
    spec = progression_spec(release.data)
    return dict(spec) if spec is not None else None


def plan_of(release: ReleaseConfig) -> Progression | None:
    """The release file's progression, read by ``flagstone.rollout``."""
    return read_progression(progression_spec(release.data))


def split_of(serve: Any) -> dict[str, Any] | None:
    """The ``{variation: percent}`` mapping of a split SERVE, else None."""
    if isinstance(serve, dict) and isinstance(serve.get("split"), dict):
        split: dict[str, Any] = serve["split"]
        return split
    return None


def serves(release: ReleaseConfig) -> Iterator[tuple[Where, Any]]:
    """Every SERVE of the release file (rules, then a non-progression default)."""
    for index, rule in enumerate(release.rules):
        if isinstance(rule, dict) and "serve" in rule:
            yield ("rules", index, "serve"), rule["serve"]
    if release.default is not None and progression_of(release) is None:
        yield ("default",), release.default


def splits(release: ReleaseConfig) -> Iterator[tuple[Where, dict[str, Any], Any]]:
    """Every split of the release file: its path, ``{variation: percent}``, the SERVE."""
    for where, serve in serves(release):
        split = split_of(serve)
        if split is not None:
            yield where, split, serve


def served_by(serve: Any) -> set[str]:
    """Variation keys a SERVE can hand out (a split's zero-percent entries excluded)."""
    if isinstance(serve, str):
        return {serve}
    split = split_of(serve)
    if split is None:
        return set()
    return {str(variation) for variation, percent in split.items() if _percent(percent) > 0}


def _percent(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def stages(progression: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [stage for stage in progression.get("stages") or [] if isinstance(stage, dict)]


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp or ``YYYY-MM-DD`` date (midnight UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def progression_reaches_everyone(progression: Mapping[str, Any], now: datetime) -> bool:
    """Whether the stage in force at ``now`` gives the variation to 100% (a stage
    without a percent keeps the percent of the stage before it)."""
    plan = read_progression(progression)
    stage = plan.active_stage(now.timestamp()) if plan else None
    return stage is not None and stage.weight >= TOTAL_WEIGHT


def possible_variations(
    project: Project,
    flag: Flag,
    release: ReleaseConfig,
    now: datetime,
    _seen: frozenset[str] = frozenset(),
) -> set[str]:
    """Every variation a context might get from this release file at ``now``."""
    off = flag.off_variation or ""
    if not release.enabled:
        return {off}
    possible: set[str] = set()
    if not prerequisites_always_pass(project, flag, release.environment, now, _seen | {flag.key}):
        possible.add(off)  # a failing prerequisite serves the off variation
    possible.update(variation for variation, keys in release.targets.items() if keys)
    for _, serve in serves(release):
        possible |= served_by(serve)
    progression = progression_of(release)
    if progression is not None:
        possible.add(str(progression.get("variation")))
        if not progression_reaches_everyone(progression, now):
            possible.add(str(progression.get("baseline")))
    elif release.default is None:
        possible.add(off)
    return possible


def prerequisites_always_pass(
    project: Project, flag: Flag, environment: str, now: datetime, seen: frozenset[str]
) -> bool:
    """Whether every prerequisite serves its required variation to everyone in
    ``environment`` (``seen`` guards against cycles, which validation rejects anyway)."""
    for prerequisite in flag.prerequisites:
        if not isinstance(prerequisite, dict):
            return False
        required = project.flags.get(str(prerequisite.get("flag")))
        if required is None or required.archived or required.key in seen:
            return False
        release = required.releases.get(environment)
        if release is None:
            return False
        served = possible_variations(project, required, release, now, seen)
        if served != {str(prerequisite.get("variation"))}:
            return False
    return True


def variations_referenced(flag: Flag, release: ReleaseConfig) -> set[str]:
    """Variation keys the release file names anywhere (targets, serves, progression)."""
    named = set(release.targets)
    for _, serve in serves(release):
        named |= {serve} if isinstance(serve, str) else set(split_of(serve) or {})
    progression = progression_of(release)
    if progression is not None:
        named |= {str(progression.get("variation")), str(progression.get("baseline"))}
    return named


# --- conditions -------------------------------------------------------------------------


def walk_condition(condition: Any, where: Where) -> Iterator[tuple[Where, dict[str, Any]]]:
    """Every node of a condition tree (clauses, segment references, all/any/not)."""
    if not isinstance(condition, dict):
        return
    yield where, condition
    for combinator in ("all", "any"):
        children = condition.get(combinator)
        if isinstance(children, list):
            for index, child in enumerate(children):
                yield from walk_condition(child, (*where, combinator, index))
    if "not" in condition:
        yield from walk_condition(condition["not"], (*where, "not"))


def release_conditions(release: ReleaseConfig) -> Iterator[tuple[Where, dict[str, Any]]]:
    for index, rule in enumerate(release.rules):
        if isinstance(rule, dict):
            yield from walk_condition(rule.get("if"), ("rules", index, "if"))


def segment_references(project: Project) -> Iterator[tuple[str, str]]:
    """``(referrer, segment key)`` for every segment named by a live flag or a segment."""
    for flag in live_flags(project):
        for release in releases(flag):
            for _, node in release_conditions(release):
                if isinstance(node.get("segment"), str):
                    yield flag.key, node["segment"]
            progression = progression_of(release)
            for stage in stages(progression) if progression else []:
                for segment in stage.get("segments") or []:
                    yield flag.key, str(segment)
    for key, segment in project.segments.items():
        for index, rule in enumerate(segment.rules):
            for _, node in walk_condition(rule, ("rules", index)):
                if isinstance(node.get("segment"), str):
                    yield f"segment {key}", node["segment"]


def condition_attributes(project: Project) -> set[str]:
    """Attributes that some condition in the repository reads."""
    attributes: set[str] = set()
    nodes = [
        node
        for flag in live_flags(project)
        for r in releases(flag)
        for _, node in release_conditions(r)
    ]
    for segment in project.segments.values():
        for index, rule in enumerate(segment.rules):
            nodes += [node for _, node in walk_condition(rule, ("rules", index))]
    for node in nodes:
        if isinstance(node.get("attribute"), str):
            attributes.add(node["attribute"])
    return attributes


def segment_is_empty(project: Project, key: str) -> bool:
    """A declared segment with no included keys and no rules: nobody is in it."""
    segment = project.segments.get(key)
    return segment is not None and not segment.include and not segment.rules


def _negation_pairs(conditions: list[Any]) -> bool:
    """Whether the list holds some condition C and also ``{not: C}``."""
    return any(isinstance(c, dict) and "not" in c and c["not"] in conditions for c in conditions)


def never_matches(
    project: Project, condition: Any, *, keyed: bool = True, _seen: frozenset[str] = frozenset()
) -> str | None:
    """Why ``condition`` can match no context, or None if it might match one.

    ``keyed``: every context carries a targeting key (so ``key exists`` always holds).
    """
    if not isinstance(condition, dict):
        return None
    segment = condition.get("segment")
    if isinstance(segment, str) and segment_is_empty(project, segment):
        return f"segment '{segment}' has no members and no rules"
    if condition.get("op") == "in" and condition.get("values") == []:
        return "it tests membership in an empty list"
    if isinstance(condition.get("all"), list):
        if _negation_pairs(condition["all"]):
            return "it requires a condition and its negation"
        found = (never_matches(project, c, keyed=keyed, _seen=_seen) for c in condition["all"])
        return next((reason for reason in found if reason), None)
    if isinstance(condition.get("any"), list):
        reasons = [never_matches(project, c, keyed=keyed, _seen=_seen) for c in condition["any"]]
        if all(reasons):
            return "; ".join(r for r in reasons if r) or "it is an empty `any`"
        return None
    if "not" in condition and always_matches(project, condition["not"], keyed=keyed, _seen=_seen):
        return "it negates a condition that matches every context"
    return None


def always_matches(
    project: Project, condition: Any, *, keyed: bool = True, _seen: frozenset[str] = frozenset()
) -> bool:
    """Whether ``condition`` certainly matches every context."""
    if not isinstance(condition, dict):
        return False
    if keyed and condition.get("attribute") == "key" and condition.get("op") == "exists":
        return True
    segment = condition.get("segment")
    if isinstance(segment, str) and segment in project.segments and segment not in _seen:
        definition = project.segments[segment]
        seen = _seen | {segment}
        return not definition.exclude and any(
            always_matches(project, rule, keyed=keyed, _seen=seen) for rule in definition.rules
        )
    if isinstance(condition.get("all"), list):
        return all(always_matches(project, c, keyed=keyed, _seen=_seen) for c in condition["all"])
    if isinstance(condition.get("any"), list):
        return _negation_pairs(condition["any"]) or any(
            always_matches(project, c, keyed=keyed, _seen=_seen) for c in condition["any"]
        )
    if "not" in condition:
        return never_matches(project, condition["not"], keyed=keyed, _seen=_seen) is not None
    return False
