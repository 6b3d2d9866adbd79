"""Progressions: the one home of rollout stages and what they serve over time.

A progression (docs/design.md §4) rolls ``variation`` out over ``baseline`` in
cumulative stages. This module reads one from either form it is written in, and
answers every question the toolchain and the engine ask of it:

* ``read_progression(spec)`` — the raw YAML form of a release file (``percent`` as a
  number, ``at`` and ``bake`` as text). Tolerant: it never raises, so diff and
  guardrails can read repositories that do not validate; what the schema would reject
  is read as absent.
* ``compiled_progression(spec, where)`` — the snapshot form (``weight`` in thousandths,
  ``at`` normalized, ``bake`` in seconds). Strict: a malformed one raises
  ``SnapshotFormatError`` naming ``where``; the engine builds its evaluators on it.
* ``progression_spec(holder)`` — the progression mapping out of a release file's data or
  a compiled flag (both keep it at ``default.progression``), else None.

Both forms give the same ``Progression`` for the same stages:

* a stage without ``percent`` keeps the percent of the stage before it (the first one
  starts at 0), and its segments add to the segments of every stage before it
  (``Stage.reach_segments``): stages are cumulative rings;
* the **active stage** at time T is the later of ``current`` and the last stage whose
  ``at`` is at or before T (``Progression.active_index``);
* the **share served** at T (``Progression.shares``) is, of the contexts that reach the
  default and are in none of the active stage's segments, the percent that get
  ``variation`` (the active stage's percent) and ``baseline`` (the rest); segment
  members are named, not counted, because a segment's size is not known here;
* the **exposure timeline** (``Progression.timeline``) lists, from a given time on,
  every point at which the active stage changes because a scheduled ``at`` comes due.

``release_shares`` and ``release_timeline`` extend the share and the timeline to a whole
release file's default (disabled, a variation, a split or a progression).

No toolchain imports (standard library, errors, operators, timestamps): the engine, and
so the SDK, imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from flagstone.errors import SnapshotFormatError
from flagstone.operators import json_kind
from flagstone.records import Record, set_field
from flagstone.timestamps import duration_seconds, parse_timestamp

TOTAL_WEIGHT = 100_000  # a percent in thousandths: 100% == 100000 buckets
HUNDRED = Decimal(100)


class Stage(Record):
    """One stage, with what it reaches counting every stage before it."""

    name: str
    index: int  # position in the progression's stage list
    weight: int  # thousandths of a percent of bucketed contexts that get the variation
    segments: tuple[str, ...]  # this stage's own segments
    reach_segments: tuple[str, ...]  # segments of this stage and every stage before it
    at: float | None  # when a schedule makes it active (epoch seconds)
    at_text: str | None  # ``at`` as written
    bake: int | None  # its own bake, in seconds
    bake_text: str | None  # ``bake`` as written (``24h``)

    _fields = __slots__ = (
        "name",
        "index",
        "weight",
        "segments",
        "reach_segments",
        "at",
        "at_text",
        "bake",
        "bake_text",
    )

    def __init__(
        self,
        name: str,
        index: int,
        weight: int,
        segments: tuple[str, ...],
        reach_segments: tuple[str, ...],
        at: float | None,
        at_text: str | None,
        bake: int | None,
        bake_text: str | None = None,
    ) -> None:
        set_field(self, "name", name)
        set_field(self, "index", index)
        set_field(self, "weight", weight)
        set_field(self, "segments", segments)
        set_field(self, "reach_segments", reach_segments)
        set_field(self, "at", at)
        set_field(self, "at_text", at_text)
        set_field(self, "bake", bake)
        set_field(self, "bake_text", bake_text)

    @property
    def percent(self) -> Decimal:
        return Decimal(self.weight) / 1000

    def label(self) -> str:
        """``beta (1% + staff, beta-testers)``."""
        parts = [f"{percent_text(self.percent)}%"]
        if self.reach_segments:
            parts.append(", ".join(self.reach_segments))
        return f"{self.name} ({' + '.join(parts)})"


class StageChange(Record):
    """A point of an exposure timeline: from ``at`` on, ``stage`` is active (None: no
    stage yet) and the default serves ``shares`` (variation -> percent)."""

    at: float
    stage: Stage | None
    shares: Mapping[str, Decimal]

    _fields = __slots__ = ("at", "stage", "shares")

    def __init__(self, at: float, stage: Stage | None, shares: Mapping[str, Decimal]) -> None:
        set_field(self, "at", at)
        set_field(self, "stage", stage)
        set_field(self, "shares", shares)


class Progression(Record):
    variation: str
    baseline: str
    current: int  # index of the ``current`` stage; -1 when unset or unknown
    stages: tuple[Stage, ...]
    bucket_by: str | None
    seed: str | None

    _fields = ("variation", "baseline", "current", "stages", "bucket_by", "seed")
    __slots__ = (*_fields, "schedule")

    def __init__(
        self,
        variation: str,
        baseline: str,
        current: int,
        stages: tuple[Stage, ...],
        bucket_by: str | None = None,
        seed: str | None = None,
    ) -> None:
        set_field(self, "variation", variation)
        set_field(self, "baseline", baseline)
        set_field(self, "current", current)
        set_field(self, "stages", stages)
        set_field(self, "bucket_by", bucket_by)
        set_field(self, "seed", seed)
        self.__post_init__()

    @property
    def current_stage(self) -> Stage | None:
        return self.stages[self.current] if self.current >= 0 else None

    # ``(at, index)`` of the scheduled stages after ``current``, latest stage first: the
    # first whose ``at`` has passed is the active stage. Computed once: the engine
    # consults it on every evaluation of a scheduled progression.
    schedule: tuple[tuple[float, int], ...]  # set by __post_init__; not compared or shown

    def __post_init__(self) -> None:
        schedule = tuple(
            (stage.at, stage.index)
            for stage in reversed(self.stages)
            if stage.at is not None and stage.index > self.current
        )
        set_field(self, "schedule", schedule)

    def stage(self, name: Any) -> Stage | None:
        """The first stage called ``name``."""
        return next((stage for stage in self.stages if stage.name == name), None)

    def active_index(self, at: float) -> int:
        """Index of the stage in force at ``at`` (-1: none): the later of ``current``
        and the last stage whose ``at`` is at or before ``at``."""
        for instant, index in self.schedule:
            if instant <= at:
                return index
        return self.current

    def active_stage(self, at: float | None) -> Stage | None:
        """The stage in force at ``at``; ``current`` when ``at`` is None."""
        index = self.current if at is None else self.active_index(at)
        return self.stages[index] if index >= 0 else None

    def shares(self, at: float | None = None) -> dict[str, Decimal]:
        """Percent of the (non-segment) contexts reaching the default that get each
        variation, at ``at`` (``current`` when None)."""
        return self.shares_of(self.active_stage(at))

    def shares_of(self, stage: Stage | None) -> dict[str, Decimal]:
        """Percent of the (non-segment) contexts that get each variation while ``stage``
        (None: no stage yet) is in force."""
        reach = stage.percent if stage is not None else Decimal(0)
        shares = {self.baseline: HUNDRED - reach}
        shares[self.variation] = shares.get(self.variation, Decimal(0)) + reach
        return shares

    def timeline(self, since: float) -> list[StageChange]:
        """The stage in force at ``since``, then every later moment a schedule changes
        it, in time order."""
        index = self.active_index(since)
        points = [StageChange(since, self.active_stage(since), self.shares(since))]
        for instant in sorted({at for at, _ in self.schedule if at > since}):
            later = self.active_index(instant)
            if later != index:
                index = later
                points.append(StageChange(instant, self.stages[index], self.shares(instant)))
        return points


# --- reading -------------------------------------------------------------------------------


def progression_spec(holder: Any) -> Mapping[str, Any] | None:
    """``holder["default"]["progression"]`` when it is a mapping: the progression of a
    release file's data or of a compiled flag; None for any other default."""
    default = holder.get("default") if isinstance(holder, Mapping) else None
    spec = default.get("progression") if isinstance(default, Mapping) else None
    return spec if isinstance(spec, Mapping) else None


def serves(flag: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """What a compiled flag serves by other than its targets: its ``default``, then each
    rule's ``serve``, in order (mappings only: a malformed entry is skipped)."""
    places: list[Any] = [flag.get("default")]
    rules = flag.get("rules")
    if isinstance(rules, list):
        places.extend(rule.get("serve") for rule in rules if isinstance(rule, Mapping))
    return [serve for serve in places if isinstance(serve, Mapping)]


def bucket_by(spec: Mapping[str, Any]) -> str:
    """The context attribute a split or progression buckets by (``key`` unless named)."""
    attribute = spec.get("bucket_by", "key")
    return attribute if isinstance(attribute, str) else "key"


def percent_weight(value: Any) -> int | None:
    """A percent with at most 3 decimals as integer thousandths (``12.5`` → ``12500``);
    None when ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    try:
        thousandths = Decimal(str(value)) * 1000
    except InvalidOperation:
        return None
    if thousandths != thousandths.to_integral_value() or not 0 <= thousandths <= TOTAL_WEIGHT:
        return None
    return int(thousandths)


def percent_text(value: Decimal | float | int) -> str:
    """``10``, ``12.5`` — no trailing zeros, no exponent."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return format(number.normalize(), "f")


def _grow(reach: list[str], segments: Sequence[str]) -> None:
    for segment in segments:
        if segment not in reach:
            reach.append(segment)


def read_progression(spec: Any) -> Progression | None:
    """The progression of its raw YAML form (see the module docstring); None when
    ``spec`` is not a mapping."""
    if not isinstance(spec, Mapping):
        return None
    stages: list[Stage] = []
    weight = 0
    reach: list[str] = []
    listed = spec.get("stages")
    for index, entry in enumerate(listed if isinstance(listed, list) else []):
        # A stage that is not a mapping (a schema error) is a stage named by its text
        # that changes nothing, so positions stay those of the file.
        stage: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"name": entry}
        own = percent_weight(stage.get("percent"))
        weight = own if own is not None else weight
        segments = stage.get("segments")
        own_segments = tuple(str(s) for s in segments) if isinstance(segments, list) else ()
        _grow(reach, own_segments)
        at, bake = stage.get("at"), stage.get("bake")
        stages.append(
            Stage(
                name=str(stage.get("name")),
                index=index,
                weight=weight,
                segments=own_segments,
                reach_segments=tuple(reach),
                at=parse_timestamp(at) if isinstance(at, str) else None,
                at_text=at if isinstance(at, str) else None,
                bake=duration_seconds(bake) if isinstance(bake, str) else None,
                bake_text=bake if isinstance(bake, str) else None,
            )
        )
    current = spec.get("current")
    position = next((i for i, s in enumerate(stages) if s.name == current), -1)
    bucket_by, seed = spec.get("bucket_by"), spec.get("seed")
    return Progression(
        variation=str(spec.get("variation")),
        baseline=str(spec.get("baseline")),
        current=position,
        stages=tuple(stages),
        bucket_by=bucket_by if isinstance(bucket_by, str) else None,
        seed=seed if isinstance(seed, str) else None,
    )


def _fail(where: str, message: str) -> SnapshotFormatError:
    return SnapshotFormatError(f"snapshot {where}: {message}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {json_kind(value)}")
    return value


def _array(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise _fail(where, f"expected an array, got {json_kind(value)}")
    return value


def compiled_progression(spec: Any, where: str) -> Progression:
    """The progression of its snapshot form (docs/snapshot-format.md), checked:
    raises ``SnapshotFormatError`` naming the place under ``where`` that is wrong.
    Whether the flag has ``variation`` and ``baseline`` is the caller's check."""
    if not isinstance(spec, Mapping):
        raise _fail(where, f"expected an object, got {json_kind(spec)}")
    listed = spec.get("stages")
    if listed.__class__ is not list:
        listed = _array(listed, f"{where}.stages")
    stages: list[Stage] = []
    reach: list[str] = []
    for i, stage in enumerate(listed):
        # Location strings only when a check fails: this runs for every flag at load.
        if stage.__class__ is not dict and not isinstance(stage, Mapping):
            raise _fail(f"{where}.stages[{i}]", f"expected an object, got {json_kind(stage)}")
        name = stage.get("name")
        if name.__class__ is not str:
            name = _text(name, f"{where}.stages[{i}].name")
        weight = stage.get("weight", 0)
        if weight.__class__ is not int or not 0 <= weight <= TOTAL_WEIGHT:
            raise _fail(
                f"{where}.stages[{i}].weight",
                f"expected an integer in [0, {TOTAL_WEIGHT}], got {weight!r}",
            )
        at_text = stage.get("at")
        at = None
        if at_text is not None:
            at = parse_timestamp(_text(at_text, f"{where}.stages[{i}].at"))
            if at is None:
                raise _fail(f"{where}.stages[{i}].at", f"{at_text!r} is not an RFC 3339 timestamp")
        segments = stage.get("segments", [])
        own_segments: tuple[str, ...] = ()
        if segments.__class__ is not list or segments:
            here = f"{where}.stages[{i}].segments"
            own_segments = tuple(_text(s, here) for s in _array(segments, here))
            _grow(reach, own_segments)
        bake = stage.get("bake")
        stages.append(
            Stage(
                name=name,
                index=i,
                weight=weight,
                segments=own_segments,
                reach_segments=tuple(reach),
                at=at,
                at_text=at_text,
                bake=bake if bake.__class__ is int else None,
            )
        )
    if not stages:
        raise _fail(f"{where}.stages", "a progression needs at least one stage")
    current = spec.get("current")
    if current is not None:
        current = _text(current, f"{where}.current")
    names = [stage.name for stage in stages]
    if current is not None and current not in names:
        raise _fail(f"{where}.current", f"unknown stage {current!r}")
    return Progression(
        variation=str(spec.get("variation")),
        baseline=str(spec.get("baseline")),
        current=names.index(current) if current is not None else -1,
        stages=tuple(stages),
        bucket_by=spec.get("bucket_by") if isinstance(spec.get("bucket_by"), str) else None,
        seed=spec.get("seed") if isinstance(spec.get("seed"), str) else None,
    )


# --- a release file's default ----------------------------------------------------------------


def _split_shares(split: Any) -> dict[str, Decimal]:
    if not isinstance(split, Mapping):
        return {}
    shares: dict[str, Decimal] = {}
    for variation, percent in split.items():
        weight = percent_weight(percent)
        shares[str(variation)] = Decimal(weight) / 1000 if weight is not None else Decimal(0)
    return shares


def release_shares(
    data: Mapping[str, Any] | None, off_variation: str | None, *, at: float | None = None
) -> dict[str, Decimal]:
    """Percent of the contexts reaching a release file's default that get each variation
    (raw YAML ``data``; targets, rules and segments aside). A missing (None) or disabled
    release serves the off variation to all; a progression counts the stage in force at
    ``at`` (its ``current`` stage when ``at`` is None)."""
    off = off_variation or ""
    if data is None or not bool(data.get("enabled", False)):
        return {off: HUNDRED}
    default = data.get("default")
    if isinstance(default, Mapping):
        if "progression" in default:
            progression = read_progression(default["progression"])
            return progression.shares(at) if progression is not None else {}
        if "split" in default:
            return _split_shares(default["split"])
        return {}
    return {str(default) if default is not None else off: HUNDRED}


def release_timeline(
    data: Mapping[str, Any] | None, off_variation: str | None, since: float
) -> list[StageChange]:
    """``release_shares`` at ``since`` and at every later moment a scheduled stage
    changes them (one point when nothing is scheduled)."""
    progression = read_progression(progression_spec(data)) if data is not None else None
    if progression is None or data is None or not bool(data.get("enabled", False)):
        return [StageChange(since, None, release_shares(data, off_variation, at=since))]
    return progression.timeline(since)


def exposure_step(
    before: Mapping[str, Decimal], after: Mapping[str, Decimal], off_variation: str | None
) -> Decimal:
    """The largest increase, in percentage points, of any variation other than the off
    variation: how many more contexts move onto something new."""
    step = Decimal(0)
    for variation, share in after.items():
        if variation == off_variation:
            continue
        step = max(step, share - before.get(variation, Decimal(0)))
    return step
