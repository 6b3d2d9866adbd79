"""A loopback HTTP server speaking the part of Google Cloud Storage's XML API that obstore
uses, with GCS's generation preconditions, for ``gs://`` tests.

Why not ``gcp-storage-emulator`` (PyPI) alone: obstore's GCS client talks the XML API
(``PUT/GET/HEAD https://storage.googleapis.com/BUCKET/OBJECT`` and
``GET /BUCKET?list-type=2``), and against that API the emulator (2026.7.19)

- ignores ``x-goog-if-generation-match`` on PUT: a create-only write (``= 0``) or a
  conditional update (``= GENERATION``) overwrites whatever is there;
- answers a PUT without ``ETag`` or ``x-goog-generation`` headers, so obstore reports the
  write as failed ("ETag Header missing from response") although it happened;
- answers a GET without ``Last-Modified`` and ``ETag`` and ignores ``If-None-Match``, so
  obstore cannot read an object at all, let alone poll it with a 304;
- answers ``HEAD /BUCKET/OBJECT`` and ``GET /BUCKET?list-type=2`` with 501.

``tests/test_store_gcs.py`` pins those gaps against the real emulator (so a release that
closes them is noticed), and everything else about ``gs://`` runs against this server.

What it implements, per the GCS XML API reference:

- ``PUT /BUCKET/OBJECT``: stores the body as a new generation. ``x-goog-if-generation-match:
  0`` means "only if there is no live object", ``N`` means "only if the live generation is
  N"; otherwise 412 ``PreconditionFailed`` and nothing changes. The check and the write
  happen under one lock, so concurrent writers see GCS's atomicity. Answers ``ETag``
  (the quoted MD5 of the content) and ``x-goog-generation``.
- ``GET``/``HEAD /BUCKET/OBJECT``: the live generation, with ``ETag``, ``Last-Modified``,
  ``x-goog-generation`` and the ``Content-Type``/``Content-Encoding`` it was written
  with; ``If-None-Match`` with the current ETag answers 304. An object written with
  ``Content-Encoding: gzip`` is served inflated, without that header, to a request
  that does not accept gzip (GCS's decompressive transcoding), unless it was written
  with ``Cache-Control: no-transform``.
- ``GET /BUCKET?list-type=2&prefix=…``: a ``ListBucketResult`` page (1000 keys), with
  ``continuation-token`` paging.
- A missing bucket answers 404 ``NoSuchBucket``, a missing object 404 ``NoSuchKey``.

Every write is kept (``writes``), so a test can check that no object was ever replaced.
Authentication is not checked (obstore is configured with ``disable_oauth``).

Fixtures (register with ``pytest_plugins = ["gcsserver"]``):

- ``gcs_server`` (session): the running :class:`GCSServer` on 127.0.0.1, port chosen by
  the operating system.
- ``gcs_env`` (function): a service-account file that points obstore at the server
  (``gcs_base_url``, ``disable_oauth``) named by ``GOOGLE_SERVICE_ACCOUNT``, and
  GOOGLE_BASE_URL (which tells flagstone.store that plain http to loopback is meant), for
  this test only, with inherited Google credential variables removed.
- ``gcs_bucket`` (function): ``gcs_env`` plus a fresh empty bucket, a :class:`GCSBucket`.

PYTEST_DONT_REWRITE (imported both as a plugin and by name).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import http.server
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

PAGE_SIZE = 1000

_INHERITED_GOOGLE_VARIABLES = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_PATH",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_BASE_URL",
    "GOOGLE_BEARER_TOKEN",
    "GOOGLE_BUCKET",
    "GOOGLE_BUCKET_NAME",
)


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    generation: int
    modified: float
    content_type: str = "application/octet-stream"
    content_encoding: str | None = None
    cache_control: str | None = None

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data, usedforsecurity=False).hexdigest() + '"'


@dataclass
class GCSState:
    """Buckets, their live objects, and every accepted write."""

    buckets: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    writes: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    generations: Iterator[int] = field(default_factory=lambda: itertools.count(1_000_001))


class GCSRequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: GCSState

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _parts(self) -> tuple[str, str, dict[str, list[str]]]:
        split = urlsplit(self.path)
        bucket, _, name = split.path.lstrip("/").partition("/")
        return unquote(bucket), unquote(name), parse_qs(split.query)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
        ).encode()
        self._send(status, body, {"Content-Type": "application/xml; charset=UTF-8"})

    def _object_headers(self, stored: StoredObject) -> dict[str, str]:
        return {
            "ETag": stored.etag,
            "Last-Modified": formatdate(stored.modified, usegmt=True),
            "x-goog-generation": str(stored.generation),
            "x-goog-metageneration": "1",
            "Content-Type": stored.content_type,
        }

    def do_PUT(self) -> None:
        bucket, name, _ = self._parts()
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        condition = self.headers.get("x-goog-if-generation-match")
        state = self.state
        with state.lock:
            objects = state.buckets.get(bucket)
            if objects is None:
                return self._error(404, "NoSuchBucket", "The specified bucket does not exist.")
            live = objects.get(name)
            if condition is not None and int(condition) != (live.generation if live else 0):
                return self._error(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold.",
                )
            stored = StoredObject(
                data,
                next(state.generations),
                time.time(),
                self.headers.get("Content-Type") or "application/octet-stream",
                self.headers.get("Content-Encoding"),
                self.headers.get("Cache-Control"),
            )
            objects[name] = stored
            state.writes.append((bucket, name, stored.generation))
        headers = self._object_headers(stored)
        del headers["Content-Type"]
        self._send(200, b"", headers)

    def _read(self) -> None:
        bucket, name, query = self._parts()
        with self.state.lock:
            objects = self.state.buckets.get(bucket)
            stored = objects.get(name) if objects is not None and name else None
        if objects is None:
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist.")
        if not name:
            return self._list(bucket, objects, query)
        if stored is None:
            return self._error(404, "NoSuchKey", "The specified key does not exist.")
        headers = self._object_headers(stored)
        if self.headers.get("If-None-Match") == stored.etag:
            return self._send(304, b"", headers)
        match = self.headers.get("If-Match")
        if match is not None and match != stored.etag:
            return self._error(412, "PreconditionFailed", "If-Match did not hold.")
        body = stored.data
        if stored.content_encoding is not None:
            if (
                stored.content_encoding == "gzip"
                and "gzip" not in self.headers.get("Accept-Encoding", "")
                and "no-transform" not in (stored.cache_control or "")
            ):
                # GCS's decompressive transcoding: served inflated, without the header.
                body = gzip.decompress(body)
                headers["Warning"] = "214 UploadServer gcs-transcoding"
            else:
                headers["Content-Encoding"] = stored.content_encoding
        self._send(200, body, headers)

    do_GET = do_HEAD = _read

    def _list(
        self, bucket: str, objects: dict[str, StoredObject], query: dict[str, list[str]]
    ) -> None:
        prefix = query.get("prefix", [""])[0]
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
        with self.state.lock:
            names = sorted(n for n in objects if n.startswith(prefix) and n > after)
            page = [(n, objects[n]) for n in names[:PAGE_SIZE]]
        truncated = len(names) > PAGE_SIZE
        contents = "".join(
            f"<Contents><Key>{escape(n)}</Key><Generation>{o.generation}</Generation>"
            f"<MetaGeneration>1</MetaGeneration>"
            f"<LastModified>{_iso(o.modified)}</LastModified>"
            f"<ETag>{escape(o.etag)}</ETag><Size>{len(o.data)}</Size></Contents>"
            for n, o in page
        )
        token = (
            f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>"
            if truncated
            else ""
        )
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            '<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{PAGE_SIZE}</MaxKeys>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            f"{contents}{token}</ListBucketResult>"
        ).encode()
        self._send(200, body, {"Content-Type": "application/xml; charset=UTF-8"})


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def service_account(base_url: str) -> dict[str, object]:
    """What obstore's service-account file holds to talk to a GCS API at ``base_url``
    without authentication (its parser wants the key fields present, even empty)."""
    return {
        "gcs_base_url": base_url,
        "disable_oauth": True,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    }


_bucket_counter = itertools.count(1)


@dataclass
class GCSServer:
    """A running server on loopback; ``create_bucket()`` makes a new, unique bucket."""

    host: str
    port: int
    state: GCSState

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def create_bucket(self, prefix: str = "flagstone-test") -> GCSBucket:
        name = f"{prefix}-{next(_bucket_counter)}-{uuid.uuid4().hex[:8]}"
        with self.state.lock:
            self.state.buckets[name] = {}
        return GCSBucket(server=self, name=name)


@dataclass(frozen=True)
class GCSBucket:
    server: GCSServer
    name: str

    @property
    def url(self) -> str:
        return f"gs://{self.name}"

    def object_keys(self) -> list[str]:
        with self.server.state.lock:
            return sorted(self.server.state.buckets[self.name])

    def read(self, key: str) -> bytes:
        with self.server.state.lock:
            return self.server.state.buckets[self.name][key].data

    def put(self, key: str, data: bytes) -> None:
        """Write directly (as another tool would), bypassing obstore."""
        state = self.server.state
        with state.lock:
            generation = next(state.generations)
            state.buckets[self.name][key] = StoredObject(data, generation, time.time())
            state.writes.append((self.name, key, generation))

    def writes_per_key(self) -> dict[str, int]:
        """How many writes each key has received, over its whole life."""
        counts: dict[str, int] = {}
        with self.server.state.lock:
            for bucket, key, _ in self.server.state.writes:
                if bucket == self.name:
                    counts[key] = counts.get(key, 0) + 1
        return counts


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    state = GCSState()
    handler = type("Handler", (GCSRequestHandler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield GCSServer("127.0.0.1", server.server_address[1], state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def gcs_env(
    gcs_server: GCSServer, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    for name in _INHERITED_GOOGLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    account: Path = tmp_path_factory.mktemp("gcs") / "service-account.json"
    account.write_text(json.dumps(service_account(gcs_server.base_url)))
    environment = {"GOOGLE_SERVICE_ACCOUNT": str(account), "GOOGLE_BASE_URL": gcs_server.base_url}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def gcs_bucket(gcs_server: GCSServer, gcs_env: dict[str, str]) -> GCSBucket:
    return gcs_server.create_bucket()
