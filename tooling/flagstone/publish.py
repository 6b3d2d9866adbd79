"""Publishing: compile → sign → write ``<env>/snapshots/<version>.json`` → move
``<env>/latest.json`` (docs/design.md §6).

Per environment, under the target URL (``publish.target`` or ``--to``)::

    <env>/snapshots/<version>.json   immutable, written create-only
    <env>/latest.json                the same bytes, replaced with a conditional write

The publish protocol, and why it is safe when several publish jobs race:

1. Read ``latest.json`` and remember its ETag. Its payload gives the previous version,
   digest, expiry and source commit.
2. If the digest is unchanged, the snapshot is not within ``publish.refresh_before`` of
   its expiry and its signatures still satisfy the keyring of ``flagstone.yaml``, publish
   nothing (unless ``--force``).
3. If the previous snapshot came from a commit that is *not* an ancestor of ours (newer,
   or on another branch of history, or unknown to this clone), stop with an error: we
   never replace newer content with older content, and we do not guess.
4. version = previous + 1. Write ``snapshots/<version>.json`` create-only. If that
   version is taken, the object there is complete and immutable: read it and apply
   rule 3 to its commit (so a job never skips past a newer commit's version), then try
   the next version.
5. Write ``latest.json`` conditionally on the ETag from step 1 (create-only if there
   was none). If someone else moved it, read it again and apply rule 3; if it now holds
   the same content, we are done; if its version is below ours, retry the conditional
   write with the same bytes; otherwise go back to step 4 with a higher version.

So every version number is written once (create-only), ``latest.json`` always holds one
complete envelope (the stores write atomically) and ends at the highest version, and
no published object is ever overwritten. A failure between steps 4 and 5 leaves a
complete but unreferenced ``snapshots/<version>.json``; the next publish skips past it.

How the envelope is stored (``publish.compress``): as it is (``none``, the default), or
gzip-compressed deterministically with ``Content-Encoding: gzip`` where the store keeps
attributes (``gzip``); see ``flagstone.compression``. The signatures are the same
either way, and every read here inflates a compressed object under a cap counted in
inflated bytes. One size rule (``oversize_problem``): an envelope over the SDKs' default
``max_bytes`` is refused unless ``allow_oversized``, and then published with a warning.

The signing keys come from ``flagstone.keys``; with the development key the snapshots
are signed but untrusted, and the result says so.

Inside GitHub Actions (``GITHUB_ACTIONS=true``) a ``file://`` or ``memory://`` target is
refused unless explicitly allowed (``allow_local_target``, ``publish
--allow-local-target``): the runner's disk is discarded when the job ends, so such a
"publish" reaches no client, yet would report success.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from flagstone.compile import (
    compile_environment,
    git_source,
    snapshot_bytes,
    timestamp_text,
)
from flagstone.compression import GZIP, gzip_deterministic
from flagstone.envelope import (
    PAYLOAD_TYPE,
    TrustedKey,
    parse_timestamp,
    public_key_raw,
    sign_payload,
    verify_envelope,
)
from flagstone.errors import (
    ConflictError,
    EnvelopeError,
    GitError,
    RepositoryError,
    StoreError,
    UsageError,
)
from flagstone.flagd_export import check_flagd_export, export_flagd, flagd_json
from flagstone.keys import KEY_ENV_VARIABLE, SigningKeys, configured_keyring
from flagstone.model import Project
from flagstone.sdk.sources import DEFAULT_MAX_BYTES
from flagstone.store import GetResult, IfMatch, SnapshotStore, WriteMode, open_store
from flagstone.timestamps import duration_seconds

DEFAULT_TARGET = "file://dist"
DEFAULT_EXPIRES_AFTER = "30d"
DEFAULT_REFRESH_BEFORE = "7d"
LATEST = "latest.json"
# The one size rule: a signed envelope over the SDKs' default max_bytes (counted
# inflated, whatever the stored form) is refused, unless allow_oversized, and then
# published with a warning (``oversize_problem``).
SDK_DEFAULT_MAX_BYTES = DEFAULT_MAX_BYTES
# What the toolchain reads back from storage (publish, served, overrides), counted
# inflated: four times the SDK default, so a snapshot published with allow_oversized
# stays readable, and still a bound on what a gzip bomb can make it hold.
MAX_SNAPSHOT_BYTES = 4 * SDK_DEFAULT_MAX_BYTES
# ``publish.compress``: how snapshots are stored. ``gzip`` stores the envelope
# gzip-compressed (deterministically) with these attributes, so plain HTTP and CDN
# clients inflate it too; the default, ``none``, keeps the bytes readable by every SDK
# release, including those from before compressed snapshots (see docs/readme/publish.md).
COMPRESSION_CHOICES = ("none", GZIP)
GZIP_ATTRIBUTES = {"Content-Type": "application/json", "Content-Encoding": GZIP}
# Each lost race costs one round trip; this many in a row means something is wrong.
MAX_ATTEMPTS = 50
# The highest version canonical JSON (and so a snapshot) can carry exactly.
MAX_VERSION = 2**53 - 1

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

Action = Literal["published", "unchanged", "would-publish", "would-skip"]


@dataclass(frozen=True)
class PublishResult:
    """What happened to one environment."""

    environment: str
    action: Action
    version: int | None  # the version now (or that would be) in latest.json
    digest: str
    previous_version: int | None
    previous_digest: str | None
    latest_url: str
    snapshot_url: str | None
    expires: str | None
    reason: str
    signed_by: list[str] = field(default_factory=list)
    development_key: bool = False
    size_bytes: int | None = None  # of the signed envelope (estimated on a dry run)
    warnings: list[str] = field(default_factory=list)
    compression: str = "none"  # how the snapshot is stored: "none" or "gzip"
    stored_bytes: int | None = None  # what is stored (gzip-compressed, or size_bytes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PublishedSnapshot:
    """What a stored envelope says about itself (read without trusting it: it only
    steers the next version number and the ancestry check; SDKs verify)."""

    version: int
    digest: str | None
    expires: float | None
    expires_text: str | None
    commit: str | None

    @classmethod
    def from_envelope(
        cls, data: bytes, where: str, project: str, environment: str
    ) -> PublishedSnapshot:
        try:
            document = json.loads(data)
            if document.get("payloadType") != PAYLOAD_TYPE:
                raise ValueError(f"payloadType is {document.get('payloadType')!r}")
            # Standard or URL-safe base64: DSSE allows both.
            payload = json.loads(
                base64.b64decode(document["payload"], altchars=b"-_", validate=True)
            )
            version = payload["version"]
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise ValueError(f"version {version!r}")
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise StoreError(
                f"{where} is not a Flagstone snapshot envelope ({error}); refusing to replace it",
                hint="inspect it; if it is garbage, delete it deliberately and publish again",
            ) from None
        if payload.get("project") != project or payload.get("environment") != environment:
            raise StoreError(
                f"{where} holds project {payload.get('project')!r} environment "
                f"{payload.get('environment')!r}, not {project!r} {environment!r}; wrong target?"
            )
        expires_text = payload.get("expires")
        try:
            expires = parse_timestamp(expires_text, "expires") if expires_text else None
        except EnvelopeError:
            expires = None
        source = payload.get("source") or {}
        commit = source.get("commit") if isinstance(source, dict) else None
        if commit is not None and not isinstance(commit, str):
            raise StoreError(
                f"{where} has a malformed source commit {commit!r}; refusing to replace it"
            )
        return cls(version, payload.get("digest"), expires, expires_text, commit)


def is_ancestor(root: Path, older: str, newer: str) -> bool | None:
    """Whether commit ``older`` is an ancestor of (or equal to) ``newer``; None if git
    cannot tell (a commit missing from this clone, e.g. a shallow CI checkout)."""
    if older == newer:
        return True
    if not (_COMMIT.fullmatch(older) and _COMMIT.fullmatch(newer)):
        return None  # not a commit id (and never something git could read as an option)
    try:
        done = subprocess.run(
            ["git", "merge-base", "--is-ancestor", older, newer],
            cwd=root,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GitError(f"cannot run git merge-base: {error}") from None
    if done.returncode in (0, 1):
        return done.returncode == 0
    return None


def uncommitted_flag_files(root: Path) -> list[str]:
    """Flag files that differ from the commit (their content is published, but the
    snapshot's ``source.commit`` will not describe it); empty outside git."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", "flagstone.yaml", "flags", "segments"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [line[3:] for line in done.stdout.splitlines() if line.strip()]


def check_not_older(root: Path, ours: str | None, theirs: PublishedSnapshot, where: str) -> None:
    """Raise ``ConflictError`` unless our commit is the same as, or a descendant of, the
    commit ``theirs`` was published from."""
    if theirs.commit is None:
        return  # published outside git: there is no history to protect
    if ours is None:
        raise ConflictError(
            f"{where} (version {theirs.version}) was published from commit {theirs.commit[:12]}, "
            "but this repository has no commit to compare it with; refusing to replace it",
            hint="publish from a git checkout",
        )
    verdict = is_ancestor(root, theirs.commit, ours)
    if verdict is True:
        return
    if verdict is None:
        raise ConflictError(
            f"{where} (version {theirs.version}) was published from commit {theirs.commit[:12]}, "
            f"which this clone does not have; cannot tell whether {ours[:12]} is newer",
            hint="fetch the full history (actions/checkout with fetch-depth: 0) and publish again",
        )
    newer = is_ancestor(root, ours, theirs.commit)
    relation = "a newer commit" if newer else "a commit that is not an ancestor of ours"
    raise ConflictError(
        f"{where} (version {theirs.version}) was published from {relation} "
        f"({theirs.commit[:12]}); refusing to replace it with content from {ours[:12]}",
        hint="publish from the newest commit of the branch",
    )


def running_in_github_actions(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("GITHUB_ACTIONS") == "true"


def check_target_reaches_clients(
    url: str,
    *,
    allow_local_target: bool,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse a ``file://``/``memory://`` target inside GitHub Actions unless allowed:
    the runner's disk is thrown away with the job, so nothing would be published."""
    if allow_local_target or dry_run or not running_in_github_actions(environ):
        return
    if url.startswith(("file:", "memory:")):
        raise UsageError(
            f"refusing to publish to {url} inside GitHub Actions: the runner's disk is "
            "discarded when the job ends, so no client would ever see these snapshots",
            hint="set the real target: publish.target in flagstone.yaml or the "
            "FLAGSTONE_PUBLISH_TARGET repository variable (s3://…, gs://…, az://…); pass "
            "--allow-local-target (action input allow-local-target: true) only if a later "
            "step uploads the folder",
        )


def oversize_problem(size: int, *, cap: int, estimated: bool = False) -> str | None:
    """What is wrong with a signed envelope of ``size`` bytes (inflated), or None: over
    the SDKs' default ``max_bytes``, clients left at their defaults refuse it and serve
    code defaults. Compression does not change this: the cap counts inflated bytes."""
    if size <= cap:
        return None
    about = "about " if estimated else ""
    return (
        f"the signed snapshot is {about}{size} bytes, over the SDKs' default max_bytes of "
        f"{cap} bytes (counted inflated, whatever the stored form): clients left at their "
        "defaults refuse it and serve code defaults"
    )


@dataclass
class Publisher:
    """Publishes environments of one project to one store."""

    project: Project
    store: SnapshotStore
    signing: SigningKeys
    now: Callable[[], float] = time.time
    force: bool = False
    dry_run: bool = False
    source: Mapping[str, str | None] = field(default_factory=dict)
    # Replace a latest.json that does not verify (forged, or signed by a key removed
    # from flagstone.yaml) instead of refusing; see ``_read_latest``.
    replace_unverified: bool = False
    # Publish a snapshot over the SDKs' default size cap, with a warning (every client
    # must then be given a larger max_bytes); without it such a snapshot is refused.
    allow_oversized: bool = False
    sdk_max_bytes: int | None = None  # None: SDK_DEFAULT_MAX_BYTES
    allow_local_target: bool = False
    environ: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        check_target_reaches_clients(
            self.store.url,
            allow_local_target=self.allow_local_target,
            dry_run=self.dry_run,
            environ=self.environ,
        )
        local = self.store.url.startswith(("file:", "memory:"))
        if self.signing.development and not local and not self.dry_run:
            # A missing CI secret must not quietly replace trusted snapshots with ones
            # every SDK rejects.
            raise UsageError(
                f"refusing to publish to {self.store.url} with the untrusted development key",
                hint=f"pass --key FILE or set {KEY_ENV_VARIABLE}; the development key is for local file:// targets",
            )
        publish = self.project.config.publish if self.project.config else {}
        self.expires_after = _duration(publish, "expires_after", DEFAULT_EXPIRES_AFTER)
        self.refresh_before = _duration(publish, "refresh_before", DEFAULT_REFRESH_BEFORE)
        self.compression = stored_compression(publish)
        if self.sdk_max_bytes is None:
            self.sdk_max_bytes = SDK_DEFAULT_MAX_BYTES

    @property
    def _cap(self) -> int:
        return self.sdk_max_bytes or SDK_DEFAULT_MAX_BYTES

    @property
    def project_name(self) -> str:
        return self.project.config.name if self.project.config else ""

    def _read_latest(self, environment: str) -> tuple[GetResult | None, PublishedSnapshot | None]:
        """latest.json and what it says, once it verifies: storage is not trusted, so a
        version number is taken from it only if keys this project trusts signed it.

        A latest.json that does not verify is refused with the repair command; with
        ``replace_unverified`` it is replaced (conditionally on its ETag), and the next
        version follows the highest *verified* snapshot under ``snapshots/``, so a forged
        version near 2**53 cannot block publishing."""
        path = f"{environment}/{LATEST}"
        where = self.store.location(path)
        found = self.store.get_optional(path, max_bytes=MAX_SNAPSHOT_BYTES)
        if found is None or found.data is None:
            return None, None
        described = PublishedSnapshot.from_envelope(
            found.data, where, self.project_name, environment
        )
        problem = self._unverified(found.data)
        if problem is None:
            return found, described
        if not self.replace_unverified:
            raise EnvelopeError(
                f"{where} (version {described.version}) does not verify with the keys of "
                f"flagstone.yaml ({problem}); refusing to derive the next version from it",
                hint="if it is forged or signed by a key you removed, replace it: "
                f"flagstone publish --env {environment} --replace-unverified",
            )
        return found, None

    def _unverified(self, envelope: bytes) -> str | None:
        """Why ``envelope`` does not verify with flagstone.yaml's keyring, nor with all of
        the keys this publish signs with (its own earlier publish, e.g. with the
        development key); None when it verifies."""
        own = [TrustedKey.from_public(public_key_raw(key)) for key in self.signing.keys]
        attempts: list[tuple[list[TrustedKey], int]] = [(own, len(own))]
        keys, threshold = self._keyring()
        if len({key.public for key in keys}) >= threshold:
            attempts.insert(0, (keys, threshold))
        reason = "no trusted key"
        for trusted, needed in attempts:
            try:
                verify_envelope(envelope, trusted, needed)
            except EnvelopeError as error:
                reason = error.message
                continue
            return None
        return reason

    def _after_verified_snapshots(self, environment: str) -> int:
        """The version after the highest snapshot under ``snapshots/`` that verifies,
        skipping every number already taken (for ``replace_unverified``)."""
        prefix = f"{environment}/snapshots/"
        taken: set[int] = set()
        for name in self.store.list(prefix):
            match = re.fullmatch(r"([1-9][0-9]{0,15})\.json", name[len(prefix) :])
            if match and int(match.group(1)) <= MAX_VERSION:
                taken.add(int(match.group(1)))
        highest = 0
        for version in sorted(taken, reverse=True)[:MAX_ATTEMPTS]:
            found = self.store.get_optional(f"{prefix}{version}.json", max_bytes=MAX_SNAPSHOT_BYTES)
            if found is not None and found.data and self._unverified(found.data) is None:
                highest = version
                break
        version = highest + 1
        while version in taken:
            version += 1
        return version

    def _flagd_payload(self, environment: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload for flagd.json: with the emergency overrides in force applied
        (flagd does not read overrides.json; see flagstone.emergency)."""
        from flagstone.emergency import flagd_payload_with_overrides  # it imports us

        applied, _version = flagd_payload_with_overrides(
            self.project, self.store, environment, payload
        )
        return applied

    def publish(self, environment: str) -> PublishResult:
        unsigned = compile_environment(self.project, environment, source=self.source)
        digest: str = unsigned["digest"]
        # publish.flagd: also write <env>/flagd.json (unsigned) after latest.json; a flag
        # flagd cannot reproduce is refused here, before anything is written.
        flagd = flagd_enabled(self.project.config.publish if self.project.config else {})
        if flagd:
            check_flagd_export(self.project, environment, unsigned)
        ours = self.source.get("commit")
        latest_path = f"{environment}/{LATEST}"
        latest_url = self.store.location(latest_path)
        found, previous = self._read_latest(environment)
        replacing = found is not None and previous is None  # an unverified latest.json
        now = self.now()

        def result(
            action: Action,
            version: int | None,
            snapshot_url: str | None,
            expires: str | None,
            reason: str,
            size: int | None = None,
            estimated: bool = False,
            stored: int | None = None,
        ) -> PublishResult:
            return PublishResult(
                environment=environment,
                action=action,
                version=version,
                digest=digest,
                previous_version=previous.version if previous else None,
                previous_digest=previous.digest if previous else None,
                latest_url=latest_url,
                snapshot_url=snapshot_url,
                expires=expires,
                reason=reason,
                signed_by=self.signing.keyids,
                development_key=self.signing.development,
                size_bytes=size,
                warnings=self._size_warnings(size, estimated=estimated),
                compression=self.compression,
                # Unknown on a dry run that would compress (nothing is signed).
                stored_bytes=size if self.compression == "none" else stored,
            )

        if replacing:
            reason = "replacing an unverified latest.json"
        elif previous is None or previous.digest != digest:
            reason = "new content"
        elif self.force:
            reason = "forced republish"
        elif found is not None and not self._trusted_by_keyring(found.data or b""):
            # e.g. a key was rotated out of flagstone.yaml: same content, new signature.
            reason = (
                "re-signed: the published snapshot is not signed by the keys flagstone.yaml trusts"
            )
        elif (previous.expires or 0) - now <= self.refresh_before:
            reason = "refresh before expiry"
        elif found is not None and (found.stored_encoding or "none") != self.compression:
            # publish.compress changed: store the same content in the configured form.
            reason = f"stored form changes to {self.compression} (publish.compress)"
        else:
            if flagd and not self.dry_run:
                write_flagd_export(
                    self.store,
                    environment,
                    self._flagd_payload(environment, dict(unsigned, version=previous.version)),
                )
            return result(
                "would-skip" if self.dry_run else "unchanged",
                previous.version,
                self.store.location(f"{environment}/snapshots/{previous.version}.json"),
                previous.expires_text,
                f"same content; expires {previous.expires_text}, not yet due for refresh",
            )
        # Only now, when something would be written, does the history of what is there
        # matter: the same content is never "older", whoever published it.
        if previous is not None:
            check_not_older(self.project.root, ours, previous, latest_url)
        if replacing:
            version = self._after_verified_snapshots(environment)
        else:
            version = (previous.version if previous else 0) + 1
        if version > MAX_VERSION:
            raise EnvelopeError(
                f"{latest_url} is at version {version - 1}, the highest a snapshot can "
                "carry; a signing key was probably misused",
                hint="rotate the key out of flagstone.yaml (docs/security.md), then "
                f"flagstone publish --env {environment} --replace-unverified",
            )
        expires_text = timestamp_text(now + self.expires_after)
        if self.dry_run:
            # Nothing is signed: the envelope is the base64 payload plus a signature each.
            payload_size = len(snapshot_bytes(dict(unsigned, version=version)))
            estimate = 4 * -(-payload_size // 3) + 256 * (1 + len(self.signing.keys))
            return result(
                "would-publish",
                version,
                self.store.location(f"{environment}/snapshots/{version}.json"),
                expires_text,
                reason,
                estimate,
                estimated=True,
            )

        # Each lost race (a version taken, latest.json moved) costs one attempt.
        attempts = 0
        while attempts < MAX_ATTEMPTS:
            attempts += 1
            envelope = self._sign(unsigned, version, now)
            stored, attributes = self._stored_form(envelope)
            snapshot_path = f"{environment}/snapshots/{version}.json"
            try:
                self.store.put(snapshot_path, stored, mode="create", attributes=attributes)
            except ConflictError:
                # That version is taken. It is complete and immutable: make sure it is not
                # a newer commit's before moving past it.
                taken = self.store.get(snapshot_path, max_bytes=MAX_SNAPSHOT_BYTES)
                holder = PublishedSnapshot.from_envelope(
                    taken.data or b"",
                    self.store.location(snapshot_path),
                    self.project_name,
                    environment,
                )
                check_not_older(self.project.root, ours, holder, self.store.location(snapshot_path))
                version += 1
                continue
            # Point latest.json at it, conditional on what we read; retry while others move it.
            while attempts < MAX_ATTEMPTS:
                attempts += 1
                mode: Literal["create"] | IfMatch = (
                    "create" if found is None else IfMatch(found.etag or "")
                )
                try:
                    self.store.put(latest_path, stored, mode=mode, attributes=attributes)
                except ConflictError:
                    found, current = self._read_latest(environment)
                    if current is None:
                        raise StoreError(
                            f"{latest_url} disappeared while publishing; refusing to guess"
                        ) from None
                    # Our content already there, published by someone else, is done
                    # (whichever commit it came from: the same content is never older).
                    if current.digest == digest and current.version > version:
                        return result(
                            "unchanged",
                            current.version,
                            self.store.location(f"{environment}/snapshots/{current.version}.json"),
                            current.expires_text,
                            f"another publisher published the same content as version {current.version}",
                        )
                    check_not_older(self.project.root, ours, current, latest_url)
                    if current.version < version:
                        continue  # ours is still the highest: same bytes, new condition
                    version = current.version + 1
                    break
                if flagd:
                    write_flagd_export(
                        self.store,
                        environment,
                        self._flagd_payload(environment, dict(unsigned, version=version)),
                    )
                return result(
                    "published",
                    version,
                    self.store.location(snapshot_path),
                    expires_text,
                    reason,
                    len(envelope),
                    stored=len(stored),
                )
        raise ConflictError(
            f"gave up publishing {environment} after {MAX_ATTEMPTS} lost races on {latest_url}"
        )

    def _sign(self, unsigned: Mapping[str, Any], version: int, now: float) -> bytes:
        # Only the publication fields change between attempts; the compiled content
        # (and so its digest) is the one computed once per environment.
        payload = dict(
            unsigned,
            version=version,
            published_at=timestamp_text(now),
            expires=timestamp_text(now + self.expires_after),
        )
        envelope = sign_payload(snapshot_bytes(payload), self.signing.keys)
        problem = oversize_problem(len(envelope), cap=self._cap)
        if problem is not None and not self.allow_oversized:
            raise UsageError(
                f"refusing to publish: {problem}",
                hint="split the project, or give every client a larger max_bytes and then "
                "publish with --allow-oversized",
            )
        if not self.signing.development:
            self._check_keyring_accepts(envelope)
        return envelope

    def _size_warnings(self, size: int | None, *, estimated: bool) -> list[str]:
        """The size rule's warning: a snapshot over the cap that is published (allowed),
        or that a dry run says would be refused."""
        problem = (
            None if size is None else oversize_problem(size, cap=self._cap, estimated=estimated)
        )
        if problem is None:
            return []
        if self.allow_oversized:
            return [f"{problem} (published anyway: --allow-oversized)"]
        return [f"{problem}; publish will refuse it unless --allow-oversized"]

    def _stored_form(self, envelope: bytes) -> tuple[bytes, dict[str, str] | None]:
        """The bytes to store for ``envelope`` and the attributes to store them with."""
        if self.compression == GZIP:
            return gzip_deterministic(envelope), dict(GZIP_ATTRIBUTES)
        return envelope, None

    def _trusted_by_keyring(self, envelope: bytes) -> bool:
        """Whether ``envelope`` satisfies flagstone.yaml's keyring. With the development
        key nothing is trusted anyway, so there is nothing to re-sign for."""
        if self.signing.development:
            return True
        try:
            verify_envelope(envelope, *self._keyring())
        except EnvelopeError:
            return False
        return True

    def _keyring(self) -> tuple[list[TrustedKey], int]:
        return configured_keyring(self.project.config.signing if self.project.config else {})

    def _check_keyring_accepts(self, envelope: bytes) -> None:
        try:
            verify_envelope(envelope, *self._keyring())
        except EnvelopeError as error:
            raise EnvelopeError(
                f"refusing to publish: flagstone.yaml's keyring would reject this snapshot ({error.message})",
                hint=f"add the public key of {', '.join(self.signing.keyids)} to signing.keys "
                "(`flagstone keygen` prints the entry) or sign with a configured key",
            ) from None


def stored_compression(publish: Mapping[str, Any]) -> str:
    """``publish.compress`` (``none`` by default, or ``gzip``)."""
    value = publish.get("compress", "none")
    if value not in COMPRESSION_CHOICES:
        raise RepositoryError(
            f"publish.compress {value!r} is not one of {', '.join(COMPRESSION_CHOICES)}"
        )
    return str(value)


def _duration(publish: Mapping[str, Any], name: str, default: str) -> int:
    text = str(publish.get(name, default))
    seconds = duration_seconds(text)
    if seconds is None:
        raise RepositoryError(f"publish.{name} {text!r} is not a duration like 30d, 12h or 2w")
    return seconds


def selected_environments(project: Project, environments: Sequence[str]) -> list[str]:
    """``environments`` (all of the project's when empty), checked before anything is
    published so a typo in the last one does not leave the first ones half done."""
    known = project.environments
    for environment in environments:
        if environment not in known:
            raise UsageError(
                f"unknown environment {environment!r} (project environments: {', '.join(known) or 'none'})"
            )
    return list(environments or known)


def publish_target(project: Project, to: str | None) -> str:
    publish = project.config.publish if project.config else {}
    return to or str(publish.get("target") or DEFAULT_TARGET)


def open_target(project: Project, to: str | None) -> SnapshotStore:
    """The store to publish to: ``--to`` or ``publish.target``, with ``publish.endpoint``
    and ``publish.region`` applied; relative ``file://`` URLs are under the repository."""
    publish = project.config.publish if project.config else {}
    endpoint = publish.get("endpoint")
    region = publish.get("region")
    return open_store(
        publish_target(project, to),
        base_dir=project.root,
        endpoint=str(endpoint) if endpoint else None,
        region=str(region) if region else None,
    )


def publish_project(
    project: Project,
    signing: SigningKeys,
    *,
    environments: Sequence[str] = (),
    to: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    now: Callable[[], float] = time.time,
    source: Mapping[str, str | None] | None = None,
    replace_unverified: bool = False,
    allow_oversized: bool = False,
    allow_local_target: bool = False,
) -> list[PublishResult]:
    """Publish ``environments`` (default: all, in project order) and return what happened."""
    selected = selected_environments(project, environments)
    publisher = Publisher(
        project,
        open_target(project, to),
        signing,
        now=now,
        force=force,
        dry_run=dry_run,
        source=source if source is not None else git_source(project.root),
        replace_unverified=replace_unverified,
        allow_oversized=allow_oversized,
        allow_local_target=allow_local_target,
    )
    return [publisher.publish(environment) for environment in selected]


# ---------------------------------------------------------------------------
# flagd.json next to the signed snapshot (``publish.flagd: true``): the same payload,
# exported by flagstone.flagd_export, written with the same conditional writes.

FLAGD_OBJECT = "flagd.json"
# Each lost race costs a read and a write; this many in a row means something is wrong.
_MAX_WRITE_ATTEMPTS = 20


def flagd_enabled(publish_config: Mapping[str, Any]) -> bool:
    """Whether ``flagstone.yaml``'s ``publish.flagd`` asks for ``<env>/flagd.json``."""
    return publish_config.get("flagd") is True


def write_flagd_export(store: SnapshotStore, environment: str, payload: Mapping[str, Any]) -> str:
    """Write the flagd export of a just-published payload to ``<env>/flagd.json`` and
    return its location.

    The file is NOT signed (flagd does not verify signatures); its ``metadata.version``
    is the snapshot version it was made from. Publishers can race, so it is replaced
    only with a conditional write, and never by an older version than the one there.
    Raises ``ExportError`` if a flag cannot be exported (check first with
    ``check_flagd_export``, before publishing anything).
    """
    version = int(payload.get("version") or 0)
    data = flagd_json(export_flagd(payload, checked=True).document)
    return put_flagd_document(store, environment, data, version)


def put_flagd_document(
    store: SnapshotStore,
    environment: str,
    data: bytes,
    version: int,
    *,
    replace_same_version: bool = False,
) -> str:
    """Write ``data`` (a flagd document made from snapshot ``version``) to
    ``<env>/flagd.json`` with conditional writes, and return its location. An export of
    a newer snapshot already there is kept (one of the same version too, unless
    ``replace_same_version``: an emergency kill rewrites the current one)."""
    path = f"{environment}/{FLAGD_OBJECT}"
    for _attempt in range(_MAX_WRITE_ATTEMPTS):
        found = store.get_optional(path)
        if found is not None and found.data is not None:
            there = _exported_version(found.data)
            if there > version or (there == version and not replace_same_version):
                return store.location(path)  # a newer (or the same) export is there
        mode: WriteMode = (
            "create" if found is None or found.data is None else IfMatch(found.etag or "")
        )
        try:
            store.put(path, data, mode=mode)
        except ConflictError:
            continue
        return store.location(path)
    raise ConflictError(
        f"gave up writing {store.location(path)} after {_MAX_WRITE_ATTEMPTS} lost races"
    )


def _exported_version(data: bytes) -> int:
    try:
        version = json.loads(data)["metadata"]["version"]
        return int(version)
    except (ValueError, KeyError, TypeError):
        return -1  # not ours, or damaged: replace it
