"""Exposure events (issue 14, item 3): once per (flag, variation, bucketing value) per
window, by the flag's bucketing attribute, deterministically sampled, bounded memory and
queue with a drop counter, delivered off the evaluating thread to a callback, a rotating
JSON-lines file or OpenTelemetry log records (real SDK, in-memory exporter)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from flagstone.errors import UsageError
from flagstone.sdk import Client
from flagstone.sdk.telemetry import (
    ExposureEvent,
    ExposureTracker,
    JsonLinesSink,
    Telemetry,
    bucket_attribute,
)
from flagstone.sdk.telemetry_otel import ExposureLogSink
from sdk_support import (
    ENVIRONMENT,
    NOW,
    PROJECT,
    fixed_flag,
    make_payload,
    new_key,
    sign,
    targeted_flag,
    wait_for,
)

KEY = new_key()


def split_flag(bucket_by: str) -> dict[str, Any]:
    return {
        **targeted_flag([]),
        "default": {
            "split": {
                "bucket_by": bucket_by,
                "seed": "pricing",
                "weights": [
                    {"variation": "on", "weight": 50000},
                    {"variation": "off", "weight": 50000},
                ],
            }
        },
    }


FLAGS: dict[str, Any] = {
    "beta": targeted_flag(["user-1"]),
    "pricing": split_flag("account_id"),
    "banner": fixed_flag("hello"),
}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Collected:
    """A callback sink that keeps what it gets."""

    def __init__(self) -> None:
        self.events: list[ExposureEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: ExposureEvent) -> None:
        with self.lock:
            self.events.append(event)


def client_for(tmp_path: Path, tracker: ExposureTracker) -> Client:
    path = tmp_path / "latest.json"
    path.write_bytes(sign(make_payload(9, FLAGS), KEY))
    return Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW,
        telemetry=Telemetry(exposures=tracker),
    )


def test_one_event_per_context_variation_and_window(tmp_path: Path) -> None:
    sink, clock = Collected(), Clock()
    tracker = ExposureTracker(sink, window=3600, clock=clock)
    client = client_for(tmp_path, tracker)
    try:
        for _ in range(5):
            client.bool_value("beta", {"key": "user-1"})
            client.bool_value("beta", {"key": "user-2"})
            client.evaluate("pricing", {"key": "user-3", "account_id": "acct-9"})
            client.evaluate("pricing", {"key": "user-4", "account_id": "acct-9"})  # same account
            client.evaluate("pricing", {"key": "user-5"})  # no account: not bucketable
            client.bool_value("missing", {"key": "user-1"})  # an error: nothing served
        assert tracker.flush()
        seen = sorted((e.flag, e.variation, e.bucketing_value, e.bucket_by) for e in sink.events)
        pricing = client.evaluate("pricing", {"account_id": "acct-9"}).variation
        assert seen == sorted(
            [
                ("beta", "on", "user-1", "key"),
                ("beta", "off", "user-2", "key"),
                ("pricing", str(pricing), "acct-9", "account_id"),
            ]
        )
        event = sink.events[0]
        assert (event.environment, event.snapshot_version, event.time) == ("production", 9, NOW)
        assert event.as_json()["time"] == "2026-11-26T00:00:00.000Z"

        clock.now += 3599
        client.bool_value("beta", {"key": "user-1"})
        assert tracker.flush() and len(sink.events) == 3
        clock.now += 2  # the window has passed: reported again
        client.bool_value("beta", {"key": "user-1"})
        assert tracker.flush() and len(sink.events) == 4
    finally:
        client.close()


def test_an_event_has_the_evaluation_time_of_the_client_clock(tmp_path: Path) -> None:
    # No clock of its own: the tracker reads the client's, the time evaluations are made
    # at (here an hour after NOW), on the evaluating thread; not the worker's delivery time.
    sink = Collected()
    tracker = ExposureTracker(sink)
    path = tmp_path / "latest.json"
    path.write_bytes(sign(make_payload(9, FLAGS), KEY))
    client = Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW + 3600,
        telemetry=Telemetry(exposures=tracker),
    )
    try:
        client.bool_value("beta", {"key": "user-1"})
        assert tracker.flush()
        assert [event.time for event in sink.events] == [NOW + 3600]
    finally:
        client.close()


def test_bucketing_values_that_are_numbers_or_too_long(tmp_path: Path) -> None:
    sink = Collected()
    tracker = ExposureTracker(sink)
    client = client_for(tmp_path, tracker)
    try:
        client.evaluate("pricing", {"key": "u", "account_id": 42})  # an integer id
        client.evaluate("pricing", {"key": "u", "account_id": True})  # not bucketable
        client.evaluate("pricing", {"key": "u", "account_id": "a" * 257})  # too long
        client.evaluate("pricing", {"key": "u", "account_id": "a" * 256})
        assert tracker.flush()
    finally:
        client.close()
    assert sorted(len(event.bucketing_value) for event in sink.events) == [2, 256]
    assert "42" in {event.bucketing_value for event in sink.events}


def test_sampling_is_by_bucketing_value_and_repeatable() -> None:
    from flagstone.engine import Snapshot

    snapshot = Snapshot.from_payload(make_payload(1, FLAGS))
    chosen = []
    for _ in range(2):
        sink = Collected()
        tracker = ExposureTracker(sink, sample_rate=0.3)
        for index in range(1000):
            tracker.observe("beta", "off", f"user-{index}", "key", snapshot)
        assert tracker.flush()
        tracker.close()
        chosen.append(sorted(event.bucketing_value for event in sink.events))
    assert chosen[0] == chosen[1]
    assert 200 < len(chosen[0]) < 400  # 300 expected


def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    from flagstone.engine import Snapshot

    snapshot = Snapshot.from_payload(make_payload(1, FLAGS))
    release, started = threading.Event(), threading.Event()
    delivered: list[ExposureEvent] = []

    def stuck_sink(event: ExposureEvent) -> None:
        started.set()
        release.wait(30)
        delivered.append(event)

    tracker = ExposureTracker(stuck_sink, queue_size=5)
    try:
        tracker.observe("beta", "off", "user-0", "key", snapshot)
        assert started.wait(10)  # the worker holds the first event, in the sink
        for index in range(1, 50):  # returns at once although the sink is stuck
            tracker.observe("beta", "off", f"user-{index}", "key", snapshot)
        assert tracker.pending == 5
        assert tracker.dropped == 44
    finally:
        release.set()
        tracker.close()
    assert len(delivered) == 6 and tracker.emitted == 6


def test_dedup_memory_is_capped() -> None:
    from flagstone.engine import Snapshot

    snapshot = Snapshot.from_payload(make_payload(1, FLAGS))
    sink = Collected()
    tracker = ExposureTracker(sink, max_entries=100)
    for index in range(1000):
        tracker.observe("beta", "off", f"user-{index}", "key", snapshot)
    assert tracker.tracked == 100
    assert tracker.flush()
    # The oldest entries were evicted: user-0 is reported again, user-999 is not.
    tracker.observe("beta", "off", "user-0", "key", snapshot)
    tracker.observe("beta", "off", "user-999", "key", snapshot)
    assert tracker.flush()
    tracker.close()
    assert len(sink.events) == 1001
    assert sink.events[-1].bucketing_value == "user-0"


def test_a_failing_sink_is_counted_and_never_reaches_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: ExposureEvent) -> None:
        raise RuntimeError("sink down")

    tracker = ExposureTracker(broken)
    client = client_for(tmp_path, tracker)
    try:
        assert client.bool_value("beta", {"key": "user-1"}) is True
        assert wait_for(lambda: tracker.sink_errors == 1)
    finally:
        client.close()
    assert "an exposure sink failed" in caplog.text


def test_json_lines_sink_rotates_and_refuses_a_planted_link(tmp_path: Path) -> None:
    from flagstone.engine import Snapshot

    snapshot = Snapshot.from_payload(make_payload(1, FLAGS))
    path = tmp_path / "exposures.jsonl"
    tracker = ExposureTracker(JsonLinesSink(path, max_bytes=1000, backups=2))
    for index in range(40):
        tracker.observe("beta", "off", f"user-{index:02d}", "key", snapshot)
    tracker.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["exposures.jsonl", "exposures.jsonl.1", "exposures.jsonl.2"]
    lines = [
        json.loads(line)
        for name in reversed(files)
        for line in (tmp_path / name).read_text().splitlines()
    ]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 1000
    values = [line["bucketing_value"] for line in lines]
    assert values == sorted(values) and values[-1] == "user-39"  # oldest files dropped
    assert set(lines[0]) == {
        "flag",
        "variation",
        "bucketing_value",
        "bucket_by",
        "environment",
        "snapshot_version",
        "time",
    }

    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched\n")
    linked = tmp_path / "linked.jsonl"
    os.symlink(target, linked)
    tracker = ExposureTracker(JsonLinesSink(linked))
    tracker.observe("beta", "off", "user-1", "key", snapshot)
    assert tracker.flush()
    tracker.close()
    assert tracker.sink_errors == 1 and target.read_text() == "untouched\n"


def test_exposures_as_opentelemetry_log_records(tmp_path: Path) -> None:
    exporter = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tracker = ExposureTracker(ExposureLogSink(logs), clock=lambda: NOW)
    client = client_for(tmp_path, tracker)
    try:
        client.bool_value("beta", {"key": "user-1"})
        client.bool_value("beta", {"key": "user-1"})
        assert tracker.flush()
        records = [finished.log_record for finished in exporter.get_finished_logs()]
    finally:
        client.close()
        logs.shutdown()
    assert [record.event_name for record in records] == ["flagstone.exposure"]
    assert dict(records[0].attributes or {}) == {
        "feature_flag.key": "beta",
        "feature_flag.result.variant": "on",
        "feature_flag.context.id": "user-1",
        "feature_flag.provider.name": "flagstone",
        "feature_flag.version": "9",
        "flagstone.environment": "production",
        "flagstone.bucket_by": "key",
    }
    assert records[0].timestamp == int(NOW * 1e9)


def test_bucket_attribute_and_bad_options() -> None:
    assert bucket_attribute(FLAGS["pricing"]) == "account_id"
    assert bucket_attribute(FLAGS["beta"]) == "key"
    rule_split = {"rules": [{"serve": {"split": {"bucket_by": "org"}}}], "default": {}}
    assert bucket_attribute(rule_split) == "org"
    for options in ({"window": 0}, {"max_entries": 0}, {"queue_size": 0}, {"sample_rate": 2}):
        with pytest.raises(UsageError):
            ExposureTracker(Collected(), **options)
