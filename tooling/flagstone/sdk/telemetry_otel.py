"""OpenTelemetry metrics and events for a Flagstone client (extra ``otel``).

::

    from flagstone.sdk.telemetry import ExposureTracker, Telemetry
    from flagstone.sdk.telemetry_otel import EvaluationEvents, ExposureLogSink, register_metrics

    telemetry = Telemetry(
        on_evaluation=EvaluationEvents(),      # sampled feature_flag.evaluation events
        evaluation_sample_rate=0.01,
        exposures=ExposureTracker(ExposureLogSink()),
    )
    client = Client(..., project="acme-shop", telemetry=telemetry)
    register_metrics(client)                   # observable instruments, read at collection

Only ``opentelemetry-api`` is imported; the application configures the SDK (providers,
readers, exporters) as usual, or passes ``meter_provider`` / ``logger_provider``.

Attribute names follow OpenTelemetry's feature-flag semantic conventions and
OpenFeature's observability appendix: ``feature_flag.key``,
``feature_flag.result.variant``, ``feature_flag.result.reason`` (the conventions'
lower-case form: ``targeting_match``, ``split``, ``default``, ``disabled``, ``error``,
and Flagstone's ``prerequisite_failed``), ``feature_flag.provider.name`` (``flagstone``),
``feature_flag.set.id`` (``<project>/<environment>``), ``feature_flag.version`` (the
snapshot version), ``feature_flag.context.id`` (the targeting key or bucketing value)
and ``error.type`` for failed evaluations.

Metrics (observable instruments: the evaluation path records nothing into
OpenTelemetry, the callbacks read the client's counters at each collection). The
conventions define no feature-flag metric, so the names are Flagstone's own:

* ``flagstone.evaluations`` — observable counter, attributes key, variant, reason,
  provider name, set id and ``feature_flag.version``: one series per snapshot version
  served. A version no longer served keeps being reported, with its final count, for
  the telemetry's ``version_retention`` (default 10 minutes) once no evaluation can
  still count into it, then is no longer reported (retired; see
  ``flagstone.sdk.telemetry.EvaluationCounts``). ``register_metrics(...,
  by_version=False)`` reports totals over every version instead (no version attribute);
* ``flagstone.snapshot.version`` and ``flagstone.snapshot.age`` (seconds) — observable
  gauges with provider name, set id and ``feature_flag.version``.

Events, through the OpenTelemetry logs API (``Logger.emit`` with ``event_name``):
``feature_flag.evaluation`` for a sample of evaluations (:class:`EvaluationEvents`,
rate set by ``Telemetry(evaluation_sample_rate=…)``), and ``flagstone.exposure`` for
exposures (:class:`ExposureLogSink`, sent from the exposure worker thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flagstone.sdk.extras import require_extra

with require_extra("otel", "opentelemetry"):
    from opentelemetry import metrics
    from opentelemetry._logs import LoggerProvider, get_logger
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from flagstone.engine import ERROR, Details, Snapshot
from flagstone.errors import UsageError
from flagstone.sdk.client import Client
from flagstone.sdk.telemetry import ExposureEvent, age_seconds

PROVIDER_NAME = "flagstone"
INSTRUMENTATION_SCOPE = "flagstone.sdk"
EVALUATION_EVENT = "feature_flag.evaluation"
EXPOSURE_EVENT = "flagstone.exposure"

KEY = "feature_flag.key"
VARIANT = "feature_flag.result.variant"
REASON = "feature_flag.result.reason"
PROVIDER = "feature_flag.provider.name"
SET_ID = "feature_flag.set.id"
VERSION = "feature_flag.version"
CONTEXT_ID = "feature_flag.context.id"
ERROR_TYPE = "error.type"


def otel_reason(reason: str) -> str:
    """The semantic conventions' lower-case reason (``TARGETING_MATCH`` → ``targeting_match``)."""
    return reason.lower()


def set_id(project: str, environment: str) -> str:
    return f"{project}/{environment}"


def register_metrics(
    client: Client,
    *,
    meter_provider: MeterProvider | None = None,
    clock: Callable[[], float] = time.time,
    by_version: bool = True,
) -> None:
    """Create the observable instruments for ``client`` (see the module doc).
    ``by_version``: ``flagstone.evaluations`` per snapshot version, with
    ``feature_flag.version``; False: totals over every version, without it."""
    telemetry = client.telemetry
    if telemetry is None:
        raise UsageError("this client counts nothing: make it with Client(..., telemetry=True)")
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(INSTRUMENTATION_SCOPE)
    environment = client.environment

    def common() -> dict[str, str]:
        snapshot = client.snapshot
        project = snapshot.project if snapshot is not None else ""
        return {PROVIDER: PROVIDER_NAME, SET_ID: set_id(project, environment)}

    def observe_evaluations(_options: CallbackOptions) -> Iterable[Observation]:
        shared = common()
        if not by_version:
            for (flag, variation, reason), count in telemetry.evaluation_counts().items():
                yield Observation(count, _attributes(shared, flag, variation, reason))
            return
        counts = telemetry.evaluation_counts_by_version()
        for (flag, variation, reason, version), count in counts.items():
            attributes = _attributes(shared, flag, variation, reason)
            attributes[VERSION] = str(version)
            yield Observation(count, attributes)

    def observe_version(_options: CallbackOptions) -> Iterable[Observation]:
        snapshot = client.snapshot
        if snapshot is not None:
            yield Observation(snapshot.version, {**common(), VERSION: str(snapshot.version)})

    def observe_age(_options: CallbackOptions) -> Iterable[Observation]:
        snapshot = client.snapshot
        if snapshot is not None:
            seconds = age_seconds(snapshot, clock())
            if seconds is not None:
                yield Observation(seconds, {**common(), VERSION: str(snapshot.version)})

    meter.create_observable_counter(
        "flagstone.evaluations",
        callbacks=[observe_evaluations],
        unit="{evaluation}",
        description="Flag evaluations by flag, variant, reason and snapshot version.",
    )
    meter.create_observable_gauge(
        "flagstone.snapshot.version",
        callbacks=[observe_version],
        description="Version of the snapshot being served.",
    )
    meter.create_observable_gauge(
        "flagstone.snapshot.age",
        callbacks=[observe_age],
        unit="s",
        description="Seconds since the snapshot being served was published.",
    )


def _attributes(
    shared: dict[str, str], flag: str, variation: str | None, reason: str
) -> dict[str, str]:
    attributes = {**shared, KEY: flag, REASON: otel_reason(reason)}
    if variation is not None:
        attributes[VARIANT] = variation
    return attributes


def _context_id(context: Any) -> str | None:
    key = context.get("key") if hasattr(context, "get") else None
    return key if isinstance(key, str) else None


class EvaluationEvents:
    """An evaluation listener emitting ``feature_flag.evaluation`` events (give it to
    ``Telemetry(on_evaluation=…)``; the telemetry samples which evaluations reach it)."""

    def __init__(self, logger_provider: LoggerProvider | None = None) -> None:
        self._logger = get_logger(INSTRUMENTATION_SCOPE, logger_provider=logger_provider)

    def __call__(self, flag_key: str, context: Any, details: Details, snapshot: Snapshot) -> None:
        attributes: dict[str, Any] = {
            KEY: flag_key,
            REASON: otel_reason(details.reason),
            PROVIDER: PROVIDER_NAME,
            SET_ID: set_id(snapshot.project, snapshot.environment),
            VERSION: str(details.version),
        }
        if details.variation is not None:
            attributes[VARIANT] = details.variation
        if details.reason == ERROR and details.error_code is not None:
            attributes[ERROR_TYPE] = details.error_code.lower()
        context_id = _context_id(context)
        if context_id is not None:
            attributes[CONTEXT_ID] = context_id
        self._logger.emit(event_name=EVALUATION_EVENT, attributes=attributes)


class ExposureLogSink:
    """An exposure sink emitting ``flagstone.exposure`` events through the logs API."""

    def __init__(self, logger_provider: LoggerProvider | None = None) -> None:
        self._logger = get_logger(INSTRUMENTATION_SCOPE, logger_provider=logger_provider)

    def __call__(self, event: ExposureEvent) -> None:
        self._logger.emit(
            event_name=EXPOSURE_EVENT,
            timestamp=int(event.time * 1e9),
            attributes={
                KEY: event.flag,
                VARIANT: event.variation,
                CONTEXT_ID: event.bucketing_value,
                PROVIDER: PROVIDER_NAME,
                VERSION: str(event.snapshot_version),
                "flagstone.environment": event.environment,
                "flagstone.bucket_by": event.bucket_by,
            },
        )
