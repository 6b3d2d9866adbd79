"""Snapshots stored gzip-compressed (issue 18, item 3): ``publish.compress: gzip``
stores the signed envelope deterministically gzipped (with ``Content-Encoding: gzip`` on
object stores), every reader (SDK sources, ``verify``, ``served``, publish's own read of
latest.json, emergency overrides) reads both forms, the cap counts inflated bytes, and
gzip bombs, truncated and corrupt streams are refused in one line.

Real parts: git repositories in tmp folders, the moto S3 server (tests/s3server.py), a
loopback HTTP server (tests/sdk_support.py)."""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagstone.compression import GZIP_MAGIC, gzip_deterministic, read_capped
from flagstone.envelope import verify_envelope
from flagstone.errors import ObjectTooLargeError, StoreError
from flagstone.publish import publish_project
from flagstone.sdk import Client, Status
from flagstone.sdk.sources import DEFAULT_MAX_BYTES, open_object
from flagstone.store import open_store
from flagstone.validate import load_valid_project
from gitrepo import run_cli
from publish_helpers import commit, envelope_payload, make_repo, set_default, signing, trusted
from s3server import S3Bucket
from sdk_support import (
    ENVIRONMENT,
    Clients,
    SnapshotHttpServer,
    managed_clients,
    new_key,
    serve_http,
    version_envelope,
)

pytest_plugins = ["s3server", "azurite", "gcsserver"]

PROJECT = "demo-shop"  # make_repo's project
GZIP_TARGET = "target: file://dist\ncompress: gzip"
KEY = new_key()


def gzip_bomb(compressed_bytes: int) -> bytes:
    """A gzip stream of about ``compressed_bytes`` that inflates to about 1,000 times as
    many zero bytes, built in milliseconds: one megabyte of zeros is deflated once after
    a full flush (so the block refers to nothing before it) and the block repeated."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    deflater.compress(zeros)
    deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    header = GZIP_MAGIC + b"\x08\x00\x00\x00\x00\x00\x00\xff"
    final_empty_block = b"\x03\x00"
    return header + block * (compressed_bytes // len(block)) + final_empty_block + bytes(8)


def publish(root: Path, **options: object) -> list[str]:
    results = publish_project(load_valid_project(root), signing(), **options)  # type: ignore[arg-type]
    return [result.action for result in results]


def sdk_client(source: object, **options: object) -> Client:
    return Client(
        source,
        environment="production",
        project=PROJECT,
        trusted_keys=[trusted()],
        poll_interval=None,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def server() -> Iterator[SnapshotHttpServer]:
    yield from serve_http()


@pytest.fixture
def clients() -> Iterator[Clients]:
    yield from managed_clients(KEY, timeout=5.0)


# ----------------------------------------------------------------- the stored form


def test_deterministic_gzip_has_no_name_or_time_and_any_gzip_reader_reads_it() -> None:
    data = b'{"payload": "' + b"abc" * 10_000 + b'"}'
    compressed = gzip_deterministic(data)
    assert compressed == gzip_deterministic(data)  # same input, same bytes
    flags, mtime, os_byte = compressed[3], compressed[4:8], compressed[9]
    assert (flags, mtime, os_byte) == (0, bytes(4), 255)  # no FNAME, time 0, OS unknown
    assert gzip.decompress(compressed) == data
    assert len(compressed) * 50 < len(data)


def test_publish_stores_gzip_and_the_signature_is_over_the_same_payload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = make_repo(tmp_path / "plain")
    packed = make_repo(tmp_path / "packed", publish=GZIP_TARGET)
    now = 1_795_000_000.0
    source = {"commit": None, "ref": None}
    assert publish(plain, now=lambda: now, source=source) == ["published", "published"]
    (result,) = publish_project(
        load_valid_project(packed), signing(), environments=["production"],
        now=lambda: now, source=source,
    )  # fmt: skip
    stored = (packed / "dist/production/latest.json").read_bytes()
    assert stored[:2] == GZIP_MAGIC
    assert stored == (packed / "dist/production/snapshots/1.json").read_bytes()
    # The same envelope, byte for byte, as the uncompressed publish: compression wraps
    # the envelope, the DSSE signature over the canonical payload is untouched.
    envelope = (plain / "dist/production/latest.json").read_bytes()
    assert gzip.decompress(stored) == envelope
    assert stored == gzip_deterministic(envelope)
    verify_envelope(envelope, [trusted()], 1)
    assert (result.compression, result.size_bytes, result.stored_bytes) == (
        "gzip",
        len(envelope),
        len(stored),
    )
    # `verify` reads it from a path and from standard input.
    code, out, err = run_cli(
        ["verify", "dist/production/latest.json", "--env", "production"], packed
    )
    assert code == 0 and out.startswith("OK "), err
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stored))
    try:
        code, out, err = run_cli(["verify", "-", "--env", "production"], packed)
    finally:
        sys.stdin = saved
    assert code == 0 and out.startswith("OK "), err


def test_a_new_repository_publishes_compressed(tmp_path: Path) -> None:
    code, _, err = run_cli(["init", "shop"], tmp_path)
    assert code == 0, err
    root = tmp_path / "shop"
    code, out, err = run_cli(["publish", "--dev-key", "--env", "production"], root)
    assert code == 0 and "stored gzip-compressed" in out, err
    assert (root / "dist/production/latest.json").read_bytes()[:2] == GZIP_MAGIC
    verify = ["verify", "dist/production/latest.json", "--env", "production", "--allow-dev-key"]
    code, out, err = run_cli(verify, root)
    assert code == 0 and out.startswith("OK "), err


def test_publish_reads_its_compressed_latest_and_follows_the_setting(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish=GZIP_TARGET)
    assert publish(root) == ["published", "published"]
    # Built on a compressed latest.json that verifies: nothing changed, nothing written.
    assert publish(root) == ["unchanged", "unchanged"]
    set_default(root, "production", "off")
    commit(root, "production off")
    assert publish(root, environments=["production"]) == ["published"]
    latest = root / "dist/production/latest.json"
    assert envelope_payload(gzip.decompress(latest.read_bytes()))["version"] == 2
    # Turning compression off (or on) stores the same content in the new form once.
    config = root / "flagstone.yaml"
    config.write_text(config.read_text().replace("compress: gzip", "compress: none"))
    commit(root, "store uncompressed")
    (result,) = publish_project(load_valid_project(root), signing(), environments=["production"])
    assert result.action == "published" and "stored form changes to none" in result.reason
    assert latest.read_bytes().startswith(b"{")
    assert publish(root, environments=["production"]) == ["unchanged"]


def test_served_and_the_emergency_flagd_rewrite_read_compressed_snapshots(
    tmp_path: Path,
) -> None:
    from test_emergency import emergency_env, with_emergency_keys

    root = with_emergency_keys(make_repo(tmp_path / "repo", publish=GZIP_TARGET + "\nflagd: true"))
    assert publish(root) == ["published", "published"]
    code, out, err = run_cli(
        ["served", "--env", "production", "--at", "2999-01-01T00:00:00Z", "--format", "json"],
        root,
    )
    assert code == 0, err
    assert json.loads(out)["snapshot"]["version"] == 1
    from test_emergency import flagstone

    done = flagstone(
        "kill", "checkout", "--env", "production", "--emergency", "--reason", "x", "--no-pr",
        cwd=root, env=emergency_env(),
    )  # fmt: skip
    assert done.returncode == 0 and "flagd export rewritten" in done.stdout, done.stderr
    flagd = json.loads((root / "dist/production/flagd.json").read_bytes())
    assert flagd["flags"]["checkout"]["defaultVariant"] == "off"


# ------------------------------------------------------------------- SDK readers


def test_sdk_reads_a_compressed_file_and_caches_what_it_verified(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish=GZIP_TARGET)
    publish(root)
    cache = tmp_path / "cache"
    client = sdk_client(root / "dist", cache_dir=cache)
    try:
        assert client.status == Status.READY and client.bool_value("checkout", {"key": "u"})
    finally:
        client.close()
    cached = (cache / "production.envelope.json").read_bytes()
    assert cached == gzip.decompress((root / "dist/production/latest.json").read_bytes())
    verify_envelope(cached, [trusted()], 1)


def test_http_reads_stored_gzip_with_or_without_content_encoding(
    server: SnapshotHttpServer, clients: Clients
) -> None:
    path = f"/acme/{ENVIRONMENT}/latest.json"
    # A file:// target behind a plain static server: gzip bytes, no Content-Encoding.
    server.put(path, gzip_deterministic(version_envelope(1, KEY)))
    client = clients.make(server.url(path), poll_interval=None)
    assert client.string_value("version") == "v1"
    # ...and a server that gzips the transfer as well: two layers, both undone.
    server.state.gzip = True
    server.put(path, gzip_deterministic(version_envelope(2, KEY)))
    assert client.refresh() is True and client.string_value("version") == "v2"


def test_compressed_publish_through_s3_reaches_sdk_and_plain_http_clients(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}/flags\ncompress: gzip")
    assert publish(root, environments=["production"]) == ["published"]
    key = "flags/production/latest.json"
    head = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key=key)
    assert (head["ContentEncoding"], head["ContentType"]) == ("gzip", "application/json")
    assert s3_bucket.read(key)[:2] == GZIP_MAGIC
    # Publish builds on the compressed latest.json it reads back.
    assert publish(root, environments=["production"]) == ["unchanged"]
    code, out, err = run_cli(["verify", f"{s3_bucket.url}/{key}", "--env", "production"], root)
    assert code == 0 and out.startswith("OK ") and "version 1" in out, err
    client = sdk_client(f"{s3_bucket.url}/flags")
    try:
        assert client.status == Status.READY and client.version == 1
    finally:
        client.close()
    # A plain HTTP client (a CDN in front of the bucket) is told Content-Encoding: gzip.
    s3_bucket.client().put_object_acl(Bucket=s3_bucket.name, Key=key, ACL="public-read")
    client = sdk_client(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{key}")
    try:
        assert client.status == Status.READY and client.version == 1
    finally:
        client.close()


@pytest.mark.parametrize("scheme", ["az", "gs"])
def test_compressed_publish_through_azure_and_gcs(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Azurite and tests/gcsserver.py (fixtures of test_cloud_storage.py's servers).
    fixture = "azurite_container" if scheme == "az" else "gcs_bucket"
    url = request.getfixturevalue(fixture).url
    root = make_repo(tmp_path / "repo", publish=f"target: {url}/flags\ncompress: gzip")
    assert publish(root, environments=["production"]) == ["published"]
    found = open_store(f"{url}/flags").get("production/latest.json")
    assert found.stored_encoding == "gzip" and found.data is not None
    verify_envelope(found.data, [trusted()], 1)
    assert publish(root, environments=["production"]) == ["unchanged"]
    client = sdk_client(f"{url}/flags")
    try:
        assert client.status == Status.READY and client.version == 1
    finally:
        client.close()


def test_memory_store_keeps_the_encoding_attribute() -> None:
    store = open_store("memory://compressed-attributes")
    envelope = version_envelope(1, KEY)
    store.put("a.json", gzip_deterministic(envelope), mode="overwrite",
              attributes={"Content-Encoding": "gzip"})  # fmt: skip
    found = store.get("a.json")
    assert (found.data, found.stored_encoding) == (envelope, "gzip")
    store.put("b.json", envelope, mode="overwrite", attributes={"Content-Encoding": "br"})
    with pytest.raises(StoreError, match="stored with Content-Encoding 'br'"):
        store.get("b.json")


# ------------------------------------------------------------- refusals, one line


def test_a_50_mb_gzip_bomb_is_refused_after_the_cap_not_inflated_whole() -> None:
    bomb = gzip_bomb(50 * 1024 * 1024)
    consumed = 0

    def chunks() -> Iterator[bytes]:
        nonlocal consumed
        view = memoryview(bomb)
        for start in range(0, len(bomb), 64 * 1024):
            consumed += 64 * 1024
            yield bytes(view[start : start + 64 * 1024])

    with pytest.raises(
        ObjectTooLargeError, match=f"over the {DEFAULT_MAX_BYTES} byte limit once inflated"
    ):
        read_capped(chunks(), "bomb.json", DEFAULT_MAX_BYTES)
    # The SDK's default cap stopped it after a few hundred kilobytes of the 50 MB (about
    # 256 MB of its ~50 GB inflated).
    assert consumed < 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda data: data[:-40], "the gzip data is truncated"),
        (lambda data: data[:-8] + bytes(8), "corrupt gzip data"),
        (lambda data: data + b"{}", "bytes after the end of the gzip stream"),
    ],
    ids=["truncated", "bad-checksum", "trailing-bytes"],
)
def test_damaged_gzip_is_refused_with_a_one_line_cause(
    tmp_path: Path, damage: object, cause: str
) -> None:
    stored = damage(gzip_deterministic(version_envelope(1, KEY)))  # type: ignore[operator]
    root = make_repo(tmp_path / "repo")
    path = root / "latest.json"
    path.write_bytes(stored)
    with pytest.raises(StoreError, match=cause):
        open_object(str(path)).fetch(None)
    # `verify` reports a local file it cannot read as a usage error (exit 2).
    code, _, err = run_cli(["verify", str(path), "--env", "production"], root)
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and cause in errors[0] and str(path) in errors[0], err


def test_sdk_file_source_refuses_a_bomb_as_a_rejection(tmp_path: Path, clients: Clients) -> None:
    bomb = tmp_path / "latest.json"
    bomb.write_bytes(gzip_bomb(1024 * 1024))
    client = clients.make(bomb, poll_interval=None, max_bytes=4 * 1024 * 1024)
    assert client.status != Status.READY
    assert "over the 4194304 byte cap" in (client.last_error or "")
