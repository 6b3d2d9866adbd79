"""Helpers for the SDK tests: keys, snapshot payloads, envelopes, and a local HTTP server.

The HTTP server is a real ``ThreadingHTTPServer`` on 127.0.0.1 (a port chosen by the
operating system) that serves whatever bytes a test puts at a path, with strong ETags
and ``If-None-Match`` → 304, and can be switched into the faults the SDK must survive:
down (the listening socket is closed, so connections are refused), stalled (requests
are accepted and never answered until the test ends), slow bodies, 5xx answers and
bodies without a Content-Length.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.canonical import canonical_json, content_digest
from flagstone.envelope import TrustedKey, public_key_raw, sign_payload
from flagstone.sdk import Client

PROJECT = "acme-shop"
ENVIRONMENT = "production"
# A fixed "now" for tests that set the client's clock: 2026-11-26T00:00:00Z.
NOW = 1795651200.0
DAY = 86400.0


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    trusted: TrustedKey

    @property
    def config_entry(self) -> dict[str, str]:
        """The key as flagstone.yaml lists it."""
        return {"keyid": self.trusted.keyid, "public": self.trusted.public.hex()}


def new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(private, TrustedKey.from_public(public_key_raw(private)))


def fixed_flag(value: Any, *, flag_type: str | None = None) -> dict[str, Any]:
    """A flag that serves ``value`` to everyone (variation "v"; off variation "off")."""
    if flag_type is None:
        flag_type = {bool: "boolean", str: "string", int: "number", float: "number"}.get(
            type(value), "json"
        )
    off = {"boolean": False, "string": "", "number": 0}.get(flag_type)
    return {
        "type": flag_type,
        "kind": "release",
        "variations": {"v": value, "off": off},
        "off_variation": "off",
        "enabled": True,
        "prerequisites": [],
        "targets": [],
        "rules": [],
        "default": {"variation": "v"},
    }


def targeted_flag(on_keys: list[str], *, segment: str | None = None) -> dict[str, Any]:
    """A boolean flag: on for ``on_keys`` (targets) and, if given, members of ``segment``."""
    rules = []
    if segment is not None:
        rules.append(
            {"name": "members", "condition": {"segment": segment}, "serve": {"variation": "on"}}
        )
    return {
        "type": "boolean",
        "kind": "release",
        "variations": {"on": True, "off": False},
        "off_variation": "off",
        "enabled": True,
        "prerequisites": [],
        "targets": [{"variation": "on", "keys": on_keys}] if on_keys else [],
        "rules": rules,
        "default": {"variation": "off"},
    }


def segment(include: list[str]) -> dict[str, Any]:
    return {"include": include, "exclude": [], "rules": []}


def format_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_payload(
    version: int,
    flags: Mapping[str, Any],
    segments: Mapping[str, Any] | None = None,
    *,
    project: str = PROJECT,
    environment: str = ENVIRONMENT,
    published_at: float = NOW - DAY,
    expires: float = NOW + 30 * DAY,
) -> dict[str, Any]:
    segments = dict(segments or {})
    return {
        "format": "flagstone.snapshot/1",
        "project": project,
        "environment": environment,
        "version": version,
        "published_at": format_timestamp(published_at),
        "expires": format_timestamp(expires),
        "source": {"commit": None, "ref": None},
        "digest": content_digest(flags, segments),
        "flags": dict(flags),
        "segments": segments,
    }


def sign(payload: Mapping[str, Any], *keys: SigningKey) -> bytes:
    return sign_payload(canonical_json(payload), [key.private for key in keys])


def version_envelope(version: int, key: SigningKey, **payload_options: Any) -> bytes:
    """A snapshot whose answers name its version: string flags ``version`` and ``twin``
    serve ``"v<version>"``, number flag ``number`` serves the version."""
    flags = {
        "version": fixed_flag(f"v{version}"),
        "twin": fixed_flag(f"v{version}"),
        "number": fixed_flag(version),
    }
    return sign(make_payload(version, flags, **payload_options), key)


# --------------------------------------------------------------------------- HTTP server


@dataclass
class _ServerState:
    objects: dict[str, bytes] = field(default_factory=dict)
    stall: bool = False
    stalled: int = 0  # requests accepted and left unanswered
    status_override: int | None = None
    omit_length: bool = False
    gzip: bool = False  # compress bodies for clients that accept gzip
    send_etag: bool = True
    slow_body: float = 0.0  # when set, the body trickles: one byte every this many seconds
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        if state.stall:
            # Accept the request and never answer, until the test ends.
            with state.lock:
                state.stalled += 1
            state.release.wait(60)
            self.close_connection = True  # hang up without an answer
            return
        if_none_match = self.headers.get("If-None-Match")
        with state.lock:
            data = state.objects.get(self.path)
            override = state.status_override
        if override is not None:
            self._answer(override, b"storage unavailable\n", if_none_match)
            return
        if data is None:
            self._answer(404, b"not found\n", if_none_match)
            return
        etag = etag_of(data)
        if state.send_etag and if_none_match == etag:
            self._record(304, if_none_match)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._record(200, if_none_match)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if state.gzip and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            data = gzip.compress(data, mtime=0)
            self.send_header("Content-Encoding", "gzip")
        if state.send_etag:
            self.send_header("ETag", etag)
        if state.omit_length:
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if state.slow_body:
            # One byte at a time until the client gives up (the write then fails) or
            # the server closes.
            for byte in data:
                if state.release.wait(state.slow_body):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    def _record(self, status: int, if_none_match: str | None) -> None:
        with self.server.state.lock:
            self.server.state.requests.append((self.path, if_none_match, status))

    def _answer(self, status: int, body: bytes, if_none_match: str | None) -> None:
        self._record(status, if_none_match)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _ServerState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up mid-body (the size cap) resets the connection: expected.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SnapshotHttpServer:
    """A loopback HTTP server for snapshots; see the module docstring."""

    def __init__(self) -> None:
        self.state = _ServerState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def put(self, path: str, data: bytes) -> None:
        with self.state.lock:
            self.state.objects[path] = data

    def requests(self) -> list[tuple[str, str | None, int]]:
        with self.state.lock:
            return list(self.state.requests)

    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.state = self.state
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
        self._thread.daemon = True
        self._thread.start()

    def down(self) -> None:
        """Stop listening: new connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    def close(self) -> None:
        self.state.release.set()
        self.down()


def serve_http() -> Iterator[SnapshotHttpServer]:
    server = SnapshotHttpServer()
    try:
        yield server
    finally:
        server.close()


class Clients:
    """Makes the clients of one test, with shared defaults (the test's key, the fixed
    clock), and closes them all — joining their polling threads — when the test ends."""

    def __init__(self, key: SigningKey, **defaults: Any) -> None:
        self.key = key
        self.defaults = {"clock": lambda: NOW, **defaults}
        self.made: list[Client] = []

    def make(self, source: Any, **options: Any) -> Client:
        client = Client(
            source,
            environment=ENVIRONMENT,
            trusted_keys=[self.key.trusted],
            **{"project": PROJECT, **self.defaults, **options},
        )
        self.made.append(client)
        return client

    def close_all(self) -> None:
        for client in self.made:
            client.close()


def managed_clients(key: SigningKey, **defaults: Any) -> Iterator[Clients]:
    """For a fixture: ``yield from managed_clients(KEY, poll_interval=…)``."""
    clients = Clients(key, **defaults)
    try:
        yield clients
    finally:
        clients.close_all()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; the result of the last try.

    Used to wait for the client's background thread, never to assert on durations.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
