"""Publishing to a real S3 API server (moto on loopback): round trip, failure causes, a
write refused halfway, and racing publishers of different commits."""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagstone.envelope import open_snapshot
from publish_helpers import (
    commit,
    envelope_payload,
    make_repo,
    prepare_racers,
    race_assignments,
    race_round,
    trusted,
    write_key_file,
)
from s3server import S3Bucket, S3Server

pytest_plugins = ["s3server"]


def flagstone(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flagstone", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_failure(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    return error_lines[0]


def test_publish_and_verify_through_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}/flags")
    key_file = write_key_file(tmp_path)
    done = flagstone("publish", "--key", str(key_file), cwd=root)
    assert done.returncode == 0, done.stderr
    assert (
        f"production: published version 1 → {s3_bucket.url}/flags/production/snapshots/1.json"
        in done.stdout
    )
    assert s3_bucket.object_keys() == [
        "flags/production/latest.json",
        "flags/production/snapshots/1.json",
        "flags/staging/latest.json",
        "flags/staging/snapshots/1.json",
    ]
    latest = s3_bucket.read("flags/production/latest.json")
    assert latest == s3_bucket.read("flags/production/snapshots/1.json")
    verified = flagstone(
        "verify", f"{s3_bucket.url}/flags/production/latest.json", "--env", "production", cwd=root
    )
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout and "version 1" in verified.stdout
    again = flagstone("publish", "--key", str(key_file), cwd=root)
    assert again.returncode == 0 and again.stdout.count("nothing to publish") == 2


def test_unreachable_endpoint_fails_in_one_line(s3_env: dict[str, str], tmp_path: Path) -> None:
    with socket_closed_port() as port:
        root = make_repo(
            tmp_path / "repo",
            publish=f"target: s3://some-bucket\nendpoint: http://127.0.0.1:{port}",
        )
        done = flagstone("publish", "--key", str(write_key_file(tmp_path)), cwd=root)
    assert_one_line_failure(done, f"127.0.0.1:{port} is unreachable")


def test_missing_bucket_fails_in_one_line(s3_env: dict[str, str], tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish="target: s3://no-such-bucket-for-flagstone/x")
    done = flagstone("publish", "--key", str(write_key_file(tmp_path)), cwd=root)
    assert_one_line_failure(done, "bucket of s3://no-such-bucket-for-flagstone/x does not exist")


def test_missing_credentials_fail_in_one_line(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}")
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    with socket_closed_port() as port:
        environment["AWS_METADATA_ENDPOINT"] = f"http://127.0.0.1:{port}"  # stay on loopback
        done = subprocess.run(
            [sys.executable, "-m", "flagstone", "publish", "--key", str(write_key_file(tmp_path))],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
            env=environment,
        )
    assert_one_line_failure(done, "no credentials found")
    assert "AWS_ACCESS_KEY_ID" in done.stderr  # the hint line
    assert s3_bucket.object_keys() == []


# --- a write refused halfway ---------------------------------------------------------


class RefuseLatestProxy(http.server.BaseHTTPRequestHandler):
    """Forwards requests to the S3 server, but answers every PUT of a latest.json with
    403 AccessDenied: the versioned snapshot gets written, latest.json does not."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "PUT" and self.path.split("?")[0].endswith("/latest.json"):
            refusal = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(refusal)))
            self.end_headers()
            self.wfile.write(refusal)
            return
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(
                self.command, self.path, body=body, headers=dict(self.headers.items())
            )
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in (
                "transfer-encoding",
                "connection",
                "content-length",
                "server",
                "date",
            ):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


@pytest.fixture
def refusing_proxy(s3_server: S3Server) -> Iterator[str]:
    handler = type("Handler", (RefuseLatestProxy,), {"upstream": (s3_server.host, s3_server.port)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_write_refused_halfway_leaves_the_old_complete_latest(
    s3_bucket: S3Bucket, refusing_proxy: str, tmp_path: Path
) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}")
    key_file = write_key_file(tmp_path)
    assert flagstone("publish", "--key", str(key_file), cwd=root).returncode == 0
    old_latest = s3_bucket.read("production/latest.json")

    (root / "flags/checkout/production.yaml").write_text("enabled: false\n")
    commit(root, "disable checkout")
    done = flagstone(
        "publish",
        "--env",
        "production",
        "--key",
        str(key_file),
        cwd=root,
        env={"AWS_ENDPOINT_URL": refusing_proxy},
    )
    assert_one_line_failure(done, "production/latest.json", "permission denied")
    # The versioned object is there and complete; latest.json is still the old envelope.
    assert "production/snapshots/2.json" in s3_bucket.object_keys()
    new_snapshot = s3_bucket.read("production/snapshots/2.json")
    assert envelope_payload(new_snapshot)["version"] == 2
    assert s3_bucket.read("production/latest.json") == old_latest
    open_snapshot(old_latest, [trusted()], 1, project="demo-shop", environment="production", now=0)

    # The next publish skips past the orphaned version and completes.
    recovered = flagstone("publish", "--env", "production", "--key", str(key_file), cwd=root)
    assert recovered.returncode == 0, recovered.stderr
    assert envelope_payload(s3_bucket.read("production/latest.json"))["version"] == 3


# --- racing publishers ---------------------------------------------------------------

ROUNDS = 4


@pytest.mark.parametrize("backend", ["s3", "file"])
def test_racing_publishers_of_different_commits(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    racers = prepare_racers(tmp_path)
    for round_number, assignment in enumerate(race_assignments(ROUNDS)):
        bucket: S3Bucket | None = None
        if backend == "s3":
            request.getfixturevalue("s3_env")
            bucket = request.getfixturevalue("s3_server").create_bucket("race")
            bucket.client().put_bucket_versioning(
                Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
            )
            url = bucket.url
        else:
            url = (tmp_path / f"published-{round_number}").as_uri()
        snapshot_keys = race_round(racers, url, assignment)
        if bucket is not None:
            # No published object was ever overwritten: one stored version per snapshot key.
            listing = bucket.client().list_object_versions(Bucket=bucket.name)["Versions"]
            per_key: dict[str, int] = {}
            for item in listing:
                per_key[item["Key"]] = per_key.get(item["Key"], 0) + 1
            assert all(per_key[k] == 1 for k in snapshot_keys), per_key


class socket_closed_port:
    """A loopback port with nothing listening (bound to learn a free number, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_development_key_never_publishes_to_remote_storage(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    root = make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}")
    # e.g. a CI job whose signing-key secret is missing: FLAGSTONE_SIGNING_KEY is empty.
    done = flagstone("publish", cwd=root, env={"FLAGSTONE_SIGNING_KEY": ""})
    assert done.returncode == 2
    assert "no private key for the signing key(s) flagstone.yaml lists" in done.stderr
    # Asked for explicitly, or implied by an empty signing.keys: still local only.
    explicit = flagstone("publish", "--dev-key", cwd=root, env={"FLAGSTONE_SIGNING_KEY": ""})
    assert explicit.returncode == 2
    assert "refusing to publish to s3://" in explicit.stderr
    assert "development key" in explicit.stderr
    unconfigured = make_repo(tmp_path / "fresh", keys=(), publish=f"target: {s3_bucket.url}")
    done = flagstone("publish", cwd=unconfigured, env={"FLAGSTONE_SIGNING_KEY": ""})
    assert done.returncode == 2 and "refusing to publish to s3://" in done.stderr
    assert s3_bucket.object_keys() == []
