"""The client against a real HTTP server on loopback that misbehaves (issue 5, item 6):
ETags, storage down at start (with and without cache), down and back mid-run, 5xx,
a stalled server bounded by the timeout, oversized bodies, tampering seen by the poller.

Background polling uses 0.05 s intervals; every wait has an explicit deadline and every
client is closed (its thread joined) at the end of its test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagstone.sdk import Status
from sdk_support import (
    ENVIRONMENT,
    Clients,
    SnapshotHttpServer,
    etag_of,
    managed_clients,
    new_key,
    serve_http,
    version_envelope,
    wait_for,
)

KEY = new_key()
PATH = f"/acme/{ENVIRONMENT}/latest.json"


@pytest.fixture
def server() -> Iterator[SnapshotHttpServer]:
    yield from serve_http()


@pytest.fixture
def clients() -> Iterator[Clients]:
    yield from managed_clients(KEY, poll_interval=0.05, max_backoff=0.2, timeout=2.0)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_publish_target_url_reads_environment_latest(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url("/acme"), poll_interval=None)
    assert client.string_value("version") == "v1"
    assert server.requests()[0][0] == PATH


def test_not_modified_costs_no_parse(server: SnapshotHttpServer, clients: Clients) -> None:
    envelope = version_envelope(1, KEY)
    server.put(PATH, envelope)
    client = clients.make(server.url(PATH), poll_interval=None)
    snapshot = client.snapshot
    assert client.refresh() is True
    assert client.refresh() is True
    assert server.requests() == [
        (PATH, None, 200),
        (PATH, etag_of(envelope), 304),
        (PATH, etag_of(envelope), 304),
    ]
    assert client.snapshot is snapshot  # nothing was verified or compiled again


def test_poller_swaps_in_new_versions_and_reports_changes(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url(PATH))
    changes: list[frozenset[str]] = []
    client.on_change(changes.append)
    assert client.wait_until_ready(10)
    server.put(PATH, version_envelope(2, KEY))
    assert wait_for(lambda: client.version == 2)
    assert client.string_value("version") == "v2"
    assert wait_for(lambda: len(changes) == 1)
    assert changes == [frozenset({"version", "twin", "number"})]


def test_storage_down_at_start_without_cache(
    server: SnapshotHttpServer, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flagstone.sdk")
    server.down()
    client = clients.make(server.url(PATH), poll_interval=None)
    for _ in range(3):
        assert client.refresh() is False
    assert client.status == Status.ERROR
    details = client.evaluate("version", {"key": "u"}, "default")
    assert (details.value, details.error_code) == ("default", "PROVIDER_NOT_READY")
    assert "Connection refused" in (details.error_message or "")
    # One warning for the outage, not one per attempt.
    assert len(warnings_of(caplog)) == 1
    assert "cannot fetch the snapshot" in warnings_of(caplog)[0]

    server.up()
    server.put(PATH, version_envelope(1, KEY))
    assert client.refresh() is True
    assert client.status == Status.READY
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_storage_down_at_start_with_cache(
    server: SnapshotHttpServer, clients: Clients, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    server.put(PATH, version_envelope(3, KEY))
    first = clients.make(server.url(PATH), cache_dir=cache, poll_interval=None)
    assert first.version == 3
    first.close()

    server.down()
    client = clients.make(server.url(PATH), cache_dir=cache)
    # Ready at once, from the cache, while every fetch fails.
    assert client.wait_until_ready(0)
    assert wait_for(lambda: client.last_error is not None)
    assert client.status == Status.READY
    details = client.evaluate("version", {"key": "u"})
    assert (details.value, details.reason) == ("v3", "CACHED")

    server.up()
    server.put(PATH, version_envelope(4, KEY))
    assert wait_for(lambda: client.version == 4)
    assert client.evaluate("version", {"key": "u"}).reason == "DEFAULT"
    assert client.last_error is None


def test_storage_down_and_back_mid_run(
    server: SnapshotHttpServer, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url(PATH))
    assert client.wait_until_ready(10)
    statuses: list[Status] = []
    client.on_status_change(lambda status, _: statuses.append(status))

    server.down()
    assert wait_for(lambda: client.last_error is not None)
    assert client.status == Status.READY
    assert client.string_value("version") == "v1"
    server.put(PATH, version_envelope(2, KEY))
    server.up()
    assert wait_for(lambda: client.version == 2)
    assert client.last_error is None
    assert statuses == []  # served throughout: never NOT_READY, ERROR or STALE
    assert len(warnings_of(caplog)) == 1


def test_server_errors_are_outages_not_rejections(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url(PATH), poll_interval=None)
    server.state.status_override = 503
    assert client.refresh() is False
    assert "HTTP 503" in (client.last_error or "")
    assert client.status == Status.READY
    server.state.status_override = None
    server.put(PATH, version_envelope(2, KEY))
    assert client.refresh() is True
    assert client.version == 2


def test_missing_snapshot_is_reported(server: SnapshotHttpServer, clients: Clients) -> None:
    client = clients.make(server.url(PATH), poll_interval=None)
    assert client.status == Status.ERROR
    assert "HTTP 404" in (client.last_error or "")


def test_stalled_server_is_bounded_by_the_timeout(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url(PATH), poll_interval=None, timeout=0.3)
    assert client.version == 1
    server.state.stall = True
    assert client.refresh() is False
    assert "timed out after 0.3s" in (client.last_error or "")
    assert client.string_value("version") == "v1"

    # The background poller stuck on a stalled server still stops on close().
    polling = clients.make(server.url(PATH), timeout=0.3)
    assert wait_for(lambda: polling.last_error is not None)
    polling.close()
    assert polling._thread is not None and not polling._thread.is_alive()


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "streamed"])
def test_oversized_body_is_rejected(
    server: SnapshotHttpServer, clients: Clients, with_length: bool
) -> None:
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url(PATH), poll_interval=None, max_bytes=4096)
    assert client.version == 1
    server.state.omit_length = not with_length
    server.put(PATH, version_envelope(2, KEY) + b" " * 8192)
    assert client.refresh() is False
    assert client.status == Status.ERROR
    assert "byte cap" in (client.last_error or "")
    assert client.string_value("version") == "v1"


def test_tampered_latest_seen_by_the_poller(
    server: SnapshotHttpServer, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    server.put(PATH, version_envelope(1, KEY))
    client = clients.make(server.url(PATH))
    assert client.wait_until_ready(10)
    tampered = version_envelope(2, KEY).replace(b'"sig":"', b'"sig":"AAAA')
    server.put(PATH, tampered)
    assert wait_for(lambda: client.status == Status.ERROR)
    # The poller keeps polling; the ETag makes it a 304 and there is no second warning.
    assert wait_for(lambda: any(r[2] == 304 for r in server.requests()))
    assert client.string_value("version") == "v1"
    assert len(warnings_of(caplog)) == 1
    server.put(PATH, version_envelope(3, KEY))
    assert wait_for(lambda: client.status == Status.READY and client.version == 3)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(clients: Clients) -> None:
    client = clients.make("memory://unused/x.json", poll_interval=None, max_backoff=1.0)
    client._poll_interval = 0.1
    for failures, nominal in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (40, 1.0)]:
        delays = [client._next_delay(failures) for _ in range(50)]
        assert all(0.8 * nominal <= d <= nominal for d in delays), (failures, delays)
    healthy = [client._next_delay(0) for _ in range(50)]
    assert all(0.09 <= d <= 0.11 for d in healthy)
    assert len(set(healthy)) > 1  # jittered


def test_subscribing_does_not_wait_for_a_fetch_in_progress(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.state.stall = True
    client = clients.make(server.url(PATH), timeout=30.0)
    assert wait_for(lambda: server.state.stalled == 1)  # the poller is inside its fetch
    subscriber = threading.Thread(
        target=lambda: (client.on_change(lambda _: None), client.on_status_change(lambda *_: None))
    )
    subscriber.start()
    subscriber.join(5)
    stuck = subscriber.is_alive()
    server.state.release.set()  # let the stalled request end so the poller can stop
    assert not stuck


def test_gzip_bodies_are_inflated_and_capped_after_inflating(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    server.state.gzip = True
    envelope = version_envelope(1, KEY)
    server.put(PATH, envelope)
    client = clients.make(server.url(PATH), poll_interval=None, max_bytes=len(envelope) + 100)
    assert client.string_value("version") == "v1"
    # A body that is small on the wire but inflates far past the cap is refused.
    server.put(PATH, version_envelope(2, KEY) + b" " * 5_000_000)
    assert client.refresh() is False
    assert "byte cap" in (client.last_error or "")
    assert client.string_value("version") == "v1"
