"""End to end against a real Prometheus (issue 14): the example service of
docs/examples/telemetry_service.py serves the repository's own production flags through
the SDK with the Prometheus exporter, a bounded load of real HTTP requests goes through
it, and the ``prometheus`` binary scrapes it every second. Then the counts Prometheus
stored are the SDK's, the request metrics select by flag and variant as the documented
PromQL template does, and ``flagstone usage`` reads the same server.

One Prometheus per module (started after the load, so every series is flat and the
numbers compare exactly). Skips without the binary unless CI is set."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flagstone.cli.main import main
from flagstone.compile import compile_environment
from flagstone.sdk import Client
from flagstone.validate import load_valid_project
from prometheus_support import PrometheusServer
from sdk_support import ENVIRONMENT, new_key, sign

pytest_plugins = ["prometheus_support"]

ROOT = Path(__file__).resolve().parent.parent
KEY = new_key()
REQUESTS = 200  # the bounded load: 200 requests, then it stops


def example_service() -> ModuleType:
    path = ROOT / "docs" / "examples" / "telemetry_service.py"
    spec = importlib.util.spec_from_file_location("telemetry_service_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Deployment:
    client: Client
    prometheus: PrometheusServer
    served: dict[tuple[str, str], int]  # (flag, variation) -> requests


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    prometheus_launcher: Callable[..., PrometheusServer],
) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("service")
    project = load_valid_project(ROOT)
    payload = compile_environment(
        project,
        ENVIRONMENT,
        version=3,
        published_at="2026-11-25T00:00:00Z",
        expires="2099-01-01T00:00:00Z",
    )
    snapshot = directory / "latest.json"
    snapshot.write_bytes(sign(payload, KEY))
    client = Client.from_file(
        snapshot,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=project.config.name if project.config else "",
        telemetry=True,
    )
    examples = example_service()
    service = examples.CheckoutService(client)
    server = examples.serve(service)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    served: dict[tuple[str, str], int] = {}
    try:
        for index in range(REQUESTS):
            # Half carry an account; the rest lack the pricing test's bucketing
            # attribute, as a client that forgot to send it would.
            query = f"user=user-{index}" + (f"&account=acct-{index}" if index % 2 else "")
            with urllib.request.urlopen(f"{base}/checkout?{query}", timeout=10) as answer:
                assert answer.status == 200
            context: dict[str, Any] = {"key": f"user-{index}"}
            if index % 2:
                context["account_id"] = f"acct-{index}"
            for labels in client.variation_labels(context, flags=examples.LABELLED_FLAGS):
                key = (labels["feature_flag_key"], labels["feature_flag_variant"])
                served[key] = served.get(key, 0) + 1
        prometheus = prometheus_launcher([f"127.0.0.1:{server.server_address[1]}"])
        scraped = prometheus.wait_for(
            lambda: prometheus.query('up{job="flagstone"} == 1'), timeout=30
        )
        assert scraped, prometheus.log.read_text(errors="replace")[-2000:]
        yield Deployment(client, prometheus, served)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        client.close()


def test_prometheus_stores_what_the_sdk_counted(deployment: Deployment) -> None:
    telemetry = deployment.client.telemetry
    assert telemetry is not None
    expected = {
        (flag, variation or "", reason): count
        for (flag, variation, reason), count in telemetry.evaluation_counts().items()
    }
    assert sum(expected.values()) == 2 * REQUESTS
    stored = {
        (
            sample["metric"]["flag"],
            sample["metric"].get("variation", ""),
            sample["metric"]["reason"],
        ): int(float(sample["value"][1]))
        for sample in deployment.prometheus.query(
            'flagstone_evaluations_total{environment="production"}'
        )
    }
    assert stored == expected
    version = deployment.prometheus.query("flagstone_snapshot_version")
    assert [sample["value"][1] for sample in version] == ["3"]
    ready = deployment.prometheus.query('flagstone_client_status{status="READY"}')
    assert [sample["value"][1] for sample in ready] == ["1"]


def test_request_metrics_select_by_flag_and_variant(deployment: Deployment) -> None:
    # The documented template: {flag} and {variation} filled in.
    template = (
        'sum(shop_requests_total{{feature_flag_key="{flag}",feature_flag_variant="{variation}"}})'
    )
    for (flag, variation), requests in deployment.served.items():
        result = deployment.prometheus.query(template.format(flag=flag, variation=variation))
        assert [int(float(sample["value"][1])) for sample in result] == [requests]
    # Selecting one flag counts every request exactly once.
    total = deployment.prometheus.query(
        'sum(shop_requests_total{feature_flag_key="pricing-page-test"})'
    )
    assert int(float(total[0]["value"][1])) == REQUESTS


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return int(exited.value.code or 0), out, err


def test_usage_reports_shares_missing_attributes_and_stale_flags(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = deployment.prometheus.url
    code, out, err = run(
        capsys, "usage", "--prometheus", url, "--repo", str(ROOT), "--format", "json"
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["format"] == "flagstone.usage/1" and report["days"] == 7
    entries = {(e["environment"], e["flag"]): e for e in report["flags"]}
    telemetry = deployment.client.telemetry
    assert telemetry is not None
    counted: dict[str, int] = {}
    for (flag, _variation, _reason), count in telemetry.evaluation_counts().items():
        counted[flag] = counted.get(flag, 0) + count
    for flag, count in counted.items():
        assert entries[("production", flag)]["evaluations"] == count

    pricing = entries[("production", "pricing-page-test")]
    assert pricing["intended"] == {"control": 0.5, "treatment": 0.5}
    assert pricing["bucket_by"] == "account_id"
    kinds = [finding["kind"] for finding in pricing["findings"]]
    assert kinds == ["missing-bucketing-attribute"]
    assert "'account_id'" in pricing["findings"][0]["message"]

    checkout = entries[("production", "new-checkout")]
    assert checkout["findings"] == []
    assert checkout["evaluations"] == REQUESTS

    # Enabled in production, never asked for by the service: stale candidates.
    stale = {
        flag
        for (env, flag), e in entries.items()
        if env == "production" and any(f["kind"] == "not-evaluated" for f in e["findings"])
    }
    assert "holiday-banner" in stale and "new-checkout" not in stale
    assert all(
        any(f["kind"] == "not-evaluated" for f in e["findings"]) or not e["enabled"]
        for (env, _flag), e in entries.items()
        if env == "staging"
    )

    saved = tmp_path / "usage.json"
    saved.write_text(out)
    code, out, err = run(
        capsys, "lint", "--repo", str(ROOT), "--usage", str(saved), "--format", "json"
    )
    found = json.loads(out)
    flagged = sorted(
        problem["message"].split("'")[1]
        for problem in found["problems"]
        if problem["rule"] == "unevaluated-flag" and "in production" in problem["message"]
    )
    assert "holiday-banner" in flagged and "pricing-page-test" not in flagged
    assert code == 0  # warnings

    for fmt in ("text", "markdown"):
        code, out, err = run(
            capsys,
            "usage",
            "--prometheus",
            url,
            "--repo",
            str(ROOT),
            "--format",
            fmt,
            "--env",
            "production",
        )
        assert code == 0 and "pricing-page-test" in out and "missing-bucketing-attribute" in out
        assert "staging" not in out
