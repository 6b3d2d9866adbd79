"""Prometheus metrics for a Flagstone client, read at scrape time (extra ``prometheus``).

::

    from prometheus_client import REGISTRY, start_http_server
    from flagstone.sdk.telemetry_prometheus import FlagstoneCollector

    client = Client(..., project="acme-shop", telemetry=True)
    REGISTRY.register(FlagstoneCollector(client))

A custom collector (prometheus-client's ``Collector``): nothing is recorded into
prometheus-client objects on the evaluation path; every scrape reads the client's
counters and state. Series (``environment`` is the client's):

* ``flagstone_evaluations_total{flag,variation,reason,environment}`` — counter;
  ``reason`` is the engine's (``SPLIT``, ``TARGETING_MATCH``, ``DEFAULT``, ``DISABLED``,
  ``PREREQUISITE_FAILED``, ``ERROR``); ``variation`` is empty for errors; totals over
  every snapshot version served, without a version label (a label would start new
  series at every publish; see docs/readme/telemetry.md);
* ``flagstone_snapshot_version{environment}`` — gauge, absent before the first snapshot;
* ``flagstone_snapshot_age_seconds{environment}`` — gauge, now − the snapshot's
  ``published_at``;
* ``flagstone_client_status{environment,status}`` — 1 for the current status
  (``NOT_READY``, ``READY``, ``STALE``, ``ERROR``), 0 for the others;
* ``flagstone_fetches_total{environment,outcome}`` — counter; ``outcome`` is
  ``accepted``, ``not_modified``, ``failed`` or ``rejected``;
* ``flagstone_snapshot_rejections_total{environment}`` — counter (also in the above,
  kept on its own for alerting).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from flagstone.sdk.extras import require_extra

with require_extra("prometheus", "prometheus_client"):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector

from flagstone.errors import UsageError
from flagstone.sdk.client import Client, Status
from flagstone.sdk.telemetry import NO_VARIANT, age_seconds


class FlagstoneCollector(Collector):
    """Exposes one client's telemetry (see the module doc); the client must have been
    made with ``telemetry=True`` (or a ``Telemetry``)."""

    def __init__(self, client: Client, *, clock: Callable[[], float] = time.time) -> None:
        if client.telemetry is None:
            raise UsageError("this client counts nothing: make it with Client(..., telemetry=True)")
        self.client = client
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        client = self.client
        telemetry = client.telemetry
        assert telemetry is not None
        environment = client.environment

        evaluations = CounterMetricFamily(
            "flagstone_evaluations",
            "Flag evaluations by flag, variation served and the engine's reason.",
            labels=["flag", "variation", "reason", "environment"],
        )
        for (flag, variation, reason), count in sorted(
            telemetry.evaluation_counts().items(), key=lambda item: repr(item[0])
        ):
            evaluations.add_metric(
                [flag, variation if variation is not None else NO_VARIANT, reason, environment],
                count,
            )
        yield evaluations

        snapshot = client.snapshot
        version = GaugeMetricFamily(
            "flagstone_snapshot_version",
            "Version of the snapshot being served.",
            labels=["environment"],
        )
        age = GaugeMetricFamily(
            "flagstone_snapshot_age_seconds",
            "Seconds since the snapshot being served was published.",
            labels=["environment"],
        )
        if snapshot is not None:
            version.add_metric([environment], snapshot.version)
            seconds = age_seconds(snapshot, self._clock())
            if seconds is not None:
                age.add_metric([environment], seconds)
        yield version
        yield age

        status = client.status
        statuses = GaugeMetricFamily(
            "flagstone_client_status",
            "1 for the client's current status, 0 for the others.",
            labels=["environment", "status"],
        )
        for candidate in Status:
            statuses.add_metric([environment, candidate.value], 1 if candidate == status else 0)
        yield statuses

        stats = client.source_stats
        fetches = CounterMetricFamily(
            "flagstone_fetches",
            "Reads of the snapshot source by outcome.",
            labels=["environment", "outcome"],
        )
        fetches.add_metric([environment, "accepted"], stats.accepted)
        fetches.add_metric([environment, "not_modified"], stats.not_modified)
        fetches.add_metric([environment, "failed"], stats.fetch_failures)
        fetches.add_metric([environment, "rejected"], stats.rejections)
        yield fetches
        rejections = CounterMetricFamily(
            "flagstone_snapshot_rejections",
            "Snapshots refused (signature, replay, wrong environment, expiry, …).",
            labels=["environment"],
        )
        rejections.add_metric([environment], stats.rejections)
        yield rejections

    def describe(self) -> Iterator[Metric]:
        """The metric names, without reading the client (for the registry's duplicate check)."""
        for name, kind in (
            ("flagstone_evaluations", CounterMetricFamily),
            ("flagstone_snapshot_version", GaugeMetricFamily),
            ("flagstone_snapshot_age_seconds", GaugeMetricFamily),
            ("flagstone_client_status", GaugeMetricFamily),
            ("flagstone_fetches", CounterMetricFamily),
            ("flagstone_snapshot_rejections", CounterMetricFamily),
        ):
            yield kind(name, "", labels=[])
