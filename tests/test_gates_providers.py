"""The Prometheus metric provider against loopback servers that misbehave: slow,
lying, malformed or refusing. Each answer is a number, "no data", or a one-line
``MetricQueryError``; never a hang past the deadline and never a traceback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flagstone.errors import GateConfigError, MetricQueryError
from flagstone.gates.config import MetricSource, render_query
from flagstone.gates.providers import PrometheusProvider, provider_for

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def _answer(body: bytes, status: int = 200) -> Behaviour:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return send


def _vector(*values: str) -> bytes:
    result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(40):  # bounded: 40 bytes over 12 s at most
        try:
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.3)


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(behaviour: Behaviour) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                behaviour(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_one_series_is_its_number(serve: Callable[[Behaviour], str]) -> None:
    provider = PrometheusProvider(serve(_answer(_vector("42.5"))))
    assert provider.query("sum(x)", time.time()) == 42.5


def test_an_empty_vector_and_nan_are_no_data(serve: Callable[[Behaviour], str]) -> None:
    assert PrometheusProvider(serve(_answer(_vector()))).query("sum(x)", 0) is None
    assert PrometheusProvider(serve(_answer(_vector("NaN")))).query("sum(x)", 0) is None


def test_a_scalar_answer_is_a_number(serve: Callable[[Behaviour], str]) -> None:
    body = json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}})
    assert PrometheusProvider(serve(_answer(body.encode()))).query("3", 0) == 3.0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_vector("1", "2"), 200, "2 series, not one: aggregate it with sum"),
        (b"<html>proxy error</html>", 200, "not JSON"),
        (
            json.dumps({"status": "error", "error": "parse error at char 4"}).encode(),
            400,
            "refused the query (400): parse error at char 4",
        ),
        (_vector("many"), 200, "'many', not a number"),
        (
            json.dumps(
                {"status": "success", "data": {"resultType": "matrix", "result": []}}
            ).encode(),
            200,
            "a matrix, not one number",
        ),
    ],
)
def test_nonsense_is_a_one_line_error(
    serve: Callable[[Behaviour], str], body: bytes, status: int, words: str
) -> None:
    provider = PrometheusProvider(serve(_answer(body, status)))
    with pytest.raises(MetricQueryError) as raised:
        provider.query("sum(x)", 0)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_trickling_server_fails_within_the_deadline(serve: Callable[[Behaviour], str]) -> None:
    provider = PrometheusProvider(serve(_trickle), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(MetricQueryError, match="did not answer within 1s"):
        provider.query("sum(x)", 0)
    assert time.monotonic() - started < 5  # one deadline, not one per byte


def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MetricQueryError, match="unreachable"):
        PrometheusProvider(f"http://127.0.0.1:{port}").query("sum(x)", 0)


def test_an_oversized_answer_is_refused(serve: Callable[[Behaviour], str]) -> None:
    provider = PrometheusProvider(serve(_answer(b" " * (2 << 20))))
    with pytest.raises(MetricQueryError, match="more than 1 MiB"):
        provider.query("sum(x)", 0)


def test_the_url_comes_from_the_environment_first() -> None:
    source = MetricSource("prom", "prometheus", "http://127.0.0.1:1", "PROM_URL")
    provider = provider_for(source, {"PROM_URL": "http://127.0.0.1:2/prom/"})
    assert isinstance(provider, PrometheusProvider) and provider.url == "http://127.0.0.1:2/prom"
    with pytest.raises(GateConfigError, match=r"has no URL"):
        provider_for(MetricSource("prom", "prometheus", None, "PROM_URL"), {})
    with pytest.raises(GateConfigError, match="http"):
        provider_for(MetricSource("prom", "prometheus", "file:///etc/passwd", None), {})


def test_placeholders_fill_only_their_own_tokens() -> None:
    template = 'sum(increase(x{flag="{flag}",variant="{variation}",env="{environment}"}[{window}]))'
    query = render_query(template, flag="a.b", variation="on", environment="prod", window=5400.7)
    assert query == 'sum(increase(x{flag="a.b",variant="on",env="prod"}[5400s]))'
    # Values are escaped for a PromQL string even though the schemas restrict them.
    hostile = render_query(
        'x{v="{variation}"}', flag="f", variation='a"}or vector(1)#', environment="e", window=1
    )
    assert hostile == 'x{v="a\\"}or vector(1)#"}'
