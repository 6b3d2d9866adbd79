"""Evaluation counters (issue 14, item 1): per (flag, variation, reason), through every
getter and the real OpenFeature SDK (counted once), exact under concurrent threads,
bounded, reset in a forked child, absent when telemetry is off."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from flagstone.sdk import Client
from flagstone.sdk.openfeature import FlagstoneProvider
from flagstone.sdk.telemetry import OVERFLOW_FLAG, EvaluationCounts, Telemetry
from sdk_support import (
    ENVIRONMENT,
    NOW,
    PROJECT,
    fixed_flag,
    make_payload,
    new_key,
    sign,
    targeted_flag,
)

KEY = new_key()
FLAGS: dict[str, Any] = {
    "dark-mode": fixed_flag(True),
    "banner": fixed_flag("hello"),
    "beta": targeted_flag(["user-1"]),
    "checkout": {
        **targeted_flag([]),
        "default": {
            "split": {
                "bucket_by": "key",
                "seed": "checkout",
                "weights": [
                    {"variation": "on", "weight": 50000},
                    {"variation": "off", "weight": 50000},
                ],
            }
        },
    },
}


def client_for(tmp_path: Path, **options: Any) -> Client:
    path = tmp_path / "latest.json"
    path.write_bytes(sign(make_payload(7, FLAGS), KEY))
    return Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW,
        **options,
    )


def test_every_getter_counts_once_per_evaluation(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=True)
    assert client.telemetry is not None
    client.bool_value("dark-mode", {"key": "a"})
    client.bool_details("dark-mode", {"key": "a"})
    client.string_value("banner", {"key": "a"})
    client.evaluate("beta", {"key": "user-1"})
    client.evaluate("beta", {"key": "user-2"})
    client.json_value("beta", {"key": "user-2"})
    client.bool_value("missing", {"key": "a"})
    client.all_flags({"key": "a"})  # bootstrapping: not counted
    client.variation_labels({"key": "a"}, flags=["beta"])  # labelling: not counted
    assert client.telemetry.evaluation_counts() == {
        ("dark-mode", "v", "DEFAULT"): 2,
        ("banner", "v", "DEFAULT"): 1,
        ("beta", "on", "TARGETING_MATCH"): 1,
        ("beta", "off", "DEFAULT"): 2,
        ("missing", None, "ERROR"): 1,
    }
    # A collection reads without resetting: the totals only grow.
    client.evaluate("beta", {"key": "user-1"})
    assert client.telemetry.evaluation_counts()[("beta", "on", "TARGETING_MATCH")] == 2


def test_split_counts_follow_the_buckets(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=True)
    assert client.telemetry is not None
    served = {"on": 0, "off": 0}
    for index in range(400):
        served[client.evaluate("checkout", {"key": f"user-{index}"}).variation or ""] += 1
    counts = client.telemetry.evaluation_counts()
    assert counts == {
        ("checkout", "on", "SPLIT"): served["on"],
        ("checkout", "off", "SPLIT"): served["off"],
    }
    assert served["on"] > 100 and served["off"] > 100


def test_the_openfeature_provider_is_counted_once(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=True)
    assert client.telemetry is not None
    api.set_provider_and_wait(FlagstoneProvider(client), domain="telemetry-counts")
    try:
        of_client = api.get_client("telemetry-counts")
        context = EvaluationContext("user-1")
        for _ in range(3):
            assert of_client.get_boolean_value("beta", False, context) is True
        assert of_client.get_string_value("banner", "", context) == "hello"
    finally:
        api.shutdown()
    assert client.telemetry.evaluation_counts() == {
        ("beta", "on", "TARGETING_MATCH"): 3,
        ("banner", "v", "DEFAULT"): 1,
    }


def test_concurrent_threads_lose_no_count(tmp_path: Path) -> None:
    # Eight threads through every getter, on fixed and bucketed (fresh Details) outcomes
    # and on flag keys no thread has counted yet (so keys are added while others count),
    # with the interpreter switching threads as often as it can, a collector reading all
    # along and new snapshot versions swapped in meanwhile (each retired as soon as its
    # counts are final and reported): the totals must be exact.
    client = client_for(tmp_path, telemetry=Telemetry(version_retention=0.0))
    assert client.telemetry is not None
    threads, rounds = 8, 600
    start = threading.Barrier(threads + 1)
    served: list[dict[tuple[str, str | None, str], int]] = [{} for _ in range(threads)]

    def evaluate(worker: int) -> None:
        mine = served[worker]
        start.wait()
        for index in range(rounds):
            user = {"key": f"user-{index % 3}"}
            getter = (client.bool_value, client.evaluate, client.bool_details)[index % 3]
            getter("beta", user)
            beta = client.snapshot.evaluate("beta", user)  # type: ignore[union-attr]
            key: tuple[str, str | None, str] = ("beta", beta.variation, beta.reason)
            mine[key] = mine.get(key, 0) + 1
            checkout = client.evaluate("checkout", {"key": f"user-{worker}-{index}"})
            key = ("checkout", checkout.variation, checkout.reason)
            mine[key] = mine.get(key, 0) + 1
            client.string_value(f"new-{index % 50}", user, "x")  # FLAG_NOT_FOUND
            key = (f"new-{index % 50}", None, "ERROR")
            mine[key] = mine.get(key, 0) + 1
            if worker == 0 and index % 120 == 60:  # versions 8 to 12, while others count
                version = 8 + index // 120
                (tmp_path / "latest.json").write_bytes(sign(make_payload(version, FLAGS), KEY))
                assert client.refresh()

    workers = [threading.Thread(target=evaluate, args=(index,)) for index in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for worker in workers:
            worker.start()
        start.wait()
        # Collections while the threads run must neither fail nor disturb them, and
        # totals never go down.
        last = 0
        while any(worker.is_alive() for worker in workers):
            total = sum(client.telemetry.evaluation_counts().values())
            assert total >= last
            last = total
            client.telemetry.evaluation_counts_by_version()
            time.sleep(0.001)
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    expected: dict[tuple[str, str | None, str], int] = {}
    for mine in served:
        for key, count in mine.items():
            expected[key] = expected.get(key, 0) + count
    assert client.telemetry.evaluation_counts() == expected
    assert sum(expected.values()) == threads * rounds * 3
    assert client.version == 12
    client.telemetry.evaluation_counts_by_version()
    assert client.telemetry.counts.versions() == [12]  # the others retired
    assert client.telemetry.evaluation_counts() == expected


def test_distinct_keys_are_capped_and_odd_keys_never_raise() -> None:
    from flagstone.engine import Details

    counts = EvaluationCounts(max_keys=3)
    details = Details(None, None, "ERROR", "FLAG_NOT_FOUND", "no such flag")
    for index in range(10):
        counts.record(f"typo-{index}", details)
    counts.record(["not", "hashable"], details)  # type: ignore[arg-type]

    class Hostile(str):
        def __hash__(self) -> int:
            raise ValueError("no hashing today")

    counts.record(Hostile("beta"), details)
    totals = counts.collect()
    assert len(totals) == 4  # three keys, then the overflow key
    assert totals[(OVERFLOW_FLAG, None, "ERROR")] == 9
    assert sum(totals.values()) == 12


def test_the_getters_count_odd_flag_keys_under_the_overflow_key(tmp_path: Path) -> None:
    # The cap is on keys callers can make up; the snapshot's own outcomes (dark-mode's,
    # bounded by the snapshot) take nothing from it.
    telemetry = Telemetry()
    telemetry.counts = EvaluationCounts(max_keys=2)
    client = client_for(tmp_path, telemetry=telemetry)
    client.bool_value("dark-mode", {"key": "a"})
    client.string_value("banner", {"key": "a"})
    client.bool_value(["not", "hashable"], {"key": "a"})  # type: ignore[arg-type]
    client.evaluate("typo-1", {"key": "a"})
    client.evaluate("typo-2", {"key": "a"})
    client.bool_value("dark-mode", {"key": "a"})
    assert telemetry.evaluation_counts() == {
        ("dark-mode", "v", "DEFAULT"): 2,
        ("banner", "v", "DEFAULT"): 1,
        (OVERFLOW_FLAG, None, "ERROR"): 2,  # the list, then typo-2 beyond the cap
        ("typo-1", None, "ERROR"): 1,
    }


def test_telemetry_off_leaves_no_trace(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    assert client.telemetry is None
    assert client.bool_value("dark-mode", {"key": "a"}) is True
    assert client.source_stats.accepted == 1


def test_a_telemetry_serves_one_client(tmp_path: Path) -> None:
    from flagstone.errors import UsageError

    telemetry = Telemetry()
    client_for(tmp_path, telemetry=telemetry)
    with pytest.raises(UsageError, match="already belongs"):
        client_for(tmp_path, telemetry=telemetry)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_counts_from_zero(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=True)
    assert client.telemetry is not None
    for _ in range(5):
        client.bool_value("dark-mode", {"key": "a"})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it counts after one evaluation of its own
        try:
            os.close(read)
            assert client.telemetry is not None
            client.bool_value("dark-mode", {"key": "a"})
            os.write(write, repr(client.telemetry.evaluation_counts()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_counts = pipe.read()
    os.waitpid(pid, 0)
    assert child_counts == repr({("dark-mode", "v", "DEFAULT"): 1})
    assert client.telemetry.evaluation_counts() == {("dark-mode", "v", "DEFAULT"): 5}


def test_variation_labels_and_the_openfeature_variant_recorder(tmp_path: Path) -> None:
    from flagstone.sdk.telemetry import recorded_labels, recording_variants
    from flagstone.sdk.telemetry_openfeature import VariantRecorder

    client = client_for(tmp_path, telemetry=True)
    assert client.variation_labels({"key": "user-1"}, flags=["beta", "missing"]) == [
        {"feature_flag_key": "beta", "feature_flag_variant": "on"},
        {"feature_flag_key": "missing", "feature_flag_variant": ""},
    ]
    api.set_provider_and_wait(FlagstoneProvider(client), domain="telemetry-labels")
    api.add_hooks([VariantRecorder()])
    try:
        of_client = api.get_client("telemetry-labels")
        labels: dict[str, list[dict[str, str]]] = {}

        def request(user: str) -> None:  # one request per thread, evaluated concurrently
            with recording_variants():
                of_client.get_boolean_value("beta", False, EvaluationContext(user))
                of_client.get_boolean_value("missing", False, EvaluationContext(user))
                labels[user] = recorded_labels(["beta", "missing", "dark-mode"])

        threads = [threading.Thread(target=request, args=(u,)) for u in ("user-1", "user-2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Outside a recording block nothing is kept.
        of_client.get_boolean_value("beta", False, EvaluationContext("user-1"))
        assert recorded_labels() == []
    finally:
        api.clear_hooks()
        api.shutdown()
    assert labels == {
        "user-1": [
            {"feature_flag_key": "beta", "feature_flag_variant": "on"},
            {"feature_flag_key": "missing", "feature_flag_variant": ""},
        ],
        "user-2": [
            {"feature_flag_key": "beta", "feature_flag_variant": "off"},
            {"feature_flag_key": "missing", "feature_flag_variant": ""},
        ],
    }


class _Serving:
    """Stands for the client's record of the snapshot in use (weakly referenced)."""


def test_a_version_is_reported_until_final_then_retired_into_the_totals() -> None:
    now = [100.0]
    counts = EvaluationCounts(retention=60.0, clock=lambda: now[0])
    first = _Serving()
    on_1 = counts.serving(1, first)("beta", "on", "TARGETING_MATCH")
    next(on_1)
    second = _Serving()
    on_2 = counts.serving(2, second)("beta", "on", "TARGETING_MATCH")
    next(on_2)
    # Version 1's record is still alive (an evaluation in flight on it): it may still
    # count, so it stays, however long, and a late count is kept.
    now[0] += 1000
    assert counts.collect_by_version() == {
        ("beta", "on", "TARGETING_MATCH", 1): 1,
        ("beta", "on", "TARGETING_MATCH", 2): 1,
    }
    next(on_1)
    del first
    # Final now: reported with its final count for `retention` seconds, then retired.
    assert counts.collect_by_version()[("beta", "on", "TARGETING_MATCH", 1)] == 2
    now[0] += 59
    assert counts.versions() == [1, 2]
    assert counts.collect_by_version()[("beta", "on", "TARGETING_MATCH", 1)] == 2
    now[0] += 1
    assert counts.collect_by_version() == {("beta", "on", "TARGETING_MATCH", 2): 1}
    assert counts.versions() == [2]
    assert counts.collect() == {("beta", "on", "TARGETING_MATCH"): 3}
    del second


def test_versions_kept_are_bounded_whatever_the_rate_of_publishing() -> None:
    counts = EvaluationCounts(max_versions=2)  # the default retention: 10 minutes
    for version in range(1, 30):
        serving = _Serving()
        next(counts.serving(version, serving)("dark-mode", "v", "DEFAULT"))
        counts.collect_by_version()
        assert len(counts.versions()) <= 2 + 1  # those kept, and the current one
    assert counts.versions()[-1] == 29
    assert counts.collect() == {("dark-mode", "v", "DEFAULT"): 29}


def test_the_engine_hands_each_flags_outcomes_their_own_counters() -> None:
    import copy
    import pickle

    from flagstone.engine import Snapshot

    payload = make_payload(7, {**FLAGS, "dark-mode-2": fixed_flag(True)})
    made: list[tuple[str, str, str]] = []

    def counter_for(flag_key: str, variation: str, reason: str) -> Any:
        made.append((flag_key, variation, reason))
        return iter(range(10**6))

    packed = Snapshot.from_payload(payload, packed=True)
    packed.count_outcomes(counter_for)
    one = packed.evaluate("dark-mode", {"key": "a"})
    two = packed.evaluate("dark-mode-2", {"key": "a"})
    # Equal answers (the counter is no field), but each flag's own outcome and counter.
    assert one == two and one is not two and one.counter is not two.counter
    assert ("dark-mode", "v", "DEFAULT") in made and ("dark-mode-2", "v", "DEFAULT") in made
    split = packed.evaluate("checkout", {"key": "a"})
    assert split.counter is packed.evaluate("checkout", {"key": "a"}).counter  # fresh Details
    assert packed.evaluate("missing", {"key": "a"}).counter is None  # errors: none
    for copied in (copy.copy(one), copy.deepcopy(one), pickle.loads(pickle.dumps(one))):
        assert copied == one and copied.counter is None
    # Without count_outcomes, and for an unpacked snapshot (compiled when made): none.
    assert Snapshot.from_payload(payload, packed=True).evaluate("beta", {}).counter is None
    unpacked = Snapshot.from_payload(payload)
    unpacked.count_outcomes(counter_for)
    assert unpacked.evaluate("beta", {}).counter is None


def test_the_client_counts_through_the_outcomes_own_counters(tmp_path: Path) -> None:
    # The fast path (no lookup) holds for the first snapshot and for one swapped in;
    # telemetry off leaves the engine's outcomes without counters.
    client = client_for(tmp_path, telemetry=True)
    assert client.evaluate("beta", {"key": "user-1"}).counter is not None
    (tmp_path / "latest.json").write_bytes(sign(make_payload(8, FLAGS), KEY))
    assert client.refresh() and client.version == 8
    for flag in FLAGS:
        assert client.evaluate(flag, {"key": "user-1"}).counter is not None, flag
    assert client.evaluate("missing", {"key": "user-1"}).counter is None  # counted by a call
    (tmp_path / "off").mkdir()
    assert client_for(tmp_path / "off").evaluate("beta", {"key": "user-1"}).counter is None


def test_an_error_key_counted_before_is_counted_without_the_lock() -> None:
    from flagstone.engine import Details

    class NoLock:
        def __enter__(self) -> None:
            raise AssertionError("the lock was taken")

        def __exit__(self, *exc_info: object) -> None:
            return None

    counts = EvaluationCounts()
    missing = Details(None, None, "ERROR", "FLAG_NOT_FOUND", "no such flag", version=3)
    counts.record("typo", missing)  # added, under the lock
    lock = counts._lock
    counts._lock = NoLock()  # type: ignore[assignment]
    for _ in range(3):
        counts.record("typo", missing)
    counts._lock = lock
    assert counts.collect() == {("typo", None, "ERROR"): 4}
