"""A real S3 API server on loopback for tests: moto's ``ThreadedMotoServer``.

The server is started once per test session on 127.0.0.1 with a port chosen by the
operating system (no guessing, no collisions between parallel runs) and stopped at the
end. Nothing is patched: clients talk HTTP to it like they would to any S3-compatible
store.

Usage from a test module (``tests/`` is on ``sys.path``)::

    from s3server import S3Bucket

    pytest_plugins = ["s3server"]  # registers the fixtures below

    def test_something(s3_bucket: S3Bucket) -> None:
        s3_bucket.url            # "s3://<fresh bucket>"
        s3_bucket.endpoint_url   # "http://127.0.0.1:<port>"
        s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)

Importing the fixture functions by name works too, but ruff then reports F811 on every
test argument; ``pytest_plugins`` avoids that.

Fixtures:

- ``s3_server`` (session): the running server, an :class:`S3Server`. Its
  ``create_bucket()`` makes a new, uniquely named bucket.
- ``s3_env`` (function): sets dummy AWS credentials, region, ``AWS_ENDPOINT_URL`` /
  ``AWS_ALLOW_HTTP`` and a loopback ``AWS_METADATA_ENDPOINT`` in ``os.environ`` for this
  test only (restored afterwards), and
  removes any profile or session token inherited from the machine, so code under test
  that reads the standard environment variables reaches the loopback server and never a
  real account. Returns the variables it set.
- ``s3_bucket`` (function): ``s3_env`` plus a fresh empty bucket, an :class:`S3Bucket`.

This module has no assertions of its own and is imported both as a plugin and by name,
so it opts out of pytest's assertion rewriting (which would otherwise warn that it was
imported before being registered): PYTEST_DONT_REWRITE.

moto keeps all buckets in one process-wide backend, so bucket names are unique per call
rather than reset between tests.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCESS_KEY_ID = "testing-access-key"
SECRET_ACCESS_KEY = "testing-secret-key"

# Variables that could point a client at a real account or change how it signs.
_INHERITED_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_BUCKET",
    "AWS_BUCKET_NAME",
)

_bucket_counter = itertools.count(1)


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server on loopback."""

    host: str
    port: int
    region: str = REGION

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            # Without static credentials a client asks the instance metadata service;
            # point that at loopback (port 9, "discard", which nothing normally serves), so
            # tests never leave the machine.
            "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",
            "AWS_EC2_METADATA_DISABLED": "true",
            # Keep botocore from reading the machine's config files.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self) -> Any:
        """A boto3 S3 client for arranging and inspecting test state."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def create_bucket(self, prefix: str = "flagstone-test") -> S3Bucket:
        name = f"{prefix}-{next(_bucket_counter)}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return S3Bucket(server=self, name=name)


@dataclass(frozen=True)
class S3Bucket:
    """An empty bucket on the test server."""

    server: S3Server
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def client(self) -> Any:
        return self.server.client()

    def object_keys(self) -> list[str]:
        """Every object key in the bucket, sorted."""
        response = self.client().list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in response.get("Contents", []))

    def read(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.name, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    # Port 0: the operating system picks a free port and the server binds it at once.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(host=host, port=port)
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in _INHERITED_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    environment = s3_server.environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_env: dict[str, str]) -> S3Bucket:
    return s3_server.create_bucket()
