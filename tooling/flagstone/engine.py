"""The evaluation engine: one snapshot payload in, flag decisions out.

``Snapshot.from_payload`` checks a payload (docs/snapshot-format.md) and turns every
flag into ready-to-run closures once — attribute readers, frozensets, compiled regular
expressions, parsed semantic versions and timestamps, precomputed bucketing seeds and
precomputed ``Details`` for every fixed outcome — so ``Snapshot.evaluate`` does no
parsing. ``evaluate`` never raises: problems come back as ``Details`` with reason
``ERROR`` and an OpenFeature error code, carrying the caller's default.

Evaluation order for a flag (docs/design.md §4): disabled → off variation (DISABLED); a
prerequisite not serving its required variation → off variation (PREREQUISITE_FAILED);
individual targets (TARGETING_MATCH); rules in order, first match (TARGETING_MATCH or
SPLIT); the default (DEFAULT, SPLIT, or a progression).

Conditions: a missing attribute (absent or JSON null) or a value of the wrong type makes
a clause false, never an error; a list-valued attribute matches when any element does.
Each clause is compiled from its operator's entry in the registry
(``flagstone.operators``), which also holds the literal parsers re-exported here. The
context's ``key`` is its targeting key and must be a string when present.

Standard library plus ``mmh3`` and ``re2``: the SDK imports this module.
"""

from __future__ import annotations

import copy
import marshal
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from flagstone.bucketing import attribute_reader, make_bucketer
from flagstone.errors import SnapshotFormatError
from flagstone.lazylogging import lazy_logger
from flagstone.operators import OPERATOR_NAMES, check_values, clause_test, inlined_clause, json_kind
from flagstone.operators import SemverKey as SemverKey
from flagstone.operators import json_equal as json_equal
from flagstone.operators import parse_semver as parse_semver
from flagstone.operators import parse_timestamp as parse_timestamp
from flagstone.operators import timestamp_of as timestamp_of
from flagstone.records import Record, set_field
from flagstone.rollout import TOTAL_WEIGHT as TOTAL_WEIGHT  # re-exported
from flagstone.rollout import compiled_progression

FORMAT = "flagstone.snapshot/1"

_logger = lazy_logger("flagstone.sdk.snapshot")

# OpenFeature reason and error-code names.
DEFAULT = "DEFAULT"
TARGETING_MATCH = "TARGETING_MATCH"
SPLIT = "SPLIT"
DISABLED = "DISABLED"
PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
ERROR = "ERROR"
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
TYPE_MISMATCH = "TYPE_MISMATCH"
PARSE_ERROR = "PARSE_ERROR"
INVALID_CONTEXT = "INVALID_CONTEXT"
GENERAL = "GENERAL"

FLAG_TYPES = ("boolean", "string", "number", "json")

# The clause operators' names, in the registry's order (flagstone.operators).
OPERATORS = OPERATOR_NAMES


class Details(Record):
    """The outcome of one evaluation.

    ``rule`` names what decided: the matching rule, the progression stage, or (for
    PREREQUISITE_FAILED) the prerequisite flag that failed; None for targets, plain
    defaults, disabled flags and errors. ``bucket`` is the context's bucket in
    [0, 100000) when a split or progression percentage was consulted and the context
    was bucketable, else None.
    """

    value: Any
    variation: str | None
    reason: str
    error_code: str | None
    error_message: str | None
    rule: str | None
    version: int
    bucket: int | None
    # Not a field: the counter of this outcome in a snapshot that counts its outcomes
    # (Snapshot.count_outcomes), kept in the instance dict; else this None.
    counter: ClassVar[Any] = None

    # No __slots__: an instance keeps its fields in its __dict__, which the engine
    # installs whole (see _with_bucket).
    _fields: ClassVar[tuple[str, ...]] = (
        "value",
        "variation",
        "reason",
        "error_code",
        "error_message",
        "rule",
        "version",
        "bucket",
    )

    def __init__(
        self,
        value: Any,
        variation: str | None,
        reason: str,
        error_code: str | None = None,
        error_message: str | None = None,
        rule: str | None = None,
        version: int = 0,
        bucket: int | None = None,
    ) -> None:
        set_field(
            self,
            "__dict__",
            {
                "value": value,
                "variation": variation,
                "reason": reason,
                "error_code": error_code,
                "error_message": error_message,
                "rule": rule,
                "version": version,
                "bucket": bucket,
            },
        )

    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles carry the fields, never a counter (counting is the client's).
        state = dict(self.__dict__)
        state.pop("counter", None)
        return state


# Outcomes that depend on the bucket are built per evaluation: installing the whole
# instance dict, without calling __init__, yields an equal, equally frozen object.
_new_instance = object.__new__
_set_attribute = object.__setattr__


def _outcome_fields(
    value: Any, variation: str, reason: str, rule: str | None, version: int, counter: Any = None
) -> dict[str, Any]:
    """The instance dict of a bucketed outcome, without its bucket (with its counter, when
    the snapshot counts outcomes)."""
    fields = {
        "value": value,
        "variation": variation,
        "reason": reason,
        "error_code": None,
        "error_message": None,
        "rule": rule,
        "version": version,
        "bucket": None,
    }
    if counter is not None:
        fields["counter"] = counter
    return fields


def _with_bucket(fields: dict[str, Any], bucket: int) -> Details:
    details: Details = _new_instance(Details)
    _set_attribute(details, "__dict__", {**fields, "bucket": bucket})
    return details


Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]
# A compiled flag: (context, clock or None) -> Details.
FlagRunner = Callable[[Context, "float | None"], Details]
# (flag key, variation, reason) -> the counter of that outcome (Snapshot.count_outcomes).
OutcomeCounters = Callable[[str, str, str], Any]


def check_clause_values(op: str, values: Sequence[Any]) -> str | None:
    """Why ``values`` cannot be used with ``op`` (a one-line message), or None if they can.

    The compiler and the validator use this (through the operator registry,
    ``flagstone.operators``) so that every snapshot the engine is given already has
    usable literals.
    """
    problem = check_values(op, values)
    return None if problem is None else problem.message


def _clause(attribute: str, op: str, values: Sequence[Any]) -> Predicate:
    """A checked clause as a predicate, from the operator registry: the operator's
    inlined closure for a top-level attribute where it has one, else its value test
    (which walks a list-valued attribute) behind the attribute read."""
    if "." not in attribute:
        inlined = inlined_clause(attribute, op, values)
        if inlined is not None:
            return inlined
    test = clause_test(op, values)
    read = attribute_reader(attribute)

    def clause(context: Context) -> bool:
        return test(read(context))

    return clause


# ---------------------------------------------------------------------------
# Payload checking helpers: every failure names where in the payload it is.


def _fail(where: str, message: str) -> SnapshotFormatError:
    return SnapshotFormatError(f"snapshot {where}: {message}")


# The checks below run hundreds of thousands of times for a large snapshot: each tests
# the exact type parsed JSON has first (cheap), and the general one (an ABC check for
# Mapping is not) only when that fails.


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value.__class__ is not dict and not isinstance(value, Mapping):
        raise _fail(where, f"expected an object, got {json_kind(value)}")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if value.__class__ is not list and not isinstance(value, (list, tuple)):
        raise _fail(where, f"expected an array, got {json_kind(value)}")
    return value


def _text(value: Any, where: str) -> str:
    if value.__class__ is not str and not isinstance(value, str):
        raise _fail(where, f"expected a string, got {json_kind(value)}")
    return value


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def _optional_instant(value: Any, where: str) -> float | None:
    if value is None:
        return None
    instant = parse_timestamp(_text(value, where))
    if instant is None:
        raise _fail(where, f"{value!r} is not an RFC 3339 timestamp")
    return instant


# ---------------------------------------------------------------------------
# Compiling a payload into closures.


# Immutable values, so a Details serving one may be shared between flags.
_SHAREABLE_VALUES = frozenset({bool, str, int, type(None)})


_Compiled = TypeVar("_Compiled")


def _private_copy(value: _Compiled) -> _Compiled:
    """A deep copy of ``value``. A payload is normally plain JSON data (dict, list, str,
    int, float, bool, None), which ``marshal`` copies several times faster than
    ``copy.deepcopy``; anything marshal does not take exactly as it is (a dict subclass,
    another Mapping, an enum, …) falls back to ``copy.deepcopy``."""
    try:
        copied: _Compiled = marshal.loads(marshal.dumps(value))  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError):
        return copy.deepcopy(value)
    return copied


class _Compiler:
    """Compiles one payload's segments and flags, resolving references on demand and
    rejecting reference cycles."""

    # The snapshot's outcome counters (Snapshot.count_outcomes): set by on_demand only.
    counters: OutcomeCounters | None = None

    def __init__(self, payload: Mapping[str, Any], version: int, *, owned: bool) -> None:
        self.version = version
        segment_specs = dict(_mapping(payload.get("segments", {}), "segments"))
        flag_specs = dict(_mapping(payload.get("flags", {}), "flags"))
        if not owned:
            # A private copy: the caller may change its payload afterwards, and the values
            # served (lists, objects) must not change with it.
            segment_specs, flag_specs = _private_copy((segment_specs, flag_specs))
        self.segment_specs: dict[str, Any] = segment_specs
        self.flag_specs: dict[str, Any] = flag_specs
        self.segments: dict[str, Predicate] = {}
        self.clauses: dict[tuple[str, str, bytes], Predicate] = {}
        self.outcomes: dict[tuple[Any, ...], Details] = {}
        self.flags: dict[str, FlagRunner] = {}
        self.types: dict[str, str] = {}
        # flag -> [(rule name, condition)], so explain() can tell a rule from a stage.
        self.rule_conditions: dict[str, list[tuple[str, Predicate]]] = {}
        # (kind, key) being built, outermost first; a cycle is a repeat of one of them.
        self._in_progress: list[tuple[str, str]] = []

    @classmethod
    def on_demand(cls, snapshot: Snapshot, packed: _Packed) -> _Compiler:
        """A compiler for flags of ``snapshot`` compiled on first use: specs from the
        packed form, results and caches shared with the snapshot (see Snapshot)."""
        compiler = cls.__new__(cls)
        compiler.version = snapshot.version
        compiler.segment_specs = packed.segment_specs  # type: ignore[assignment]
        compiler.flag_specs = packed.flag_specs  # type: ignore[assignment]
        compiler.segments = packed.segments
        compiler.clauses = packed.clauses
        compiler.outcomes = packed.outcomes
        compiler.counters = getattr(snapshot, "_outcome_counters", None)
        compiler.flags = snapshot._runners
        compiler.types = snapshot._types
        compiler.rule_conditions = snapshot._rule_conditions
        compiler._in_progress = []
        return compiler

    @classmethod
    def for_segments(cls, version: int, packed: _Packed) -> _Compiler:
        """A compiler of ``packed``'s segments into its caches (a packed snapshot's
        segments, checked when it is made)."""
        compiler = cls.__new__(cls)
        compiler.version = version
        compiler.segment_specs = packed.segment_specs  # type: ignore[assignment]
        compiler.flag_specs = packed.flag_specs  # type: ignore[assignment]
        compiler.segments = packed.segments
        compiler.clauses = packed.clauses
        compiler.outcomes = packed.outcomes
        compiler.flags, compiler.types, compiler.rule_conditions = {}, {}, {}
        compiler._in_progress = []
        return compiler

    # -- conditions --

    def condition(self, spec: Any, where: str) -> Predicate:
        if spec.__class__ is not dict:
            spec = _mapping(spec, where)
        if "segment" in spec:
            segment_key = spec["segment"]
            if segment_key.__class__ is not str:
                segment_key = _text(segment_key, f"{where}.segment")
            return self.segment(segment_key, where)
        if "all" in spec or "any" in spec:
            combinator = "all" if "all" in spec else "any"
            parts = [
                self.condition(part, f"{where}.{combinator}[{i}]")
                for i, part in enumerate(_list(spec[combinator], f"{where}.{combinator}"))
            ]
            return _all_of(parts) if combinator == "all" else _any_of(parts)
        if "not" in spec:
            inner = self.condition(spec["not"], f"{where}.not")

            def negation(context: Context) -> bool:
                return not inner(context)

            return negation
        if "attribute" in spec:
            # The location strings only when a check fails (see _FlagCompiler).
            attribute = spec["attribute"]
            if attribute.__class__ is not str:
                attribute = _text(attribute, f"{where}.attribute")
            op = spec.get("op")
            if op.__class__ is not str:
                op = _text(op, f"{where}.op")
            values = spec.get("values", [])
            if values.__class__ is not list:
                values = _list(values, f"{where}.values")
            # Flags often repeat a clause (the same plan, platform or version test): a
            # clause is a pure function of these three, so it is checked and built once.
            # The values are keyed by their marshal bytes, one C call that tells ``true``
            # from ``1`` and ``1`` from ``1.0`` (equal in Python, not the same literal in
            # a clause); values marshal does not take (not plain JSON data) are not shared.
            try:
                clause_key = (attribute, op, marshal.dumps(values))
                shared = self.clauses.get(clause_key)
            except (ValueError, TypeError, RecursionError):
                clause_key, shared = None, None
            if shared is not None:
                return shared
            problem = check_clause_values(op, values)
            if problem:
                raise _fail(where, problem)
            compiled = _clause(attribute, op, values)
            if clause_key is not None:
                self.clauses[clause_key] = compiled
            return compiled
        raise _fail(where, "a condition needs one of: attribute, segment, all, any, not")

    def _resolve(
        self,
        kind: str,
        key: str,
        where: str,
        cache: dict[str, _Compiled],
        build: Callable[[str], _Compiled],
    ) -> _Compiled:
        """The compiled segment or flag ``key``, built on first use; a reference chain
        that comes back to a key still being built is a cycle."""
        compiled = cache.get(key)
        if compiled is not None:
            return compiled
        specs = self.segment_specs if kind == "segment" else self.flag_specs
        if key not in specs:
            raise _fail(where, f"unknown {kind} {key!r}")
        if (kind, key) in self._in_progress:
            start = self._in_progress.index((kind, key))
            chain = " -> ".join([k for _, k in self._in_progress[start:]] + [key])
            what = "segment reference" if kind == "segment" else "prerequisite"
            raise _fail(f"{kind}s.{key}", f"{what} cycle: {chain}")
        self._in_progress.append((kind, key))
        compiled = build(key)
        self._in_progress.pop()
        cache[key] = compiled
        return compiled

    def segment(self, key: str, where: str) -> Predicate:
        return self._resolve("segment", key, where, self.segments, self._build_segment)

    def _build_segment(self, key: str) -> Predicate:
        here = f"segments.{key}"
        spec = _mapping(self.segment_specs[key], here)
        include = frozenset(
            _text(k, f"{here}.include") for k in _list(spec.get("include", []), f"{here}.include")
        )
        exclude = frozenset(
            _text(k, f"{here}.exclude") for k in _list(spec.get("exclude", []), f"{here}.exclude")
        )
        rules = _any_of(
            [
                self.condition(c, f"{here}.rules[{i}]")
                for i, c in enumerate(_list(spec.get("rules", []), f"{here}.rules"))
            ]
        )

        def in_segment(context: Context) -> bool:
            target = context.get("key")
            if target in exclude:
                return False
            return target in include or rules(context)

        return in_segment

    def flag(self, key: str, where: str) -> FlagRunner:
        return self._resolve(
            "flag", key, where, self.flags, lambda k: _FlagCompiler(self, k).build()
        )


def _all_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def all_match(context: Context) -> bool:
        # A plain loop: a generator with all() costs ~0.3 µs more per call.
        for part in parts:  # noqa: SIM110
            if not part(context):
                return False
        return True

    return all_match


def _any_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def any_match(context: Context) -> bool:
        for part in parts:  # noqa: SIM110 - see all_match
            if part(context):
                return True
        return False

    return any_match


class _FlagCompiler:
    # Location strings for error messages ("flags.f.targets[0].keys") are built only
    # when a check fails: built eagerly they were a good share of compiling a large
    # snapshot. The common, valid case is tested inline on the exact types parsed JSON
    # has; the helpers (_mapping, _text, …) run when that test fails, to accept other
    # mappings and sequences or raise with the location.

    def __init__(self, compiler: _Compiler, key: str) -> None:
        self.compiler = compiler
        self.key = key
        self.where = where = f"flags.{key}"
        spec = compiler.flag_specs[key]
        if spec.__class__ is not dict:
            spec = _mapping(spec, where)
        self.spec = spec
        self.version = compiler.version
        self.counters = compiler.counters
        variations = spec.get("variations")
        if variations.__class__ is not dict:
            variations = dict(_mapping(variations, f"{where}.variations"))
        if not variations:
            raise _fail(f"{where}.variations", "a flag needs at least one variation")
        self.variations: dict[str, Any] = variations
        self.off = self.variation_key(spec.get("off_variation"), where, ".off_variation")
        flag_type = spec.get("type")
        if flag_type not in FLAG_TYPES:
            raise _fail(
                f"{where}.type", f"expected one of {', '.join(FLAG_TYPES)}, got {flag_type!r}"
            )
        if flag_type != "json":
            for name, value in variations.items():
                if not _type_accepts(flag_type, value):
                    raise _fail(
                        f"{where}.variations.{name}", f"{value!r} is not a {flag_type} value"
                    )
        compiler.types[key] = flag_type

    def variation_key(self, value: Any, where: str, suffix: str = "") -> str:
        """``value`` when it names a variation of the flag; ``where + suffix`` locates it."""
        if value.__class__ is str and value in self.variations:
            return value
        name = _text(value, where + suffix)
        if name not in self.variations:
            raise _fail(
                where + suffix,
                f"unknown variation {name!r} (flag has: {', '.join(self.variations)})",
            )
        return name

    def fixed(self, variation: str, reason: str, rule: str | None = None) -> Details:
        """The Details of a fixed outcome. Frozen, so flags whose outcome is the same
        (same scalar value, variation, reason and rule) share one: thousands of boolean
        flags have just a handful of distinct outcomes. Not in a snapshot that counts its
        outcomes: there each flag's outcomes carry the flag's own counters."""
        value = self.variations[variation]
        shared_key = None
        # Counted outcomes are the flag's own: not shared (nor kept for sharing).
        if value.__class__ in _SHAREABLE_VALUES and self.counters is None:
            shared_key = (value.__class__, value, variation, reason, rule)
            shared = self.compiler.outcomes.get(shared_key)
            if shared is not None:
                return shared
        # Details(...) without calling __init__ (see _with_bucket).
        details: Details = _new_instance(Details)
        counter = self.counter(variation, reason)
        fields = _outcome_fields(value, variation, reason, rule, self.version, counter)
        _set_attribute(details, "__dict__", fields)
        if shared_key is not None:
            self.compiler.outcomes[shared_key] = details
        return details

    def counter(self, variation: str, reason: str) -> Any:
        """The counter of this flag's outcome (variation, reason), None when not counting."""
        return None if self.counters is None else self.counters(self.key, variation, reason)

    def build(self) -> FlagRunner:
        where = self.where
        spec = self.spec
        enabled = spec.get("enabled")
        if not isinstance(enabled, bool):
            raise _fail(f"{where}.enabled", f"expected true or false, got {enabled!r}")
        # Prerequisites are resolved even for a disabled flag, so cycles never pass.
        prerequisites = []
        items = spec.get("prerequisites", [])
        if items.__class__ is not list:
            items = _list(items, f"{where}.prerequisites")
        for i, item in enumerate(items):
            here = f"{where}.prerequisites[{i}]"
            item = _mapping(item, here)
            flag_key = _text(item.get("flag"), f"{here}.flag")
            required = _text(item.get("variation"), f"{here}.variation")
            run_prerequisite = self.compiler.flag(flag_key, here)
            prerequisites.append(
                (run_prerequisite, required, self.fixed(self.off, PREREQUISITE_FAILED, flag_key))
            )

        if not enabled:
            disabled = self.fixed(self.off, DISABLED)

            def run_disabled(context: Context, at: float | None) -> Details:
                return disabled

            return run_disabled

        targets: dict[str, Details] = {}
        items = spec.get("targets", [])
        if items.__class__ is not list:
            items = _list(items, f"{where}.targets")
        for i, item in enumerate(items):
            if item.__class__ is not dict:
                item = _mapping(item, f"{where}.targets[{i}]")
            variation = item.get("variation")
            if variation.__class__ is not str or variation not in self.variations:
                variation = self.variation_key(variation, where, f".targets[{i}].variation")
            matched = self.fixed(variation, TARGETING_MATCH)
            keys = item.get("keys", [])
            if keys.__class__ is not list:
                keys = _list(keys, f"{where}.targets[{i}].keys")
            for target_key in keys:
                if target_key.__class__ is not str:
                    target_key = _text(target_key, f"{where}.targets[{i}].keys")
                targets.setdefault(target_key, matched)

        rules = []
        named_conditions: list[tuple[str, Predicate]] = []
        items = spec.get("rules", [])
        if items.__class__ is not list:
            items = _list(items, f"{where}.rules")
        for i, item in enumerate(items):
            here = f"{where}.rules[{i}]"
            if item.__class__ is not dict:
                item = _mapping(item, here)
            name = item.get("name")
            if name.__class__ is not str:
                name = _text(name, f"{here}.name")
            condition = self.compiler.condition(item.get("condition"), f"{here}.condition")
            rules.append(
                (condition, self.serve(item.get("serve"), f"{here}.serve", TARGETING_MATCH, name))
            )
            named_conditions.append((name, condition))
        if named_conditions:
            # One assignment: a flag compiled on demand by two threads at once (see
            # Snapshot) never shows a half-built list.
            self.compiler.rule_conditions[self.key] = named_conditions

        default_spec = spec.get("default")
        if default_spec.__class__ is not dict:
            default_spec = _mapping(default_spec, f"{where}.default")
        if "progression" in default_spec:
            default = self.progression(default_spec["progression"], f"{where}.default.progression")
        else:
            default = self.serve(default_spec, f"{where}.default", DEFAULT, None)

        return _flag_runner(prerequisites, targets, rules, default)

    def serve(self, spec: Any, where: str, reason: str, rule: str | None) -> FlagRunner:
        if spec.__class__ is not dict:
            spec = _mapping(spec, where)
        if "variation" in spec:
            served = self.fixed(
                self.variation_key(spec["variation"], where, ".variation"), reason, rule
            )

            def run_fixed(context: Context, at: float | None) -> Details:
                return served

            return run_fixed
        if "split" not in spec:
            raise _fail(where, "expected {variation: …} or {split: …}")
        here = f"{where}.split"
        split = _mapping(spec["split"], here)
        bucket_of = self.bucketer(split, here)
        bounds: list[tuple[int, dict[str, Any]]] = []
        upper = 0
        for i, item in enumerate(_list(split.get("weights"), f"{here}.weights")):
            # Location strings only when a check fails (see _FlagCompiler).
            if item.__class__ is not dict:
                item = _mapping(item, f"{here}.weights[{i}]")
            variation = item.get("variation")
            if variation.__class__ is not str or variation not in self.variations:
                variation = self.variation_key(variation, f"{here}.weights[{i}].variation")
            weight = item.get("weight")
            if weight.__class__ is not int or not 0 <= weight <= TOTAL_WEIGHT:
                weight = _integer(weight, f"{here}.weights[{i}].weight", 0, TOTAL_WEIGHT)
            upper += weight
            counter = self.counter(variation, SPLIT)
            fields = _outcome_fields(
                self.variations[variation], variation, SPLIT, rule, self.version, counter
            )
            bounds.append((upper, fields))
        if upper != TOTAL_WEIGHT:
            raise _fail(f"{here}.weights", f"weights sum to {upper}, not {TOTAL_WEIGHT}")
        # Not bucketable: the first variation, reported without a bucket.
        unbucketed: Details = _new_instance(Details)  # Details(**…), see _with_bucket
        _set_attribute(unbucketed, "__dict__", dict(bounds[0][1]))
        new_instance, set_attribute = _new_instance, _set_attribute

        def run_split(context: Context, at: float | None) -> Details:
            bucket = bucket_of(context)
            if bucket is None:
                return unbucketed
            for bound, fields in bounds:
                if bucket < bound:
                    # _with_bucket, inlined: this is the hottest allocation.
                    details: Details = new_instance(Details)
                    set_attribute(details, "__dict__", {**fields, "bucket": bucket})
                    return details
            raise AssertionError("weights cover every bucket")  # pragma: no cover

        return run_split

    def bucketer(self, spec: Mapping[str, Any], where: str) -> Callable[[Context], int | None]:
        seed = spec.get("seed", self.key)
        if seed.__class__ is not str:
            seed = _text(seed, f"{where}.seed")
        bucket_by = spec.get("bucket_by", "key")
        if bucket_by.__class__ is not str:
            bucket_by = _text(bucket_by, f"{where}.bucket_by")
        return make_bucketer(seed, bucket_by)

    def progression(self, spec: Any, where: str) -> FlagRunner:
        # Stages, the active stage at a time and what each stage reaches come from
        # flagstone.rollout (the one home of those rules); this builds the evaluators.
        spec = _mapping(spec, where)
        variation = self.variation_key(spec.get("variation"), where, ".variation")
        baseline = self.variation_key(spec.get("baseline"), where, ".baseline")
        plan = compiled_progression(spec, where)
        bucket_of = self.bucketer(spec, where)
        names = [stage.name for stage in plan.stages]
        weights = [stage.weight for stage in plan.stages]
        rings: list[list[tuple[Predicate, Details]]] = []  # segment tests of stages 0..i
        ring: list[tuple[Predicate, Details]] = []
        for stage in plan.stages:
            here = f"{where}.stages[{stage.index}]"
            for segment_key in stage.segments:
                test = self.compiler.segment(segment_key, here)
                ring = [*ring, (test, self.fixed(variation, TARGETING_MATCH, stage.name))]
            rings.append(ring)
        current = plan.current
        active_at = plan.active_index if plan.schedule else None

        value_on, value_off = self.variations[variation], self.variations[baseline]
        nobody = self.fixed(baseline, DEFAULT)
        unbucketed = [self.fixed(baseline, DEFAULT, name) for name in names]
        on, off = self.counter(variation, SPLIT), self.counter(baseline, SPLIT)
        reached = [_outcome_fields(value_on, variation, SPLIT, n, self.version, on) for n in names]
        not_reached = [
            _outcome_fields(value_off, baseline, SPLIT, n, self.version, off) for n in names
        ]

        def run_progression(context: Context, at: float | None) -> Details:
            active = current
            if active_at is not None:
                active = active_at(time.time() if at is None else at)
            if active < 0:
                return nobody
            for in_segment, matched in rings[active]:
                if in_segment(context):
                    return matched
            weight = weights[active]
            if weight == 0:
                return unbucketed[active]
            bucket = bucket_of(context)
            if bucket is None:
                return unbucketed[active]
            if bucket < weight:
                return _with_bucket(reached[active], bucket)
            return _with_bucket(not_reached[active], bucket)

        return run_progression


def _flag_runner(
    prerequisites: list[tuple[FlagRunner, str, Details]],
    targets: dict[str, Details],
    rules: list[tuple[Predicate, FlagRunner]],
    default: FlagRunner,
) -> FlagRunner:
    if not prerequisites and not rules:
        if not targets:
            return default  # nothing comes before the default: no wrapper

        def run_targets(context: Context, at: float | None) -> Details:
            matched = targets.get(context.get("key"))  # type: ignore[arg-type]
            if matched is not None:
                return matched
            return default(context, at)

        return run_targets

    def run_flag(context: Context, at: float | None) -> Details:
        for run_prerequisite, required, failed in prerequisites:
            if run_prerequisite(context, at).variation != required:
                return failed
        if targets:
            matched = targets.get(context.get("key"))  # type: ignore[arg-type]
            if matched is not None:
                return matched
        for condition, serve in rules:
            if condition(context):
                return serve(context, at)
        return default(context, at)

    return run_flag


def _type_accepts(flag_type: str, value: Any) -> bool:
    if flag_type == "boolean":
        return isinstance(value, bool)
    if flag_type == "string":
        return isinstance(value, str)
    if flag_type == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


# ---------------------------------------------------------------------------
# The public snapshot.


class PackedSpecs(Mapping[str, Mapping[str, Any]]):
    """Flag or segment specs kept packed in one ``bytes`` object, each read into a fresh
    dict on every read (so no caller can change the snapshot's content through it).

    Two forms, never mixed in one object:

    * **marshal** (``PackedSpecs(specs)``): each spec's ``marshal`` bytes, end to end.
      A 50,000-flag snapshot's specs take about 15 MB so instead of about 150 MB as
      dicts and lists.
    * **text** (``PackedSpecs.of_text``): spans of the signed payload's own JSON text,
      which the SDK keeps instead of parsing it whole (``flagstone.snapshot_text``).
      Each read goes through ``decode``, the strict JSON reader, which raises
      ``SnapshotFormatError`` naming the spec for text it refuses.

    Equal bytes (``packed``) are equal specs within one form. ``replacing`` overlays
    some specs (an emergency kill) and shares everything else.

    The key index is built on first use, not while the payload they came from is still
    alive: built then, its small objects would pin the payload's freed memory in the
    allocator's arenas. Building it twice (two threads at once) is harmless.
    """

    __slots__ = ("_blob", "_decode", "_ends", "_index", "_keys", "_replaced", "_starts", "form")

    form: str  # "marshal" or "text"

    def __init__(self, specs: Mapping[str, Any], pieces: Sequence[bytes] | None = None) -> None:
        """``pieces``: each spec's ``marshal.dumps``, in order, when the caller has them."""
        if pieces is None:
            pieces = [marshal.dumps(spec) for spec in specs.values()]
        bounds = array("Q", accumulate(map(len, pieces), initial=0))
        self._init("marshal", b"".join(pieces), bounds[:-1], bounds[1:], list(specs))
        self._decode: Callable[[bytes, str], Any] = _unmarshal

    @classmethod
    def of_text(
        cls,
        blob: bytes,
        keys: list[str],
        starts: array[int],
        ends: array[int],
        decode: Callable[[bytes, str], Any],
    ) -> PackedSpecs:
        """Specs that are the JSON texts ``blob[starts[i]:ends[i]]`` of ``keys[i]``, read
        by ``decode(text, key)`` (which raises ``SnapshotFormatError``). The keys are
        distinct (the caller checked)."""
        specs = object.__new__(cls)
        specs._init("text", blob, starts, ends, keys)
        specs._decode = decode
        return specs

    def _init(
        self, form: str, blob: bytes, starts: array[int], ends: array[int], keys: list[str]
    ) -> None:
        self.form = form
        self._blob = blob
        self._starts = starts
        self._ends = ends
        self._keys = marshal.dumps(keys)
        self._index: dict[str, int] | None = None
        self._replaced: dict[str, Mapping[str, Any]] | None = None

    def _positions(self) -> dict[str, int]:
        index = self._index
        if index is None:
            index = {key: i for i, key in enumerate(marshal.loads(self._keys))}
            self._index = index
        return index

    def replacing(self, specs: Mapping[str, Mapping[str, Any]]) -> PackedSpecs:
        """These specs with ``specs`` (keys they have) read instead; the rest shared."""
        replaced = object.__new__(PackedSpecs)
        for name in ("_blob", "_decode", "_ends", "_keys", "_starts", "form"):
            object.__setattr__(replaced, name, getattr(self, name))
        replaced._index = self._positions()
        overlay = dict(self._replaced or {})
        overlay.update({key: spec for key, spec in specs.items() if key in replaced._index})
        replaced._replaced = overlay
        return replaced

    def packed(self, key: str) -> bytes | None:
        """The bytes of ``key``'s spec (equal bytes in one form: equal specs), None if
        absent; a replaced spec's are its marshal bytes (a form of their own)."""
        i = self._positions().get(key)
        if i is None:
            return None
        if self._replaced is not None and key in self._replaced:
            return b"replaced:" + marshal.dumps(self._replaced[key])  # type: ignore[arg-type]
        return self._blob[self._starts[i] : self._ends[i]]

    def may_hold(self, key: str, name: bytes, empty: bytes | None = None) -> bool:
        """Whether ``key``'s spec may hold the member ``name`` (a quoted key, or the
        start of one: ``b'"segment'``) with something in it, at any depth; false only
        when its JSON text proves it does not: a text without a backslash (so every
        quote in it delimits a string) in which ``name`` does not occur, or occurs once,
        as ``empty`` (``b'"prerequisites":[]'``). True for the other forms and specs,
        which are read instead. Finding a large snapshot's few prerequisites without
        reading every flag's text (seconds at 50,000 flags)."""
        if self.form != "text" or (self._replaced is not None and key in self._replaced):
            return True
        i = self._positions().get(key)
        if i is None:
            return True
        text = self._blob[self._starts[i] : self._ends[i]]
        if b"\\" in text:
            return True
        found = text.count(name)
        return not (found == 0 or (found == 1 and empty is not None and empty in text))

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        i = self._positions()[key]
        if self._replaced is not None and key in self._replaced:
            return _private_copy(self._replaced[key])
        spec: Mapping[str, Any] = self._decode(self._blob[self._starts[i] : self._ends[i]], key)
        return spec

    def read_many(self, keys: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The specs of ``keys`` that can be read, by key, as ``self[key]`` gives them
        (one that cannot is left out: reading it alone raises, naming it); the text
        form reads them in one strict read of a JSON array of their texts (which a spec
        nested at the reader's depth limit, or one it refuses, sends back to one read
        each)."""
        if self.form == "text" and self._replaced is None and len(keys) > 1:
            joined = b",".join([self.packed(key) or b"null" for key in keys])
            try:
                specs = self._decode(b"[" + joined + b"]", keys[0])
            except SnapshotFormatError:
                specs = None
            if isinstance(specs, list) and len(specs) == len(keys):
                return dict(zip(keys, specs, strict=True))
        found = {}
        for key in keys:
            try:
                found[key] = self[key]
            except SnapshotFormatError:
                continue
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._positions()

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions())

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"PackedSpecs({len(self)} specs, {self.form}, {len(self._blob)} bytes)"


class _ReadAhead(Mapping[str, Mapping[str, Any]]):
    """``specs`` with some already read (``read``): what a whole check compiles from."""

    __slots__ = ("read", "specs")

    def __init__(self, specs: PackedSpecs) -> None:
        self.specs = specs
        self.read: dict[str, Mapping[str, Any]] = {}

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        spec = self.read.get(key)
        return spec if spec is not None else self.specs[key]

    def __contains__(self, key: object) -> bool:
        return key in self.specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


# Flags read at once by a whole check of a packed snapshot (check_every_flag).
_CHECK_BATCH = 256


def readable_spec(specs: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """``specs[key]`` when it is there and is a readable mapping, else None: a snapshot
    checked on first use may hold a spec that cannot be read (see Snapshot)."""
    try:
        spec = specs.get(key)
    except SnapshotFormatError:
        return None
    return spec if isinstance(spec, Mapping) else None


def _unmarshal(data: bytes, key: str) -> Any:
    return marshal.loads(data)


class _Packed(Record):
    """What a packed snapshot compiles its flags from on first use, and the compiled
    segments, clauses and outcomes those compilations share."""

    flag_specs: PackedSpecs
    segment_specs: PackedSpecs
    segments: dict[str, Predicate]
    clauses: dict[tuple[str, str, bytes], Predicate]
    outcomes: dict[tuple[Any, ...], Details]

    _fields = __slots__ = ("flag_specs", "segment_specs", "segments", "clauses", "outcomes")

    def __init__(
        self,
        flag_specs: PackedSpecs,
        segment_specs: PackedSpecs,
        segments: dict[str, Predicate],
        clauses: dict[tuple[Any, ...], Predicate],
        outcomes: dict[tuple[Any, ...], Details],
    ) -> None:
        set_field(self, "flag_specs", flag_specs)
        set_field(self, "segment_specs", segment_specs)
        set_field(self, "segments", segments)
        set_field(self, "clauses", clauses)
        set_field(self, "outcomes", outcomes)


_TOO_DEEP = "its prerequisites nest too deep to compile"


def _check_flags(
    compiler: _Compiler,
    keys: Iterable[str],
    pieces: Iterable[bytes],
    tolerate: Callable[[str, SnapshotFormatError], bool] | None = None,
) -> None:
    """Check the flags ``keys`` by compiling each, its closures dropped as soon as it
    compiled (so the check needs the memory of one flag, not of all of them). ``pieces``
    are the flags' packed bytes (one form), in the same order. A flag that fails raises
    ``SnapshotFormatError``, unless ``tolerate(key, error)`` says to go on.

    A flag whose spec is equal to one already checked (equal bytes: equal specs,
    ``true`` told from ``1``) and has no prerequisites passes as that one did: its check
    is a function of its spec, the segments and the snapshot's version only (the key
    matters to a flag through its prerequisites, and as the default seed, which an
    ASCII key always is; other keys are checked in full). Many flags of a large
    snapshot are such copies (on/off flags serving one variation, the same rules on
    many flags). A flag compiled alone (``flags`` holds just it) had no prerequisites.
    """
    passed: set[bytes] = set()
    flags, rule_conditions = compiler.flags, compiler.rule_conditions
    for key, piece in zip(keys, pieces, strict=True):
        if piece in passed:
            continue
        try:
            try:
                compiler.flag(key, "flags")
            except RecursionError:  # a prerequisite chain hundreds of flags long
                raise _fail(f"flags.{key}", _TOO_DEEP) from None
        except SnapshotFormatError as error:
            if tolerate is None or not tolerate(key, error):
                raise
            flags.clear()
            rule_conditions.clear()
            compiler._in_progress.clear()
            continue
        alone = len(flags) == 1
        flags.clear()
        rule_conditions.clear()
        if alone and key.isascii():
            passed.add(piece)


class Snapshot:
    """One environment's flags, checked (and precompiled, unless packed); immutable and
    thread-safe.

    A packed snapshot (``from_payload(..., packed=True)``) keeps only its specs, packed
    (``PackedSpecs``), and compiles each flag on its first evaluation, keeping it.
    Those compilations may run in several threads at once: they only add equivalent
    entries to dicts, one assignment each.

    When it is checked (docs/design.md §7):

    * made from plain specs, packed or not: whole, every flag compiled, when it is made
      (``SnapshotFormatError`` names the first bad place);
    * made from specs already packed (the SDK's, read by ``flagstone.snapshot_text``
      without parsing every flag): every segment when it is made, each flag on its
      first evaluation. A flag that fails
      answers every evaluation with the caller's default, reason ERROR and error code
      PARSE_ERROR naming the place (``defects``), and is logged once; the other flags
      are unaffected. ``check_every_flag`` checks such a snapshot whole, as the SDK
      does before one replaces the snapshot it serves.
    """

    __slots__ = (
        "_defects",
        "_defects_of_source",
        "_outcome_counters",
        "_packed",
        "_rule_conditions",
        "_runners",
        "_types",
        "digest",
        "environment",
        "expires",
        "expires_at",
        "flags",
        "project",
        "published_at",
        "segments",
        "version",
    )

    version: int
    project: str
    environment: str
    published_at: str | None
    expires: str | None
    expires_at: float | None
    digest: str | None
    flags: Mapping[str, Mapping[str, Any]]
    segments: Mapping[str, Mapping[str, Any]]
    _runners: dict[str, FlagRunner]
    _rule_conditions: dict[str, list[tuple[str, Predicate]]]
    _types: dict[str, str]
    _packed: _Packed | None
    _defects: dict[str, str]
    _defects_of_source: dict[str, str] | None
    _outcome_counters: OutcomeCounters  # set by count_outcomes, else unset

    @classmethod
    def from_payload(
        cls, payload: Mapping[str, Any], *, owned: bool = False, packed: bool = False
    ) -> Snapshot:
        """Check ``payload`` against the snapshot form and precompile every flag.

        The snapshot keeps a private deep copy of the flags and segments, so changing
        ``payload`` afterwards changes nothing. ``owned=True`` hands the payload over
        instead: the caller promises that nothing changes it afterwards (the SDK passes
        a payload it has just parsed and holds no other reference to), and the copy —
        about as costly as the compilation itself for a large snapshot — is skipped.

        ``packed=True`` keeps the specs packed and drops the compiled flags once every
        one compiled (see the class doc): a fraction of the memory, each flag compiled
        again on its first evaluation. Specs that are not plain JSON data (which
        ``marshal`` refuses: a dict subclass, another Mapping) are kept unpacked.

        A payload whose ``flags`` and ``segments`` are ``PackedSpecs`` already is taken
        as it is, packed, and its flags are checked on first use (see the class doc).

        Raises ``SnapshotFormatError`` naming the offending place in the payload.
        """
        payload = _mapping(payload, "payload")
        if payload.get("format") != FORMAT:
            raise _fail("format", f"expected {FORMAT!r}, got {payload.get('format')!r}")
        version = _integer(payload.get("version", 0), "version", 0, 2**53 - 1)
        given_flags, given_segments = payload.get("flags"), payload.get("segments")
        if isinstance(given_flags, PackedSpecs) and isinstance(given_segments, PackedSpecs):
            # Flags are checked on first use; segments (few) now, every one, so that a
            # bad one no flag uses yet refuses the snapshot as a whole check would.
            packed_form = _Packed(given_flags, given_segments, {}, {}, {})
            segments = _Compiler.for_segments(version, packed_form)
            for key in given_segments:
                segments.segment(key, "segments")
            return cls._made(payload, version, packed_form)
        compiler = _Compiler(payload, version, owned=owned)
        flag_pieces: list[bytes] = []
        if packed:
            try:
                flag_pieces = [marshal.dumps(spec) for spec in compiler.flag_specs.values()]
                flag_specs = PackedSpecs(compiler.flag_specs, flag_pieces)
                segment_specs = PackedSpecs(compiler.segment_specs)
            except (ValueError, TypeError, RecursionError):  # not plain JSON data
                packed = False
        for key in compiler.segment_specs:
            compiler.segment(key, "segments")
        if packed:
            _check_flags(compiler, compiler.flag_specs, flag_pieces)
            return cls._made(payload, version, _Packed(flag_specs, segment_specs, {}, {}, {}))
        for key in compiler.flag_specs:
            compiler.flag(key, "flags")
        return cls._made(payload, version, None, compiler)

    @classmethod
    def _made(
        cls,
        payload: Mapping[str, Any],
        version: int,
        packed: _Packed | None,
        compiler: _Compiler | None = None,
    ) -> Snapshot:
        """The snapshot of ``payload``: packed, or precompiled by ``compiler``."""
        snapshot = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(snapshot, "version", version)
        setattr_(snapshot, "project", _text(payload.get("project", ""), "project"))
        setattr_(snapshot, "environment", _text(payload.get("environment", ""), "environment"))
        setattr_(
            snapshot, "published_at", _optional_text(payload.get("published_at"), "published_at")
        )
        expires = _optional_text(payload.get("expires"), "expires")
        setattr_(snapshot, "expires", expires)
        setattr_(snapshot, "expires_at", _optional_instant(expires, "expires"))
        setattr_(snapshot, "digest", _optional_text(payload.get("digest"), "digest"))
        setattr_(snapshot, "_defects", {})
        setattr_(snapshot, "_defects_of_source", None)
        setattr_(snapshot, "_packed", packed)
        if packed is not None:
            setattr_(snapshot, "flags", packed.flag_specs)
            setattr_(snapshot, "segments", packed.segment_specs)
            setattr_(snapshot, "_runners", {})
            setattr_(snapshot, "_types", {})
            setattr_(snapshot, "_rule_conditions", {})
            return snapshot
        assert compiler is not None
        setattr_(snapshot, "flags", MappingProxyType(compiler.flag_specs))
        setattr_(snapshot, "segments", MappingProxyType(compiler.segment_specs))
        setattr_(snapshot, "_runners", compiler.flags)
        setattr_(snapshot, "_types", compiler.types)
        setattr_(snapshot, "_rule_conditions", compiler.rule_conditions)
        return snapshot

    @property
    def defects(self) -> Mapping[str, str]:
        """Flags found unusable on their first evaluation, each with why (see the class
        doc); empty for a snapshot checked whole when it was made."""
        return MappingProxyType(self._defects)

    def report_defects_to(self, source: Snapshot) -> None:
        """Record this snapshot's defects in ``source``'s too (logging each once for
        both): this one is ``source`` with emergency overrides applied, whose flags
        fail only where ``source``'s do (a killed flag loses only what it never
        evaluates), so ``source.defects`` tells every flag that failed, whichever
        of the two evaluated it."""
        object.__setattr__(self, "_defects_of_source", source._defects)

    def check_every_flag(self, *, failing_already: Callable[[str], bool] | None = None) -> None:
        """Check every flag not yet checked by compiling it (the results are dropped:
        this needs the memory of one flag); raises ``SnapshotFormatError`` naming the
        first bad place. A no-op for a snapshot checked whole when it was made.

        ``failing_already(key)``: whether flag ``key`` already answers the caller's
        default where this snapshot is to be used (absent from, or failing in, the
        snapshot it replaces). Such a flag failing here too is recorded in ``defects``
        (logged, answering PARSE_ERROR, as on first use) instead of refusing the
        snapshot: refusing it would keep that flag failing and hold back the rest."""
        packed = self._packed
        if packed is None or packed.flag_specs.form == "marshal":
            return

        def tolerate(key: str, error: SnapshotFormatError) -> bool:
            if failing_already is None or not failing_already(key):
                return False
            self._record_defect(key, error)
            return True

        for key, defect in list(self._defects.items()):
            if not tolerate(key, SnapshotFormatError(defect)):
                raise SnapshotFormatError(defect)
        # The segments compiled at load are shared; the flags' clauses and outcomes not
        # (kept, they would hold every flag's).
        compiler = _Compiler.for_segments(
            self.version, _Packed(packed.flag_specs, packed.segment_specs, packed.segments, {}, {})
        )
        # Read in batches (one strict read of many specs costs far less than one each),
        # each batch's specs dropped once its flags are checked.
        specs = packed.flag_specs
        keys = [key for key in specs if key not in self._defects]
        ahead = _ReadAhead(specs)
        compiler.flag_specs = ahead  # type: ignore[assignment]
        for start in range(0, len(keys), _CHECK_BATCH):
            batch = keys[start : start + _CHECK_BATCH]
            ahead.read = specs.read_many(batch)
            _check_flags(compiler, batch, (specs.packed(key) or b"" for key in batch), tolerate)

    def fails(self, flag_key: str) -> bool:
        """Whether ``flag_key`` answers the caller's default for want of a usable flag:
        absent, or failing its check (made now, on a packed snapshot, if not yet)."""
        if flag_key not in self.flags:
            return True
        try:
            return self._compiled(flag_key) is None
        except RecursionError:
            return True

    def _compiled(self, flag_key: str) -> FlagRunner | None:
        """``flag_key``'s compiled flag, compiling it now if the snapshot is packed and
        it was not yet; None when the snapshot has no such flag, or it failed its check
        (then ``_defects`` says why)."""
        run = self._runners.get(flag_key)
        if run is not None or self._packed is None or flag_key not in self._packed.flag_specs:
            return run
        if flag_key in self._defects:
            return None
        try:
            return _Compiler.on_demand(self, self._packed).flag(flag_key, "flags")
        except SnapshotFormatError as error:  # only a snapshot checked on first use
            self._record_defect(flag_key, error)
            return None

    def _record_defect(self, flag_key: str, error: SnapshotFormatError) -> None:
        """``flag_key`` fails its check: it answers PARSE_ERROR from now on (logged once)."""
        text = str(error)
        message = (
            text
            if text.startswith(f"flag {flag_key!r} of ")
            else f"flag {flag_key!r} of {self.project}/{self.environment} version "
            f"{self.version} cannot be evaluated: {text}"
        )
        self._types.pop(flag_key, None)
        self._rule_conditions.pop(flag_key, None)
        if self._defects.setdefault(flag_key, message) is message:
            source = self._defects_of_source
            if source is None or source.setdefault(flag_key, message) is message:
                _logger.warning("%s; it answers the caller's default (PARSE_ERROR)", message)

    def count_outcomes(self, counters: OutcomeCounters) -> None:
        """Give each outcome of each flag compiled from now on its own counter, in the
        ``counter`` attribute of its Details: ``counters(flag_key, variation, reason)``,
        called as the flag compiles (the SDK's telemetry advances it after each
        evaluation: one attribute read, no lookup; see flagstone.sdk.telemetry).

        Only the flags of a packed snapshot compile after it is made (each on its first
        evaluation), so only those count; the Details of errors, of flags compiled
        earlier and of an unpacked snapshot keep ``counter`` None. The answers do not
        change: ``counter`` is no field (not compared, hashed, printed or copied)."""
        object.__setattr__(self, "_outcome_counters", counters)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Snapshot is immutable")

    def __repr__(self) -> str:
        return (
            f"Snapshot(project={self.project!r}, environment={self.environment!r}, "
            f"version={self.version}, flags={len(self.flags)})"
        )

    def _compiled_here(self, flag_key: str) -> None:
        """``_compiled`` for the readers below: a prerequisite chain too deep for this
        thread's stack here raises nothing (``evaluate`` answers it GENERAL; a
        shallower caller may compile it)."""
        try:
            self._compiled(flag_key)
        except RecursionError:
            return

    def matching_rule(self, flag_key: str, context: Mapping[str, Any]) -> str | None:
        """The name of the first rule of ``flag_key`` whose condition ``context`` meets."""
        self._compiled_here(flag_key)
        for name, condition in self._rule_conditions.get(flag_key, []):
            if condition(context):
                return name
        return None

    def flag_type(self, flag_key: str) -> str | None:
        """``boolean``, ``string``, ``number`` or ``json``; None for an unknown flag."""
        self._compiled_here(flag_key)
        return self._types.get(flag_key)

    def evaluate(
        self,
        flag_key: str,
        context: Any,  # a mapping or None; anything else is checked and refused
        default: Any = None,
        *,
        at: float | None = None,
    ) -> Details:
        """Evaluate ``flag_key`` for ``context`` at time ``at`` (epoch seconds; now if None).

        Never raises. A non-None ``default`` whose type the flag cannot serve gives
        TYPE_MISMATCH; a context that is not a mapping (a list, a string, an
        ``InvalidContext``), cannot be read, has a ``key`` that is not a string, or holds a
        value that made the evaluation fail and is not a JSON value gives INVALID_CONTEXT.
        """
        try:
            run = self._runners.get(flag_key)
            if run is None and self._packed is not None:
                run = self._compiled(flag_key)
            if run is None:
                defect = self._defects.get(flag_key)
                if defect is not None:
                    return self._error(default, PARSE_ERROR, defect)
                return self._error(
                    default, FLAG_NOT_FOUND, f"flag {flag_key!r} is not in this snapshot"
                )
            if default is not None and not _type_accepts(self._types[flag_key], default):
                return self._error(
                    default,
                    TYPE_MISMATCH,
                    f"flag {flag_key!r} is {self._types[flag_key]}; the default {default!r} is not",
                )
            if context is None:
                context = {}
            elif context.__class__ is not dict:
                # Anything but a plain dict (the hot path) is read once into one, so a
                # mapping whose reads raise or change between reads is caught here.
                readable = plain_context(context)
                if isinstance(readable, InvalidContext):
                    return self._error(default, INVALID_CONTEXT, readable.reason)
                context = readable
            key = context.get("key")
            if key is not None and key.__class__ is not str and not isinstance(key, str):
                return self._error(default, INVALID_CONTEXT, "the context's key must be a string")
            return run(context, at)
        except Exception as error:  # evaluation must never raise into the caller
            defect = context_defect(context)
            if defect is not None:
                return self._error(default, INVALID_CONTEXT, defect)
            return self._error(default, GENERAL, _error_text(error))

    def _error(self, default: Any, code: str, message: str) -> Details:
        return Details(default, None, ERROR, code, message, None, self.version, None)


class InvalidContext:
    """A context that cannot be evaluated, with why; ``evaluate`` answers INVALID_CONTEXT.

    ``plain_context`` returns one; the SDK's context adaptation does too, so an
    OpenFeature-like object whose ``attributes`` raise is reported, not raised."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"InvalidContext({self.reason!r})"


def plain_context(context: Any) -> dict[str, Any] | InvalidContext:
    """``context`` as a plain dict (None is the empty context), or ``InvalidContext``
    when it is not a mapping (a list, a string …) or cannot be read."""
    if context is None:
        return {}
    if isinstance(context, InvalidContext):
        return context
    if not isinstance(context, Mapping):
        return InvalidContext(f"the context must be a mapping, not {type(context).__name__}")
    try:
        return dict(context)
    except Exception as error:  # a hostile or broken mapping: its reads raise
        return InvalidContext(f"the context cannot be read ({type(error).__name__})")


def _error_text(error: BaseException) -> str:
    """``Name: message`` of an exception, even one whose ``__str__`` raises."""
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:
        return type(error).__name__


_JSON_LEAVES = (str, int, float, bool, type(None))
_DEFECT_SCAN_LIMIT = 10_000  # values looked at before giving up (bounded, no recursion)


def context_defect(context: Any) -> str | None:
    """Why ``context`` is not a JSON-like context (a value of another type, a key that is
    not text), or None. Only called after an evaluation failed, to tell a bad context
    (INVALID_CONTEXT) from a bug (GENERAL); the hot path never pays for it."""
    if context.__class__ is not dict:
        return None if context is None else "the context must be a plain mapping"
    pending: list[tuple[str, Any]] = [("", context)]
    seen = 0
    while pending and seen < _DEFECT_SCAN_LIMIT:
        where, value = pending.pop()
        seen += 1
        kind = value.__class__
        if kind in _JSON_LEAVES:
            continue
        if kind is dict:
            for name, inner in value.items():
                if name.__class__ is not str:
                    return f"the context has a key that is not text at {where or 'the top'}"
                pending.append((f"{where}.{name}" if where else name, inner))
        elif kind is list or kind is tuple:
            pending.extend((f"{where}[{i}]", inner) for i, inner in enumerate(value))
        else:
            return f"the context's attribute {where!r} is a {kind.__name__}, not a JSON value"
    return None
