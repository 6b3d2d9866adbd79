"""The shared S3 test server fixture itself: a real HTTP S3 API on loopback."""

from __future__ import annotations

import os

from s3server import S3Bucket

pytest_plugins = ["s3server"]


def test_fresh_bucket_is_empty_and_reachable_over_loopback(s3_bucket: S3Bucket) -> None:
    assert s3_bucket.endpoint_url.startswith("http://127.0.0.1:")
    assert s3_bucket.object_keys() == []
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="a/b.json", Body=b"{}")
    assert s3_bucket.object_keys() == ["a/b.json"]
    assert s3_bucket.read("a/b.json") == b"{}"


def test_each_test_gets_its_own_bucket_and_environment(s3_bucket: S3Bucket) -> None:
    assert s3_bucket.object_keys() == []
    assert os.environ["AWS_ENDPOINT_URL"] == s3_bucket.endpoint_url
    assert "AWS_PROFILE" not in os.environ
