"""Where gate metrics come from: a small provider interface and its first provider,
Prometheus's HTTP API (``GET /api/v1/query``, an instant query at a given time).

A provider answers one expression with one number, or ``None`` when there is no data
(an empty vector, or NaN such as a quantile over no samples). A query that returns
several series is refused: the template should aggregate (``sum(…)``), and silently
adding series up could mix environments or services. To add a provider, implement
``MetricProvider`` and register its constructor in ``PROVIDERS``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Protocol

from flagstone.errors import GateConfigError, MetricQueryError
from flagstone.gates.config import MetricSource

MAX_RESPONSE_BYTES = 1 << 20
DEFAULT_TIMEOUT = 10.0


class MetricProvider(Protocol):
    def query(self, expression: str, at: float) -> float | None:
        """The value of ``expression`` at epoch second ``at``; None when there is no data."""
        ...


class PrometheusProvider:
    """Prometheus (or anything that speaks its HTTP query API: Thanos, Mimir, VictoriaMetrics)."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise GateConfigError(f"a Prometheus URL is http(s)://host[:port][/path], not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expression: str, at: float) -> float | None:
        params = urllib.parse.urlencode({"query": expression, "time": f"{at:.3f}"})
        request = urllib.request.Request(
            f"{self.url}/api/v1/query",
            data=params.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        outcome: list[bytes | BaseException] = []

        def fetch() -> None:
            try:
                outcome.append(self._read(request, expression))
            except BaseException as error:  # handed to the caller's thread
                outcome.append(error)

        # One deadline for the whole request (connect, headers, body): urllib's timeout is
        # per socket operation, which a server trickling bytes never trips.
        worker = threading.Thread(target=fetch, name="flagstone-metric-query", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if not outcome:
            raise MetricQueryError(
                f"Prometheus at {self.url} did not answer within {self.timeout:g}s"
            )
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return _single_value(result, expression, self.url)

    def _read(self, request: urllib.request.Request, expression: str) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            detail = _error_text(error.read(MAX_RESPONSE_BYTES))
            raise MetricQueryError(
                f"Prometheus at {self.url} refused the query ({error.code}): {detail}; query: {expression}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise MetricQueryError(f"Prometheus at {self.url} is unreachable: {reason}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise MetricQueryError(f"Prometheus at {self.url} answered more than 1 MiB")
        return body


def _error_text(body: bytes) -> str:
    try:
        answer = json.loads(body)
        return str(answer.get("error") or answer.get("status") or "no detail")[:300]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace").replace("\n", " ")


def _number(sample: object, expression: str) -> float | None:
    if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[1], str):
        raise MetricQueryError(f"Prometheus answered a malformed sample for {expression}")
    try:
        value = float(sample[1])
    except ValueError:
        raise MetricQueryError(f"Prometheus answered {sample[1]!r}, not a number") from None
    return value if math.isfinite(value) else None


def _single_value(body: bytes, expression: str, url: str) -> float | None:
    try:
        answer = json.loads(body)
    except ValueError:
        raise MetricQueryError(f"Prometheus at {url} answered something that is not JSON") from None
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise MetricQueryError(f"Prometheus at {url} refused the query: {_error_text(body)}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise MetricQueryError("Prometheus answered without data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result, expression)
    if kind != "vector" or not isinstance(result, list):
        raise MetricQueryError(f"the query answered a {kind}, not one number: {expression}")
    if not result:
        return None
    if len(result) > 1:
        raise MetricQueryError(
            f"the query answered {len(result)} series, not one: aggregate it with sum(…): {expression}"
        )
    series = result[0]
    return _number(series.get("value") if isinstance(series, dict) else None, expression)


PROVIDERS: dict[str, Callable[[str], MetricProvider]] = {"prometheus": PrometheusProvider}


def provider_for(source: MetricSource, environ: Mapping[str, str] | None = None) -> MetricProvider:
    """The provider of ``source``; its URL from ``url_env`` (when set there) or ``url``."""
    environ = os.environ if environ is None else environ
    url = environ.get(source.url_env) if source.url_env else None
    url = url or source.url
    if not url:
        where = f"${source.url_env}" if source.url_env else "url"
        raise GateConfigError(
            f"metric source {source.name!r} has no URL",
            hint=f"set {where} (metric_sources.{source.name} in flagstone.yaml)",
        )
    try:
        make = PROVIDERS[source.provider]
    except KeyError:
        raise GateConfigError(
            f"metric source {source.name!r}: unknown provider {source.provider!r}"
        ) from None
    return make(url)
