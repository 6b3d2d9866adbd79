"""The storage layer: the same contract on file://, memory:// and a real S3 API server
(moto on loopback), plus the failure causes users see."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flagstone.errors import (
    BucketNotFoundError,
    ConflictError,
    NotFoundError,
    StoreError,
    UsageError,
)
from flagstone.store import IfMatch, SnapshotStore, open_store
from s3server import S3Bucket

pytest_plugins = ["s3server"]


def closed_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(params=["file", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    if request.param == "file":
        return open_store("file://dist", base_dir=tmp_path)
    if request.param == "memory":
        return open_store(f"memory://{request.node.originalname}-{id(request)}")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"{bucket.url}/flags/prefix")


def test_missing_object_is_not_found(store: SnapshotStore) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        store.get("production/latest.json")
    assert store.get_optional("production/latest.json") is None


def test_create_only_write_refuses_an_existing_object(store: SnapshotStore) -> None:
    etag = store.put("production/snapshots/1.json", b"first", mode="create")
    assert etag
    with pytest.raises(ConflictError, match="already exists"):
        store.put("production/snapshots/1.json", b"second", mode="create")
    assert store.get("production/snapshots/1.json").data == b"first"


def test_if_match_write_succeeds_only_against_the_etag_read(store: SnapshotStore) -> None:
    store.put("env/latest.json", b"v1", mode="create")
    read = store.get("env/latest.json")
    assert read.data == b"v1" and read.etag
    new_etag = store.put("env/latest.json", b"v2", mode=IfMatch(read.etag))
    assert new_etag and new_etag != read.etag
    with pytest.raises(ConflictError, match="another writer"):
        store.put("env/latest.json", b"v3", mode=IfMatch(read.etag))
    assert store.get("env/latest.json").data == b"v2"


def test_if_match_on_a_missing_object_is_a_conflict(store: SnapshotStore) -> None:
    with pytest.raises(StoreError):
        store.put("env/latest.json", b"v1", mode=IfMatch('"nope"'))
    assert store.get_optional("env/latest.json") is None


def test_if_none_match_returns_not_modified_without_a_body(store: SnapshotStore) -> None:
    store.put("env/latest.json", b"body", mode="create")
    first = store.get("env/latest.json")
    again = store.get("env/latest.json", if_none_match=first.etag)
    assert again.not_modified and again.data is None and again.etag == first.etag
    store.put("env/latest.json", b"changed", mode=IfMatch(first.etag or ""))
    changed = store.get("env/latest.json", if_none_match=first.etag)
    assert changed.data == b"changed"


def test_size_cap(store: SnapshotStore) -> None:
    store.put("big.json", b"x" * 100, mode="create")
    with pytest.raises(StoreError, match="over the 99 byte limit"):
        store.get("big.json", max_bytes=99)
    assert store.get("big.json", max_bytes=100).data == b"x" * 100


def test_list(store: SnapshotStore) -> None:
    for version in (1, 2, 10):
        store.put(f"env/snapshots/{version}.json", b"{}", mode="create")
    store.put("other/latest.json", b"{}", mode="create")
    assert store.list("env/snapshots") == [
        "env/snapshots/1.json",
        "env/snapshots/10.json",
        "env/snapshots/2.json",
    ]


def test_relative_file_url_resolves_against_base_dir(tmp_path: Path) -> None:
    store = open_store("file://dist/snaps", base_dir=tmp_path)
    store.put("production/latest.json", b"{}", mode="create")
    assert (tmp_path / "dist" / "snaps" / "production" / "latest.json").read_bytes() == b"{}"
    assert store.url == (tmp_path / "dist" / "snaps").as_uri()


def test_absolute_file_url(tmp_path: Path) -> None:
    store = open_store((tmp_path / "out").as_uri())
    store.put("a.json", b"1", mode="create")
    assert (tmp_path / "out" / "a.json").read_bytes() == b"1"


def test_concurrent_if_match_writers_on_file_store_have_one_winner(tmp_path: Path) -> None:
    store = open_store("file://dist", base_dir=tmp_path)
    store.put("env/latest.json", b"base", mode="create")
    etag = store.get("env/latest.json").etag or ""
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def writer(index: int) -> None:
        barrier.wait()
        try:
            store.put("env/latest.json", f"writer {index}".encode(), mode=IfMatch(etag))
            outcomes.append(f"won {index}")
        except ConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(outcomes) == 8 and len(winners) == 1
    assert store.get("env/latest.json").data == f"writer {winners[0].split()[1]}".encode()


def test_refused_local_write_is_a_one_line_error(tmp_path: Path) -> None:
    store = open_store("file://dist", base_dir=tmp_path)
    # A directory where the object should go: the rename into place is refused
    # (a permission-based refusal would not stop a test running as root).
    (tmp_path / "dist" / "env" / "latest.json").mkdir(parents=True)
    with pytest.raises(StoreError) as caught:
        store.put("env/latest.json", b"{}", mode="overwrite")
    assert caught.value.message.startswith(f"cannot write {store.url}/env/latest.json: ")
    assert "\n" not in caught.value.message


def test_unsupported_scheme_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unsupported storage URL"):
        open_store("ftp://example/x")


# --- S3 failure causes -------------------------------------------------------------


def test_unreachable_endpoint(s3_env: dict[str, str]) -> None:
    port = closed_loopback_port()
    store = open_store("s3://any-bucket", endpoint=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(StoreError) as caught:
        store.get("env/latest.json")
    assert f"127.0.0.1:{port} is unreachable" in caught.value.message
    assert "\n" not in caught.value.message


def test_missing_bucket(s3_env: dict[str, str]) -> None:
    store = open_store("s3://no-such-bucket-flagstone/prefix")
    with pytest.raises(BucketNotFoundError, match="bucket of s3://no-such-bucket-flagstone/prefix"):
        store.get_optional("env/latest.json")
    with pytest.raises(StoreError):
        store.put("env/latest.json", b"{}", mode="create")


def test_missing_credentials(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Without static credentials obstore asks the instance metadata service; keep that
    # lookup on loopback (nothing listens there) so the test never leaves the machine.
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{closed_loopback_port()}")
    store = open_store(s3_bucket.url, max_retries=0)
    with pytest.raises(StoreError) as caught:
        store.put("env/latest.json", b"{}", mode="create")
    assert "no credentials found" in caught.value.message
    assert caught.value.hint and "AWS_ACCESS_KEY_ID" in caught.value.hint
    assert s3_bucket.object_keys() == []


def test_s3_objects_land_under_the_prefix(s3_bucket: S3Bucket) -> None:
    store = open_store(f"{s3_bucket.url}/team/flags")
    store.put("production/latest.json", b"{}", mode="create")
    assert s3_bucket.object_keys() == ["team/flags/production/latest.json"]


# --- http(s):// is read-only -------------------------------------------------------


@pytest.fixture
def http_directory(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    handler: Callable[..., http.server.SimpleHTTPRequestHandler] = functools.partial(
        QuietHandler, directory=str(tmp_path)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_store_reads_and_refuses_writes(http_directory: tuple[str, Path]) -> None:
    base_url, directory = http_directory
    (directory / "production").mkdir()
    (directory / "production" / "latest.json").write_bytes(b'{"payload": ""}')
    store = open_store(base_url)
    assert store.get("production/latest.json").data == b'{"payload": ""}'
    with pytest.raises(NotFoundError):
        store.get("staging/latest.json")
    with pytest.raises(StoreError, match="read-only"):
        store.put("production/latest.json", b"{}", mode="overwrite")


def test_reading_a_file_store_creates_nothing(tmp_path: Path) -> None:
    store = open_store("file://dist", base_dir=tmp_path)
    assert store.get_optional("env/latest.json") is None
    assert not (tmp_path / "dist").exists()
    store.put("env/latest.json", b"{}", mode="create")
    assert (tmp_path / "dist" / "env" / "latest.json").is_file()


def test_cloud_urls_open_without_touching_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCOUNT_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    assert open_store("gs://flags-bucket/prefix").url == "gs://flags-bucket/prefix"
    with pytest.raises(StoreError) as caught:
        open_store("az://container/prefix")
    assert caught.value.message == (
        "cannot open az://container/prefix: Generic MicrosoftAzure error: Account must be specified"
    )
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "flagsaccount")
    assert open_store("az://container/prefix").url == "az://container/prefix"


def test_a_server_that_never_answers_times_out(s3_env: dict[str, str]) -> None:
    # Listening but never answering: the connection succeeds, the response never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = open_store(
            "s3://any-bucket", endpoint=f"http://127.0.0.1:{port}", timeout=0.5, max_retries=0
        )
        with pytest.raises(StoreError) as caught:
            store.get("env/latest.json")
    assert caught.value.message == (
        f"cannot read s3://any-bucket/env/latest.json: http://127.0.0.1:{port} timed out"
    )
