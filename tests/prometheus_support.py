"""A real Prometheus server for tests: the ``prometheus`` binary (Debian package
``prometheus``) on a loopback port, with a temporary configuration and data folder.

Generic: it scrapes whatever loopback targets a test gives it. Usage::

    from prometheus_support import PrometheusServer, prometheus_binary, start_prometheus

    binary = prometheus_binary()            # skips if missing; FAILS when env CI is set
    with start_prometheus(binary, ["127.0.0.1:8123"], tmp_path) as prometheus:
        prometheus.wait_for(lambda: prometheus.query('up{job="flagstone"}'), timeout=20)
        prometheus.query("sum(flagstone_evaluations_total)")   # the HTTP API's result list

Or, from a test module, the module-scoped fixture ``prometheus_launcher``: a function
``launch(targets)`` that starts a server and returns it; every server it started is
stopped when the module ends::

    pytest_plugins = ["prometheus_support"]

    @pytest.fixture(scope="module")
    def prometheus(prometheus_launcher, my_service):
        return prometheus_launcher([my_service.target])

Start one server per test module and keep the scrape interval short (default 1 s): each
start costs about a second. The process is stopped (SIGTERM, then SIGKILL after 10 s)
when the ``with`` block ends, whatever happened inside.

:class:`MetricsService` is a loopback HTTP server whose ``/metrics`` answers with a
prometheus-client registry, for the process under test to expose its metrics on.

This module has no assertions of its own: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

DEFAULT_BINARY = "/usr/bin/prometheus"


def prometheus_binary() -> str:
    """The path of the ``prometheus`` binary; skips the test if there is none, except
    where the environment variable CI is set, where a missing binary fails the run."""
    found = shutil.which("prometheus") or (
        DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None
    )
    if found is None:
        message = "the prometheus binary is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrometheusServer:
    """A running Prometheus; ``url`` is its loopback HTTP address."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raises AssertionError on an error."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus answered {body!r}")
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result list (``[{"metric": {…}, "value": [t, "v"]}, …]``)."""
        data = self.api("query", query=expression)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``predicate`` until it returns something true; that value, or the last
        falsy one after ``timeout`` seconds (never a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() >= deadline:
                return value
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def write_config(
    path: Path, targets: Sequence[str], *, job: str, scrape_interval: str, metrics_path: str
) -> None:
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    # JSON is YAML: no YAML writer needed.
    path.write_text(json.dumps(config, indent=2))


@contextmanager
def start_prometheus(
    binary: str,
    targets: Sequence[str],
    directory: Path,
    *,
    job: str = "flagstone",
    scrape_interval: str = "1s",
    metrics_path: str = "/metrics",
    start_timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Run Prometheus scraping ``targets`` (``host:port`` on loopback) until the block ends."""
    for target in targets:
        host = target.rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ValueError(f"tests scrape loopback targets only, not {target!r}")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    write_config(
        config, targets, job=job, scrape_interval=scrape_interval, metrics_path=metrics_path
    )
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + start_timeout
        while not server.ready():
            if process.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(
                    f"prometheus did not start (exit {process.poll()}): "
                    + log.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def prometheus_launcher(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """``launch(targets, **options)`` → a running :class:`PrometheusServer` (options as
    :func:`start_prometheus` takes); all are stopped at the end of the module. Skips (or
    fails where CI is set) when the binary is missing."""
    binary = prometheus_binary()
    with ExitStack() as stack:

        def launch(targets: Sequence[str], **options: Any) -> PrometheusServer:
            directory = tmp_path_factory.mktemp("prometheus")
            return stack.enter_context(start_prometheus(binary, targets, directory, **options))

        yield launch


class MetricsService:
    """A loopback HTTP server: ``/metrics`` renders ``render()`` (the Prometheus text
    format), any other path calls ``handle(path)`` → (status, body)."""

    def __init__(
        self,
        render: Callable[[], bytes],
        handle: Callable[[str], tuple[int, bytes]] | None = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    status, body = 200, outer.render()
                    kind = "text/plain; version=0.0.4; charset=utf-8"
                elif outer.handle is not None:
                    status, body = outer.handle(self.path)
                    kind = "text/plain; charset=utf-8"
                else:
                    status, body, kind = 404, b"not found\n", "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.render = render
        self.handle = handle
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
