"""A small service that exposes Flagstone's metrics and labels its own request metrics
with the variation each request got (docs/readme/telemetry.md).

    python docs/examples/telemetry_service.py dist/production/latest.json \\
        --keyid 2694f2… --public 7ec42b… --project acme-shop --port 8000
    curl 'http://127.0.0.1:8000/checkout?user=user-1&account=acct-1'
    curl http://127.0.0.1:8000/metrics

``GET /checkout`` evaluates ``new-checkout`` and ``pricing-page-test`` for the caller and
counts the request in ``shop_requests_total`` and ``shop_request_seconds``, labelled
``feature_flag_key`` / ``feature_flag_variant`` (one observation per flag), so a query
can compare the variations of one flag::

    sum by (feature_flag_variant) (rate(shop_requests_total{feature_flag_key="new-checkout"}[5m]))

``GET /metrics`` is the Prometheus text format: the service's metrics and Flagstone's
(``flagstone_evaluations_total``, ``flagstone_snapshot_version``, …).
"""

from __future__ import annotations

import argparse
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from flagstone.sdk import Client
from flagstone.sdk.telemetry import FLAG_LABEL, VARIANT_LABEL
from flagstone.sdk.telemetry_prometheus import FlagstoneCollector

# The flags whose variations label this service's request metrics.
LABELLED_FLAGS = ["new-checkout", "pricing-page-test"]


class CheckoutService:
    """The service's logic and metrics, separate from the HTTP plumbing."""

    def __init__(self, client: Client, registry: CollectorRegistry | None = None) -> None:
        self.client = client
        self.registry = registry or CollectorRegistry()
        self.registry.register(FlagstoneCollector(client))
        self.requests = Counter(
            "shop_requests",
            "Requests by the variation of each labelled flag and the status code.",
            [FLAG_LABEL, VARIANT_LABEL, "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shop_request_seconds",
            "Request latency by the variation of each labelled flag.",
            [FLAG_LABEL, VARIANT_LABEL],
            registry=self.registry,
        )

    def checkout(self, user: str, account: str | None) -> tuple[int, str]:
        started = time.perf_counter()
        context: dict[str, Any] = {"key": user}
        if account is not None:
            context["account_id"] = account
        new_flow = self.client.bool_value("new-checkout", context, False)
        layout = self.client.string_value("pricing-page-test", context, "two-column")
        code, body = 200, f"checkout {'v2' if new_flow else 'v1'}, pricing {layout}\n"
        elapsed = time.perf_counter() - started
        # One observation per flag: selecting one feature_flag_key counts each request once.
        for labels in self.client.variation_labels(context, flags=LABELLED_FLAGS):
            self.requests.labels(**labels, code=str(code)).inc()
            self.latency.labels(**labels).observe(elapsed)
        return code, body

    def metrics(self) -> bytes:
        return generate_latest(self.registry)


def handler_for(service: CheckoutService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path == "/metrics":
                self.answer(200, service.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            elif url.path == "/checkout" and "user" in query:
                account = query.get("account", [None])[0]
                code, body = service.checkout(query["user"][0], account)
                self.answer(code, body.encode(), "text/plain; charset=utf-8")
            else:
                self.answer(404, b"not found\n", "text/plain; charset=utf-8")

        def answer(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve(service: CheckoutService, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``service`` on 127.0.0.1 (not started: call serve_forever)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(service))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", help="a signed snapshot: path or URL (as Client takes)")
    parser.add_argument("--environment", default="production")
    parser.add_argument("--project", required=True)
    parser.add_argument("--keyid", required=True)
    parser.add_argument("--public", required=True)
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args(argv)
    client = Client(
        options.snapshot,
        environment=options.environment,
        project=options.project,
        trusted_keys=[{"keyid": options.keyid, "public": options.public}],
        telemetry=True,
    )
    server = serve(CheckoutService(client), options.port)
    print(f"serving on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        client.close()


if __name__ == "__main__":
    main()
