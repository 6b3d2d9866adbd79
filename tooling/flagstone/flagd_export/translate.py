"""The translator: a snapshot payload's flags and segments as a flagd flag definition,
and the export entry points (``export_flagd``, ``check_flagd_export``, ``flagd_json``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flagstone.engine import Snapshot, parse_timestamp
from flagstone.errors import ExportError
from flagstone.flagd_export.clauses import MAX_SAFE_INTEGER, translate_clause
from flagstone.flagd_export.jsonlogic import (
    Logic,
    and_,
    fractional,
    if_chain,
    is_integer,
    is_list,
    is_string,
    not_,
    or_,
)
from flagstone.flagd_export.refusal import FlagdRefused, Place, Refusal, Unsupported
from flagstone.gcpause import cyclic_gc_paused
from flagstone.model import Project

FLAGD_SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
TOTAL_WEIGHT = 100_000
SEGMENT_MODES = ("inline", "evaluators")
# flagd has no prerequisites: each link of a chain is written into every dependent flag.
MAX_PREREQUISITE_DEPTH = 32
# Path parts flagd's var reads from a string or list (an index or .length).
_INDEXING_PATH_PART = re.compile(r"length|0|[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class FlagdExport:
    """The flagd document and the flags that could not be exported (only with
    ``skip_unsupported``)."""

    document: dict[str, Any]
    refused: tuple[Refusal, ...] = field(default_factory=tuple)


def export_flagd(
    payload: Mapping[str, Any],
    *,
    segments: str = "inline",
    skip_unsupported: bool = False,
    checked: bool = False,
) -> FlagdExport:
    """The flagd flag definition of one snapshot payload.

    ``segments`` is ``inline`` (each segment test written where it is used) or
    ``evaluators`` (shared ``$evaluators`` referenced with ``$ref``). Raises
    ``ExportError`` naming the first flag that cannot be reproduced exactly, unless
    ``skip_unsupported`` is set, in which case such flags are left out and listed in
    ``FlagdExport.refused``. Raises ``SnapshotFormatError`` for a payload that does not
    have the snapshot form; ``checked=True`` says the engine has already loaded this
    payload (``compile_environment`` does), so it is not compiled a second time.
    """
    if segments not in SEGMENT_MODES:
        raise ExportError(f"unknown segment mode {segments!r} (one of: {', '.join(SEGMENT_MODES)})")
    # Export only what the engine accepts (raises SnapshotFormatError naming the place),
    # so the translation below can rely on the snapshot form.
    with cyclic_gc_paused():
        if not checked:
            Snapshot.from_payload(payload)
        translator = _Translator(payload, use_evaluators=segments == "evaluators")
        flags: dict[str, Any] = {}
        refused: list[Refusal] = []
        for key in sorted(translator.flag_specs):
            try:
                flags[key] = translator.flag_definition(key)
            except Unsupported as problem:
                refusal = Refusal(key, str(problem), problem.place)
                if not skip_unsupported:
                    raise FlagdRefused(refusal) from None
                refused.append(refusal)

    document: dict[str, Any] = {"$schema": FLAGD_SCHEMA_URL}
    metadata = translator.metadata()
    if metadata:
        document["metadata"] = metadata
    document["flags"] = flags
    used = translator.used_evaluators(flags)
    if used:
        document["$evaluators"] = used
    return FlagdExport(document, tuple(refused))


def located_refusal(project: Project, env: str, refusal: Refusal) -> str:
    """The refusal as ``file:line:col: cannot export …`` when its place is known."""
    text = f"cannot export {refusal.message()}"
    place, flag = refusal.place, project.flags.get(refusal.flag)
    document = None
    if place is None:
        return text
    if place.file == "release" and flag is not None and env in flag.releases:
        document = flag.releases[env].doc
    elif place.file == "flag" and flag is not None:
        document = flag.doc
    elif place.file == "segment" and place.segment in project.segments:
        document = project.segments[place.segment].doc
    if document is None:
        return text
    line, col = document.position(place.path)
    return f"{document.rel}:{line}:{col}: {text}"


def check_flagd_export(project: Project, env: str, payload: Mapping[str, Any]) -> None:
    """Raise ``ExportError`` (with ``file:line:col``) if any flag of ``payload``, compiled
    from ``project``'s environment ``env`` by ``compile_environment``, cannot be exported
    to flagd."""
    try:
        export_flagd(payload, checked=True)
    except FlagdRefused as error:
        raise ExportError(located_refusal(project, env, error.refusal), hint=error.hint) from None


def flagd_json(document: Mapping[str, Any]) -> bytes:
    """The document as UTF-8 JSON text in a fixed key order, newline-terminated.

    Indented for reading down to a depth; deeper logic is written on one line, since
    indenting deeply nested JSONLogic multiplies the file's size.
    """
    return (_pretty(document, 0) + "\n").encode()


_INLINE_WIDTH = 88
_PRETTY_DEPTH = 7


def _pretty(value: Any, depth: int) -> str:
    compact = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    if depth >= _PRETTY_DEPTH or len(compact) + 2 * depth <= _INLINE_WIDTH:
        return compact
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, Mapping) and value:
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, depth + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value:
        items = [inner + _pretty(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return compact


@dataclass(slots=True)
class _Translator:
    payload: Mapping[str, Any]
    use_evaluators: bool
    flag_specs: Mapping[str, Any] = field(init=False)
    segment_specs: Mapping[str, Any] = field(init=False)
    evaluators: dict[str, Logic] = field(default_factory=dict)
    _segments_in_progress: list[str] = field(default_factory=list)
    # flag key -> (its served-variation expression, its chain depth) or why it cannot be
    # exported
    _served: dict[str, tuple[Logic, int] | Unsupported] = field(default_factory=dict)

    def __post_init__(self) -> None:
        flags = self.payload.get("flags")
        segments = self.payload.get("segments", {})
        if not isinstance(flags, Mapping) or not isinstance(segments, Mapping):
            raise ExportError("the payload has no flags/segments objects; is it a snapshot?")
        self.flag_specs = flags
        self.segment_specs = segments

    def metadata(self) -> dict[str, str]:
        metadata = {}
        project, environment = self.payload.get("project"), self.payload.get("environment")
        if isinstance(project, str) and isinstance(environment, str):
            metadata["flagSetId"] = f"{project}/{environment}"
        version = self.payload.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            metadata["version"] = str(version)
        digest = self.payload.get("digest")
        if isinstance(digest, str):
            metadata["flagstoneDigest"] = digest
        return metadata

    def used_evaluators(self, flags: Mapping[str, Any]) -> dict[str, Logic]:
        text = json.dumps(flags)
        return {
            name: rule
            for name, rule in sorted(self.evaluators.items())
            if json.dumps({"$ref": name}) in text
        }

    # -- flags --

    def flag_definition(self, key: str) -> dict[str, Any]:
        spec = self._flag(key)
        variants = dict(spec["variations"])
        try:
            _check_variants(variants)
        except Unsupported as problem:
            raise Unsupported(str(problem), Place("flag", ("variations",))) from None
        off = spec["off_variation"]
        definition: dict[str, Any] = {"state": "ENABLED", "variants": variants}
        if not spec.get("enabled"):
            definition["defaultVariant"] = off
            return definition
        branches = self._branches(key, spec, stack=[key])
        if "variation" in spec["default"]:
            # Null falls back to defaultVariant; flagd then reports reason DEFAULT.
            definition["defaultVariant"] = spec["default"]["variation"]
            targeting = if_chain(branches, None)
        else:
            # Splits and progressions always name a variant; defaultVariant is only what
            # a provider serves if its evaluator fails.
            definition["defaultVariant"] = off
            targeting = if_chain(branches, self._default(key, spec))
        if isinstance(targeting, str):  # every condition folded to a constant
            definition["defaultVariant"] = targeting
        elif targeting is not None:
            definition["targeting"] = targeting
        return definition

    def _flag(self, key: str) -> Mapping[str, Any]:
        spec = self.flag_specs.get(key)
        if not isinstance(spec, Mapping):
            raise Unsupported(f"prerequisite flag {key!r} is not in the snapshot")
        return spec

    def served_variation(self, key: str, stack: list[str]) -> Logic:
        """An expression giving the variation key flag ``key`` serves (never null).

        flagd has no prerequisites, so a prerequisite's logic is written into each flag
        that needs it. Each flag's expression is translated once and shared (a chain of
        prerequisites costs each link once, not once per dependent), and a flag whose
        chain of prerequisites is longer than ``MAX_PREREQUISITE_DEPTH`` is refused: its
        logic would nest that deep, and the export would grow with the square of the
        chain's length."""
        if key in stack:
            raise Unsupported(f"prerequisite cycle {' -> '.join([*stack, key])}")
        known = self._served.get(key)
        if isinstance(known, Unsupported):
            raise Unsupported(str(known))
        if known is not None:
            return known[0]
        if len(stack) > MAX_PREREQUISITE_DEPTH:  # the chain below is deeper still
            raise Unsupported(self._too_deep(key))
        spec = self._flag(key)
        try:
            if not spec.get("enabled"):
                served: Logic = spec["off_variation"]
                depth = 1
            else:
                branches = self._branches(key, spec, stack=[*stack, key])
                served = if_chain(branches, self._default(key, spec))
                depth = 1 + max(
                    (self._depth(p["flag"]) for p in spec.get("prerequisites", [])), default=0
                )
                if depth > MAX_PREREQUISITE_DEPTH:
                    raise Unsupported(self._too_deep(key))
        except Unsupported as problem:
            # Name the first prerequisite and the cause, not every link in between.
            cause = str(problem)
            while cause.startswith("prerequisite '"):
                cause = cause.split(": ", 1)[-1]
            refused = Unsupported(f"prerequisite {key!r}: {cause}")
            if "cycle" not in cause:
                self._served[key] = refused  # the same answer for every dependent
            raise refused from None  # placed by caller
        self._served[key] = (served, depth)
        return served

    def _depth(self, key: str) -> int:
        known = self._served.get(key)
        return known[1] if isinstance(known, tuple) else MAX_PREREQUISITE_DEPTH + 1

    @staticmethod
    def _too_deep(key: str) -> str:
        return (
            f"a prerequisite chain longer than {MAX_PREREQUISITE_DEPTH} flags (at {key!r}): "
            "flagd has no prerequisites, and writing each link into every dependent flag "
            "nests that deep and grows the export with the square of the chain's length"
        )

    def _branches(
        self, key: str, spec: Mapping[str, Any], stack: list[str]
    ) -> list[tuple[Logic, Logic]]:
        branches: list[tuple[Logic, Logic]] = []
        failed = []
        for i, prerequisite in enumerate(spec.get("prerequisites", [])):
            try:
                served = self.served_variation(prerequisite["flag"], stack)
            except Unsupported as problem:
                # Point at the prerequisite entry of the flag being exported.
                raise Unsupported(str(problem), Place("flag", ("prerequisites", i))) from None
            failed.append({"!==": [served, prerequisite["variation"]]})
        if failed:
            branches.append((or_(*failed), spec["off_variation"]))
        targeting_key = {"var": "targetingKey"}
        for target in spec.get("targets", []):
            if target["keys"]:
                branches.append(
                    ({"in": [targeting_key, list(target["keys"])]}, target["variation"])
                )
        for i, rule in enumerate(spec.get("rules", [])):
            try:
                condition = self.condition(rule["condition"])
            except Unsupported as problem:
                raise problem.within(
                    f"rule {rule.get('name')!r}", Place("release", ("rules", i, "if"))
                ) from None
            branches.append((condition, self._serve(key, rule["serve"])))
        return branches

    def _default(self, key: str, spec: Mapping[str, Any]) -> Logic:
        default = spec["default"]
        if "progression" in default:
            return self._progression(key, default["progression"])
        return self._serve(key, default)

    def _serve(self, key: str, serve: Mapping[str, Any]) -> Logic:
        if "variation" in serve:
            return serve["variation"]
        split = serve["split"]
        weights = [(w["variation"], w["weight"]) for w in split["weights"]]
        first = weights[0][0]
        bucketed = fractional(
            split.get("seed", key), self._bucket_value(split), [(v, w) for v, w in weights if w > 0]
        )
        return {"if": [self._bucketable(split), bucketed, first]}

    def _bucket_value(self, spec: Mapping[str, Any]) -> Logic:
        return self._attribute(spec.get("bucket_by", "key"))[0]

    def _bucketable(self, spec: Mapping[str, Any]) -> Logic:
        value, guard = self._attribute(spec.get("bucket_by", "key"))
        return and_(guard, or_(is_string(value), is_integer(value)))

    def _progression(self, key: str, progression: Mapping[str, Any]) -> Logic:
        variation, baseline = progression["variation"], progression["baseline"]
        stages = progression["stages"]
        names = [stage["name"] for stage in stages]
        current = progression.get("current")
        active = names.index(current) if current is not None else -1
        bucket_value = self._bucket_value(progression)
        bucketable = self._bucketable(progression)
        seed = progression.get("seed", key)

        def stage_decision(index: int) -> Logic:
            if index < 0:
                return baseline
            ring = [s for stage in stages[: index + 1] for s in stage.get("segments", [])]
            weight = stages[index]["weight"]
            if weight == 0:
                by_bucket: Logic = baseline
            else:
                shares = [(variation, weight), (baseline, TOTAL_WEIGHT - weight)]
                by_bucket = {
                    "if": [
                        bucketable,
                        fractional(seed, bucket_value, [s for s in shares if s[1] > 0]),
                        baseline,
                    ]
                }
            if not ring:
                return by_bucket
            in_ring = or_(*(self.segment(s) for s in dict.fromkeys(ring)))
            return {"if": [in_ring, variation, by_bucket]}

        scheduled: list[tuple[Logic, Logic]] = []
        for index in range(len(stages) - 1, active, -1):
            at = stages[index].get("at")
            if at is None:
                continue
            instant = parse_timestamp(at)
            if instant is None or instant != int(instant):
                raise Unsupported(
                    f"stage {names[index]!r} has 'at' {at!r}, not whole seconds",
                    Place("release", ("default", "progression", "stages", index, "at")),
                )
            scheduled.append(
                ({">=": [{"var": "$flagd.timestamp"}, int(instant)]}, stage_decision(index))
            )
        return if_chain(scheduled, stage_decision(active))

    # -- conditions --

    def condition(self, spec: Mapping[str, Any]) -> Logic:
        if "segment" in spec:
            return self.segment(spec["segment"])
        if "all" in spec:
            return and_(*(self.condition(c) for c in spec["all"]))
        if "any" in spec:
            return or_(*(self.condition(c) for c in spec["any"]))
        if "not" in spec:
            return not_(self.condition(spec["not"]))
        return self.clause(spec["attribute"], spec["op"], spec.get("values", []))

    def clause(self, attribute: str, op: str, values: Sequence[Any]) -> Logic:
        value, guard = self._attribute(attribute)
        return and_(guard, translate_clause(value, op, values))

    def _attribute(self, attribute: str) -> tuple[Logic, Logic]:
        """The ``var`` expression of an attribute, and a guard that is true when flagd's
        ``var`` reads the same value the engine does (True when no guard is needed)."""
        parts = attribute.split(".")
        if parts[0] in ("targetingKey", "$flagd"):
            raise Unsupported(
                f"attribute {attribute!r}: {parts[0]!r} is reserved in flagd's context"
            )
        if parts[0] == "key":
            parts[0] = "targetingKey"
        guards = []
        for i in range(1, len(parts)):
            if _INDEXING_PATH_PART.fullmatch(parts[i]):
                # flagd's var indexes strings and lists here; the engine reads only objects.
                parent = {"var": ".".join(parts[:i])}
                guards.append(and_(not_(is_string(parent)), not_(is_list(parent))))
        return {"var": ".".join(parts)}, and_(*guards)

    def segment(self, key: str) -> Logic:
        if self.use_evaluators and not self._segments_in_progress:
            if key not in self.evaluators:
                self.evaluators[key] = self._segment_logic(key)
            if isinstance(self.evaluators[key], bool):
                return self.evaluators[key]  # an empty segment; evaluators must be rules
            rule_text = json.dumps(self.evaluators[key])
            if "\\" in rule_text:
                # flagd-core substitutes $ref with re.sub, which mangles backslash escapes
                # (non-ASCII text, quotes, control characters) in the shared rule.
                raise Unsupported(
                    f"segment {key!r} has text flagd's $evaluators substitution cannot carry "
                    "(non-ASCII or escaped characters); export with --segments inline",
                    Place("segment", (), key),
                )
            return {"$ref": key}
        return self._segment_logic(key)

    def _segment_logic(self, key: str) -> Logic:
        spec = self.segment_specs.get(key)
        if not isinstance(spec, Mapping):
            raise Unsupported(f"segment {key!r} is not in the snapshot")
        if key in self._segments_in_progress:
            raise Unsupported(f"segment cycle {' -> '.join([*self._segments_in_progress, key])}")
        self._segments_in_progress.append(key)
        targeting_key = {"var": "targetingKey"}
        include = list(spec.get("include", []))
        exclude = list(spec.get("exclude", []))
        rules = []
        try:
            for j, condition in enumerate(spec.get("rules", [])):
                try:
                    rules.append(self.condition(condition))
                except Unsupported as problem:
                    raise problem.within(
                        f"segment {key!r}", Place("segment", ("rules", j), key)
                    ) from None
        finally:
            self._segments_in_progress.pop()
        included = or_({"in": [targeting_key, include]} if include else False, *rules)
        if not exclude:
            return included
        return and_(not_({"in": [targeting_key, exclude]}), included)


def _check_variants(variants: Mapping[str, Any]) -> None:
    """flagd's schema types a flag by its variants: all booleans, all strings, all
    numbers or all objects."""
    kinds = set()
    for name, value in variants.items():
        if isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, (int, float)):
            if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
                raise Unsupported(f"variation {name!r} is {value}, beyond ±2^53 - 1")
            kinds.add("number")
        elif isinstance(value, str):
            kinds.add("string")
        elif isinstance(value, Mapping):
            kinds.add("object")
        else:
            raise Unsupported(
                f"variation {name!r} is a JSON {type(value).__name__}; flagd object flags "
                "need JSON objects"
            )
    if len(kinds) > 1:
        raise Unsupported(
            f"variations mix {', '.join(sorted(kinds))} values; flagd flags have one type"
        )
