"""``az://`` and ``gs://`` get what ``s3://`` gets: conditional writes, publishing, racing
publishers and SDK polling, against real servers on loopback.

Azure: Azurite (npm; tests/azurite.py). Google Cloud Storage: gcp-storage-emulator (PyPI)
cannot serve obstore's GCS client at all (no ETag or Last-Modified headers, preconditions
ignored, HEAD and listing unimplemented: pinned by the last test here), so ``gs://`` runs
against tests/gcsserver.py, a loopback server implementing the XML API calls obstore makes
with GCS's generation preconditions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flagstone.compression import GZIP_MAGIC
from flagstone.errors import BucketNotFoundError, ConflictError, NotFoundError, StoreError
from flagstone.publish import publish_project
from flagstone.sdk import Client, Status
from flagstone.store import IfMatch, open_store
from flagstone.validate import load_valid_project
from gcsserver import GCSBucket, service_account
from publish_helpers import (
    envelope_payload,
    make_repo,
    prepare_racers,
    race_assignments,
    race_round,
    signing,
    trusted,
    write_key_file,
)
from sdk_support import ENVIRONMENT, Clients, managed_clients, new_key, version_envelope, wait_for

pytest_plugins = ["azurite", "gcsserver"]

KEY = new_key()


@dataclass(frozen=True)
class CloudLocation:
    """A fresh, empty bucket (gs://) or container (az://) on a loopback server."""

    url: str
    # GCS only: writes per key over the bucket's life (Azurite keeps no such record),
    # and an object's bytes as stored.
    writes_per_key: Callable[[], dict[str, int]] | None
    raw: Callable[[str], bytes] | None

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]


@pytest.fixture(params=["az", "gs"])
def cloud(request: pytest.FixtureRequest) -> CloudLocation:
    if request.param == "az":
        return CloudLocation(request.getfixturevalue("azurite_container").url, None, None)
    bucket: GCSBucket = request.getfixturevalue("gcs_bucket")
    return CloudLocation(bucket.url, bucket.writes_per_key, bucket.read)


def test_conditional_writes_and_conditional_reads(cloud: CloudLocation) -> None:
    store = open_store(f"{cloud.url}/flags")
    first = store.put("production/latest.json", b"one", mode="create")
    with pytest.raises(ConflictError, match="already exists"):
        store.put("production/latest.json", b"two", mode="create")
    read = store.get("production/latest.json")
    assert read.data == b"one" and read.etag == first

    # A conditional read of the unchanged object transfers nothing.
    assert store.get("production/latest.json", if_none_match=read.etag).not_modified

    second = store.put("production/latest.json", b"three", mode=IfMatch(read.etag or ""))
    assert second != first
    # The first token is stale now: a writer holding it is refused, nothing changes.
    with pytest.raises(ConflictError, match="changed by another writer"):
        store.put("production/latest.json", b"four", mode=IfMatch(first or ""))
    changed = store.get("production/latest.json", if_none_match=read.etag)
    assert changed.data == b"three" and changed.etag == second

    with pytest.raises(NotFoundError, match="does not exist"):
        store.get("production/snapshots/9.json")
    assert store.get_optional("production/snapshots/9.json") is None
    assert store.list("production") == ["production/latest.json"]
    if cloud.writes_per_key is not None:
        assert cloud.writes_per_key() == {"flags/production/latest.json": 2}


def test_missing_bucket_and_unreachable_endpoint_fail_in_one_line(
    cloud: CloudLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BucketNotFoundError, match="does not exist"):
        open_store(f"{cloud.scheme}://no-such-bucket-for-flagstone/x").get("latest.json")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    variable = "AZURITE_BLOB_STORAGE_URL" if cloud.scheme == "az" else "GOOGLE_BASE_URL"
    monkeypatch.setenv(variable, f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError) as failure:
        open_store(cloud.url, timeout=2.0, max_retries=0).get("latest.json")
    assert f"127.0.0.1:{port} is unreachable" in failure.value.message
    assert "\n" not in failure.value.message


def test_publish_endpoint_points_gs_at_another_base_url(
    gcs_bucket: GCSBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``publish.endpoint`` (``open_store(endpoint=)``) rather than GOOGLE_BASE_URL; plain
    http is used on loopback by default and refused when ``allow_http=False``."""
    monkeypatch.delenv("GOOGLE_BASE_URL")
    endpoint = gcs_bucket.server.base_url
    open_store(gcs_bucket.url, endpoint=endpoint).put("a.json", b"{}", mode="create")
    assert gcs_bucket.object_keys() == ["a.json"]
    with pytest.raises(StoreError, match=r"cannot read gs://\S+/a.json"):
        open_store(gcs_bucket.url, endpoint=endpoint, allow_http=False, max_retries=0).get("a.json")


def test_publish_and_verify_from_the_command_line(cloud: CloudLocation, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {cloud.url}/flags")
    key_file = write_key_file(tmp_path)
    done = flagstone("publish", "--env", "production", "--key", str(key_file), cwd=root)
    assert done.returncode == 0, done.stderr
    assert f"published version 1 → {cloud.url}/flags/production/snapshots/1.json" in done.stdout
    store = open_store(f"{cloud.url}/flags")
    assert store.list() == ["production/latest.json", "production/snapshots/1.json"]
    latest = store.get("production/latest.json").data or b""
    assert latest == store.get("production/snapshots/1.json").data
    assert envelope_payload(latest)["version"] == 1
    verified = flagstone(
        "verify", f"{cloud.url}/flags/production/latest.json", "--env", "production", cwd=root
    )
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout and "version 1" in verified.stdout


ROUNDS = 2


def test_racing_publishers_of_different_commits(cloud: CloudLocation, tmp_path: Path) -> None:
    """Threads of this process in the first round, ``flagstone publish`` processes in
    the second (which also publish the commits in the opposite order)."""
    racers = prepare_racers(tmp_path)
    for round_number, assignment in enumerate(race_assignments(ROUNDS)):
        url = f"{cloud.url}/round-{round_number}"
        processes = round_number == ROUNDS - 1
        snapshot_keys = race_round(racers, url, assignment, processes=processes)
        if cloud.writes_per_key is not None:
            # No published snapshot was ever overwritten: one write per snapshot key.
            writes = cloud.writes_per_key()
            assert all(writes[f"round-{round_number}/{k}"] == 1 for k in snapshot_keys), writes


@pytest.fixture
def clients() -> Iterator[Clients]:
    yield from managed_clients(KEY, timeout=5.0)


def test_sdk_polls_and_picks_up_a_new_version(cloud: CloudLocation, clients: Clients) -> None:
    store = open_store(f"{cloud.url}/acme")
    latest = f"{ENVIRONMENT}/latest.json"
    store.put(latest, version_envelope(1, KEY), mode="overwrite")
    client = clients.make(f"{cloud.url}/acme", poll_interval=None)
    assert client.string_value("version") == "v1"
    snapshot = client.snapshot
    assert client.refresh() is True
    assert client.snapshot is snapshot  # not modified: nothing parsed again

    store.put(latest, version_envelope(2, KEY), mode="overwrite")
    assert client.refresh() is True
    assert client.string_value("version") == "v2"

    poller = clients.make(f"{cloud.url}/acme", poll_interval=0.05, max_backoff=0.2)
    assert poller.wait_until_ready(10) and poller.version == 2
    store.put(latest, version_envelope(3, KEY), mode="overwrite")
    assert wait_for(lambda: poller.version == 3)
    assert poller.status == Status.READY


def flagstone(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flagstone", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=dict(os.environ),
    )


# --- what gcp-storage-emulator cannot do ------------------------------------------------


def test_gcp_storage_emulator_cannot_serve_obstores_gcs_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why gs:// runs against tests/gcsserver.py: against the emulator a create-only write
    is reported failed (no ETag in the answer) yet happens, and happens again over the
    first (the generation precondition is ignored); reads fail (no Last-Modified) and
    listing is not implemented. If a release fixes this, this test says so."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("gcp-storage-emulator is not installed")
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket="emulated")
    server.start()
    try:
        port = server._api._httpd.server_address[1]
        account = tmp_path / "service-account.json"
        account.write_text(json.dumps(service_account(f"http://127.0.0.1:{port}")))
        monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", str(account))
        monkeypatch.setenv("GOOGLE_BASE_URL", f"http://127.0.0.1:{port}")
        store = open_store("gs://emulated", max_retries=0, timeout=5.0)
        storage = server._storage
        for data in (b"first", b"second"):
            with pytest.raises(StoreError, match="ETag Header missing"):
                store.put("latest.json", data, mode="create")
            # Written all the same, the second time over the first: no precondition.
            assert storage.get_file("emulated", "latest.json") == data
        with pytest.raises(StoreError, match="Last-Modified Header missing"):
            store.get("latest.json")
        with pytest.raises(StoreError, match="501 Not Implemented"):
            store.list()
    finally:
        server.stop()


def test_compressed_snapshots_publish_and_poll(cloud: CloudLocation, tmp_path: Path) -> None:
    """``publish.compress: gzip`` on az:// and gs://: stored gzip with Content-Encoding,
    read back by publish (nothing to republish) and by the SDK. On GCS the object is
    written with Cache-Control: no-transform: without it GCS inflates it for clients
    that do not ask for gzip, publish reads the stored form as plain and republishes
    the same content as a new version on every run (the server here transcodes as GCS
    does, so this test failed before)."""
    root = make_repo(tmp_path / "repo", publish=f"target: {cloud.url}/packed\ncompress: gzip")
    project = load_valid_project(root)
    [first] = publish_project(project, signing(), environments=["production"])
    assert first.action == "published"
    if cloud.raw is not None:
        assert cloud.raw("packed/production/latest.json")[:2] == GZIP_MAGIC
    found = open_store(f"{cloud.url}/packed").get("production/latest.json")
    assert envelope_payload(found.data or b"")["version"] == 1
    assert found.stored_encoding == "gzip"
    [again] = publish_project(project, signing(), environments=["production"])
    assert again.action == "unchanged"
    client = Client(
        f"{cloud.url}/packed",
        environment="production",
        project="demo-shop",
        trusted_keys=[trusted()],
        poll_interval=None,
    )
    try:
        assert client.status == Status.READY and client.version == 1
    finally:
        client.close()
