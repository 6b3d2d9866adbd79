"""Publishing emergency overrides: ``flagstone kill --emergency``, ``--undo``,
``flagstone overrides list|show|clear`` (the payload form is in ``flagstone.overrides``).

Per environment, under the publish target::

    <env>/overrides.json               the overrides in force (a signed envelope)
    <env>/overrides/<version>.json     an immutable copy of every version that was in force

The write protocol, safe when several kills race (the same guarantees as latest.json):

1. Read ``overrides.json`` and its ETag; verify it against the emergency keys of
   ``flagstone.yaml`` (we never re-sign entries we cannot vouch for).
2. Apply the change (add, remove or clear entries; expired entries are dropped) and
   sign version = previous + 1.
3. Write ``overrides.json`` conditionally on that ETag (create-only when there was none).
   If another writer got there first, go back to 1: their change is read and kept, so
   two racing kills both survive.
4. Write ``overrides/<version>.json`` create-only. The version was allocated by the
   conditional write in 3, so no two writers ever hold the same version; a crash
   between 3 and 4 leaves a gap in the history, never a wrong entry in it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.canonical import canonical_json
from flagstone.compile import duration_seconds, timestamp_text
from flagstone.envelope import (
    TrustedKey,
    compute_keyid,
    parse_timestamp,
    public_key_raw,
    sign_payload,
)
from flagstone.errors import ConflictError, EnvelopeError, StoreError, UsageError
from flagstone.flagd_export import export_flagd, flagd_json
from flagstone.keys import configured_keyring, load_key_file, load_private_keys
from flagstone.model import Project
from flagstone.overrides import (
    MAX_OVERRIDES_BYTES,
    OVERRIDES_FORMAT,
    OVERRIDES_HISTORY,
    OVERRIDES_OBJECT,
    OVERRIDES_PAYLOAD_TYPE,
    OverrideEntry,
    OverrideSet,
    killed_payload,
    verify_overrides,
)
from flagstone.publish import MAX_SNAPSHOT_BYTES, flagd_enabled, put_flagd_document
from flagstone.store import IfMatch, SnapshotStore, WriteMode

EMERGENCY_KEY_ENV_VARIABLE = "FLAGSTONE_EMERGENCY_KEY"
DEFAULT_OVERRIDE_EXPIRY = "7d"
MAX_ATTEMPTS = 50


def stamp(moment: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for epoch seconds."""
    text = timestamp_text(moment)
    assert text is not None
    return text


def overrides_path(environment: str) -> str:
    return f"{environment}/{OVERRIDES_OBJECT}"


def history_path(environment: str, version: int) -> str:
    return f"{environment}/{OVERRIDES_HISTORY}/{version}.json"


@dataclass(frozen=True)
class EmergencyKeyring:
    """The emergency public keys and threshold of ``signing.emergency``."""

    trusted: list[TrustedKey]
    threshold: int


def emergency_keyring(project: Project) -> EmergencyKeyring:
    """``signing.emergency`` of flagstone.yaml; a UsageError when it is not set up."""
    signing = project.config.signing if project.config else {}
    emergency = signing.get("emergency")
    if not isinstance(emergency, Mapping) or not emergency.get("keys"):
        raise UsageError(
            "flagstone.yaml has no emergency keys (signing.emergency.keys)",
            hint="`flagstone keygen --out emergency.pem` prints a key entry; add it under "
            "signing: emergency: keys: (see docs/readme/emergency.md)",
        )
    trusted, threshold = configured_keyring(emergency)
    return EmergencyKeyring(trusted, threshold)


def resolve_emergency_keys(
    key_files: Sequence[Path] = (), environ: Mapping[str, str] | None = None
) -> tuple[Ed25519PrivateKey, ...]:
    """``--key`` files, else FLAGSTONE_EMERGENCY_KEY (PEM text). No development key:
    an emergency signature is only worth something from a configured key."""
    environ = os.environ if environ is None else environ
    if key_files:
        return tuple(key for path in key_files for key in load_key_file(path))
    pem_text = environ.get(EMERGENCY_KEY_ENV_VARIABLE, "")
    if pem_text.strip():
        return load_private_keys(
            pem_text.encode("utf-8", "surrogateescape"), EMERGENCY_KEY_ENV_VARIABLE
        )
    raise UsageError(
        f"no emergency key: pass --key FILE or set {EMERGENCY_KEY_ENV_VARIABLE}",
        hint="the key's public half must be listed under signing.emergency.keys",
    )


def check_signers(keys: Sequence[Ed25519PrivateKey], keyring: EmergencyKeyring) -> None:
    """Refuse to sign with keys SDKs would not count: fewer than the threshold of them
    listed under signing.emergency.keys."""
    trusted = {key.keyid for key in keyring.trusted}
    signers = {compute_keyid(public_key_raw(key)) for key in keys}
    counted = signers & trusted
    if len(counted) < keyring.threshold:
        unknown = sorted(signers - trusted)
        named = (
            f" (key {', '.join(k[:12] + '…' for k in unknown)} is not listed)" if unknown else ""
        )
        raise UsageError(
            f"the emergency override needs {keyring.threshold} signature(s) from keys under "
            f"signing.emergency.keys; these keys give {len(counted)}{named}",
            hint="use the emergency key, not the snapshot signing key",
        )


def who_acts(environ: Mapping[str, str] | None = None, root: Path | None = None) -> str:
    """Who is acting, for the record: the GitHub actor in Actions, else git's user.email,
    else the login name."""
    environ = os.environ if environ is None else environ
    actor = environ.get("GITHUB_ACTOR")
    if actor:
        return f"{actor} (GitHub Actions)"
    try:
        done = subprocess.run(
            ["git", "config", "user.email"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@dataclass(frozen=True)
class CurrentOverrides:
    """What ``overrides.json`` holds now (verified), with its ETag for the next write."""

    etag: str | None
    overrides: OverrideSet | None
    floor: int = 0  # the version an unverifiable object claims (a replacement goes above it)

    @property
    def version(self) -> int:
        return self.overrides.version if self.overrides else 0


def read_overrides(
    store: SnapshotStore,
    environment: str,
    keyring: EmergencyKeyring,
    project_name: str,
) -> CurrentOverrides:
    """``<env>/overrides.json`` verified against the emergency keys (expired or not);
    missing is normal. A tampered or foreign object raises EnvelopeError: nobody should
    build on, or re-sign, what they cannot verify."""
    path = overrides_path(environment)
    found = store.get_optional(path, max_bytes=MAX_OVERRIDES_BYTES)
    if found is None or found.data is None:
        return CurrentOverrides(None, None)
    try:
        verified = verify_overrides(
            found.data,
            keyring.trusted,
            keyring.threshold,
            project=project_name,
            environment=environment,
            now=None,
        )
    except EnvelopeError as error:
        raise EnvelopeError(
            f"{store.location(path)} cannot be verified: {error.message}",
            hint="inspect it; `flagstone overrides clear --env ENV --force` replaces it with "
            "an empty, signed overrides object",
        ) from None
    return CurrentOverrides(found.etag, verified)


def _unverifiable(store: SnapshotStore, environment: str) -> CurrentOverrides:
    found = store.get_optional(overrides_path(environment), max_bytes=MAX_OVERRIDES_BYTES)
    if found is None or found.data is None:
        return CurrentOverrides(None, None)
    _change, claimed = _unverified_change(found.data)
    return CurrentOverrides(found.etag, None, floor=claimed)


Change = tuple[dict[str, OverrideEntry], dict[str, Any]]
# Given the entries in force (expired ones already dropped), the new entries and the
# `change` record; raise UsageError when the change makes no sense any more.
ChangeFunction = Callable[[dict[str, OverrideEntry]], Change]


@dataclass(frozen=True)
class OverridesWritten:
    environment: str
    version: int
    previous_version: int
    url: str
    history_url: str
    entries: dict[str, OverrideEntry]
    change: dict[str, Any]
    attempts: int


def overrides_payload(
    project_name: str,
    environment: str,
    version: int,
    now: float,
    entries: Mapping[str, OverrideEntry],
    change: Mapping[str, Any],
) -> bytes:
    expires = max((entry.expires_at for entry in entries.values()), default=None)
    payload = {
        "format": OVERRIDES_FORMAT,
        "project": project_name,
        "environment": environment,
        "version": version,
        "published_at": stamp(now),
        "expires": stamp(expires) if expires is not None else None,
        "change": dict(change),
        "overrides": {key: entries[key].to_json() for key in sorted(entries)},
    }
    return canonical_json(payload)


def write_overrides(
    store: SnapshotStore,
    *,
    project_name: str,
    environment: str,
    keys: Sequence[Ed25519PrivateKey],
    keyring: EmergencyKeyring,
    change: ChangeFunction,
    now: Callable[[], float] = time.time,
    replace_unverifiable: bool = False,
) -> OverridesWritten:
    """Apply ``change`` to the overrides of ``environment`` and publish the result (see
    the module docstring for the protocol). Raises ConflictError after too many lost
    races, UsageError from ``change``, StoreError / EnvelopeError from storage.

    ``replace_unverifiable``: an ``overrides.json`` that fails verification is replaced
    (its entries dropped) instead of stopping the write; ``overrides clear --force``."""
    check_signers(keys, keyring)
    path = overrides_path(environment)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            current = read_overrides(store, environment, keyring, project_name)
        except EnvelopeError:
            if not replace_unverifiable:
                raise
            current = _unverifiable(store, environment)
        moment = now()
        in_force = current.overrides.live(moment) if current.overrides else {}
        entries, record = change(in_force)
        version = max(current.version, current.floor) + 1
        payload = overrides_payload(project_name, environment, version, moment, entries, record)
        envelope = sign_payload(payload, keys, payload_type=OVERRIDES_PAYLOAD_TYPE)
        mode: WriteMode = "create" if current.etag is None else IfMatch(current.etag)
        try:
            store.put(path, envelope, mode=mode)
        except ConflictError:
            continue  # someone else's change went in first: read it and apply ours on top
        history = history_path(environment, version)
        # Only this very envelope can be there (versions are allocated in step 3).
        with contextlib.suppress(ConflictError):
            store.put(history, envelope, mode="create")
        return OverridesWritten(
            environment=environment,
            version=version,
            previous_version=current.version,
            url=store.location(path),
            history_url=store.location(history),
            entries=entries,
            change=record,
            attempts=attempt,
        )
    raise ConflictError(
        f"gave up writing {store.location(path)} after {MAX_ATTEMPTS} lost races",
        hint="something keeps rewriting it; inspect the store",
    )


def kill_change(
    flag: str,
    *,
    reason: str,
    by: str,
    now: float,
    expires_after: str = DEFAULT_OVERRIDE_EXPIRY,
    snapshot_version: int | None = None,
    commit: str | None = None,
) -> ChangeFunction:
    """Add (or renew) the entry forcing ``flag`` off."""
    seconds = duration_seconds(expires_after)
    if seconds is None or seconds <= 0:
        raise UsageError(f"--expires {expires_after!r} is not a duration like 7d, 12h or 2w")
    if not reason.strip():
        raise UsageError("--reason must say why the flag is being killed")
    entry = OverrideEntry(
        flag=flag,
        reason=reason.strip(),
        by=by,
        at=stamp(now),
        expires=stamp(now + seconds),
        expires_at=parse_timestamp(stamp(now + seconds), "expiry"),
        snapshot_version=snapshot_version,
        commit=commit,
    )
    record = {"action": "kill", "flag": flag, "by": by, "at": entry.at, "reason": entry.reason}

    def add(entries: dict[str, OverrideEntry]) -> Change:
        return {**entries, flag: entry}, record

    return add


def remove_change(
    flags: Sequence[str] | None, *, action: str, by: str, now: float, reason: str
) -> ChangeFunction:
    """Remove the entries of ``flags`` (None: all of them); ``action`` is undo, retire or
    clear. Removing an entry that is not there is a UsageError (nothing to sign)."""
    record: dict[str, Any] = {"action": action, "by": by, "at": stamp(now)}
    if reason:
        record["reason"] = reason
    if flags is not None:
        record["flags"] = sorted(flags)

    def remove(entries: dict[str, OverrideEntry]) -> Change:
        if flags is None:
            return {}, record
        missing = [flag for flag in flags if flag not in entries]
        if missing:
            raise UsageError(
                f"no emergency override in force for {', '.join(missing)}",
                hint="`flagstone overrides list --env ENV` shows what is in force",
            )
        return {k: v for k, v in entries.items() if k not in flags}, record

    return remove


@dataclass(frozen=True)
class OverrideEvent:
    """One version of an environment's overrides, for ``flagstone log``."""

    environment: str
    version: int
    at: str
    action: str
    flags: list[str]
    by: str
    reason: str
    verified: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "version": self.version,
            "at": self.at,
            "action": self.action,
            "flags": self.flags,
            "by": self.by,
            "reason": self.reason,
            "verified": self.verified,
        }


def override_history(
    store: SnapshotStore,
    environment: str,
    keyring: EmergencyKeyring | None,
    project_name: str,
) -> list[OverrideEvent]:
    """Every stored version of ``<env>/overrides/``, oldest first. Each is verified when
    emergency keys are configured; one that fails verification is listed as unverified
    (an auditor should see it, not have it hidden)."""
    prefix = f"{environment}/{OVERRIDES_HISTORY}/"
    try:
        paths = store.list(prefix)
    except StoreError:
        return []
    events = []
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".json") or not name[:-5].isdigit():
            continue
        found = store.get_optional(path, max_bytes=MAX_OVERRIDES_BYTES)
        if found is None or found.data is None:
            continue
        events.append(_event(found.data, environment, keyring, project_name))
    return sorted(events, key=lambda event: event.version)


def _event(
    data: bytes, environment: str, keyring: EmergencyKeyring | None, project_name: str
) -> OverrideEvent:
    verified = False
    change: Mapping[str, Any] = {}
    version = 0
    if keyring is not None:
        try:
            overrides = verify_overrides(
                data,
                keyring.trusted,
                keyring.threshold,
                project=project_name,
                environment=environment,
                now=None,
            )
            verified = True
            change, version = overrides.change, overrides.version
        except EnvelopeError:
            pass
    if not verified:
        change, version = _unverified_change(data)
    flags = change.get("flags") or ([change["flag"]] if change.get("flag") else [])
    return OverrideEvent(
        environment=environment,
        version=version,
        at=str(change.get("at", "")),
        action=str(change.get("action", "?")),
        flags=[str(flag) for flag in flags] if isinstance(flags, list) else [],
        by=str(change.get("by", "")),
        reason=str(change.get("reason", "")),
        verified=verified,
    )


def _unverified_change(data: bytes) -> tuple[Mapping[str, Any], int]:
    import base64

    try:
        document = json.loads(data)
        payload = json.loads(base64.b64decode(document["payload"], altchars=b"-_"))
        change = payload.get("change")
        version = payload.get("version")
        return (
            change if isinstance(change, dict) else {},
            version if isinstance(version, int) else 0,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}, 0


# ---------------------------------------------------------------------------
# flagd consumers: flagd.json with the overrides applied.


def flagd_payload_with_overrides(
    project: Project, store: SnapshotStore, environment: str, payload: Mapping[str, Any]
) -> tuple[dict[str, Any], int | None]:
    """``payload`` with the overrides in force applied, for the (unsigned) flagd export,
    and the overrides version (None when there is no verifiable overrides object: then
    the payload as it is, and a warning is the caller's to give)."""
    try:
        keyring = emergency_keyring(project)
    except UsageError:
        return dict(payload), None
    name = project.config.name if project.config else ""
    try:
        current = read_overrides(store, environment, keyring, name)
    except (EnvelopeError, StoreError):
        return dict(payload), None
    if current.overrides is None:
        return dict(payload), None
    live = current.overrides.live(time.time())
    return killed_payload(payload, live, with_dependents=True), current.version


def rewrite_flagd(
    project: Project,
    store: SnapshotStore,
    environment: str,
    entries: Mapping[str, OverrideEntry],
) -> str | None:
    """Rewrite ``<env>/flagd.json`` from the published snapshot with ``entries`` forced
    off (when ``publish.flagd`` is on and a snapshot is published); its location, or
    None when there is nothing to do. flagd consumers see the kill when their flagd
    next reads the file (its own sync interval: see docs/readme/emergency.md)."""
    publish = project.config.publish if project.config else {}
    if not flagd_enabled(publish):
        return None
    found = store.get_optional(f"{environment}/latest.json", max_bytes=MAX_SNAPSHOT_BYTES)
    if found is None or found.data is None:
        return None
    try:
        import base64

        document = json.loads(found.data)
        payload = json.loads(base64.b64decode(document["payload"], altchars=b"-_"))
        version = int(payload["version"])
    except (ValueError, TypeError, KeyError):
        raise StoreError(
            f"{store.location(environment + '/latest.json')} is not a snapshot envelope; "
            "flagd.json not rewritten"
        ) from None
    live = {key: entry for key, entry in entries.items() if entry.live(time.time())}
    data = flagd_json(export_flagd(killed_payload(payload, live, with_dependents=True)).document)
    return put_flagd_document(store, environment, data, version, replace_same_version=True)


# ---------------------------------------------------------------------------
# Retiring overrides that git has caught up with.


@dataclass(frozen=True)
class RetireOutcome:
    environment: str
    reconciled: list[str]  # flags whose override git now agrees with
    retired: OverridesWritten | None  # the write that removed them, when a key was given
    command: str | None  # what to run when no key was available


def reconciled_flags(
    current: CurrentOverrides, payload: Mapping[str, Any], now: float
) -> list[str]:
    """Flags with an override in force that ``payload`` (the snapshot now published)
    disables too: the override no longer changes any evaluation, so it can go. (Not
    "the kill commit is an ancestor": a squash-merged pull request has another commit.)"""
    if current.overrides is None:
        return []
    flags = payload.get("flags")
    if not isinstance(flags, Mapping):
        return []
    return sorted(
        key
        for key in current.overrides.live(now)
        if isinstance(flags.get(key), Mapping) and flags[key].get("enabled") is False
    )


def retire_reconciled(
    project: Project,
    store: SnapshotStore,
    environment: str,
    payload: Callable[[], Mapping[str, Any]],
    keys: Sequence[Ed25519PrivateKey] | None,
    *,
    by: str,
) -> RetireOutcome | None:
    """After a publish: retire the overrides the published snapshot (``payload()``, only
    asked for when overrides are in force) agrees with, signed with ``keys``, or say
    which command would (None when there is nothing to do)."""
    try:
        keyring = emergency_keyring(project)
    except UsageError:
        return None
    name = project.config.name if project.config else ""
    current = read_overrides(store, environment, keyring, name)
    if current.overrides is None or not current.overrides.live(time.time()):
        return None
    flags = reconciled_flags(current, payload(), time.time())
    if not flags:
        return None
    if keys is None:
        command = f"flagstone overrides clear {' '.join(flags)} --env {environment}"
        return RetireOutcome(environment, flags, None, command)
    written = write_overrides(
        store,
        project_name=name,
        environment=environment,
        keys=keys,
        keyring=keyring,
        change=_retire_change(flags, by=by),
    )
    return RetireOutcome(environment, flags, written, None)


def _retire_change(flags: Sequence[str], *, by: str) -> ChangeFunction:
    def retire(entries: dict[str, OverrideEntry]) -> Change:
        record = {
            "action": "retire",
            "by": by,
            "at": stamp(time.time()),
            "flags": sorted(flags),
            "reason": "the published snapshot disables these flags too",
        }
        return {k: v for k, v in entries.items() if k not in flags}, record

    return retire
