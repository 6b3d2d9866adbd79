"""``flagstone served --env ENV --at TIME``: which snapshot was being served at a time.

The answer comes from the store, not from git: every publish writes the immutable
``<env>/snapshots/<version>.json`` before it moves ``latest.json``, and each carries its
``published_at``, its ``version`` and the ``source.commit`` it was compiled from. The
snapshot in ``latest.json`` at time T is the highest version published at or before T
(versions only grow, and a publisher never replaces a newer snapshot). Each candidate is
verified against the keys of ``flagstone.yaml``; one that fails is reported as
unverified, never silently used or hidden.

What this cannot see: a snapshot written whose ``latest.json`` move then failed (the
next publish skipped past it) reads as served from its ``published_at`` until the next
version; a client that had not polled yet, or that was offline, served an older one.

When emergency overrides exist for the environment (``<env>/overrides/<version>.json``,
see ``flagstone.emergency``), the answer also names the overrides version in force at T
and the flags it forced off.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flagstone.envelope import PAYLOAD_TYPE, parse_timestamp, verify_envelope
from flagstone.errors import EnvelopeError, StoreError, UsageError
from flagstone.keys import configured_keyring
from flagstone.model import Project
from flagstone.publish import MAX_SNAPSHOT_BYTES, open_target
from flagstone.store import SnapshotStore
from flagstone.timeforms import utc_text


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """What one stored snapshot says about itself."""

    version: int
    published_at: str
    published: float
    expires: str | None
    commit: str | None
    digest: str | None
    url: str
    verified: bool
    problem: str | None = None  # why it did not verify


@dataclass(frozen=True, slots=True)
class OverridesInForce:
    version: int
    published_at: str
    flags: list[str]  # forced to their off variation at the time asked about
    verified: bool


@dataclass(frozen=True, slots=True)
class ServedAnswer:
    environment: str
    at: str
    snapshot: StoredSnapshot | None
    replaced_by: StoredSnapshot | None  # the next version, if one came later
    expired: bool  # the snapshot's expiry had passed at that time (SDKs served it STALE)
    first: StoredSnapshot | None  # the first snapshot ever published, for "not yet"
    overrides: OverridesInForce | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _payload(data: bytes) -> Mapping[str, Any]:
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("payloadType") != PAYLOAD_TYPE:
        raise ValueError("not a snapshot envelope")
    payload = json.loads(base64.b64decode(document["payload"], altchars=b"-_", validate=True))
    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    return payload


def stored_snapshots(
    project: Project, store: SnapshotStore, environment: str
) -> list[StoredSnapshot]:
    """Every ``<env>/snapshots/<version>.json`` in the store, by version."""
    trusted, threshold = configured_keyring(project.config.signing if project.config else {})
    found: list[StoredSnapshot] = []
    for path in store.list(f"{environment}/snapshots/"):
        name = path.rsplit("/", 1)[-1]
        if not (name.endswith(".json") and name[:-5].isdigit()):
            continue
        got = store.get_optional(path, max_bytes=MAX_SNAPSHOT_BYTES)
        if got is None or got.data is None:
            continue
        url = store.location(path)
        try:
            payload = _payload(got.data)
            version = payload["version"]
            published_at = payload["published_at"]
            published = parse_timestamp(published_at, "published_at")
        except (ValueError, TypeError, KeyError, EnvelopeError) as error:
            raise StoreError(f"{url} is not a readable snapshot ({error})") from None
        if payload.get("environment") != environment:
            raise StoreError(f"{url} is for environment {payload.get('environment')!r}")
        problem = None
        try:
            verify_envelope(got.data, trusted, threshold)
        except EnvelopeError as error:
            problem = error.message
        source = payload.get("source") if isinstance(payload.get("source"), dict) else {}
        found.append(
            StoredSnapshot(
                version=int(version),
                published_at=str(published_at),
                published=published,
                expires=payload.get("expires"),
                commit=source.get("commit") if source else None,
                digest=payload.get("digest"),
                url=url,
                verified=problem is None,
                problem=problem,
            )
        )
    return sorted(found, key=lambda snapshot: snapshot.version)


def _overrides_at(
    project: Project, store: SnapshotStore, environment: str, instant: float
) -> OverridesInForce | None:
    """The emergency overrides version in force at ``instant`` (None without any)."""
    try:
        from flagstone.emergency import emergency_keyring, history_path
        from flagstone.overrides import parse_overrides, verify_overrides
    except ImportError:  # a version without emergency overrides
        return None
    prefix = history_path(environment, 1).rsplit("/", 1)[0] + "/"
    try:
        paths = store.list(prefix)
    except StoreError:
        return None
    try:
        keyring = emergency_keyring(project)
    except Exception:
        keyring = None
    best = None
    for path in paths:
        got = store.get_optional(path)
        if got is None or got.data is None:
            continue
        verified = False
        try:
            if keyring is None:
                raise EnvelopeError("no emergency keys configured")
            overrides = verify_overrides(
                got.data,
                keyring.trusted,
                keyring.threshold,
                project=project.config.name if project.config else None,
                environment=environment,
                now=None,
            )
            verified = True
        except EnvelopeError:
            try:
                document = json.loads(got.data)
                overrides = parse_overrides(
                    json.loads(base64.b64decode(document["payload"], altchars=b"-_"))
                )
            except (ValueError, TypeError, KeyError, EnvelopeError):
                continue
        published = parse_timestamp(overrides.published_at, "published_at")
        if published <= instant and (best is None or overrides.version > best[0].version):
            best = (overrides, verified)
    if best is None:
        return None
    overrides, verified = best
    return OverridesInForce(
        version=overrides.version,
        published_at=overrides.published_at,
        flags=sorted(overrides.live(instant)),
        verified=verified,
    )


def served_at(
    project: Project, environment: str, instant: float, *, to: str | None = None
) -> ServedAnswer:
    """Which snapshot of ``environment`` ``latest.json`` held at ``instant``."""
    if environment not in project.environments:
        raise UsageError(
            f"unknown environment {environment!r} "
            f"(project environments: {', '.join(project.environments) or 'none'})"
        )
    store = open_target(project, to)
    snapshots = stored_snapshots(project, store, environment)
    before = [s for s in snapshots if s.published <= instant]
    chosen = max(before, key=lambda s: s.version) if before else None
    later = [s for s in snapshots if chosen is not None and s.version > chosen.version]
    expired = False
    notes = []
    if chosen is not None and chosen.expires:
        try:
            expired = parse_timestamp(chosen.expires, "expires") <= instant
        except EnvelopeError:
            expired = False
    if chosen is not None and not chosen.verified:
        notes.append(
            f"version {chosen.version} does not verify against flagstone.yaml's keys "
            f"({chosen.problem}): clients that trust them rejected it and kept an older one"
        )
    return ServedAnswer(
        environment=environment,
        at=utc_text(instant),
        snapshot=chosen,
        replaced_by=min(later, key=lambda s: s.version) if later else None,
        expired=expired,
        first=snapshots[0] if snapshots else None,
        overrides=_overrides_at(project, store, environment, instant),
        notes=notes,
    )


def render_served_text(answer: ServedAnswer) -> str:
    env, at = answer.environment, answer.at
    snapshot = answer.snapshot
    if snapshot is None:
        if answer.first is None:
            return f"{env} at {at}: nothing has ever been published\n"
        return (
            f"{env} at {at}: nothing was published yet (version {answer.first.version} "
            f"came at {answer.first.published_at})\n"
        )
    commit = snapshot.commit[:12] if snapshot.commit else "no commit (published outside git)"
    lines = [
        f"{env} at {at}: version {snapshot.version} from commit {commit}",
        f"  published {snapshot.published_at}; digest {snapshot.digest}",
        f"  {snapshot.url}" + ("" if snapshot.verified else " (UNVERIFIED)"),
    ]
    if answer.replaced_by is not None:
        lines.append(
            f"  replaced by version {answer.replaced_by.version} at {answer.replaced_by.published_at}"
        )
    else:
        lines.append("  still the latest published version")
    if answer.expired:
        lines.append(f"  it had expired ({snapshot.expires}): SDKs served it as STALE")
    if answer.overrides is not None:
        flags = ", ".join(answer.overrides.flags) or "none in force"
        lines.append(
            f"  emergency overrides version {answer.overrides.version} "
            f"({answer.overrides.published_at}): forced off: {flags}"
            + ("" if answer.overrides.verified else " (UNVERIFIED)")
        )
    lines += [f"  note: {note}" for note in answer.notes]
    return "\n".join(lines) + "\n"
