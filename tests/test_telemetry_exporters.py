"""Exporters (issue 14, item 2) against the real libraries: OpenTelemetry metrics through
the SDK's InMemoryMetricReader, ``feature_flag.evaluation`` events through the SDK's
in-memory log exporter, and the Prometheus collector rendered by prometheus-client and
parsed back with its own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flagstone.errors import UsageError
from flagstone.sdk import Client
from flagstone.sdk.telemetry import Telemetry
from flagstone.sdk.telemetry_otel import EvaluationEvents, register_metrics
from flagstone.sdk.telemetry_prometheus import FlagstoneCollector
from sdk_support import (
    DAY,
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
FLAGS: dict[str, Any] = {"dark-mode": fixed_flag(True), "beta": targeted_flag(["user-1"])}


def client_for(tmp_path: Path, **options: Any) -> Client:
    path = tmp_path / "latest.json"
    path.write_bytes(sign(make_payload(4, FLAGS, published_at=NOW - 2 * DAY), KEY))
    return Client.from_file(
        path,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        clock=lambda: NOW,
        **options,
    )


def evaluate_some(client: Client) -> None:
    for _ in range(3):
        client.bool_value("beta", {"key": "user-1"})
    client.bool_value("beta", {"key": "user-2"})
    client.bool_value("dark-mode", {"key": "user-2"})
    client.bool_value("gone", {"key": "user-2"})


# --------------------------------------------------------------------------- OpenTelemetry


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    points.setdefault(metric.name, []).append(
                        (dict(point.attributes or {}), point.value)
                    )
    return points


def test_otel_metrics_use_the_feature_flag_attribute_names(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=True)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_metrics(client, meter_provider=provider, clock=lambda: NOW)
        evaluate_some(client)
        points = otel_points(reader)
        shared = {
            "feature_flag.provider.name": "flagstone",
            "feature_flag.set.id": "acme-shop/production",
        }
        counted = {**shared, "feature_flag.version": "4"}
        evaluations = sorted(
            points["flagstone.evaluations"], key=lambda point: repr(sorted(point[0].items()))
        )
        assert evaluations == sorted(
            [
                (
                    {
                        **counted,
                        "feature_flag.key": "beta",
                        "feature_flag.result.variant": "on",
                        "feature_flag.result.reason": "targeting_match",
                    },
                    3,
                ),
                (
                    {
                        **counted,
                        "feature_flag.key": "beta",
                        "feature_flag.result.variant": "off",
                        "feature_flag.result.reason": "default",
                    },
                    1,
                ),
                (
                    {
                        **counted,
                        "feature_flag.key": "dark-mode",
                        "feature_flag.result.variant": "v",
                        "feature_flag.result.reason": "default",
                    },
                    1,
                ),
                ({**counted, "feature_flag.key": "gone", "feature_flag.result.reason": "error"}, 1),
            ],
            key=lambda point: repr(sorted(point[0].items())),
        )
        assert points["flagstone.snapshot.version"] == [
            ({**shared, "feature_flag.version": "4"}, 4)
        ]
        assert points["flagstone.snapshot.age"] == [
            ({**shared, "feature_flag.version": "4"}, 2 * DAY)
        ]
        # Observable counters are cumulative: read again after more evaluations.
        client.bool_value("dark-mode", {"key": "user-2"})
        again = {
            point[0]["feature_flag.key"]: point[1]
            for point in otel_points(reader)["flagstone.evaluations"]
            if point[0].get("feature_flag.result.variant") == "v"
        }
        assert again == {"dark-mode": 2}
    finally:
        provider.shutdown()


def evaluations_by_version(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    """``flagstone.evaluations`` as {(key, variant, version): count} (checking that every
    point carries the version)."""
    found = {}
    for attributes, value in otel_points(reader).get("flagstone.evaluations", []):
        key = (
            attributes["feature_flag.key"],
            attributes.get("feature_flag.result.variant", ""),
            attributes["feature_flag.version"],
        )
        assert key not in found
        found[key] = value
    return found


def test_otel_counts_carry_the_version_and_retire_old_versions(tmp_path: Path) -> None:
    # Per version, across a version change: the old version is reported with its final
    # count (evaluations made after the last collection included) while its counts are
    # final, then no more; the totals (Prometheus, evaluation_counts) keep it all.
    telemetry = Telemetry(version_retention=0.0)
    client = client_for(tmp_path, telemetry=telemetry, poll_interval=None)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_metrics(client, meter_provider=provider, clock=lambda: NOW)
        evaluate_some(client)
        assert evaluations_by_version(reader) == {
            ("beta", "on", "4"): 3,
            ("beta", "off", "4"): 1,
            ("dark-mode", "v", "4"): 1,
            ("gone", "", "4"): 1,
        }
        client.bool_value("beta", {"key": "user-1"})  # after that collection, still at 4
        (tmp_path / "latest.json").write_bytes(
            sign(make_payload(5, FLAGS, published_at=NOW - DAY), KEY)
        )
        assert client.refresh() and client.version == 5
        client.bool_value("beta", {"key": "user-1"})
        client.bool_value("gone", {"key": "user-1"})
        assert evaluations_by_version(reader) == {
            ("beta", "on", "4"): 4,  # final
            ("beta", "off", "4"): 1,
            ("dark-mode", "v", "4"): 1,
            ("gone", "", "4"): 1,
            ("beta", "on", "5"): 1,
            ("gone", "", "5"): 1,
        }
        # Reported final once (retention 0): retired from the next collection on.
        assert evaluations_by_version(reader) == {("beta", "on", "5"): 1, ("gone", "", "5"): 1}
        assert telemetry.counts.versions() == [5]
        assert telemetry.evaluation_counts() == {
            ("beta", "on", "TARGETING_MATCH"): 5,
            ("beta", "off", "DEFAULT"): 1,
            ("dark-mode", "v", "DEFAULT"): 1,
            ("gone", None, "ERROR"): 2,
        }
        assert [value for _, value in otel_points(reader)["flagstone.snapshot.version"]] == [5]
        # Prometheus keeps its labels (no version): the total over both versions.
        registry = CollectorRegistry()
        registry.register(FlagstoneCollector(client, clock=lambda: NOW))
        labels = (
            ("environment", ENVIRONMENT),
            ("flag", "beta"),
            ("reason", "TARGETING_MATCH"),
            ("variation", "on"),
        )
        assert scrape(registry)[("flagstone_evaluations_total", labels)] == 5
    finally:
        provider.shutdown()


def test_otel_counts_across_versions_without_the_version_attribute(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=Telemetry(version_retention=0.0), poll_interval=None)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_metrics(client, meter_provider=provider, by_version=False)
        client.bool_value("dark-mode", {"key": "user-1"})
        (tmp_path / "latest.json").write_bytes(sign(make_payload(5, FLAGS), KEY))
        assert client.refresh()
        client.bool_value("dark-mode", {"key": "user-1"})
        for _ in range(2):  # the same total before and after version 4 retires
            points = otel_points(reader)["flagstone.evaluations"]
            assert [
                (attributes.get("feature_flag.version"), value) for attributes, value in points
            ] == [(None, 2)]
    finally:
        provider.shutdown()


def test_otel_evaluation_events_are_sampled_log_records(tmp_path: Path) -> None:
    exporter = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    try:
        every = Telemetry(on_evaluation=EvaluationEvents(logs), evaluation_sample_rate=1.0)
        client = client_for(tmp_path, telemetry=every)
        client.bool_value("beta", {"key": "user-1"})
        client.bool_value("gone", {"key": "user-1"})
        records = [finished.log_record for finished in exporter.get_finished_logs()]
        assert [record.event_name for record in records] == ["feature_flag.evaluation"] * 2
        assert dict(records[0].attributes or {}) == {
            "feature_flag.key": "beta",
            "feature_flag.result.variant": "on",
            "feature_flag.result.reason": "targeting_match",
            "feature_flag.provider.name": "flagstone",
            "feature_flag.set.id": "acme-shop/production",
            "feature_flag.version": "4",
            "feature_flag.context.id": "user-1",
        }
        assert dict(records[1].attributes or {})["error.type"] == "flag_not_found"

        exporter.clear()
        none = Telemetry(on_evaluation=EvaluationEvents(logs), evaluation_sample_rate=0.0)
        (tmp_path / "quiet").mkdir()
        quiet = client_for(tmp_path / "quiet", telemetry=none)
        for _ in range(50):
            quiet.bool_value("beta", {"key": "user-1"})
        assert exporter.get_finished_logs() == ()
        assert none.evaluation_counts() == {("beta", "on", "TARGETING_MATCH"): 50}

        exporter.clear()
        some = Telemetry(on_evaluation=EvaluationEvents(logs), evaluation_sample_rate=0.25)
        (tmp_path / "some").mkdir()
        sampled = client_for(tmp_path / "some", telemetry=some)
        for _ in range(2000):
            sampled.bool_value("beta", {"key": "user-1"})
        emitted = len(exporter.get_finished_logs())
        assert 300 < emitted < 700  # 500 expected; the bounds are > 10 standard deviations
    finally:
        logs.shutdown()


def test_exporters_refuse_a_client_that_counts_nothing(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    with pytest.raises(UsageError, match="telemetry=True"):
        register_metrics(client, meter_provider=MeterProvider())
    with pytest.raises(UsageError, match="telemetry=True"):
        FlagstoneCollector(client)


# --------------------------------------------------------------------------- Prometheus


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_prometheus_collector_reads_the_client_at_scrape_time(tmp_path: Path) -> None:
    client = client_for(tmp_path, telemetry=True, poll_interval=None)
    registry = CollectorRegistry()
    registry.register(FlagstoneCollector(client, clock=lambda: NOW))
    evaluate_some(client)
    samples = scrape(registry)
    env = ("environment", "production")

    def evaluations(flag: str, variation: str, reason: str) -> float:
        labels = tuple(sorted([("flag", flag), ("variation", variation), ("reason", reason), env]))
        return samples[("flagstone_evaluations_total", labels)]

    assert evaluations("beta", "on", "TARGETING_MATCH") == 3
    assert evaluations("beta", "off", "DEFAULT") == 1
    assert evaluations("gone", "", "ERROR") == 1
    assert samples[("flagstone_snapshot_version", (env,))] == 4
    assert samples[("flagstone_snapshot_age_seconds", (env,))] == 2 * DAY
    status = {
        labels[1][1]: value
        for (name, labels), value in samples.items()
        if name == "flagstone_client_status"
    }
    assert status == {"NOT_READY": 0, "READY": 1, "STALE": 0, "ERROR": 0}
    assert samples[("flagstone_fetches_total", (env, ("outcome", "accepted")))] == 1

    # A tampered snapshot: rejected, counted, status ERROR — read at the next scrape.
    (tmp_path / "latest.json").write_bytes(
        sign(make_payload(5, FLAGS), KEY).replace(b'"payloadType"', b'"payloadtype"')
    )
    assert client.refresh() is False
    client.bool_value("beta", {"key": "user-1"})
    samples = scrape(registry)
    assert samples[("flagstone_snapshot_rejections_total", (env,))] == 1
    assert samples[("flagstone_fetches_total", (env, ("outcome", "rejected")))] == 1
    assert samples[("flagstone_client_status", (env, ("status", "ERROR")))] == 1
    assert evaluations("beta", "on", "TARGETING_MATCH") == 4  # this scrape's samples
