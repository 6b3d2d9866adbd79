"""``flagstone usage`` without a Prometheus of its own (the end-to-end run against the
real server is in test_telemetry_prometheus.py): the judgement on synthetic counts, the
URL's precedence, and every way the server can misbehave (refused, not Prometheus, an
error answer, stalled) ending in one line and an exit code, never a hang or traceback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flagstone.cli.main import main
from flagstone.errors import UsageError
from flagstone.usage import (
    MISSING_BUCKETING_ATTRIBUTE,
    SHARE_MISMATCH,
    STALE,
    UNKNOWN_FLAG,
    prometheus_url,
    read_usage_report,
    render_markdown,
    render_text,
    usage_report,
)
from flagstone.validate import load_valid_project
from prometheus_support import free_port

ROOT = Path(__file__).resolve().parent.parent
NOW = 1796000000.0  # 2026-11-30: new-checkout's scheduled "half" stage (2026-12-03) not yet


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return int(exited.value.code or 0), out, err


def kinds(report: Any, env: str, flag: str) -> list[str]:
    (usage,) = [u for u in report.flags if (u.environment, u.flag) == (env, flag)]
    return [finding.kind for finding in usage.findings]


def test_judgement_on_synthetic_counts() -> None:
    project = load_valid_project(ROOT)
    counts = {
        # A 50/50 split served 30/70: a share mismatch (a surplus of the first variation,
        # control, would instead point at contexts lacking the bucketing attribute).
        ("production", "pricing-page-test", "control", "SPLIT"): 300,
        ("production", "pricing-page-test", "treatment", "SPLIT"): 700,
        # The progression (stage beta, 1 %) mostly unbucketable: baseline by DEFAULT.
        ("production", "new-checkout", "off", "DEFAULT"): 900,
        ("production", "new-checkout", "off", "SPLIT"): 99,
        ("production", "new-checkout", "on", "SPLIT"): 1,
        # Code still asking for a flag the repository no longer has.
        ("production", "old-banner", "", "ERROR"): 12,
    }
    report = usage_report(
        project, counts, source="http://127.0.0.1:1", days=7, environments=["production"], now=NOW
    )
    assert kinds(report, "production", "pricing-page-test") == [SHARE_MISMATCH, SHARE_MISMATCH]
    assert kinds(report, "production", "new-checkout") == [MISSING_BUCKETING_ATTRIBUTE]
    assert kinds(report, "production", "old-banner") == [UNKNOWN_FLAG]
    assert kinds(report, "production", "holiday-banner") == [STALE]
    assert {u.environment for u in report.flags} == {"production"}
    # The same numbers within tolerance: no finding.
    fair = {
        ("production", "pricing-page-test", "control", "SPLIT"): 520,
        ("production", "pricing-page-test", "treatment", "SPLIT"): 480,
    }
    report = usage_report(project, fair, source="x", days=7, environments=["production"], now=NOW)
    assert kinds(report, "production", "pricing-page-test") == []
    with pytest.raises(UsageError, match="unknown environment"):
        usage_report(project, fair, source="x", days=7, environments=["prod"], now=NOW)


def test_names_from_prometheus_are_escaped_in_text_and_markdown() -> None:
    project = load_valid_project(ROOT)
    hostile = "x\x1b[31m|<b>**y**"
    report = usage_report(
        project,
        {("production", hostile, "", "ERROR"): 3},
        source="http://127.0.0.1:1",
        days=7,
        environments=["production"],
        now=NOW,
    )
    text = render_text(report)
    assert "\x1b" not in text and "\\x1b[31m" in text
    markdown = render_markdown(report)
    assert "\\|&lt;b&gt;\\*\\*y\\*\\*" in markdown and "|<b>" not in markdown


def test_the_url_comes_from_the_option_then_the_environment_then_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = load_valid_project(ROOT)
    monkeypatch.delenv("FLAGSTONE_PROMETHEUS_URL", raising=False)
    with pytest.raises(UsageError, match="no Prometheus URL"):
        prometheus_url(project)
    assert project.config is not None
    monkeypatch.setitem(project.config.data, "telemetry", {"prometheus_url": "http://file:9090/"})
    assert prometheus_url(project) == "http://file:9090"
    monkeypatch.setenv("FLAGSTONE_PROMETHEUS_URL", "http://env:9090")
    assert prometheus_url(project) == "http://env:9090"
    assert prometheus_url(project, "https://option") == "https://option"
    with pytest.raises(UsageError, match="http"):
        prometheus_url(project, "file:///etc/passwd")
    # Without any of those: the one Prometheus the metric gates use.
    monkeypatch.delenv("FLAGSTONE_PROMETHEUS_URL")
    monkeypatch.delitem(project.config.data, "telemetry")
    gates = {"main": {"provider": "prometheus", "url": "http://gates:9090", "url_env": "GATES"}}
    monkeypatch.setitem(project.config.data, "metric_sources", gates)
    monkeypatch.delenv("GATES", raising=False)
    assert prometheus_url(project) == "http://gates:9090"
    monkeypatch.setenv("GATES", "http://gates-env:9090")
    assert prometheus_url(project) == "http://gates-env:9090"
    two = {**gates, "other": {"provider": "prometheus", "url": "http://b:9090"}}
    monkeypatch.setitem(project.config.data, "metric_sources", two)
    with pytest.raises(UsageError, match="no Prometheus URL"):
        prometheus_url(project)


class _Misbehaving(BaseHTTPRequestHandler):
    mode = "html"
    release = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.mode == "stall":
            self.release.wait(30)
            return
        if self.mode == "error":
            status, body = (
                400,
                json.dumps(
                    {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
                ).encode(),
            )
        elif self.mode == "matrix":
            status, body = (
                200,
                json.dumps(
                    {"status": "success", "data": {"resultType": "matrix", "result": []}}
                ).encode(),
            )
        else:
            status, body = 200, b"<html>a login page</html>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def misbehaving() -> Iterator[tuple[str, type[_Misbehaving]]]:
    handler = type("Handler", (_Misbehaving,), {"release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("html", "did not answer JSON"),
        ("error", "refused the query: parse error at char 3"),
        ("matrix", "did not answer a vector"),
        ("stall", "cannot reach Prometheus"),
    ],
)
def test_a_misbehaving_server_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
    misbehaving: tuple[str, type[_Misbehaving]],
    mode: str,
    message: str,
) -> None:
    url, handler = misbehaving
    handler.mode = mode
    code, out, err = run(
        capsys, "usage", "--repo", str(ROOT), "--prometheus", url, "--timeout", "0.5"
    )
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_refused_connection_and_missing_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAGSTONE_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    code, out, err = run(capsys, "usage", "--repo", str(ROOT))
    assert out == "" and code == 1 and "cannot reach Prometheus" in err
    monkeypatch.delenv("FLAGSTONE_PROMETHEUS_URL")
    code, out, err = run(capsys, "usage", "--repo", str(ROOT))
    assert out == "" and code == 2 and "no Prometheus URL" in err
    code, out, err = run(
        capsys, "usage", "--repo", str(ROOT), "--prometheus", "http://127.0.0.1:1", "--env", "qa"
    )
    assert out == "" and code == 2 and "unknown environment 'qa'" in err


def test_a_bad_saved_report_names_the_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "usage.json"
    bad.write_text('{"format": "flagstone.usage/1",\n "flags": [}')
    code, out, err = run(capsys, "lint", "--repo", str(ROOT), "--usage", str(bad))
    assert code == 2 and f"{bad}:2:12: invalid JSON" in err
    bad.write_text('{"format": "something-else"}')
    code, out, err = run(capsys, "lint", "--repo", str(ROOT), "--usage", str(bad))
    assert out == "" and code == 2 and "not a usage report" in err
    code, out, err = run(capsys, "lint", "--repo", str(ROOT), "--usage", str(tmp_path / "no"))
    assert out == "" and code == 2 and "cannot read" in err
    with pytest.raises(UsageError, match="flags\\[0\\]"):
        read_usage_report('{"format": "flagstone.usage/1", "flags": [3]}', "f.json")
