"""The SDK side of emergency overrides: poll ``<env>/overrides.json``, verify it against
the emergency keys, and tell the client which flags to force off.

The overrides object (``flagstone.overrides``) is polled on its own short interval
(default 5 s, jittered ±10 %) with conditional GETs through the same ``Source`` kinds
as the snapshot, so an unchanged object costs a 304. A fetched object is refused
unless ``emergency_threshold`` distinct ``emergency_keys`` signed it with the overrides
payload type, it names the client's project and environment, has not expired, and its
version is not below the highest one accepted (kept in ``cache_dir`` when set, as
``<environment>.overrides.*``, with the last good envelope so that a restart while
storage is down still applies a kill). The same version with other bytes is refused.

What is normal and what is not:

* no overrides object at all: nothing to apply, not an error;
* a refused object (tampered, replayed, expired, wrong key, …): the last good set
  stays, and ``last_error`` (and the ``flagstone.sdk`` log) says why;
* the object disappearing after one was accepted: the last good set stays too (a
  deleted object must not silently undo a kill; only a signed undo or the entry's
  expiry does);
* storage unreachable: the last good set stays; ``last_error`` says so.

Entries expire on their own: each poll re-checks which are still in force.

Applying costs nothing when nothing is overridden: the client evaluates the snapshot
itself; only when an entry names a flag of the snapshot is a recompiled snapshot (with
those flags disabled) and a small wrapper swapped in (see ``flagstone.overrides``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flagstone.engine import Snapshot
from flagstone.envelope import TrustedKey
from flagstone.errors import EnvelopeError, NotFoundError, StoreError, UsageError
from flagstone.overrides import (
    MAX_OVERRIDES_BYTES,
    OVERRIDES_OBJECT,
    AppliedOverrides,
    OverrideSet,
    apply_overrides,
    verify_overrides,
)
from flagstone.sdk.cache import SnapshotCache
from flagstone.sdk.client import DEFAULT_OVERRIDE_POLL_INTERVAL
from flagstone.sdk.sources import Source, open_source

logger = logging.getLogger("flagstone.sdk")

_JITTER = 0.1


def overrides_location(source: str | os.PathLike[str], environment: str) -> str:
    """Where the overrides object of a snapshot ``source`` lives: next to its
    ``latest.json`` (``…/<env>/overrides.json``)."""
    text = os.fspath(source)
    if "://" in text:
        parts = urlsplit(text)
        path = parts.path
        if path.endswith(".json"):
            path = path.rsplit("/", 1)[0] + "/" + OVERRIDES_OBJECT
        else:
            path = f"{path.rstrip('/')}/{environment}/{OVERRIDES_OBJECT}"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if text.endswith(".json"):
        return os.path.join(os.path.dirname(text), OVERRIDES_OBJECT)
    return os.path.join(text, environment, OVERRIDES_OBJECT)


class OverrideWatcher:
    """Polls and verifies one environment's overrides object; ``applied_to`` gives the
    evaluation view of a snapshot, ``on_change(flags)`` is called after each change."""

    def __init__(
        self,
        source: Source,
        *,
        environment: str,
        project: str,
        trusted: Sequence[TrustedKey],
        threshold: int,
        interval: float | None,
        cache_dir: str | os.PathLike[str] | None,
        on_change: Callable[[frozenset[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if threshold < 1 or len({key.public for key in trusted}) < threshold:
            raise UsageError(
                f"emergency_threshold {threshold} cannot be met by {len(trusted)} emergency key(s)"
            )
        if interval is not None and interval <= 0:
            raise UsageError(f"override_poll_interval must be positive, not {interval!r}")
        self._source = source
        self._environment = environment
        self._project = project
        self._trusted = list(trusted)
        self._threshold = threshold
        self._interval = interval
        self._on_change = on_change
        self._now = clock
        self._random = random.Random()
        self._cache = (
            SnapshotCache(cache_dir, f"{environment}.overrides") if cache_dir is not None else None
        )
        self._lock = threading.Lock()  # one poll at a time
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._etag: str | None = None
        self._accepted: OverrideSet | None = None
        self._accepted_sha256: bytes | None = None
        self._rejected_sha256: bytes | None = None
        self._floor = 0
        self._applied_keys: frozenset[str] = frozenset()
        self._accepted_changed = False  # a new version since the last on_change
        self.last_error: str | None = None
        if self._cache is not None:
            self._load_cache()

    # -- what the client asks --

    @property
    def version(self) -> int | None:
        """The version of the overrides in use, None before one was accepted."""
        accepted = self._accepted
        return accepted.version if accepted is not None else None

    @property
    def overrides(self) -> OverrideSet | None:
        return self._accepted

    def applied_to(self, snapshot: Snapshot) -> AppliedOverrides:
        """``snapshot`` with the entries in force now applied."""
        accepted = self._accepted
        if accepted is None:
            return AppliedOverrides(snapshot, {})
        return apply_overrides(snapshot, accepted.live(self._now()), accepted.version)

    # -- polling --

    def start(self) -> None:
        if self._interval is None:
            return
        self._thread = threading.Thread(
            target=self._poll_forever,
            name=f"flagstone-overrides-{self._environment}",
            daemon=True,
        )
        self._thread.start()

    def restart_after_fork(self) -> None:
        self._lock = threading.Lock()
        closed = self._closed.is_set()
        self._closed = threading.Event()
        if closed:
            self._closed.set()
        else:
            self.start()

    def close(self, timeout: float) -> None:
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _poll_forever(self) -> None:
        assert self._interval is not None
        while not self._closed.is_set():
            try:
                self.poll()
            except Exception:  # a bug must not stop the poller; the last good set stays
                logger.exception("unexpected error while polling the overrides")
            delay = self._interval * self._random.uniform(1 - _JITTER, 1 + _JITTER)
            if self._closed.wait(delay):
                return

    def poll(self) -> None:
        """Fetch, verify and (when changed) accept the overrides object; then report any
        change of the entries in force (an expiry counts) through ``on_change``."""
        with self._lock:
            self._fetch()
            accepted = self._accepted
            live = frozenset(accepted.live(self._now())) if accepted is not None else frozenset()
            changed = live ^ self._applied_keys
            if accepted is not None and self._accepted_changed:
                # Same flags, but a new version (a renewed reason): details change too.
                changed = changed | live
            self._accepted_changed = False
            self._applied_keys = live
        if changed:
            self._on_change(changed)

    def _fetch(self) -> None:
        where = self._source.describe()
        try:
            fetched = self._source.fetch(self._etag)
        except NotFoundError:
            self._etag = None
            if self._accepted is not None and self.last_error is None:
                logger.warning(
                    "the overrides object %s is gone; keeping version %d until a signed "
                    "change or its entries expire",
                    where,
                    self._accepted.version,
                )
            if self._accepted is not None:
                self.last_error = f"overrides object {where} is missing; last good version kept"
            return
        except (StoreError, EnvelopeError) as error:
            self._failed(f"cannot fetch the overrides {where}: {error}")
            return
        except Exception as error:  # a custom Source failing its own way
            self._failed(f"cannot fetch the overrides {where}: {type(error).__name__}: {error}")
            return
        if fetched.data is None:
            return
        self._etag = fetched.etag
        digest = hashlib.sha256(fetched.data).digest()
        if digest == self._accepted_sha256:
            self.last_error = None
            return
        if digest == self._rejected_sha256:
            return
        try:
            overrides = self._verify(fetched.data)
        except EnvelopeError as error:
            self._rejected_sha256 = digest
            self._failed(f"rejected overrides from {where}: {error}")
            return
        self._accept(overrides, fetched.data, digest)

    def _verify(self, data: bytes) -> OverrideSet:
        overrides = verify_overrides(
            data,
            self._trusted,
            self._threshold,
            project=self._project,
            environment=self._environment,
            now=self._now(),
        )
        if overrides.version < self._floor:
            raise EnvelopeError(
                f"overrides version {overrides.version} is older than version {self._floor}, "
                "already accepted: a replayed or rolled-back overrides object"
            )
        if overrides.version == self._floor and self._accepted is not None:
            raise EnvelopeError(
                f"overrides version {overrides.version} was already accepted with other content"
            )
        return overrides

    def _accept(self, overrides: OverrideSet, data: bytes, digest: bytes) -> None:
        self._accepted = overrides
        self._accepted_sha256 = digest
        self._accepted_changed = True
        self._rejected_sha256 = None
        self._floor = max(self._floor, overrides.version)
        self.last_error = None
        logger.info(
            "emergency overrides version %d: %d flag(s) forced off",
            overrides.version,
            len(overrides.live(self._now())),
        )
        if self._cache is not None:
            try:
                self._cache.save(data, overrides.version, self._project)
            except OSError as error:
                logger.warning("cannot write the overrides cache: %s", error)

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            kept = (
                f"keeping overrides version {self._accepted.version}"
                if self._accepted is not None
                else "no overrides applied"
            )
            logger.warning("%s; %s", message, kept)
        self.last_error = message

    def _load_cache(self) -> None:
        assert self._cache is not None
        state = self._cache.load(max_bytes=MAX_OVERRIDES_BYTES)
        for problem in state.problems:
            logger.warning("ignoring the overrides cache: %s", problem)
        if state.project not in (None, self._project):
            return
        self._floor = state.highest_version
        if state.envelope is None:
            return
        try:
            # Expired entries simply no longer apply; the object itself may be old.
            overrides = verify_overrides(
                state.envelope,
                self._trusted,
                self._threshold,
                project=self._project,
                environment=self._environment,
                now=None,
            )
        except EnvelopeError as error:
            logger.warning("ignoring the cached overrides: %s", error)
            return
        if overrides.version >= self._floor:
            self._accepted = overrides
            self._accepted_sha256 = hashlib.sha256(state.envelope).digest()
            self._floor = overrides.version
            self._applied_keys = frozenset(overrides.live(self._now()))


def open_override_watcher(
    source: str | os.PathLike[str] | Source,
    overrides_source: str | os.PathLike[str] | Source | None,
    *,
    environment: str,
    project: str,
    emergency_keys: Sequence[TrustedKey],
    emergency_threshold: int,
    interval: float | None,
    cache_dir: str | os.PathLike[str] | None,
    timeout: float,
    on_change: Callable[[frozenset[str]], None],
    clock: Callable[[], float] | None,
) -> OverrideWatcher:
    """The watcher for a client: ``overrides_source`` when given, else the overrides
    object next to the snapshot ``source`` (a custom ``Source`` needs one given)."""
    where: Any = overrides_source
    if where is None:
        if not isinstance(source, str | os.PathLike):
            raise UsageError(
                "with a custom snapshot Source, pass overrides_source= too "
                "(where <env>/overrides.json is read from)"
            )
        where = overrides_location(source, environment)
    opened: Source = (
        open_source(where, environment=environment, timeout=timeout, max_bytes=MAX_OVERRIDES_BYTES)
        if isinstance(where, str | os.PathLike)
        else where
    )
    return OverrideWatcher(
        opened,
        environment=environment,
        project=project,
        trusted=emergency_keys,
        threshold=emergency_threshold,
        interval=interval,
        cache_dir=cache_dir,
        on_change=on_change,
        clock=clock or time.time,
    )


__all__ = [
    "DEFAULT_OVERRIDE_POLL_INTERVAL",
    "OverrideWatcher",
    "open_override_watcher",
    "overrides_location",
]
