"""The Flagstone client: fetch, verify and hot-swap signed snapshots; evaluate in-process.

One background thread polls the source; evaluations never wait for it and never see
its failures. A fetched envelope goes through, in order:

1. the size cap and the deadline (in the source);
2. the DSSE signatures against the trusted keys and the threshold, BEFORE anything in
   the payload is parsed;
3. the payload checks (format, project, environment, expiry, digest — compared with
   the flags and segments as signed when the payload is in canonical form);
4. the version: lower than the highest ever accepted (persisted in ``cache_dir``) is a
   replay; the same version is accepted only with the same content;
5. precompiling with ``Snapshot.from_payload``, still on the polling thread;
6. one reference assignment, which is atomic in Python: an evaluation reads the
   reference once and so sees one whole snapshot, old or new, never a mix.

A failure at any step leaves the snapshot in use in place and logs one warning on the
``flagstone.sdk`` logger. Status:

* ``NOT_READY`` — no snapshot yet and no attempt has finished;
* ``READY`` — serving a snapshot that has not expired. Storage being unreachable does
  not change this (the last known good snapshot is still served; ``last_error`` says
  what failed);
* ``STALE`` — serving a snapshot whose ``expires`` has passed (it keeps being served);
* ``ERROR`` — no snapshot could be obtained, or the source holds a snapshot that was
  rejected (tampered, replayed, wrong environment, …) while the last good one is served.

While serving a snapshot loaded from ``cache_dir`` that no fresh fetch has confirmed
yet, successful evaluations return :class:`CachedDetails`: reason ``CACHED``, with
the engine's own reason kept in ``engine_reason``.
"""

from __future__ import annotations

import copy
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from flagstone.engine import ERROR, TYPE_MISMATCH, Details, InvalidContext, Snapshot
from flagstone.envelope import TrustedKey, check_snapshot, verify_envelope_signers
from flagstone.errors import (
    EnvelopeError,
    FlagstoneError,
    SnapshotFormatError,
    StoreError,
    UsageError,
)
from flagstone.freedmemory import LARGE_LOAD_BYTES, return_freed_memory
from flagstone.gcpause import cyclic_gc_paused
from flagstone.lazylogging import lazy_logger
from flagstone.records import Record, set_field
from flagstone.sdk.changes import changed_flags
from flagstone.sdk.sources import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    DeadlineFetcher,
    Fetched,
    Source,
    check_environment,
    open_source,
)
from flagstone.sdk.telemetry import SourceStats, Telemetry, telemetry_for, variation_labels
from flagstone.snapshot_text import read_payload

if TYPE_CHECKING:
    # Imported where used: a client without cache_dir or emergency_keys never loads them
    # (what `import flagstone.sdk` costs, issue 18.2).
    from flagstone.sdk.cache import SnapshotCache, VersionFloor
    from flagstone.sdk.overrides import OverrideWatcher

logger = lazy_logger("flagstone.sdk")

CACHED = "CACHED"
PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
DEFAULT_POLL_INTERVAL = 30.0
# Seconds between polls of the emergency overrides (flagstone.sdk.overrides).
DEFAULT_OVERRIDE_POLL_INTERVAL = 5.0
# Jitter spreads the polls of many processes started together (a deploy) over time.
_JITTER = 0.1


class Status(StrEnum):
    NOT_READY = "NOT_READY"
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"


class CachedDetails(Details):
    """Details of an evaluation served from the ``cache_dir`` snapshot before a fresh
    fetch confirmed it: ``reason`` is ``CACHED``; ``engine_reason`` is what the engine said
    (``TARGETING_MATCH``, ``SPLIT``, …)."""

    engine_reason: str

    _fields = (*Details._fields, "engine_reason")

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
        engine_reason: str = "",
    ) -> None:
        Details.__init__(
            self, value, variation, reason, error_code, error_message, rule, version, bucket
        )
        self.__dict__["engine_reason"] = engine_reason


def _served(details: Details, cached: bool) -> Details:
    """``details`` as handed to the caller: JSON values copied, CACHED while cached."""
    if details.error_code is not None:
        return details
    value = details.value
    if value.__class__ is dict or value.__class__ is list:
        # The engine hands out the snapshot's own objects; a caller changing one would
        # change the answer of every later evaluation, in every thread.
        details = details.replaced(value=copy.deepcopy(value))
    return _as_cached(details) if cached else details


def _as_cached(details: Details) -> CachedDetails:
    values = {name: getattr(details, name) for name in Details._fields}
    values["reason"] = CACHED
    return CachedDetails(**values, engine_reason=details.reason)


class OpenFeatureLikeContext(Protocol):
    """An OpenFeature ``EvaluationContext`` or anything shaped like it."""

    @property
    def targeting_key(self) -> str | None: ...

    @property
    def attributes(self) -> Mapping[str, Any]: ...


ContextLike = Mapping[str, Any] | OpenFeatureLikeContext | InvalidContext | None
ChangeListener = Callable[[frozenset[str]], None]
StatusListener = Callable[[Status, str | None], None]


def context_mapping(context: ContextLike) -> Mapping[str, Any] | InvalidContext | None:
    """The engine's context (a mapping with ``key``) for a dict or an OpenFeature-like
    object, whose ``targeting_key`` becomes ``key``. Never raises: anything else (a list,
    a string), or an object whose attributes cannot be read, becomes an
    ``InvalidContext`` that the engine answers with INVALID_CONTEXT."""
    if context is None or isinstance(context, (Mapping, InvalidContext)):
        return context
    try:
        attributes = getattr(context, "attributes", None)
        targeting_key = getattr(context, "targeting_key", None)
        if attributes is None and targeting_key is None:
            return InvalidContext(
                "the context must be a mapping or an OpenFeature-like object "
                f"(targeting_key, attributes), not {type(context).__name__}"
            )
        if attributes is not None and not isinstance(attributes, Mapping):
            return InvalidContext("the context's attributes must be a mapping")
        merged = dict(attributes) if attributes is not None else {}
    except Exception as error:  # a property that raises: report it, never raise it
        return InvalidContext(f"the context cannot be read ({type(error).__name__})")
    if targeting_key is not None:
        merged["key"] = targeting_key
    return merged


class _Active(Record):
    """The snapshot in use, with what the poller needs to know about it."""

    snapshot: Snapshot
    envelope_sha256: bytes  # to recognise the same bytes fetched again
    cached: bool  # loaded from cache_dir and not yet confirmed by a fresh fetch
    # snapshot.evaluate with the client's clock bound in: (flag_key, context, default).
    run: Callable[[str, Any, Any], Details]
    # The same, without telemetry's exposures and listener (all_flags).
    run_uncounted: Callable[[str, Any, Any], Details]
    # Telemetry on: the getters count each evaluation inline (see EvaluationCounts).
    counting: bool

    _fields = (
        "snapshot",
        "envelope_sha256",
        "cached",
        "run",
        "run_uncounted",
        "counting",
    )
    # Weak references: telemetry knows a version's counts are final once no record of it
    # lives (no evaluation in flight on it).
    __slots__ = (*_fields, "__weakref__")

    def __init__(
        self,
        snapshot: Snapshot,
        envelope_sha256: bytes,
        cached: bool,
        run: Callable[[str, Any, Any], Details],
        run_uncounted: Callable[[str, Any, Any], Details],
        counting: bool,
    ) -> None:
        set_field(self, "snapshot", snapshot)
        set_field(self, "envelope_sha256", envelope_sha256)
        set_field(self, "cached", cached)
        set_field(self, "run", run)
        set_field(self, "run_uncounted", run_uncounted)
        set_field(self, "counting", counting)


def _after_load(envelope: bytes) -> None:
    """After a large snapshot was loaded (or refused): the memory its loading freed goes
    back to the operating system (see flagstone.freedmemory)."""
    if len(envelope) >= LARGE_LOAD_BYTES:
        return_freed_memory()


def _trusted_key(entry: TrustedKey | Mapping[str, Any]) -> TrustedKey:
    if isinstance(entry, TrustedKey):
        return entry
    if isinstance(entry, Mapping) and "public" in entry:
        return TrustedKey.from_public(str(entry["public"]), entry.get("keyid"))
    raise UsageError(
        f"a trusted key is a TrustedKey or a {{'keyid', 'public'}} mapping, not {entry!r}"
    )


class Client:
    """Evaluates the flags of one environment from signed snapshots (see the module doc)."""

    def __init__(
        self,
        source: str | os.PathLike[str] | Source,
        *,
        environment: str,
        trusted_keys: Sequence[TrustedKey | Mapping[str, Any]],
        project: str,
        threshold: int = 1,
        poll_interval: float | None = DEFAULT_POLL_INTERVAL,
        max_backoff: float | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] | None = None,
        telemetry: Telemetry | bool = False,
        emergency_keys: Sequence[TrustedKey | Mapping[str, Any]] = (),
        emergency_threshold: int = 1,
        override_poll_interval: float | None = DEFAULT_OVERRIDE_POLL_INTERVAL,
        overrides_source: str | os.PathLike[str] | Source | None = None,
    ) -> None:
        """Start serving ``environment`` from ``source``.

        ``source``: a path, ``file://``, ``http(s)://``, ``s3://``, ``gs://``, ``az://`` or
        ``memory://`` location (an envelope ``….json``, or a publish target under which
        ``<environment>/latest.json`` is read), or a ``Source`` object.
        ``trusted_keys``: ``TrustedKey`` objects or ``{"keyid", "public"}`` mappings as in
        flagstone.yaml; ``threshold`` distinct ones must have signed. ``project``: the
        project whose snapshots are served (flagstone.yaml's ``project``), required, so
        the client cannot be pinned to another project by the first snapshot it sees.
        ``poll_interval``: seconds between polls, jittered by ±10 %; failures back off
        exponentially up to ``max_backoff`` (default 10 × the interval, at most 10 min).
        None: no background thread — the constructor loads once, ``refresh()`` reloads.
        ``timeout`` bounds every fetch, ``max_bytes`` caps every body. ``clock`` returns
        epoch seconds, for expiry and scheduled stages (default ``time.time``).
        ``telemetry``: True or a ``Telemetry`` counts evaluations (and more, see
        ``flagstone.sdk.telemetry``); False (the default) leaves the hot path untouched.
        ``emergency_keys`` (flagstone.yaml's ``signing.emergency.keys``; none: overrides
        are not read): the keys whose ``emergency_threshold`` signatures make an
        emergency override count. The overrides object (``overrides_source``, default
        ``<environment>/overrides.json`` next to the snapshot) is polled every
        ``override_poll_interval`` seconds (None: only on ``refresh()``); see
        ``flagstone.sdk.overrides``.
        """
        if not isinstance(project, str) or not project:
            raise UsageError(f"project must be the project's name, not {project!r}")
        if threshold < 1:
            raise UsageError(f"threshold must be at least 1, not {threshold}")
        keys = [_trusted_key(entry) for entry in trusted_keys]
        if len({key.public for key in keys}) < threshold:
            raise UsageError(
                f"signature threshold {threshold} cannot be met by {len(keys)} trusted key(s)"
            )
        if poll_interval is not None and poll_interval <= 0:
            raise UsageError(f"poll_interval must be positive or None, not {poll_interval!r}")
        check_environment(environment)  # it also names the cache files
        self.environment = environment
        self._source: Source = (
            open_source(source, environment=environment, timeout=timeout, max_bytes=max_bytes)
            if isinstance(source, str | os.PathLike)
            else source
        )
        # Every fetch runs under one deadline, whatever the source does (see sources.py).
        self._fetcher = DeadlineFetcher(self._source, timeout)
        self._trusted = keys
        self._threshold = threshold
        self._project: str = project
        self._poll_interval = poll_interval
        self._max_backoff = (
            max_backoff
            if max_backoff is not None
            else min(600.0, 10 * (poll_interval or DEFAULT_POLL_INTERVAL))
        )
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._clock = clock
        self._now: Callable[[], float] = clock or time.time
        self._random = random.Random()
        self._cache: SnapshotCache | None = None
        if cache_dir is not None:
            from flagstone.sdk.cache import SnapshotCache

            self._cache = SnapshotCache(cache_dir, environment)
        self.telemetry: Telemetry | None = telemetry_for(telemetry, environment, clock)
        self._source_stats = SourceStats()

        # The one reference evaluations read. Everything below it belongs to the poller.
        self._active: _Active | None = None
        self._update_lock = threading.RLock()  # one poll or refresh at a time
        self._listeners_lock = threading.Lock()  # never held across I/O
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._highest_version = 0
        self._seen_etag: str | None = None  # ETag of the last body fetched, good or bad
        # sha256 of the body the source holds, when that body was rejected.
        self._rejected_digest: bytes | None = None
        self._failing = False  # the last attempt could not reach the snapshot
        self._attempted = False
        self._last_error: str | None = None  # why the last attempt failed, if it did
        self._reported_status = Status.NOT_READY
        # For the watchdog (see _stuck_poller): when the poller last finished a poll and
        # how long it then meant to wait.
        self._poll_finished_at = time.monotonic()
        self._poll_delay = 0.0
        self._change_listeners: list[ChangeListener] = []
        self._status_listeners: list[StatusListener] = []

        # Emergency overrides (flagstone.sdk.overrides): their own poller and keys.
        self._swap_lock = threading.Lock()  # held while self._active is replaced
        self._overrides: OverrideWatcher | None = None
        if emergency_keys:
            from flagstone.sdk.overrides import open_override_watcher

            self._overrides = open_override_watcher(
                source,
                overrides_source,
                environment=environment,
                project=project,
                emergency_keys=[_trusted_key(entry) for entry in emergency_keys],
                emergency_threshold=emergency_threshold,
                interval=override_poll_interval if poll_interval is not None else None,
                cache_dir=cache_dir,
                timeout=timeout,
                on_change=self._overrides_changed,
                clock=clock,
            )

        if self._cache is not None:
            self._load_cache()
        self._thread: threading.Thread | None = None
        if poll_interval is None:
            self.refresh()
        else:
            self._start_polling()
            if self._overrides is not None:
                self._overrides.start()
            # A forked child (gunicorn --preload, multiprocessing) inherits the snapshot
            # but not the polling thread; start it again there. A weak reference, so the
            # hook, which cannot be unregistered, does not keep the client alive.
            restart = weakref.WeakMethod(self._restart_after_fork)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(restart))

    def _start_polling(self) -> None:
        self._thread = threading.Thread(
            target=self._poll_forever, name=f"flagstone-poller-{self.environment}", daemon=True
        )
        self._thread.start()

    def _restart_after_fork(self) -> None:
        # Locks (also those inside events) that the parent's threads held at the fork
        # stay held forever in the child: make new ones, keeping the events' state.
        self._update_lock = threading.RLock()
        self._listeners_lock = threading.Lock()
        self._ready = _event(self._ready.is_set())
        self._closed = _event(self._closed.is_set())
        self._poll_finished_at = time.monotonic()
        self._swap_lock = threading.Lock()
        if not self._closed.is_set():
            self._start_polling()
        if self._overrides is not None:
            self._overrides.restart_after_fork()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        environment: str,
        trusted_keys: Sequence[TrustedKey | Mapping[str, Any]],
        project: str,
        poll_interval: float | None = None,
        **options: Any,
    ) -> Client:
        """A client for a local envelope file, loaded before this returns (no polling
        unless ``poll_interval`` is given; ``refresh()`` reloads)."""
        return cls(
            os.fspath(path),
            environment=environment,
            trusted_keys=trusted_keys,
            project=project,
            poll_interval=poll_interval,
            **options,
        )

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, flag_key: str, context: ContextLike = None, default: Any = None) -> Details:
        """The engine's ``Details`` for ``flag_key``; never raises. Before any snapshot:
        the default with reason ERROR and error code PROVIDER_NOT_READY."""
        active = self._active  # read once: this whole evaluation uses one snapshot
        if active is None:
            return self._not_ready(default)
        if context.__class__ is not dict:
            context = context_mapping(context)
        details = active.run(flag_key, context, default)
        if active.counting:  # telemetry on: counted inline (see EvaluationCounts)
            counter = details.counter
            if counter is not None:
                next(counter)
            else:
                self._count_other(flag_key, details)
        value = details.value
        if active.cached or value.__class__ is dict or value.__class__ is list:
            return _served(details, active.cached)
        return details

    # The typed getters repeat evaluate()'s few lines instead of calling it: they are the
    # hot path, and the extra call and checks cost about a third of an evaluation
    # (benchmarks/sdk_bench.py). Only the value is returned, so no copy or CACHED wrapper.
    # The same goes for telemetry's counting: inline, a Python call would double its cost;
    # the engine's Details carry their outcome's counter, so it is one attribute read and
    # one C call (errors, whose Details carry none, take the call).

    def bool_value(self, flag_key: str, context: ContextLike = None, default: bool = False) -> bool:
        active = self._active
        if active is None:
            return default
        if context.__class__ is not dict:
            context = context_mapping(context)
        details = active.run(flag_key, context, default)
        if active.counting:  # telemetry on: counted inline (see EvaluationCounts)
            counter = details.counter
            if counter is not None:
                next(counter)
            else:
                self._count_other(flag_key, details)
        value = details.value
        return value if value.__class__ is bool else default

    def string_value(self, flag_key: str, context: ContextLike = None, default: str = "") -> str:
        active = self._active
        if active is None:
            return default
        if context.__class__ is not dict:
            context = context_mapping(context)
        details = active.run(flag_key, context, default)
        if active.counting:  # telemetry on: counted inline (see EvaluationCounts)
            counter = details.counter
            if counter is not None:
                next(counter)
            else:
                self._count_other(flag_key, details)
        value = details.value
        return value if isinstance(value, str) else default

    def number_value(self, flag_key: str, context: ContextLike = None, default: float = 0) -> float:
        """An int or a float; a boolean is not a number."""
        active = self._active
        if active is None:
            return default
        if context.__class__ is not dict:
            context = context_mapping(context)
        details = active.run(flag_key, context, default)
        if active.counting:  # telemetry on: counted inline (see EvaluationCounts)
            counter = details.counter
            if counter is not None:
                next(counter)
            else:
                self._count_other(flag_key, details)
        value = details.value
        return value if _is_number(value) else default

    def _count_other(self, flag_key: Any, details: Details) -> None:
        """Telemetry counts an evaluation whose Details carry no counter (an error)."""
        if self.telemetry is not None:
            self.telemetry.counts.add(flag_key, details)

    def json_value(self, flag_key: str, context: ContextLike = None, default: Any = None) -> Any:
        return self.evaluate(flag_key, context, default).value

    def bool_details(
        self, flag_key: str, context: ContextLike = None, default: bool = False
    ) -> Details:
        """``evaluate`` with TYPE_MISMATCH (and the default) unless the value is a bool."""
        return _typed(self.evaluate(flag_key, context, default), default, "a boolean", _is_bool)

    def string_details(
        self, flag_key: str, context: ContextLike = None, default: str = ""
    ) -> Details:
        return _typed(self.evaluate(flag_key, context, default), default, "a string", _is_string)

    def number_details(
        self, flag_key: str, context: ContextLike = None, default: float = 0
    ) -> Details:
        """Numbers are int or float; a bool is not a number."""
        return _typed(self.evaluate(flag_key, context, default), default, "a number", _is_number)

    def json_details(
        self, flag_key: str, context: ContextLike = None, default: Any = None
    ) -> Details:
        return self.evaluate(flag_key, context, default)

    def all_flags(self, context: ContextLike = None) -> dict[str, Details]:
        """Every flag of the snapshot in use evaluated for ``context``, by key (sorted);
        empty before the first snapshot."""
        active = self._active
        if active is None:
            return {}
        if context.__class__ is not dict:
            context = context_mapping(context)
        results = {}
        for key in sorted(active.snapshot.flags):
            details = active.run_uncounted(key, context, None)
            results[key] = _served(details, active.cached)
        return results

    def variation_labels(
        self, context: ContextLike = None, *, flags: Sequence[str]
    ) -> list[dict[str, str]]:
        """Labels for a service's own request metrics: one ``{"feature_flag_key": …,
        "feature_flag_variant": …}`` per flag in ``flags`` as evaluated for ``context``
        (not counted as evaluations); see docs/readme/telemetry.md."""
        if context.__class__ is not dict:
            context = context_mapping(context)
        return variation_labels(self.snapshot, context, list(flags))

    @property
    def source_stats(self) -> SourceStats:
        """Counts of fetches, failures, unchanged answers, rejections and accepted
        snapshots since the client started (a copy)."""
        return self._source_stats.copy()

    def _not_ready(self, default: Any) -> Details:
        return Details(
            value=default,
            variation=None,
            reason=ERROR,
            error_code=PROVIDER_NOT_READY,
            error_message=self.last_error or "no snapshot has been loaded yet",
        )

    # ------------------------------------------------------------------ state

    @property
    def status(self) -> Status:
        if self._stuck_poller() is not None:
            return Status.ERROR
        active = self._active
        if active is None:
            return Status.ERROR if self._attempted and self.last_error else Status.NOT_READY
        if self._rejected_digest is not None:
            return Status.ERROR
        expires_at = active.snapshot.expires_at
        if expires_at is not None and self._now() >= expires_at:
            return Status.STALE
        return Status.READY

    @property
    def last_error(self) -> str | None:
        """Why the source could not be read, or what was wrong with what it holds; None
        once a fetch succeeds again. Also says so when the poller has stopped finishing
        polls (a watchdog: see ``status``).
        Then, if the emergency overrides object could not be read or was refused, why
        (the last good overrides stay applied)."""
        error = self._stuck_poller() or self._last_error
        if error is None and self._overrides is not None:
            return self._overrides.last_error
        return error

    def _stuck_poller(self) -> str | None:
        """Why the polling thread looks stuck, or None.

        Every fetch ends by its deadline, so a poller that has not finished a poll for
        twice its interval (or its current back-off) plus the timeout is stuck in
        something else (a callback that never returns, a bug); ``status`` then reports
        ERROR, so a stale kill switch is visible instead of a quiet READY.
        """
        thread = self._thread
        if thread is None or self._closed.is_set():
            return None
        interval = self._poll_interval or DEFAULT_POLL_INTERVAL
        allowed = 2 * max(interval, self._poll_delay) + self._timeout
        silent = time.monotonic() - self._poll_finished_at
        if silent <= allowed and thread.is_alive():
            return None
        state = "has died" if not thread.is_alive() else "is stuck"
        return (
            f"the poller {state}: no poll finished for {silent:.1f}s "
            f"(expected one every {allowed:.1f}s at most); flags may be out of date"
        )

    @property
    def overrides_version(self) -> int | None:
        """The version of the emergency overrides applied, None when none was accepted."""
        return self._overrides.version if self._overrides is not None else None

    @property
    def version(self) -> int | None:
        """The version of the snapshot in use, None before the first."""
        active = self._active
        return active.snapshot.version if active is not None else None

    @property
    def snapshot(self) -> Snapshot | None:
        """The snapshot in use (immutable), None before the first."""
        active = self._active
        return active.snapshot if active is not None else None

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a snapshot is being served (fetched or from ``cache_dir``), at most
        ``timeout`` seconds; True if one is."""
        return self._ready.wait(timeout)

    def on_change(self, callback: ChangeListener) -> Callable[[], None]:
        """Call ``callback(changed_flag_keys)`` after each swap that changes flags (on the
        polling thread: keep it short). Returns a function that unsubscribes it."""
        with self._listeners_lock:
            self._change_listeners.append(callback)
        return lambda: self._unsubscribe(self._change_listeners, callback)

    def on_status_change(self, callback: StatusListener) -> Callable[[], None]:
        """Call ``callback(status, message)`` when ``status`` changes (noticed after each
        poll). Returns a function that unsubscribes it."""
        with self._listeners_lock:
            self._status_listeners.append(callback)
        return lambda: self._unsubscribe(self._status_listeners, callback)

    def _unsubscribe(self, listeners: list[Any], callback: Any) -> None:
        with self._listeners_lock:
            if callback in listeners:
                listeners.remove(callback)

    def close(self) -> None:
        """Stop polling (waits for the poller to finish its current fetch, which the
        timeout bounds). Evaluations keep answering from the last snapshot."""
        self._closed.set()
        if self.telemetry is not None:
            self.telemetry.close()
        if self._overrides is not None:
            self._overrides.close(self._timeout + 5.0)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._timeout + 5.0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Client({self._source.describe()!r}, environment={self.environment!r}, "
            f"status={self.status.value}, version={self.version})"
        )

    # ------------------------------------------------------------------ polling

    def refresh(self) -> bool:
        """Fetch now, on this thread; True if the snapshot in use is current (a new one
        was accepted or the source has not changed)."""
        if self._overrides is not None and self._thread is None:
            self._overrides.poll()  # no background pollers: refresh() reads both
        # Bounded like a fetch: a poll stuck elsewhere must not hold the caller forever.
        if not self._update_lock.acquire(timeout=self._timeout):
            return False
        try:
            return self._attempt()
        finally:
            self._update_lock.release()
            self._report_status()

    def _poll_forever(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                current = self.refresh()
            except Exception:  # a bug must not kill the poller; the last snapshot stays
                logger.exception("unexpected error while polling")
                current = False
            failures = 0 if current else failures + 1
            delay = self._next_delay(failures)
            self._poll_delay = delay
            self._poll_finished_at = time.monotonic()
            if self._closed.wait(delay):
                return

    def _next_delay(self, failures: int) -> float:
        interval = self._poll_interval or DEFAULT_POLL_INTERVAL
        if failures == 0:
            return interval * self._random.uniform(1 - _JITTER, 1 + _JITTER)
        backoff: float = min(self._max_backoff, interval * 2.0 ** min(failures - 1, 30))
        # Jitter downwards only, so back-off never exceeds max_backoff.
        return backoff * self._random.uniform(1 - 2 * _JITTER, 1.0)

    def _attempt(self) -> bool:
        self._attempted = True
        self._source_stats.fetches += 1
        where = self._source.describe()
        try:
            fetched = self._fetcher.fetch(self._seen_etag)
        except EnvelopeError as error:  # refused unread (over the size cap)
            import hashlib

            self._seen_etag = None
            self._reject(str(error), hashlib.sha256(error.message.encode()).digest())
            return False
        except StoreError as error:
            self._fetch_failed(str(error))
            return False
        except Exception as error:  # a custom Source failing in its own way
            self._fetch_failed(f"{type(error).__name__}: {error}")
            return False
        if self._failing:
            self._failing = False
            logger.info("%s is reachable again", where)
            if self._rejected_digest is None:
                self._last_error = None
        if fetched.data is None:
            self._source_stats.not_modified += 1
            return self._rejected_digest is None and self._active is not None
        return self._consider(fetched)

    def _consider(self, fetched: Fetched) -> bool:
        import hashlib  # on first use: its OpenSSL binding is a third of import time

        assert fetched.data is not None
        data = fetched.data
        self._seen_etag = fetched.etag
        active = self._active
        body_digest = hashlib.sha256(data).digest()
        if active is not None and body_digest == active.envelope_sha256:
            # The bytes in use: nothing to verify or compile.
            self._source_stats.not_modified += 1
            self._rejected_digest = None
            self._last_error = None
            if active.cached:
                with self._swap_lock:
                    self._active = self._activate(active.snapshot, body_digest, cached=False)
            return True
        if body_digest == self._rejected_digest:
            return False  # already rejected and logged
        try:
            with cyclic_gc_paused():
                snapshot, signers = self._open(data, active)
        except (EnvelopeError, SnapshotFormatError) as error:
            self._reject(str(error), body_digest)
            _after_load(data)
            return False
        except Exception as error:  # a bug must reject the snapshot, not reach the caller
            logger.exception("unexpected error while loading a snapshot")
            self._reject(f"{type(error).__name__}: {error}", body_digest)
            _after_load(data)
            return False
        self._install(snapshot, data, cached=False, envelope_sha256=body_digest, signers=signers)
        self._source_stats.accepted += 1
        _after_load(data)
        return True

    def _open(self, data: bytes, active: _Active | None) -> tuple[Snapshot, frozenset[str]]:
        """Verify, check and precompile an envelope (and say which keys signed it);
        raises EnvelopeError or SnapshotFormatError saying why it is refused."""
        signed, signers = verify_envelope_signers(data, self._trusted, self._threshold)
        payload = read_payload(signed)
        check_snapshot(
            payload,
            project=self._project,
            environment=self.environment,
            now=self._now(),
            signed_payload=signed,
        )
        version: int = payload["version"]
        if version < self._highest_version:
            reset = " (if storage was reset on purpose, clear cache_dir)" if self._cache else ""
            raise EnvelopeError(
                f"snapshot version {version} is older than version {self._highest_version}, "
                f"already accepted: a replayed or rolled-back snapshot{reset}"
            )
        if (
            active is not None
            and version == active.snapshot.version
            and payload.get("digest") != active.snapshot.digest
        ):
            raise EnvelopeError(
                f"snapshot version {version} was already accepted with different content"
            )
        # The payload was read just above and nothing else holds it: no private copy.
        # Its flags are kept as spans of the signed text (read_payload) and compiled on
        # first use. A snapshot that would replace one in use is checked whole first:
        # one that would make a flag that works now fail is refused and the one in use
        # stays (a flag failing in both, or new and failing, answers PARSE_ERROR as
        # before). With nothing in use there is nothing better to serve, and each flag
        # is checked on its first evaluation (docs/design.md §7).
        snapshot = Snapshot.from_payload(payload, owned=True, packed=True)
        del payload
        if active is not None:
            snapshot.check_every_flag(failing_already=active.snapshot.fails)
        return snapshot, signers

    def _install(
        self,
        snapshot: Snapshot,
        envelope: bytes,
        *,
        cached: bool,
        envelope_sha256: bytes | None = None,
        signers: frozenset[str] = frozenset(),
    ) -> None:
        if envelope_sha256 is None:
            import hashlib

            envelope_sha256 = hashlib.sha256(envelope).digest()
        old = self._active
        self._highest_version = max(self._highest_version, snapshot.version)
        if self._cache is not None and not cached:
            self._save_cache(self._cache, envelope, snapshot, signers)
        changed: frozenset[str] = frozenset()
        if old is not None and old.snapshot.digest != snapshot.digest:
            with cyclic_gc_paused():
                changed = changed_flags(
                    old.snapshot.flags, old.snapshot.segments, snapshot.flags, snapshot.segments
                )
        elif old is None:
            changed = frozenset(snapshot.flags)
        with self._swap_lock:
            self._active = self._activate(snapshot, envelope_sha256, cached=cached)
        if not cached:
            self._rejected_digest = None
            self._last_error = None
        self._ready.set()
        logger.info(
            "serving %s/%s version %d%s (%d flags, %d changed)",
            snapshot.project,
            snapshot.environment,
            snapshot.version,
            " from the cache" if cached else "",
            len(snapshot.flags),
            len(changed),
        )
        if old is not None and changed:
            with self._listeners_lock:
                change_listeners = list(self._change_listeners)
            for listener in change_listeners:
                try:
                    listener(changed)
                except Exception:
                    logger.exception("an on_change callback failed")

    def _activate(self, snapshot: Snapshot, envelope_sha256: bytes, *, cached: bool) -> _Active:
        # With emergency overrides in force, evaluations run on the snapshot with those
        # flags disabled; ``snapshot`` stays the verified one (versions, changes, cache).
        evaluated, applied = snapshot, None
        if self._overrides is not None:
            applied = self._overrides.applied_to(snapshot)
            evaluated = applied.snapshot
        clock = self._clock

        def bound(target: Snapshot) -> Callable[[str, Any, Any], Details]:
            if clock is None:
                # The bound method itself: no wrapper call on the hot path; the engine
                # reads the time only for flags whose answer depends on it.
                return target.evaluate

            def run_at_clock(flag_key: str, context: Any, default: Any) -> Details:
                return target.evaluate(flag_key, context, default, at=clock())

            return run_at_clock

        run = bound(evaluated)
        if applied is not None and applied.killed:
            from flagstone.overrides import overridden_runner

            run = overridden_runner(run, applied, bound(snapshot))
        uncounted, telemetry = run, self.telemetry
        if telemetry is not None:
            run = telemetry.wrap(run, snapshot)
        active = _Active(snapshot, envelope_sha256, cached, run, uncounted, telemetry is not None)
        if telemetry is not None:
            # Each flag then compiles with its outcomes' counters in their Details.
            evaluated.count_outcomes(telemetry.counts.serving(snapshot.version, active))
        return active

    def _overrides_changed(self, flags: frozenset[str]) -> None:
        """The emergency overrides in force changed (the override poller's thread):
        swap in the snapshot in use with them applied, then tell the listeners."""
        with self._swap_lock:
            active = self._active
            if active is None:
                return
            self._active = self._activate(
                active.snapshot, active.envelope_sha256, cached=active.cached
            )
        changed = frozenset(flags & set(active.snapshot.flags))
        logger.info("emergency overrides changed for %s", ", ".join(sorted(changed)) or "no flag")
        if not changed:
            return
        with self._listeners_lock:
            change_listeners = list(self._change_listeners)
        for listener in change_listeners:
            try:
                listener(changed)
            except Exception:
                logger.exception("an on_change callback failed")

    def _reject(self, reason: str, body_digest: bytes) -> None:
        self._source_stats.rejections += 1
        self._rejected_digest = body_digest
        self._last_error = f"rejected snapshot from {self._source.describe()}: {reason}"
        serving = (
            f"still serving version {self._active.snapshot.version}"
            if self._active is not None
            else "no snapshot to serve"
        )
        logger.warning("%s; %s", self.last_error, serving)

    def _fetch_failed(self, reason: str) -> None:
        self._source_stats.fetch_failures += 1
        repeated = self._failing and self.last_error == reason
        self._failing = True
        if self._rejected_digest is None:
            self._last_error = reason
        if repeated:
            logger.debug("still failing: %s", reason)
            return
        serving = (
            f"serving version {self._active.snapshot.version} until it is back"
            if self._active is not None
            else "no snapshot to serve yet"
        )
        logger.warning("cannot fetch the snapshot: %s; %s", reason, serving)

    def _report_status(self) -> None:
        status = self.status
        if status == self._reported_status:
            return
        self._reported_status = status
        message = self.last_error if status == Status.ERROR else None
        with self._listeners_lock:
            status_listeners = list(self._status_listeners)
        for listener in status_listeners:
            try:
                listener(status, message)
            except Exception:
                logger.exception("an on_status_change callback failed")

    def _load_cache(self) -> None:
        """Start from ``cache_dir``: the version floor, and the cached envelope if it
        still verifies and is not below the floor. Never raises: anything unusable is
        logged once and ignored."""
        assert self._cache is not None
        try:
            self._load_cache_unguarded(self._cache)
        except Exception as error:  # a bug or an odd file system must not stop the start
            logger.warning("ignoring the cache in %s: %s", self._cache.directory, error)

    def _load_cache_unguarded(self, cache: SnapshotCache) -> None:
        state = cache.load(max_bytes=self._max_bytes)
        for problem in state.problems:
            logger.warning("ignoring the cache: %s", problem)
        if state.project not in (None, self._project):
            logger.warning(
                "ignoring the cache in %s: it is for project %r, not %r",
                cache.directory,
                state.project,
                self._project,
            )
            return
        floor = self._trusted_floor(state.floor)
        self._highest_version = floor.version
        if state.envelope is None:
            return
        try:
            with cyclic_gc_paused():
                signed, signers = verify_envelope_signers(
                    state.envelope, self._trusted, self._threshold
                )
                payload = read_payload(signed)
                # Expiry is not a reason to refuse our own last known good snapshot when
                # storage is down: it is served and the status says STALE. Every other
                # check applies.
                check_snapshot(
                    payload,
                    project=self._project,
                    environment=self.environment,
                    now=float("-inf"),
                    signed_payload=signed,
                )
                version: int = payload["version"]
                if version < floor.version:
                    raise EnvelopeError(
                        f"its version {version} is below version {floor.version}, already "
                        "accepted: a rolled-back cache"
                    )
                # Nothing is in use yet: its flags are checked on first use (see _open).
                snapshot = Snapshot.from_payload(payload, owned=True, packed=True)
                del payload
        except (EnvelopeError, SnapshotFormatError) as error:
            logger.warning("ignoring the cached snapshot %s: %s", cache.envelope_path, error)
            return
        if not state.state_found or floor != state.floor:
            # A lost (or no longer trusted) state file is written again from what verified.
            self._save_cache(cache, None, snapshot, signers)
        self._install(snapshot, state.envelope, cached=True)
        _after_load(state.envelope)

    def _save_cache(
        self,
        cache: SnapshotCache,
        envelope: bytes | None,
        snapshot: Snapshot,
        signers: frozenset[str],
    ) -> None:
        """Record ``snapshot`` (and ``envelope``, unless None: the state file only) in the
        disk cache; a cache that cannot be written is a warning, never an error."""
        try:
            cache.save(
                envelope,
                snapshot.version,
                snapshot.project,
                signers,
                floor_counts=self._floor_counts,
            )
        except (OSError, FlagstoneError) as error:
            logger.warning("cannot write the snapshot cache in %s: %s", cache.directory, error)

    def _floor_counts(self, floor: VersionFloor) -> bool:
        """Whether ``threshold`` of the keys that vouched for ``floor`` are still trusted
        (a floor recorded without key ids, by an older cache, always counts)."""
        if not floor.keyids or floor.version == 0:
            return True
        trusted = {key.keyid for key in self._trusted}
        return len(floor.keyids & trusted) >= self._threshold

    def _trusted_floor(self, floor: VersionFloor) -> VersionFloor:
        """``floor`` if enough of the keys that vouched for it are still trusted, else
        none: after a key is removed from ``trusted_keys`` (it signed a huge version, for
        example), the floor it set stops pinning (TUF's fast-forward recovery)."""
        if self._floor_counts(floor):
            return floor
        logger.warning(
            "the cached version floor %d was vouched for by keys that are no longer trusted "
            "(%s); it no longer pins the version (key rotation)",
            floor.version,
            ", ".join(sorted(keyid[:12] + "…" for keyid in floor.keyids)),
        )
        from flagstone.sdk.cache import VersionFloor

        return VersionFloor()


def _event(is_set: bool) -> threading.Event:
    event = threading.Event()
    if is_set:
        event.set()
    return event


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _typed(
    details: Details, default: Any, expected: str, accepts: Callable[[Any], bool]
) -> Details:
    if details.error_code is not None or accepts(details.value):
        return details
    return Details(
        value=default,
        variation=None,
        reason=ERROR,
        error_code=TYPE_MISMATCH,
        error_message=f"the value {details.value!r} is not {expected}",
        version=details.version,
    )


def _is_bool(value: Any) -> bool:
    return value.__class__ is bool


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and value.__class__ is not bool
