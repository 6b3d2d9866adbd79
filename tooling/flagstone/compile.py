"""The compiler: one environment of a flag repository → the snapshot payload.

The payload is the normalized, language-neutral form of docs/snapshot-format.md:
variation keys instead of YAML shorthands, clause values always as lists, percentages
as integer thousandths, durations as seconds, timestamps as RFC 3339 UTC, defaults made
explicit. Order that matters (targets, rules, split weights, stages) is kept in arrays;
everything else is keyed, so the canonical JSON (RFC 8785) of the same commit is the
same bytes whatever the file-system order.

The compiler expects a validated project (``flagstone.validate.load_valid_project``),
but still refuses, with ``file:line:col``, anything it cannot express in the snapshot
form rather than writing a snapshot an SDK would reject.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from flagstone.canonical import DIGEST_PREFIX, canonical_json, content_digest
from flagstone.engine import FORMAT, OPERATORS, Snapshot, check_clause_values
from flagstone.errors import RepositoryError, SnapshotFormatError, UsageError, ValidationFailed
from flagstone.gcpause import cyclic_gc_paused
from flagstone.loader import Document, PathKey
from flagstone.model import KEY_PATTERN, Flag, Project, ReleaseConfig
from flagstone.problems import Problem
from flagstone.rollout import TOTAL_WEIGHT, percent_weight, read_progression
from flagstone.timestamps import duration_seconds as duration_seconds  # re-exported
from flagstone.timestamps import parse_timestamp
from flagstone.toolcache import DocumentCache, digest_of

RULE = "compile"

Timestamp = str | datetime | float | int | None


def compile_environment(
    project: Project,
    env: str,
    *,
    version: int = 0,
    published_at: Timestamp = None,
    expires: Timestamp = None,
    source: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The snapshot payload of environment ``env``; see ``compile_and_load``."""
    payload, _ = compile_and_load(
        project, env, version=version, published_at=published_at, expires=expires, source=source
    )
    return payload


def compile_and_load(
    project: Project,
    env: str,
    *,
    version: int = 0,
    published_at: Timestamp = None,
    expires: Timestamp = None,
    source: Mapping[str, str | None] | None = None,
) -> tuple[dict[str, Any], Snapshot]:
    """The snapshot payload of environment ``env`` (a plain dict, ready for ``snapshot_bytes``)
    and the engine's ``Snapshot`` of it (a private copy: changing the payload changes
    nothing in it).

    ``published_at``/``expires`` may be aware datetimes, RFC 3339 strings or epoch
    seconds; they are written as ``YYYY-MM-DDTHH:MM:SSZ``. ``source`` is
    ``{"commit": sha, "ref": ref}`` (nulls when not compiled from git).

    Raises ``UsageError`` for an unknown environment and ``ValidationFailed`` for content
    that has no snapshot form.
    """
    with cyclic_gc_paused():
        return _compile_and_load(
            project, env, version=version, published_at=published_at, expires=expires, source=source
        )


def _compile_and_load(
    project: Project,
    env: str,
    *,
    version: int,
    published_at: Timestamp,
    expires: Timestamp,
    source: Mapping[str, str | None] | None,
) -> tuple[dict[str, Any], Snapshot]:

    if project.config is None:
        raise RepositoryError("flagstone.yaml could not be read; run `flagstone validate`")
    if env not in project.environments:
        known = ", ".join(project.environments) or "none"
        raise UsageError(f"unknown environment {env!r} (project environments: {known})")

    flags = {
        key: _FlagCompiler(flag, flag.releases.get(env), project).compile()
        for key, flag in sorted(project.flags.items())
        if not flag.archived
    }
    segments = {
        key: _compile_segment(segment.doc, project)
        for key, segment in sorted(project.segments.items())
    }
    source = source or {}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "project": project.config.name,
        "environment": env,
        "version": version,
        "published_at": timestamp_text(published_at),
        "expires": timestamp_text(expires),
        "source": {"commit": source.get("commit"), "ref": source.get("ref")},
        "digest": content_digest(flags, segments),
        "flags": flags,
        "segments": segments,
    }
    try:
        # The engine is the judge of the snapshot form: what it cannot load is not shipped.
        # The snapshot it builds is returned too, so a caller that evaluates (eval) does
        # not compile the same payload a second time.
        snapshot = Snapshot.from_payload(payload)
    except SnapshotFormatError as error:
        raise ValidationFailed([Problem("flags", 0, 0, RULE, "error", error.message)]) from None
    return payload, snapshot


def with_prerequisites(project: Project, flag_key: str) -> Project:
    """``project`` narrowed to ``flag_key`` and the flags it requires, directly or through
    others (and every segment): all that evaluating that one flag reads. ``eval`` compiles
    this instead of 10,000 flags."""
    needed: set[str] = set()
    pending = [flag_key]
    while pending:
        key = pending.pop()
        flag = project.flags.get(key)
        if flag is None or key in needed:
            continue
        needed.add(key)
        pending.extend(str(item.get("flag")) for item in flag.prerequisites)
    return Project(
        project.root,
        project.config,
        {key: flag for key, flag in project.flags.items() if key in needed},
        project.segments,
    )


def compiled_bytes(
    project: Project, env: str, *, source: Mapping[str, str | None] | None = None
) -> tuple[bytes, str]:
    """The canonical bytes and the content digest of ``env``'s unsigned payload (version
    0), as ``snapshot_bytes(compile_environment(…))``. With the project's document cache
    (``flagstone.toolcache``), each flag's compiled bytes are kept and taken again while
    what it is compiled from is unchanged (``_KeptFragments``): a one-flag change
    compiles and checks that flag (and the flags it requires), not 10,000."""
    cache = project.documents_cache
    if cache is not None:
        with cyclic_gc_paused():
            assembled = _KeptFragments(project, env, cache).compiled_bytes(source)
        if assembled is not None:
            return assembled
    payload = compile_environment(project, env, source=source)
    return snapshot_bytes(payload), str(payload["digest"])


class _KeptFragments:
    """Each flag's compiled form in one environment, as canonical JSON bytes, kept in the
    toolchain cache with the content digests of everything it is compiled from: the flag's
    ``flag.yaml`` and its release file for the environment, the environment, the segment
    keys and the ``flag.yaml`` of each flag it requires. Whether the flag is archived
    and which flags it requires are kept beside it, under the digest of its
    ``flag.yaml``, so that unchanged flags' values are never decoded.

    RFC 8785 writes an object as its members in key order, each value written on its
    own, so the payload's bytes are the kept bytes joined: the same bytes as writing the
    whole payload (tests compare them). Flags compiled again are checked by the engine
    with the flags they require and every segment, as the whole payload is the first
    time; a flag's bytes are kept only once that check passed."""

    def __init__(self, project: Project, env: str, cache: DocumentCache) -> None:
        self.project = project
        self.env = env
        self.cache = cache
        self.name = f"compile-flags-{digest_of([env])[:16]}"
        # What every flag's bytes depend on: the environment and the segment keys.
        self.common = digest_of([env, sorted(project.segments)])
        stored = cache.cache.get(self.name)
        kept = isinstance(stored, tuple) and len(stored) == 2 and stored[0] == self.common
        # flag key -> (flag.yaml digest, archived, required flags, the digests of what
        # else its bytes depend on, its canonical bytes)
        self.previous: dict[str, Any] = stored[1] if kept and isinstance(stored[1], dict) else {}

    def compiled_bytes(self, source: Mapping[str, str | None] | None) -> tuple[bytes, str] | None:
        """The payload's bytes and digest, or None when they cannot be joined from
        kept pieces (a flag key JSON would escape); the caller compiles it whole."""
        project, env = self.project, self.env
        if project.config is None or env not in project.environments:
            return None  # the whole compile says why
        known = self.cache.digests.get  # ``self.cache.digest``, inline: 10,000 flags
        previous = self.previous.get
        current: dict[str, Any] = {}
        pieces: dict[str, bytes] = {}
        compiled: dict[str, dict[str, Any]] = {}
        requires: dict[str, list[str]] = {}
        fresh = False  # whether anything is kept that was not kept before
        for key, flag in sorted(project.flags.items()):
            if KEY_PATTERN.fullmatch(key) is None:
                return None
            flag_entry = known(id(flag.doc))
            release = flag.releases.get(env)
            release_entry = known(id(release.doc)) if release is not None else ("", "-")
            if flag_entry is None or release_entry is None:
                return None
            flag_digest = flag_entry[1]
            stored = previous(key)
            if stored is not None and stored[0] == flag_digest:
                archived, names = stored[1], stored[2]  # kept per flag.yaml
            else:
                stored = None
                archived = flag.archived
                names = [str(item.get("flag")) for item in flag.prerequisites]
            if archived:
                current[key] = (flag_digest, True, names, (), b"")
                fresh = fresh or stored is None
                continue
            requires[key] = names
            depends: tuple[str, ...] = (release_entry[1],)
            for name in names:
                other = project.flags.get(name)
                other_entry = known(id(other.doc)) if other is not None else None
                depends += (name, other_entry[1] if other_entry is not None else "-")
            if stored is not None and stored[3] == depends:
                pieces[key] = stored[4]
                current[key] = stored
                continue
            spec = _FlagCompiler(flag, release, project).compile()
            compiled[key] = spec
            pieces[key] = canonical_json(spec)
            current[key] = (flag_digest, False, names, depends, pieces[key])
        segments = {
            key: _compile_segment(segment.doc, project)
            for key, segment in sorted(project.segments.items())
        }
        flags_bytes = (
            b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in pieces.items()) + b"}"
        )
        segments_bytes = canonical_json(segments)
        content = b'{"flags":' + flags_bytes + b',"segments":' + segments_bytes + b"}"
        digest = DIGEST_PREFIX + hashlib.sha256(content).hexdigest()
        source = source or {}
        source_values = {"commit": source.get("commit"), "ref": source.get("ref")}
        # Always: a changed segment is checked with every segment, as in a whole compile.
        self.check(compiled, requires, pieces, segments, digest, source_values)
        members = {
            "digest": canonical_json(digest),
            "environment": canonical_json(env),
            "expires": b"null",
            "flags": flags_bytes,
            "format": canonical_json(FORMAT),
            "project": canonical_json(project.config.name),
            "published_at": b"null",
            "segments": segments_bytes,
            "source": canonical_json(source_values),
            "version": b"0",
        }
        data = b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in members.items()) + b"}"
        if compiled or fresh or len(current) != len(self.previous):
            self.cache.cache.put(self.name, (self.common, current))
        return data, digest

    def check(
        self,
        compiled: dict[str, dict[str, Any]],
        requires: dict[str, list[str]],
        pieces: dict[str, bytes],
        segments: dict[str, Any],
        digest: str,
        source: dict[str, str | None],
    ) -> None:
        """The engine's check of the flags compiled again, with every flag they require
        (directly or through others), and of every segment."""
        flags: dict[str, Any] = {}
        pending = sorted(compiled)
        while pending:
            key = pending.pop()
            if key in flags or key not in pieces:
                continue
            flags[key] = compiled[key] if key in compiled else json.loads(pieces[key])
            pending.extend(requires[key])
        assert self.project.config is not None
        payload = {
            "format": FORMAT,
            "project": self.project.config.name,
            "environment": self.env,
            "version": 0,
            "published_at": None,
            "expires": None,
            "source": source,
            "digest": digest,
            "flags": dict(sorted(flags.items())),
            "segments": segments,
        }
        try:
            Snapshot.from_payload(payload, owned=True)
        except SnapshotFormatError as error:
            raise ValidationFailed([Problem("flags", 0, 0, RULE, "error", error.message)]) from None


def snapshot_bytes(payload: Mapping[str, Any]) -> bytes:
    """The canonical JSON (RFC 8785) bytes of a payload: what is signed and published."""
    return canonical_json(payload)


def timestamp_text(value: Timestamp) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds) for a datetime, RFC 3339 string or epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        instant = parse_timestamp(value)
        if instant is None:
            raise UsageError(f"{value!r} is not an RFC 3339 timestamp (e.g. 2026-12-03T09:00:00Z)")
        value = instant
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise UsageError(f"timestamp {value.isoformat()} has no time zone")
        moment = value.astimezone(UTC)
    else:
        try:
            moment = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"timestamp {value!r} is out of range") from None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Refuse(Exception):
    """Internal: content with no snapshot form, at ``where`` in ``doc``."""

    def __init__(self, doc: Document, where: PathKey, message: str) -> None:
        super().__init__(message)
        self.problem = _problem(doc, where, message)


def _problem(doc: Document, where: PathKey, message: str) -> Problem:
    line, col = doc.position(where)
    return Problem(doc.rel, line, col, RULE, "error", message)


class _ConditionCompiler:
    """Turns YAML conditions of one document into the snapshot's COND form."""

    def __init__(self, doc: Document, project: Project) -> None:
        self.doc = doc
        self.project = project

    def refuse(self, where: PathKey, message: str) -> _Refuse:
        return _Refuse(self.doc, where, message)

    def condition(self, spec: Any, where: PathKey) -> dict[str, Any]:
        if not isinstance(spec, Mapping):
            raise self.refuse(where, "a condition must be a mapping")
        if "segment" in spec:
            key = spec["segment"]
            if not isinstance(key, str) or key not in self.project.segments:
                raise self.refuse((*where, "segment"), f"unknown segment {key!r}")
            return {"segment": key}
        for combinator in ("all", "any"):
            if combinator in spec:
                parts = spec[combinator]
                if not isinstance(parts, list) or not parts:
                    raise self.refuse(
                        (*where, combinator), f"{combinator!r} needs a non-empty list"
                    )
                return {
                    combinator: [
                        self.condition(p, (*where, combinator, i)) for i, p in enumerate(parts)
                    ]
                }
        if "not" in spec:
            return {"not": self.condition(spec["not"], (*where, "not"))}
        if "attribute" not in spec:
            raise self.refuse(where, "a condition needs one of: attribute, segment, all, any, not")
        attribute, op = spec.get("attribute"), spec.get("op")
        if not isinstance(attribute, str) or not attribute:
            raise self.refuse((*where, "attribute"), "attribute must be a non-empty string")
        if "values" in spec:
            values, values_at = spec["values"], (*where, "values")
            if not isinstance(values, list):
                raise self.refuse(values_at, "values must be a list")
        elif "value" in spec:
            values, values_at = [spec["value"]], (*where, "value")
        else:
            values, values_at = [], where
        problem = check_clause_values(str(op), values)
        if problem:
            raise self.refuse((*where, "op") if op not in OPERATORS else values_at, problem)
        return {"attribute": attribute, "op": op, "values": list(values)}


def _compile_segment(doc: Document, project: Project) -> dict[str, Any]:
    data = doc.data if isinstance(doc.data, Mapping) else {}
    conditions = _ConditionCompiler(doc, project)
    try:
        return {
            "include": [str(k) for k in data.get("include") or []],
            "exclude": [str(k) for k in data.get("exclude") or []],
            "rules": [
                conditions.condition(c, ("rules", i)) for i, c in enumerate(data.get("rules") or [])
            ],
        }
    except _Refuse as refusal:
        raise ValidationFailed([refusal.problem]) from None


class _FlagCompiler:
    def __init__(self, flag: Flag, release: ReleaseConfig | None, project: Project) -> None:
        self.flag = flag
        self.release = release
        self.project = project
        self.variations = flag.variations
        self.conditions = _ConditionCompiler(release.doc if release else flag.doc, project)

    def compile(self) -> dict[str, Any]:
        try:
            return self._compile()
        except _Refuse as refusal:
            raise ValidationFailed([refusal.problem]) from None

    def refuse_in_flag(self, where: PathKey, message: str) -> _Refuse:
        return _Refuse(self.flag.doc, where, message)

    def refuse(self, where: PathKey, message: str) -> _Refuse:
        assert self.release is not None
        return _Refuse(self.release.doc, where, message)

    def variation(self, value: Any, where: PathKey, *, in_flag: bool = False) -> str:
        name = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if name is None or name not in self.variations:
            known = ", ".join(self.variations)
            refuse = self.refuse_in_flag if in_flag else self.refuse
            raise refuse(where, f"unknown variation {value!r} (flag {self.flag.key} has: {known})")
        return name

    def _compile(self) -> dict[str, Any]:
        flag = self.flag
        if not self.variations:
            raise self.refuse_in_flag(("variations",), "a flag needs at least one variation")
        off = self.variation(flag.off_variation, ("off_variation",), in_flag=True)
        prerequisites = []
        for i, item in enumerate(flag.prerequisites):
            other = self.project.flags.get(str(item.get("flag")))
            if other is None or other.archived:
                state = "archived" if other is not None else "unknown"
                raise self.refuse_in_flag(
                    ("prerequisites", i, "flag"), f"{state} prerequisite flag {item.get('flag')!r}"
                )
            required = str(item.get("variation"))
            if required not in other.variations:
                raise self.refuse_in_flag(
                    ("prerequisites", i, "variation"),
                    f"flag {other.key} has no variation {required!r}",
                )
            prerequisites.append({"flag": other.key, "variation": required})

        compiled: dict[str, Any] = {
            "type": flag.value_type,
            "kind": flag.kind,
            "variations": self.variations,
            "off_variation": off,
            "enabled": False,
            "prerequisites": prerequisites,
            "targets": [],
            "rules": [],
            "default": {"variation": off},
        }
        release = self.release
        if release is None or not release.enabled:
            return compiled
        compiled["enabled"] = True
        compiled["targets"] = [
            {"variation": self.variation(variation, ("targets", variation)), "keys": keys}
            for variation, keys in release.targets.items()
        ]
        compiled["rules"] = [self.rule(rule, ("rules", i)) for i, rule in enumerate(release.rules)]
        default = release.default
        if default is None:
            compiled["default"] = {"variation": off}
        elif isinstance(default, Mapping) and "progression" in default:
            compiled["default"] = {
                "progression": self.progression(default["progression"], ("default", "progression"))
            }
        else:
            compiled["default"] = self.serve(default, ("default",))
        return compiled

    def rule(self, rule: Any, where: PathKey) -> dict[str, Any]:
        if not isinstance(rule, Mapping) or not isinstance(rule.get("name"), str):
            raise self.refuse(where, "a rule needs a name, an `if` condition and a `serve`")
        return {
            "name": rule["name"],
            "condition": self.conditions.condition(rule.get("if"), (*where, "if")),
            "serve": self.serve(rule.get("serve"), (*where, "serve")),
        }

    def serve(self, spec: Any, where: PathKey) -> dict[str, Any]:
        if not isinstance(spec, Mapping):
            return {"variation": self.variation(spec, where)}
        if "split" not in spec:
            raise self.refuse(where, "serve a variation key or {split: {variation: percent, …}}")
        split = spec["split"]
        if not isinstance(split, Mapping) or not split:
            raise self.refuse((*where, "split"), "a split maps variations to percents")
        weights = []
        total = 0
        for variation, percent in split.items():
            weight = percent_weight(percent)
            if weight is None:
                raise self.refuse(
                    (*where, "split", variation),
                    f"{percent!r} is not a percent with at most 3 decimals",
                )
            weights.append(
                {
                    "variation": self.variation(variation, (*where, "split", variation)),
                    "weight": weight,
                }
            )
            total += weight
        if total != TOTAL_WEIGHT:
            raise self.refuse(
                (*where, "split"), f"split percents sum to {Decimal(total) / 1000}, not 100"
            )
        return {"split": {**self.bucketing(spec, where), "weights": weights}}

    def bucketing(self, spec: Mapping[str, Any], where: PathKey) -> dict[str, str]:
        bucket_by, seed = spec.get("bucket_by", "key"), spec.get("seed", self.flag.key)
        if not isinstance(bucket_by, str) or not bucket_by:
            raise self.refuse((*where, "bucket_by"), "bucket_by must be an attribute name")
        if not isinstance(seed, str):
            raise self.refuse((*where, "seed"), "seed must be a string")
        return {"bucket_by": bucket_by, "seed": seed}

    def progression(self, spec: Any, where: PathKey) -> dict[str, Any]:
        if not isinstance(spec, Mapping):
            raise self.refuse(where, "a progression is a mapping")
        stages_spec = spec.get("stages")
        if not isinstance(stages_spec, list) or not stages_spec:
            raise self.refuse((*where, "stages"), "a progression needs at least one stage")
        for i, stage in enumerate(stages_spec):
            here = (*where, "stages", i)
            if not isinstance(stage, Mapping) or not isinstance(stage.get("name"), str):
                raise self.refuse(here, "a stage needs a name")
            for j, segment in enumerate(stage.get("segments") or []):
                if str(segment) not in self.project.segments:
                    raise self.refuse((*here, "segments", j), f"unknown segment {segment!r}")
            if "percent" in stage and percent_weight(stage["percent"]) is None:
                raise self.refuse(
                    (*here, "percent"),
                    f"{stage['percent']!r} is not a percent with at most 3 decimals",
                )
            bake = stage.get("bake")
            if bake is not None and (not isinstance(bake, str) or duration_seconds(bake) is None):
                raise self.refuse(
                    (*here, "bake"), f"{bake!r} is not a duration like 30m, 24h or 7d"
                )
            at = stage.get("at")
            if at is not None:
                instant = parse_timestamp(at) if isinstance(at, str) else None
                if instant is None:
                    raise self.refuse(
                        (*here, "at"),
                        f"{at!r} is not an RFC 3339 timestamp (e.g. 2026-12-03T09:00:00Z)",
                    )
                if instant != int(instant):
                    # The snapshot keeps whole seconds; rounding would move the switch.
                    raise self.refuse((*here, "at"), f"{at!r}: a stage starts on a whole second")
        # What each stage reaches (a stage without a percent keeps the one before it)
        # is flagstone.rollout's rule, the same the engine and the toolchain read.
        plan = read_progression(spec)
        assert plan is not None and len(plan.stages) == len(stages_spec)
        stages = [
            {
                "name": stage.name,
                "segments": list(stage.segments),
                "weight": stage.weight,
                "at": timestamp_text(stage.at) if stage.at is not None else None,
                "bake": stage.bake,
            }
            for stage in plan.stages
        ]
        names = [stage.name for stage in plan.stages]
        current = spec.get("current")
        if current is not None and current not in names:
            raise self.refuse(
                (*where, "current"), f"unknown stage {current!r} (stages: {', '.join(names)})"
            )
        return {
            "variation": self.variation(spec.get("variation"), (*where, "variation")),
            "baseline": self.variation(spec.get("baseline"), (*where, "baseline")),
            **self.bucketing(spec, where),
            "current": current,
            "stages": stages,
        }


def git_source(root: Path) -> dict[str, str | None]:
    """``{"commit", "ref"}`` of the git HEAD at ``root``; nulls outside a git work tree.

    The commit says which reviewed content a snapshot came from; it is recorded even
    when the work tree has uncommitted changes (CI compiles clean checkouts).
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() or None if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    ref = git("symbolic-ref", "-q", "HEAD") if commit else None
    return {"commit": commit, "ref": ref}
