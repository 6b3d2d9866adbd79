"""Slow or stuck storage never freezes the SDK (issue 12 item 1).

Real loopback servers that trickle, hang, never accept, lie about lengths and never
stop sending (tests/misbehaving_http.py); a FIFO where the snapshot file should be; an
S3 endpoint that trickles; a custom Source that blocks forever. Each fetch must end by
its deadline, the poller must record the failure and keep polling, and a kill switch
published once storage recovers must arrive.

The elapsed-time checks below are hang guards (generous multiples of the timeout), not
performance claims; benchmarks/stuck_source.py measures the time to notice.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.errors import EnvelopeError, StoreError
from flagstone.sdk import Client, Fetched, Status
from flagstone.sdk.sources import DEFAULT_MAX_BYTES, DeadlineFetcher, open_source
from misbehaving_http import MisbehavingServer, NeverAcceptingServer
from publish_helpers import make_repo
from sdk_support import (
    ENVIRONMENT,
    NOW,
    PROJECT,
    Clients,
    SnapshotHttpServer,
    managed_clients,
    new_key,
    serve_http,
    version_envelope,
    wait_for,
)

KEY = new_key()
TIMEOUT = 0.3
# A fetch must end within its timeout; this much more only guards against a hang.
HANG_GUARD = TIMEOUT + 3.0


@pytest.fixture
def clients() -> Iterator[Clients]:
    yield from managed_clients(KEY)


def _bounded_fetch(url: str, **options: object) -> tuple[BaseException | Fetched, float]:
    source = open_source(url, environment=ENVIRONMENT, timeout=TIMEOUT, **options)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        outcome: BaseException | Fetched = DeadlineFetcher(source, TIMEOUT).fetch(None)
    except (StoreError, EnvelopeError) as error:
        outcome = error
    return outcome, time.monotonic() - started


@pytest.mark.parametrize("behaviour", ["trickle-body", "trickle-headers", "hang-after-headers"])
def test_a_slow_or_silent_server_fails_the_fetch_by_its_deadline(behaviour: str) -> None:
    server = MisbehavingServer(behaviour, interval=0.1)
    try:
        outcome, elapsed = _bounded_fetch(server.url())
    finally:
        server.stop()
    assert isinstance(outcome, StoreError)
    assert "timed out after 0.3s" in outcome.message
    assert elapsed < HANG_GUARD
    if behaviour != "hang-after-headers":
        # It kept trickling well past the old per-read timeout, and was cut off.
        assert server.connections[0].sent >= 2


def test_a_server_that_never_accepts_fails_by_the_deadline() -> None:
    server = NeverAcceptingServer()
    try:
        outcome, elapsed = _bounded_fetch(server.url())
    finally:
        server.stop()
    assert isinstance(outcome, StoreError) and "timed out" in outcome.message
    assert elapsed < HANG_GUARD


def test_a_body_shorter_than_its_content_length_is_a_failed_fetch() -> None:
    with_body = MisbehavingServer("short-body", body=version_envelope(1, KEY))
    try:
        outcome, _ = _bounded_fetch(with_body.url())
    finally:
        with_body.stop()
    assert isinstance(outcome, StoreError)
    assert "ended before its Content-Length" in outcome.message


def test_an_endless_body_is_cut_at_the_cap() -> None:
    server = MisbehavingServer("endless-body")
    try:
        outcome, elapsed = _bounded_fetch(server.url(), max_bytes=1_000_000)
    finally:
        server.stop()
    assert isinstance(outcome, EnvelopeError) and "over the 1000000 byte cap" in outcome.message
    assert server.connections[0].sent < 50_000_000  # it stopped reading, not the server
    assert elapsed < HANG_GUARD


def test_a_trickling_s3_endpoint_fails_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    server = MisbehavingServer("trickle-body", interval=0.1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    try:
        outcome, elapsed = _bounded_fetch("s3://bucket/acme")
    finally:
        server.stop()
    assert isinstance(outcome, StoreError) and "timed out" in outcome.message
    assert elapsed < HANG_GUARD


def test_a_fifo_in_place_of_the_snapshot_file_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / ENVIRONMENT / "latest.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    outcome, elapsed = _bounded_fetch(str(tmp_path))
    assert isinstance(outcome, StoreError) and "not a regular file" in outcome.message
    assert elapsed < HANG_GUARD


class BlockingSource:
    """A custom Source whose fetch blocks until the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def describe(self) -> str:
        return "blocking-source"

    def fetch(self, if_none_match: str | None) -> Fetched:
        self.calls += 1
        self.release.wait(30)
        return Fetched(version_envelope(1, KEY), None)


def test_the_constructor_never_waits_past_its_timeout_for_any_source() -> None:
    source = BlockingSource()
    started = time.monotonic()
    client = Client(
        source,
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        poll_interval=None,
        timeout=TIMEOUT,
        clock=lambda: NOW,
    )
    try:
        assert time.monotonic() - started < HANG_GUARD
        assert client.status == Status.ERROR
        assert "blocking-source: timed out after 0.3s" in (client.last_error or "")
        # While that fetch is still stuck, a refresh fails at once instead of starting
        # a second thread on the same source.
        assert client.refresh() is False
        assert "still stuck" in (client.last_error or "")
        assert source.calls == 1
        source.release.set()
        assert wait_for(lambda: client.refresh())
        assert client.version == 1
    finally:
        source.release.set()
        client.close()


def test_a_kill_switch_arrives_after_the_storage_stops_trickling(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    """The poller times out on a trickling server, records it, keeps polling, and picks
    up the snapshot published meanwhile once storage answers again."""
    server.put("/production/latest.json", version_envelope(1, KEY))
    client = clients.make(
        server.url("/production/latest.json"),
        poll_interval=0.05,
        max_backoff=0.2,
        timeout=TIMEOUT,
    )
    assert client.wait_until_ready(10)
    server.state.slow_body = 0.2  # a byte every 200 ms
    server.put("/production/latest.json", version_envelope(2, KEY))
    assert wait_for(lambda: "timed out" in (client.last_error or ""))
    assert client.version == 1 and client.status == Status.READY  # last good one served
    attempts = len(server.requests())
    assert wait_for(lambda: len(server.requests()) > attempts + 1)  # it keeps polling
    server.state.slow_body = 0.0
    assert wait_for(lambda: client.version == 2)
    assert client.last_error is None


def test_a_stuck_poller_is_visible_in_status_and_last_error(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.put("/production/latest.json", version_envelope(1, KEY))
    client = clients.make(
        server.url("/production/latest.json"), poll_interval=0.05, timeout=TIMEOUT
    )
    assert client.wait_until_ready(10)
    release = threading.Event()
    # A change listener that never returns holds the polling thread.
    client.on_change(lambda changed: release.wait(30) and None)
    server.put("/production/latest.json", version_envelope(2, KEY))
    try:
        assert wait_for(lambda: client.status == Status.ERROR)
        assert "the poller is stuck: no poll finished for" in (client.last_error or "")
        assert client.version == 2  # swapped in before the listener was called
    finally:
        release.set()
    assert wait_for(lambda: client.status == Status.READY)
    assert client.last_error is None


@pytest.fixture
def server() -> Iterator[SnapshotHttpServer]:
    yield from serve_http()


def test_an_http_source_used_on_its_own_keeps_its_deadline() -> None:
    """Without the client's DeadlineFetcher too: headers trickled line by line inside
    http.client are cut at the deadline."""
    server = MisbehavingServer("trickle-headers", interval=0.05)
    source = open_source(server.url(), environment=ENVIRONMENT, timeout=TIMEOUT)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match=r"timed out after 0\.3s"):
            source.fetch(None)
        assert time.monotonic() - started < HANG_GUARD
    finally:
        server.stop()
    assert server.connections[0].sent >= 2


def _verify(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> tuple[int, str]:
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exited:
        main(["verify", url])
    code = exited.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


def test_verify_url_reads_at_most_the_cap_of_an_endless_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    server = MisbehavingServer("endless-body")
    try:
        code, stderr = _verify(root, monkeypatch, capsys, server.url())
    finally:
        server.stop()
    assert code == 1, stderr
    assert f"over the {DEFAULT_MAX_BYTES} byte cap" in stderr
    assert "Traceback" not in stderr
    # Streamed and stopped: what the server managed to push is the cap plus what the
    # socket buffers held, not the whole (endless) body read into memory first.
    assert server.connections[0].sent < DEFAULT_MAX_BYTES + 16 * 1024 * 1024


def test_verify_url_of_a_lying_server_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    server = MisbehavingServer("short-body", body=b'{"payload": "')
    try:
        code, stderr = _verify(root, monkeypatch, capsys, server.url())
    finally:
        server.stop()
    assert code != 0 and "ended before its Content-Length" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2
