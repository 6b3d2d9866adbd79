"""Emergency overrides: a signed, kill-only layer over an environment's snapshot.

``<target>/<env>/overrides.json`` is a DSSE envelope, signed by the emergency keys of
``flagstone.yaml`` (``signing.emergency``, separate from the snapshot keys), with its own
payload type ``application/vnd.flagstone.overrides+json``. Its payload::

    {"format": "flagstone.overrides/1", "project": "acme-shop", "environment": "production",
     "version": 7,                      # only grows; SDKs refuse a lower one (replay)
     "published_at": "…Z",
     "expires": "…Z",                   # the latest entry expiry; null when there are none
     "change": {"action": "kill", "flag": "new-checkout", "by": "…", "at": "…Z",
                "reason": "…"},        # what this version changed (for `flagstone log`)
     "overrides": {
       "new-checkout": {"reason": "card errors spiking", "by": "alice", "at": "…Z",
                        "expires": "…Z",
                        "snapshot": {"version": 41, "commit": "<sha>"}}}}

An entry names a flag and nothing else that evaluation reads: it carries no variation,
so it can only mean "serve this flag's off variation" (exactly what ``enabled: false``
in git means, prerequisites included: flags requiring the killed flag's variation get
their own off variation, reason PREREQUISITE_FAILED). A stolen emergency key can
therefore disable features, never expose one. An entry applies until its ``expires``.

Evaluations of a killed flag return :class:`OverriddenDetails`: reason ``DISABLED``,
``rule`` ``"emergency-override"``, and ``override_reason`` / ``override_version``
saying which override did it and why.

Standard library plus ``flagstone.envelope`` and ``flagstone.engine``: the SDK imports
this module. Publishing lives in ``flagstone.emergency`` (toolchain).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flagstone.engine import (
    DISABLED,
    PREREQUISITE_FAILED,
    Details,
    PackedSpecs,
    Snapshot,
    readable_spec,
)
from flagstone.envelope import TrustedKey, parse_payload, parse_timestamp, verify_envelope
from flagstone.errors import EnvelopeError

OVERRIDES_PAYLOAD_TYPE = "application/vnd.flagstone.overrides+json"
OVERRIDES_FORMAT = "flagstone.overrides/1"
OVERRIDES_OBJECT = "overrides.json"
OVERRIDES_HISTORY = "overrides"  # <env>/overrides/<version>.json, immutable copies
OVERRIDE_RULE = "emergency-override"
# Hundreds of overrides are a few kilobytes; a megabyte is not an overrides object.
MAX_OVERRIDES_BYTES = 1024 * 1024
MAX_REASON_CHARS = 2000

_FLAG_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_ACTIONS = ("kill", "undo", "retire", "clear")


@dataclass(frozen=True, slots=True)
class OverrideEntry:
    """One flag forced to its off variation."""

    flag: str
    reason: str
    by: str
    at: str
    expires: str
    expires_at: float
    snapshot_version: int | None = None
    commit: str | None = None

    def live(self, now: float) -> bool:
        return now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "reason": self.reason,
            "by": self.by,
            "at": self.at,
            "expires": self.expires,
        }
        if self.snapshot_version is not None or self.commit is not None:
            entry["snapshot"] = {"version": self.snapshot_version, "commit": self.commit}
        return entry


@dataclass(frozen=True, slots=True)
class OverrideSet:
    """A verified overrides payload."""

    project: str
    environment: str
    version: int
    published_at: str
    expires: str | None
    entries: Mapping[str, OverrideEntry]
    change: Mapping[str, Any]

    def live(self, now: float) -> dict[str, OverrideEntry]:
        """The entries in force at ``now`` (expired ones no longer apply)."""
        return {key: entry for key, entry in self.entries.items() if entry.live(now)}


class OverriddenDetails(Details):
    """Details of a flag killed by an emergency override: ``reason`` DISABLED, ``rule``
    ``emergency-override``; ``override_reason`` is the reason given to
    ``flagstone kill --emergency`` and ``override_version`` the overrides version."""

    override_reason: str
    override_version: int

    _fields = (*Details._fields, "override_reason", "override_version")

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
        override_reason: str = "",
        override_version: int = 0,
    ) -> None:
        Details.__init__(
            self, value, variation, reason, error_code, error_message, rule, version, bucket
        )
        self.__dict__["override_reason"] = override_reason
        self.__dict__["override_version"] = override_version


def _text(value: Any, where: str, *, limit: int = 200) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise EnvelopeError(f"overrides {where} is not a text of 1 to {limit} characters")
    return value


def _entry(flag: str, value: Any) -> OverrideEntry:
    where = f"overrides.{flag}"
    if not isinstance(value, dict):
        raise EnvelopeError(f"{where} is not an object")
    expires = _text(value.get("expires"), f"{where}.expires")
    at = _text(value.get("at"), f"{where}.at")
    parse_timestamp(at, f"override {flag} time")
    snapshot = value.get("snapshot")
    snapshot_version: int | None = None
    commit: str | None = None
    if snapshot is not None:
        if not isinstance(snapshot, dict):
            raise EnvelopeError(f"{where}.snapshot is not an object")
        version = snapshot.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise EnvelopeError(f"{where}.snapshot.version is not a whole number")
        snapshot_version = version
        found_commit = snapshot.get("commit")
        if found_commit is not None:
            commit = _text(found_commit, f"{where}.snapshot.commit", limit=64)
    return OverrideEntry(
        flag=flag,
        reason=_text(value.get("reason"), f"{where}.reason", limit=MAX_REASON_CHARS),
        by=_text(value.get("by"), f"{where}.by"),
        at=at,
        expires=expires,
        expires_at=parse_timestamp(expires, f"override {flag} expiry"),
        snapshot_version=snapshot_version,
        commit=commit,
    )


def parse_overrides(payload: Mapping[str, Any]) -> OverrideSet:
    """The override set of a payload that has the overrides form; raises ``EnvelopeError``."""
    if payload.get("format") != OVERRIDES_FORMAT:
        raise EnvelopeError(
            f"overrides format is {payload.get('format')!r}, expected {OVERRIDES_FORMAT!r}"
        )
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**53:
        raise EnvelopeError(f"overrides version {version!r} is not a whole number ≥ 1")
    published_at = _text(payload.get("published_at"), "published_at")
    parse_timestamp(published_at, "overrides published_at")
    expires = payload.get("expires")
    if expires is not None:
        parse_timestamp(expires, "overrides expires")
    found = payload.get("overrides")
    if not isinstance(found, dict):
        raise EnvelopeError("overrides payload has no `overrides` object")
    entries = {}
    for flag, value in found.items():
        if not _FLAG_KEY.fullmatch(flag):
            raise EnvelopeError(f"overrides names {flag!r}, which is not a flag key")
        entries[flag] = _entry(flag, value)
    if entries and expires is None:
        raise EnvelopeError("overrides with entries must say when they expire")
    change = payload.get("change")
    if not isinstance(change, dict) or change.get("action") not in _ACTIONS:
        raise EnvelopeError("overrides payload does not say what changed (`change.action`)")
    return OverrideSet(
        project=_text(payload.get("project"), "project"),
        environment=_text(payload.get("environment"), "environment"),
        version=version,
        published_at=published_at,
        expires=expires,
        entries=entries,
        change=change,
    )


def verify_overrides(
    envelope: bytes,
    trusted: list[TrustedKey],
    threshold: int,
    *,
    project: str | None,
    environment: str,
    now: float | None,
) -> OverrideSet:
    """Verify an overrides envelope against the emergency keys and check its payload:
    payload type, form, project (None: not checked), environment, and (unless ``now``
    is None) that it has not expired. Raises ``EnvelopeError`` saying why not."""
    if len(envelope) > MAX_OVERRIDES_BYTES:
        raise EnvelopeError(
            f"overrides object is {len(envelope)} bytes, over the {MAX_OVERRIDES_BYTES} byte cap"
        )
    signed = verify_envelope(envelope, trusted, threshold, payload_type=OVERRIDES_PAYLOAD_TYPE)
    overrides = parse_overrides(parse_payload(signed))
    if project is not None and overrides.project != project:
        raise EnvelopeError(
            f"overrides are for project {overrides.project!r}, expected {project!r}"
        )
    if overrides.environment != environment:
        raise EnvelopeError(
            f"overrides are for environment {overrides.environment!r}, expected {environment!r}"
        )
    expires = overrides.expires
    if now is not None and expires is not None and now >= parse_timestamp(expires, "expires"):
        raise EnvelopeError(f"overrides expired at {overrides.expires}")
    return overrides


def killed_payload(
    payload: Mapping[str, Any],
    flags: Mapping[str, Any],
    *,
    with_dependents: bool = False,
    keep_prerequisites: bool = True,
) -> dict[str, Any]:
    """A copy of a snapshot payload with ``flags`` (keys) disabled, as ``enabled: false``
    in git would; flags the payload does not have are ignored. Shallow: untouched
    flag specs are shared. ``with_dependents``: also disable every flag requiring a
    killed one (for exports that cannot compare with the unkilled answer, like flagd:
    a flag requiring the killed flag's off variation must not switch on).
    ``keep_prerequisites=False``: a killed flag loses its prerequisites too, which a
    disabled flag never evaluates, so its kill lands even when one of them cannot be
    compiled (a snapshot checked on first use may hold such a flag, or a cycle)."""
    specs = payload.get("flags")
    if not isinstance(specs, Mapping):
        return dict(payload)
    if with_dependents:
        flags = {**flags, **_dependents(specs, flags)}
    killed = {}
    for key in flags:
        spec = readable_spec(specs, key)
        if spec is not None:
            killed[key] = {**spec, "enabled": False}
            if not keep_prerequisites:
                killed[key]["prerequisites"] = []
    if isinstance(specs, PackedSpecs):  # the others stay packed, unread
        return {**payload, "flags": specs.replacing(killed)}
    return {**payload, "flags": {**specs, **killed}}


Runner = Callable[[str, Any, Any], Details]


@dataclass(frozen=True, slots=True)
class AppliedOverrides:
    """A snapshot with overrides applied: evaluate ``snapshot`` and pass the result
    through ``overridden_runner``. ``killed``: the outcome of each killed flag.
    ``dependents``: for each flag requiring (transitively) a killed flag, its off
    variation as PREREQUISITE_FAILED, served whenever the kill would change its answer
    (so that killing a flag can never switch a dependent ON, e.g. one requiring the
    killed flag's off variation)."""

    snapshot: Snapshot
    killed: Mapping[str, OverriddenDetails]
    dependents: Mapping[str, Details] = field(default_factory=dict)


def apply_overrides(
    snapshot: Snapshot, entries: Mapping[str, OverrideEntry], version: int
) -> AppliedOverrides:
    """``snapshot`` with the flags of ``entries`` forced off. With no entry naming a flag
    of the snapshot, the snapshot itself (nothing to pay on the evaluation path)."""
    present = {key: entry for key, entry in entries.items() if key in snapshot.flags}
    if not present:
        return AppliedOverrides(snapshot, {})
    dependents = _dependents(snapshot.flags, present)
    packed = isinstance(snapshot.flags, PackedSpecs) and isinstance(snapshot.segments, PackedSpecs)
    payload = {
        "format": "flagstone.snapshot/1",
        "project": snapshot.project,
        "environment": snapshot.environment,
        "version": snapshot.version,
        "published_at": snapshot.published_at,
        "expires": snapshot.expires,
        "digest": snapshot.digest,
        "flags": snapshot.flags if packed else dict(snapshot.flags),
        "segments": snapshot.segments if packed else dict(snapshot.segments),
    }
    # Recompiled (not just the killed flags' runners replaced) so that flags requiring a
    # killed flag's variation fail their prerequisite, as after the kill in git. The
    # specs are the snapshot's own, never changed by anyone: no copy needed. A packed
    # snapshot's (the SDK's) stay packed, the killed ones overlaid, and each flag is
    # compiled on its first evaluation, as in the snapshot they come from. A killed flag
    # never evaluates its prerequisites: they are dropped, so that none that cannot be
    # compiled stops the kill from landing.
    overridden = Snapshot.from_payload(
        killed_payload(payload, present, keep_prerequisites=False), owned=True
    )
    overridden.report_defects_to(snapshot)
    killed = {}
    for key, entry in present.items():
        disabled = overridden.evaluate(key, {}, None)
        values = {name: getattr(disabled, name) for name in Details._fields}
        values["rule"] = OVERRIDE_RULE
        killed[key] = OverriddenDetails(
            **values, override_reason=entry.reason, override_version=version
        )
    fallbacks = {}
    for key, cause in dependents.items():
        spec = readable_spec(snapshot.flags, key)
        try:
            off = spec["off_variation"]  # type: ignore[index]
            value = spec["variations"][off]  # type: ignore[index]
        except (TypeError, KeyError, IndexError):
            continue  # not a usable flag: its own evaluation answers with an error
        fallbacks[key] = Details(
            value=value,
            variation=off,
            reason=PREREQUISITE_FAILED,
            rule=cause,
            version=snapshot.version,
        )
    return AppliedOverrides(overridden, killed, fallbacks)


def _dependents(flag_specs: Mapping[str, Any], killed: Mapping[str, Any]) -> dict[str, str]:
    """Flags whose prerequisites lead (transitively) to a killed flag, each with the
    killed flag it depends on (the nearest; of two as near, the one named first).

    Walked from the killed flags along "is required by", breadth first, so every flag
    is visited once: no recursion a long prerequisite chain could exhaust, no time
    that grows with the number of paths (a first snapshot may hold chains and cycles
    a whole check refuses: see engine.Snapshot)."""
    packed = flag_specs if isinstance(flag_specs, PackedSpecs) else None
    required_by: dict[str, list[str]] = {}
    for key in flag_specs:
        # Not read at all (most flags, at 50,000) when its text proves it has none.
        if packed is not None and not packed.may_hold(
            key, b'"prerequisites"', b'"prerequisites":[]'
        ):
            continue
        spec = readable_spec(flag_specs, key)
        items = (spec.get("prerequisites") or []) if spec is not None else []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("flag"), str):
                required_by.setdefault(item["flag"], []).append(key)
    found: dict[str, str] = {}
    reached = [(key, key) for key in killed]
    while reached:
        following = []
        for key, cause in reached:
            for dependent in required_by.get(key, ()):
                if dependent not in killed and dependent not in found:
                    found[dependent] = cause
                    following.append((dependent, cause))
        reached = following
    return found


def overridden_runner(run: Runner, applied: AppliedOverrides, original: Runner) -> Runner:
    """``run`` (evaluating ``applied.snapshot``: flag, context, default) -> Details, with
    killed flags' DISABLED outcome replaced by their ``OverriddenDetails`` (errors such
    as TYPE_MISMATCH pass through), and a dependent of a killed flag served its off
    variation whenever its answer differs from ``original`` (the snapshot without
    overrides): an override never changes an evaluation into anything but off."""
    killed, dependents = applied.killed, applied.dependents
    if not killed:
        return run

    def run_with_overrides(flag_key: str, context: Any, default: Any) -> Details:
        details = run(flag_key, context, default)
        override = killed.get(flag_key)
        if override is not None:
            return override if details.reason == DISABLED else details
        fallback = dependents.get(flag_key)
        if fallback is not None and details.error_code is None:
            before = original(flag_key, context, default)
            if before.variation != details.variation or before.reason != details.reason:
                return fallback
        return details

    return run_with_overrides
