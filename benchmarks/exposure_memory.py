"""Memory of the exposure pipeline (issue 14, item 3), measured with tracemalloc.

    python benchmarks/exposure_memory.py

Fills an ``ExposureTracker``'s dedup cache to ``max_entries`` with realistic entries
(a flag key, a variation, a 36-character bucketing value such as a UUID) and its queue
to ``queue_size`` (a sink that waits), and prints the bytes per dedup entry, per queued
event and the total at the default caps. The evaluation counters are measured the same
way, per distinct (flag, variation, reason).
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
import uuid
from typing import Any

from flagstone.engine import Details, Snapshot
from flagstone.sdk.telemetry import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_QUEUE_SIZE,
    MAX_BUCKETING_VALUE_LENGTH,
    MAX_KEYS,
    EvaluationCounts,
    ExposureEvent,
    ExposureTracker,
)


def snapshot() -> Snapshot:
    flag = {
        "type": "boolean",
        "kind": "release",
        "variations": {"on": True, "off": False},
        "off_variation": "off",
        "enabled": True,
        "prerequisites": [],
        "targets": [],
        "rules": [],
        "default": {"variation": "on"},
    }
    return Snapshot.from_payload(
        {
            "format": "flagstone.snapshot/1",
            "project": "bench",
            "environment": "production",
            "version": 1,
            "flags": {"new-checkout": flag},
            "segments": {},
        }
    )


def measured(action: Any) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = action()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def main() -> None:
    served = snapshot()

    # Dedup cache: a sink that never runs (sample_rate=0 keeps the queue empty). The
    # bucketing values are made inside the measurement: the cache keeps them alive after
    # the requests that brought them are gone.
    def fill_cache() -> ExposureTracker:
        tracker = ExposureTracker(lambda event: None, sample_rate=0.0)
        for index in range(DEFAULT_MAX_ENTRIES):
            tracker.observe("new-checkout", "on", str(uuid.UUID(int=index)), "key", served)
        return tracker

    cache_bytes, tracker = measured(fill_cache)
    assert tracker.tracked == DEFAULT_MAX_ENTRIES
    tracker.close()

    def fill_cache_longest() -> ExposureTracker:
        tracker = ExposureTracker(lambda event: None, sample_rate=0.0)
        for index in range(DEFAULT_MAX_ENTRIES):
            value = f"{index:0{MAX_BUCKETING_VALUE_LENGTH}d}"
            tracker.observe("new-checkout", "on", value, "key", served)
        return tracker

    longest_bytes, tracker = measured(fill_cache_longest)
    tracker.close()

    # Queue: the worker is stuck in the sink, so every event waits in the queue.
    release = threading.Event()

    def fill_queue() -> ExposureTracker:
        stuck = ExposureTracker(lambda event: release.wait(60), max_entries=10)
        for index in range(DEFAULT_QUEUE_SIZE + 1):
            stuck.observe("new-checkout", "on", str(uuid.UUID(int=index)), "key", served)
        return stuck

    queue_bytes, stuck = measured(fill_queue)
    queued = stuck.pending
    release.set()
    stuck.close()

    counts = EvaluationCounts()
    details = Details(True, "on", "TARGETING_MATCH")

    def fill_counts() -> Any:
        for index in range(MAX_KEYS):
            counts.record(f"flag-{index:05d}", details)
        return counts

    counter_bytes, _ = measured(fill_counts)

    per_entry = cache_bytes / DEFAULT_MAX_ENTRIES
    per_event = queue_bytes / max(queued, 1)
    print(f"exposure dedup cache: {per_entry:.0f} bytes per entry (36-char bucketing value)")
    print(f"  at the default max_entries={DEFAULT_MAX_ENTRIES:,}: {cache_bytes / 1e6:.1f} MB")
    print(
        f"  with {MAX_BUCKETING_VALUE_LENGTH}-char values (the longest tracked): "
        f"{longest_bytes / DEFAULT_MAX_ENTRIES:.0f} bytes per entry, {longest_bytes / 1e6:.1f} MB"
    )
    print(f"exposure queue: {per_event:.0f} bytes per waiting {ExposureEvent.__name__}")
    print(f"  at the default queue_size={DEFAULT_QUEUE_SIZE:,}: {queue_bytes / 1e6:.1f} MB")
    print(
        f"pipeline at the defaults: {(cache_bytes + queue_bytes) / 1e6:.1f} MB with 36-char "
        f"values, at most {(longest_bytes + queue_bytes) / 1e6:.1f} MB"
    )
    print(
        f"evaluation counters: {counter_bytes / MAX_KEYS:.0f} bytes per distinct key, "
        f"{counter_bytes / 1e6:.1f} MB at the cap of {MAX_KEYS:,} keys (one flag per key)"
    )


if __name__ == "__main__":
    main()
