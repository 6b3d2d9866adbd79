"""Evaluation telemetry: counters, exposure events and variation labels (stdlib only).

::

    from flagstone.sdk import Client
    from flagstone.sdk.telemetry import Telemetry

    client = Client(..., project="acme-shop", telemetry=True)      # or telemetry=Telemetry(…)
    client.telemetry.evaluation_counts()   # {(flag, variation, reason): count}

**Counters.** With telemetry on, every evaluation through ``evaluate``, the typed
getters and the OpenFeature provider (which calls ``evaluate``: counted once) adds one
to its ``(flag, variation, reason)`` count, the engine's reason (``SPLIT``,
``TARGETING_MATCH``, … also while the snapshot is served from the cache); ``variation``
is None for errors. ``all_flags`` and ``variation_labels`` are not counted (they serve
bootstrapping and labelling, not a decision). The hot path takes no lock, calls no
Python function, looks nothing up and shares nothing it writes: the engine gives each
outcome's Details its counter, and the client's getters advance it inline, one C call
that the GIL keeps whole (:class:`EvaluationCounts`); collection reads them all. Counts
are kept per snapshot version (the OpenTelemetry counters carry
``feature_flag.version``); a version no longer served is reported until its counts are
final and then retired into the totals. Threads that end lose nothing; a forked child
starts from zero (the parent still reports what it counted). Keys that callers can make
up (unknown flag keys) are capped (``MAX_KEYS`` per version): further new keys count
under ``OVERFLOW_FLAG``.

With telemetry off (the default) the getters only test one flag of the snapshot in use
(cost of both: ``benchmarks/sdk_bench.py``, "telemetry on − off").

**Exposure events** (:class:`ExposureTracker`): the first time a context, by its
bucketing value, is served a variation of a flag within ``window`` seconds, an
:class:`ExposureEvent` goes to a sink (a callback, :class:`JsonLinesSink`, or
``flagstone.sdk.telemetry_otel.ExposureLogSink``) on a worker thread, through a bounded
queue; when the queue is full the event is dropped and counted, so evaluation never
waits. Deduplication keeps at most ``max_entries`` (flag, variation, bucketing value)
entries, the oldest first seen evicted first; see docs/readme/telemetry.md for the
measured memory cap.

**Variation labels** for a service's own metrics: :data:`FLAG_LABEL` and
:data:`VARIANT_LABEL` (``feature_flag_key``, ``feature_flag_variant``), one labelled
observation per (request, flag); see :func:`variation_labels` and docs/readme/telemetry.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import os
import queue
import random
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from operator import length_hint
from typing import Any

from flagstone.engine import Details, InvalidContext, Snapshot, parse_timestamp
from flagstone.errors import UsageError
from flagstone.lazylogging import lazy_logger
from flagstone.records import Record, set_field
from flagstone.rollout import bucket_by, serves

logger = lazy_logger("flagstone.sdk.telemetry")

CountKey = tuple[str, str | None, str]
# What _Active.run is: (flag_key, context, default) -> Details.
Runner = Callable[[str, Any, Any], Details]
EvaluationListener = Callable[[str, Any, Details, Snapshot], None]

MAX_KEYS = 10_000
OVERFLOW_FLAG = "(other)"
# How long a version no longer served is still reported per version once its counts are
# final (seconds: several collections of any usual reader), and how many such versions
# are kept at most (see EvaluationCounts).
DEFAULT_RETENTION = 600.0
MAX_VERSIONS = 10

# Labels a service puts on its own request metrics (one observation per request and flag):
# the Prometheus-safe forms of OpenTelemetry's feature_flag.key / feature_flag.result.variant.
FLAG_LABEL = "feature_flag_key"
VARIANT_LABEL = "feature_flag_variant"
NO_VARIANT = ""  # the variant label of an evaluation that failed (the default was served)


# --------------------------------------------------------------------------- counters


class _VersionCounts:
    """The counters of the evaluations made on one snapshot version (see EvaluationCounts)."""

    __slots__ = ("added", "bases", "counters", "final_at", "served", "users")

    def __init__(self) -> None:
        self.counters: dict[CountKey, Iterator[None]] = {}
        self.added = 0  # keys added for evaluations the engine gave no counter (capped)
        # Counts made before a fork (the parent's), not reported by the child.
        self.bases: dict[CountKey, int] = {}
        # The client's active-snapshot records serving this version: while one is alive,
        # an evaluation may still count into this version.
        self.users: list[weakref.ref[Any]] = []
        self.served = False  # a client served it (else it is never known to be final)
        self.final_at: float | None = None  # when a collection found nothing able to count

    def in_use(self) -> bool:
        self.users = [user for user in self.users if user() is not None]
        return bool(self.users)

    def totals(self) -> Iterator[tuple[CountKey, int]]:
        start, bases = EvaluationCounts.START, self.bases
        for key, counter in list(self.counters.items()):
            count = start - length_hint(counter) - bases.get(key, 0)
            if count:
                yield key, count


class EvaluationCounts:
    """Counts per (flag, variation, reason), kept per snapshot version, lock-free on the
    evaluating thread.

    **Counting.** Each counter is an ``itertools.repeat(None, START)``: ``next()`` on it is
    one C call that the GIL keeps whole and that allocates nothing (it lowers the number
    of repetitions left, which ``operator.length_hint`` reads), so concurrent evaluations
    never lose a count and never wait. The engine hands each outcome's counter to the
    client with the outcome: the client gives ``Snapshot.count_outcomes`` the function
    :meth:`serving` returns, so each flag compiled gets, in the
    Details of each of its outcomes, the counter of (flag, variation, reason) in the
    snapshot's version, and the getters count with ``next(details.counter)``: one
    attribute read, no lookup. Details without a counter (errors, flags compiled before,
    emergency overrides) are counted by :meth:`add`: a dict lookup, without a lock once
    the key exists (it is added once, under the lock).

    **Keys.** The snapshot's own outcomes (flags × variations × reasons it can serve) get
    counters as their flags compile; keys that callers can make up (unknown flag keys:
    FLAG_NOT_FOUND) are capped at ``max_keys`` per version, further ones counted under
    ``OVERFLOW_FLAG``. Only keys counted at least once are reported.

    **Versions.** Counts are kept per snapshot version, so that the OpenTelemetry counters
    can carry ``feature_flag.version`` (:meth:`collect_by_version`); :meth:`collect` sums
    them (Prometheus, ``evaluation_counts``). A version the client no longer serves is
    *final* once no evaluation can still count into it (no active-snapshot record of it
    is alive: in practice, as soon as the evaluations in flight during the swap return);
    the first collection after that reports its final counts, and the first collection
    (or swap) at least ``retention`` seconds later *retires* it: its counts are folded
    into the all-versions totals and its counters dropped, so it is no longer reported
    per version. Beyond ``max_versions`` versions kept besides the current one, the
    oldest final ones retire at once. Memory so is bounded by ``max_versions + 1``
    versions' keys, whatever the rate of publishing. (A version counted only through
    :meth:`record`, that no client serves, is kept: nothing tells when it is final.)
    """

    # Repetitions a counter starts with: never reached (2**63 - 1 evaluations).
    START = sys.maxsize

    def __init__(
        self,
        *,
        max_keys: int = MAX_KEYS,
        retention: float = DEFAULT_RETENTION,
        max_versions: int = MAX_VERSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retention < 0 or max_versions < 1:
            raise UsageError("retention must be at least 0 and max_versions at least 1")
        self.max_keys = max_keys
        self.retention = retention
        self.max_versions = max_versions
        self._clock = clock
        self._lock = threading.Lock()  # adding a key, swapping, collecting: never per evaluation
        self._versions: dict[int, _VersionCounts] = {}  # not retired, oldest first
        self._current: int | None = None
        self._retired: dict[CountKey, int] = {}  # totals of the retired versions
        reset = weakref.WeakMethod(self._reset_after_fork)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(reset))

    def serving(self, version: int, user: Any) -> Callable[[str, str, str], Iterator[None]]:
        """The client serves ``version`` from now on, through ``user`` (its record of the
        active snapshot, which must accept weak references: while it lives, evaluations
        may count into this version). Returns the function to hand to
        ``Snapshot.count_outcomes``."""
        with self._lock:
            counts = self._version(version)
            counts.users.append(weakref.ref(user))
            counts.served = True
            counts.final_at = None
            self._current = version
            self._retire(self._clock())

        def counter(flag_key: str, variation: str, reason: str) -> Iterator[None]:
            return self._counter(counts, (flag_key, variation, reason))

        return counter

    def _version(self, version: int) -> _VersionCounts:
        counts = self._versions.get(version)
        if counts is None:
            counts = self._versions[version] = _VersionCounts()
        return counts

    def _counter(self, counts: _VersionCounts, key: CountKey) -> Iterator[None]:
        with self._lock:
            counter = counts.counters.get(key)
            if counter is None:
                counter = counts.counters[key] = itertools.repeat(None, self.START)
            return counter

    def record(self, flag_key: str, details: Details) -> None:
        """Count one evaluation (what the client's getters do inline)."""
        counter = details.counter
        if counter is not None:
            next(counter)
        else:
            self.add(flag_key, details)

    def add(self, flag_key: Any, details: Details) -> None:
        """Count an evaluation whose Details carry no counter (an error, a flag compiled
        before counting began), in the version the Details say, adding its key if new."""
        variation, reason = details.variation, details.reason
        if flag_key.__class__ is not str:  # only plain strings are hashed safely here
            flag_key = OVERFLOW_FLAG
        # A key counted before: no lock (dict reads are whole under the GIL; the version
        # cannot retire meanwhile, as the evaluating client still holds its record).
        counts = self._versions.get(details.version)
        if counts is not None:
            counter = counts.counters.get((flag_key, variation, reason))
            if counter is not None:
                next(counter)
                return
        with self._lock:
            counts = self._version(details.version)
            counter = counts.counters.get((flag_key, variation, reason))
            if counter is None and counts.added >= self.max_keys:
                flag_key = OVERFLOW_FLAG
                counter = counts.counters.get((flag_key, variation, reason))
            if counter is None:
                counter = itertools.repeat(None, self.START)
                counts.counters[(flag_key, variation, reason)] = counter
                counts.added += 1
        next(counter)

    def collect(self) -> dict[CountKey, int]:
        """Totals since the client started (or since the fork that made this process),
        over every version served."""
        with self._lock:
            self._retire(self._clock())
            totals = dict(self._retired)
            for counts in self._versions.values():
                for key, count in counts.totals():
                    totals[key] = totals.get(key, 0) + count
        return totals

    def collect_by_version(self) -> dict[tuple[str, str | None, str, int], int]:
        """Counts per (flag, variation, reason, version) of the versions not yet retired
        (see the class doc): what the OpenTelemetry counters report."""
        with self._lock:
            self._retire(self._clock())
            return {
                (*key, version): count
                for version, counts in self._versions.items()
                for key, count in counts.totals()
            }

    def versions(self) -> list[int]:
        """The versions not yet retired, oldest first."""
        with self._lock:
            return list(self._versions)

    def _retire(self, now: float) -> None:
        """Mark final the versions nothing can count into any more; retire those final
        for ``retention`` seconds, and the oldest final ones beyond ``max_versions``."""
        kept = []
        for version, counts in list(self._versions.items()):
            if version == self._current or not counts.served:
                # A version counted by record() alone, that no client serves: nothing
                # tells when its counts are final, so it is kept.
                continue
            if counts.final_at is None:
                if not counts.in_use():
                    counts.final_at = now  # this collection reports its final counts
                continue
            if now - counts.final_at >= self.retention:
                self._fold(version)
            else:
                kept.append(version)
        excess = len(kept) - self.max_versions
        for version in kept[: max(0, excess)]:
            self._fold(version)

    def _fold(self, version: int) -> None:
        counts = self._versions.pop(version)
        retired = self._retired
        for key, count in counts.totals():
            retired[key] = retired.get(key, 0) + count

    def _reset_after_fork(self) -> None:
        # Only the forking thread exists in the child; the counts so far are the parent's
        # (which still reports them). The child's snapshots hold the same counters: what
        # they hold now is the child's zero.
        self._lock = threading.Lock()
        self._retired = {}
        start = self.START
        for counts in self._versions.values():
            counts.bases = {
                key: start - length_hint(counter) for key, counter in counts.counters.items()
            }


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


# --------------------------------------------------------------------------- source stats


class SourceStats:
    """What the client's poller did, for the fetch and rejection counters. Updated by the
    polling thread only (one poll at a time); read with ``Client.source_stats``."""

    fetches: int  # attempts to read the source
    fetch_failures: int  # the source could not be read
    not_modified: int  # the source held what was already in use
    rejections: int  # an envelope was refused (signature, replay, expiry, …)
    accepted: int  # a new snapshot was installed

    _fields = __slots__ = ("fetches", "fetch_failures", "not_modified", "rejections", "accepted")

    def __init__(
        self,
        fetches: int = 0,
        fetch_failures: int = 0,
        not_modified: int = 0,
        rejections: int = 0,
        accepted: int = 0,
    ) -> None:
        self.fetches = fetches
        self.fetch_failures = fetch_failures
        self.not_modified = not_modified
        self.rejections = rejections
        self.accepted = accepted

    def _values(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:  # unhashable, as it changes
        if other.__class__ is not SourceStats:
            return NotImplemented
        assert isinstance(other, SourceStats)
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"SourceStats({shown})"

    def copy(self) -> SourceStats:
        return SourceStats(
            self.fetches, self.fetch_failures, self.not_modified, self.rejections, self.accepted
        )


# --------------------------------------------------------------------------- exposures


class ExposureEvent(Record):
    """A context first served ``variation`` of ``flag`` (within the dedup window)."""

    flag: str
    variation: str
    bucketing_value: str
    bucket_by: str
    environment: str
    snapshot_version: int
    time: float  # epoch seconds

    _fields = __slots__ = (
        "flag",
        "variation",
        "bucketing_value",
        "bucket_by",
        "environment",
        "snapshot_version",
        "time",
    )

    def __init__(
        self,
        flag: str,
        variation: str,
        bucketing_value: str,
        bucket_by: str,
        environment: str,
        snapshot_version: int,
        time: float,
    ) -> None:
        set_field(self, "flag", flag)
        set_field(self, "variation", variation)
        set_field(self, "bucketing_value", bucketing_value)
        set_field(self, "bucket_by", bucket_by)
        set_field(self, "environment", environment)
        set_field(self, "snapshot_version", snapshot_version)
        set_field(self, "time", time)

    def as_json(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in self._fields}
        record["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.time)) + (
            f".{int(self.time % 1 * 1000):03d}Z"
        )
        return record


ExposureSink = Callable[[ExposureEvent], None]

DEFAULT_WINDOW = 86400.0
DEFAULT_MAX_ENTRIES = 50_000
DEFAULT_QUEUE_SIZE = 10_000
# Longer bucketing values are not tracked (no exposure event): the dedup cache's memory
# cap holds per entry, whatever the callers put in their contexts.
MAX_BUCKETING_VALUE_LENGTH = 256
_STOP = object()


class ExposureTracker:
    """Deduplicates exposures and hands them to ``sink`` on a worker thread.

    ``window``: seconds during which the same (flag, variation, bucketing value) is not
    reported again. ``max_entries``: the dedup memory cap (oldest first seen evicted
    first: in a window they are the ones closest to expiring anyway). ``sample_rate``:
    the share of bucketing values reported (decided by a hash, so a context is in or out
    for every flag evaluation, in every process). ``queue_size``: events waiting for the
    sink; beyond it they are dropped and counted in ``dropped``. ``clock``: epoch seconds
    for the events' ``time`` and the window, read on the evaluating thread as the
    evaluation returns (never at delivery); default the owning client's ``clock`` (the
    time its evaluations are made at), else ``time.time``.
    """

    def __init__(
        self,
        sink: ExposureSink,
        *,
        window: float = DEFAULT_WINDOW,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        sample_rate: float = 1.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if window <= 0:
            raise UsageError(f"the exposure window must be positive, not {window!r}")
        if max_entries < 1 or queue_size < 1:
            raise UsageError("max_entries and queue_size must be at least 1")
        if not 0.0 <= sample_rate <= 1.0:
            raise UsageError(f"sample_rate must be within [0, 1], not {sample_rate!r}")
        self.sink = sink
        self.window = window
        self.max_entries = max_entries
        self.sample_rate = sample_rate
        self._sample_below = int(sample_rate * 2**32)
        # An event's time is read on the evaluating thread, as the evaluation returns: by
        # default the clock of the client that evaluates (see use_clock).
        self._clock: Callable[[], float] = clock or time.time
        self._clock_given = clock is not None
        self._seen: dict[tuple[str, str, str], float] = {}
        self._seen_lock = threading.Lock()  # only when an entry is added
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._counter_lock = threading.Lock()
        self.emitted = 0  # handed to the sink
        self.dropped = 0  # lost because the queue was full
        self.sink_errors = 0  # the sink raised
        self._worker: threading.Thread | None = None
        self._closed = False
        self._start_worker()
        restart = weakref.WeakMethod(self._restart_after_fork)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(restart))

    def _start_worker(self) -> None:
        self._worker = threading.Thread(
            target=self._deliver_forever, name="flagstone-exposures", daemon=True
        )
        self._worker.start()

    def _restart_after_fork(self) -> None:
        self._seen_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        if not self._closed:
            self._start_worker()

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read the time with ``clock`` (the owning client's, which its evaluations are
        made at), unless the tracker was given its own."""
        if not self._clock_given:
            self._clock = clock

    def observe(
        self, flag: str, variation: str, bucketing_value: str, bucket_by: str, snapshot: Snapshot
    ) -> None:
        """Called on the evaluating thread: a dict read in the common case."""
        key = (flag, variation, bucketing_value)
        now = self._clock()
        first_seen = self._seen.get(key)
        if first_seen is not None and now - first_seen < self.window:
            return
        with self._seen_lock:
            seen = self._seen
            first_seen = seen.get(key)
            if first_seen is not None and now - first_seen < self.window:
                return  # another thread reported it meanwhile
            if first_seen is not None:
                del seen[key]  # expired: re-inserted as the newest
            elif len(seen) >= self.max_entries:
                del seen[next(iter(seen))]
            seen[key] = now
        if self._sample_below < 2**32 and (
            zlib.crc32(f"{flag}\0{bucketing_value}".encode()) >= self._sample_below
        ):
            return
        event = ExposureEvent(
            flag, variation, bucketing_value, bucket_by, snapshot.environment, snapshot.version, now
        )
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._counter_lock:
                self.dropped += 1

    @property
    def tracked(self) -> int:
        """Entries in the dedup cache now (at most ``max_entries``)."""
        return len(self._seen)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _deliver_forever(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is _STOP:
                    return
                try:
                    self.sink(event)
                    with self._counter_lock:
                        self.emitted += 1
                except Exception:
                    with self._counter_lock:
                        self.sink_errors += 1
                    logger.exception("an exposure sink failed")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event went to the sink, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (at most ``timeout`` seconds), then stop the worker."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        close_sink = getattr(self.sink, "close", None)
        if callable(close_sink):
            close_sink()


class JsonLinesSink:
    """Appends each exposure as one JSON line to ``path``; past ``max_bytes`` the file
    becomes ``path.1`` (``path.1`` becomes ``path.2``, … up to ``backups``).

    Written by the tracker's worker thread only. The file is opened without following a
    symbolic link at ``path``."""

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int = 10_000_000, backups: int = 3
    ) -> None:
        if max_bytes < 1 or backups < 0:
            raise UsageError("max_bytes must be positive and backups at least 0")
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: Any = None
        self._size = 0

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(self.path, flags, 0o640)
        self._file = os.fdopen(descriptor, "a", encoding="utf-8")
        self._size = self._file.tell()

    def __call__(self, event: ExposureEvent) -> None:
        line = json.dumps(event.as_json(), ensure_ascii=False, sort_keys=True) + "\n"
        if self._file is None:
            self._open()
        size = len(line.encode("utf-8"))
        if self._size and self._size + size > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._file.flush()
        self._size += size

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        if self.backups == 0:
            os.unlink(self.path)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.lexists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def bucket_attribute(flag: Mapping[str, Any]) -> str:
    """The attribute ``flag`` buckets contexts by: that of its first split or progression
    (default, then rules), else ``key``."""
    for serve in serves(flag):
        for kind in ("progression", "split"):
            spec = serve.get(kind)
            if isinstance(spec, Mapping):
                return bucket_by(spec)
    return "key"


def _bucketing_text(value: Any) -> str | None:
    if isinstance(value, str):
        return str(value) if len(value) <= MAX_BUCKETING_VALUE_LENGTH else None
    if isinstance(value, int) and value.__class__ is not bool:
        text = str(value) if -(10**20) < value < 10**20 else None
        return text
    return None


# --------------------------------------------------------------------------- the bundle


class Telemetry:
    """What a client records: evaluation counts always; exposures when an
    :class:`ExposureTracker` is given; sampled per-evaluation callbacks (the
    OpenTelemetry ``feature_flag.evaluation`` events) when ``on_evaluation`` is given.

    One Telemetry belongs to one client (its counts are that client's).
    """

    def __init__(
        self,
        *,
        exposures: ExposureTracker | None = None,
        on_evaluation: EvaluationListener | None = None,
        evaluation_sample_rate: float = 0.01,
        version_retention: float = DEFAULT_RETENTION,
    ) -> None:
        if not 0.0 <= evaluation_sample_rate <= 1.0:
            raise UsageError(
                f"evaluation_sample_rate must be within [0, 1], not {evaluation_sample_rate!r}"
            )
        self.counts = EvaluationCounts(retention=version_retention)
        self.exposures = exposures
        self.on_evaluation = on_evaluation
        self.evaluation_sample_rate = evaluation_sample_rate
        self.environment: str | None = None
        self._bound = False

    def bind(self, environment: str, clock: Callable[[], float] | None = None) -> None:
        """Called by the client that owns it (``clock``: the client's, if it has one)."""
        if self._bound:
            raise UsageError("this Telemetry already belongs to another client")
        self._bound = True
        self.environment = environment
        if clock is not None and self.exposures is not None:
            self.exposures.use_clock(clock)

    def evaluation_counts(self) -> dict[CountKey, int]:
        """Totals per (flag, variation, reason) over every version served."""
        return self.counts.collect()

    def evaluation_counts_by_version(self) -> dict[tuple[str, str | None, str, int], int]:
        """Counts per (flag, variation, reason, snapshot version), for the versions not yet
        retired (see :class:`EvaluationCounts`)."""
        return self.counts.collect_by_version()

    def wrap(self, run: Runner, snapshot: Snapshot) -> Runner:
        """``run`` (the snapshot's evaluation) with this telemetry's exposures and sampled
        listener around it (``run`` itself when neither is on). Counting is not a wrapper:
        the client's getters count inline (see :class:`EvaluationCounts`)."""
        if self.exposures is not None:
            run = _with_exposures(run, snapshot, self.exposures)
        if self.on_evaluation is not None and self.evaluation_sample_rate > 0:
            run = _with_sampled_listener(
                run, snapshot, self.on_evaluation, self.evaluation_sample_rate
            )
        return run

    def close(self) -> None:
        if self.exposures is not None:
            self.exposures.close()


def _with_exposures(run: Runner, snapshot: Snapshot, tracker: ExposureTracker) -> Runner:
    bucket_by_flag: dict[str, str] = {}
    flags = snapshot.flags
    observe = tracker.observe
    # The common case — this context already reported within the window — is checked
    # here without calling into the tracker (its dict is never replaced, only changed).
    seen_get = tracker._seen.get
    clock = tracker._clock
    window = tracker.window

    def exposed(flag_key: str, context: Any, default: Any) -> Details:
        details = run(flag_key, context, default)
        variation = details.variation
        if variation is None or context is None:
            return details
        try:
            bucket_by = bucket_by_flag.get(flag_key)
            if bucket_by is None:
                spec = flags.get(flag_key)
                if spec is None:
                    return details
                bucket_by = bucket_by_flag[flag_key] = bucket_attribute(spec)
            value = context.get(bucket_by)
            if value.__class__ is not str or len(value) > MAX_BUCKETING_VALUE_LENGTH:
                value = _bucketing_text(value)
                if value is None:
                    return details
            first_seen = seen_get((flag_key, variation, value))
            if first_seen is None or clock() - first_seen >= window:
                observe(flag_key, variation, value, bucket_by, snapshot)
        except Exception:  # telemetry must never break an evaluation
            logger.exception("recording an exposure failed")
        return details

    return exposed


def _with_sampled_listener(
    run: Runner, snapshot: Snapshot, listener: EvaluationListener, rate: float
) -> Runner:
    chance = random.random

    def sampled(flag_key: str, context: Any, default: Any) -> Details:
        details = run(flag_key, context, default)
        if chance() < rate:
            try:
                listener(flag_key, context, details, snapshot)
            except Exception:  # telemetry must never break an evaluation
                logger.exception("an evaluation listener failed")
        return details

    return sampled


def telemetry_for(
    option: Telemetry | bool | None,
    environment: str,
    clock: Callable[[], float] | None = None,
) -> Telemetry | None:
    """The client's ``telemetry=`` option as a bound Telemetry (None: off)."""
    if option is None or option is False:
        return None
    telemetry = Telemetry() if option is True else option
    if not isinstance(telemetry, Telemetry):
        raise UsageError(f"telemetry is True, False or a Telemetry, not {option!r}")
    telemetry.bind(environment, clock)
    return telemetry


# --------------------------------------------------------------------------- labels


def labels_for(variations: Mapping[str, str | None]) -> list[dict[str, str]]:
    """One label set per flag: ``{FLAG_LABEL: key, VARIANT_LABEL: variation}``."""
    return [
        {FLAG_LABEL: key, VARIANT_LABEL: variation if variation is not None else NO_VARIANT}
        for key, variation in variations.items()
    ]


def variation_labels(
    snapshot: Snapshot | None,
    context: Mapping[str, Any] | InvalidContext | None,
    flags: list[str],
) -> list[dict[str, str]]:
    """The label sets for ``flags`` as evaluated for ``context`` (not counted)."""
    if snapshot is None:
        return labels_for(dict.fromkeys(flags))
    return labels_for({key: snapshot.evaluate(key, context).variation for key in flags})


_recorded: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "flagstone_recorded_variants", default=None
)


@contextlib.contextmanager
def recording_variants() -> Iterator[dict[str, str | None]]:
    """Within this block (a request), evaluations through the OpenFeature hook
    ``flagstone.sdk.telemetry_openfeature.VariantRecorder`` record their variants."""
    token = _recorded.set({})
    try:
        recorded = _recorded.get()
        assert recorded is not None
        yield recorded
    finally:
        _recorded.reset(token)


def record_variant(flag_key: str, variation: str | None) -> None:
    """Keep ``flag_key``'s variant for the current block, if one is recording."""
    recorded = _recorded.get()
    if recorded is not None:
        recorded[flag_key] = variation


def recorded_labels(flags: list[str] | None = None) -> list[dict[str, str]]:
    """Label sets for the variants recorded in the current block (``flags``: only those)."""
    recorded = _recorded.get() or {}
    if flags is not None:
        recorded = {key: recorded[key] for key in flags if key in recorded}
    return labels_for(recorded)


def age_seconds(snapshot: Snapshot, now: float) -> float | None:
    """Seconds since ``snapshot`` was published, None if it does not say."""
    if snapshot.published_at is None:
        return None
    published = parse_timestamp(snapshot.published_at)
    return None if published is None else max(0.0, now - published)
