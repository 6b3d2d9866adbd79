"""The client against a real S3 API (moto's server on loopback, tests/s3server.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from flagstone.sdk import Status
from s3server import S3Bucket
from sdk_support import ENVIRONMENT, Clients, managed_clients, new_key, version_envelope, wait_for

pytest_plugins = ["s3server"]

KEY = new_key()
OBJECT = f"acme/{ENVIRONMENT}/latest.json"


def put(bucket: S3Bucket, data: bytes, key: str = OBJECT) -> None:
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=data)


@pytest.fixture
def clients() -> Iterator[Clients]:
    yield from managed_clients(KEY, timeout=5.0)


def test_polls_a_bucket_prefix_with_etags(s3_bucket: S3Bucket, clients: Clients) -> None:
    put(s3_bucket, version_envelope(1, KEY))
    client = clients.make(f"{s3_bucket.url}/acme", poll_interval=None)
    assert client.string_value("version") == "v1"
    snapshot = client.snapshot
    assert client.refresh() is True
    assert client.snapshot is snapshot  # 304: nothing parsed again

    put(s3_bucket, version_envelope(2, KEY))
    assert client.refresh() is True
    assert client.string_value("version") == "v2"


def test_background_poller_on_s3(s3_bucket: S3Bucket, clients: Clients) -> None:
    put(s3_bucket, version_envelope(1, KEY))
    client = clients.make(f"{s3_bucket.url}/{OBJECT}", poll_interval=0.05, max_backoff=0.2)
    assert client.wait_until_ready(10)
    put(s3_bucket, version_envelope(2, KEY, environment="staging"))
    assert wait_for(lambda: client.status == Status.ERROR)
    assert "staging" in (client.last_error or "")
    assert client.string_value("version") == "v1"
    put(s3_bucket, version_envelope(3, KEY))
    assert wait_for(lambda: client.version == 3)
    assert client.status == Status.READY


def test_oversized_object_is_rejected(s3_bucket: S3Bucket, clients: Clients) -> None:
    put(s3_bucket, version_envelope(1, KEY))
    client = clients.make(f"{s3_bucket.url}/acme", poll_interval=None, max_bytes=4096)
    assert client.version == 1
    put(s3_bucket, version_envelope(2, KEY) + b" " * 8192)
    assert client.refresh() is False
    assert client.status == Status.ERROR
    assert "byte cap" in (client.last_error or "")


def test_unreachable_endpoint_at_start(
    s3_bucket: S3Bucket,
    clients: Clients,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="flagstone.sdk")
    # Port 9 (discard) on loopback: nothing listens, connections are refused at once.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    client = clients.make(f"{s3_bucket.url}/acme", poll_interval=None, timeout=2.0)
    assert client.status == Status.ERROR
    assert client.evaluate("version", {}, "d").error_code == "PROVIDER_NOT_READY"
    assert "unreachable" in (client.last_error or "")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
