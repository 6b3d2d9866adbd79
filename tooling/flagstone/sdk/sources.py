"""Where the SDK reads a signed snapshot from, and how, with ETags, a deadline and a size cap.

``open_source(location, environment=…)`` turns what the user passed into a
:class:`Source`:

* a location ending in ``.json`` names the envelope itself
  (``dist/production/latest.json``, ``https://cdn.example/acme/production/latest.json``);
* anything else is a publish target (``flagstone.yaml``'s ``publish.target``), and the
  client reads ``<target>/<environment>/latest.json`` from it.

Schemes: a plain path or ``file://`` (read directly; the ETag is the file's identity, so
an unchanged file is not even opened), ``http://``/``https://`` (standard library HTTP
with ``If-None-Match``, one deadline for the whole exchange, the body read in chunks up
to the cap), and ``s3://``, ``gs://``, ``az://``, ``memory://`` through
``flagstone.store``.

Every source returns the envelope itself: a snapshot stored gzip-compressed
(``publish.compress: gzip``) is inflated as it is read, whether the HTTP response says
``Content-Encoding: gzip``, the store's attribute says so, or only the gzip magic bytes
do, and ``max_bytes`` counts the inflated bytes (see ``flagstone.compression``).

Every ``fetch`` either returns a :class:`Fetched` (``data`` None when not modified) or
raises: ``StoreError`` when the snapshot could not be read (unreachable, timed out, not
found, HTTP error) and ``EnvelopeError`` when what was read is refused without looking
at it (over the size cap). The client treats the first as "storage is down" and the
second as a rejection.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urljoin, urlsplit

from flagstone.compression import GZIP_MAGIC, CappedReader, is_gzip, read_capped
from flagstone.errors import (
    EnvelopeError,
    NotFoundError,
    ObjectTooLargeError,
    StoreError,
    UsageError,
)
from flagstone.records import Record, set_field

if TYPE_CHECKING:
    import http.client
    import socket

LATEST = "latest.json"
DEFAULT_TIMEOUT = 10.0
# Realistic flags take about 500 bytes each in a signed envelope (measured with
# benchmarks/sdk_bench.py's mixed_flags: 10,000 flags 5.0 MB, 50,000 flags 25.0 MB), so
# 100,000 flags are about 50 MB; 256 MB of inflated bytes fits about 500,000 while still
# bounding what a broken or hostile server (or a gzip bomb) can make the client hold.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_STORE_SCHEMES = ("s3", "gs", "az", "memory")
_HTTP_SCHEMES = ("http", "https")
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_CHUNK = 256 * 1024
_ENVIRONMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# After the deadline, how long an aborted fetch gets to notice and end on its own.
_ABORT_GRACE = 0.5


class Fetched(Record):
    """One fetch: ``data`` is the envelope, or None when it has not changed since the
    ETag passed in; ``etag`` identifies what was read."""

    data: bytes | None
    etag: str | None

    _fields = __slots__ = ("data", "etag")

    def __init__(self, data: bytes | None, etag: str | None) -> None:
        set_field(self, "data", data)
        set_field(self, "etag", etag)


class Source(Protocol):
    """Anything the client can poll for the envelope."""

    def fetch(self, if_none_match: str | None) -> Fetched:
        """The envelope, or ``Fetched(None, etag)`` when unchanged since ``if_none_match``."""
        ...

    def describe(self) -> str:
        """Where it reads from, for log messages."""
        ...


def _too_large(where: str, size: int | None, max_bytes: int) -> EnvelopeError:
    measured = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return EnvelopeError(
        f"snapshot at {where} is {measured}, over the {max_bytes} byte cap",
        hint="raise max_bytes if the snapshot really is that large",
    )


class FileSource:
    """A local file. The ETag is (device, inode, size, mtime, ctime): publishing writes a
    new file and renames it into place, which changes the inode, so an unchanged ETag
    means unchanged bytes and the file is not read at all."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def describe(self) -> str:
        return str(self.path)

    def fetch(self, if_none_match: str | None) -> Fetched:
        try:
            # O_NONBLOCK: opening a FIFO put where the snapshot should be must not wait
            # for a writer; anything but a regular file is then refused.
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | _O_CLOEXEC)
            with os.fdopen(descriptor, "rb") as handle:
                status = os.fstat(handle.fileno())
                if not stat.S_ISREG(status.st_mode):
                    raise StoreError(f"cannot read {self.path}: not a regular file")
                etag = (
                    f'"{status.st_dev}-{status.st_ino}-{status.st_size}-'
                    f'{status.st_mtime_ns}-{status.st_ctime_ns}"'
                )
                if etag == if_none_match:
                    return Fetched(None, etag)
                if status.st_size > self.max_bytes:
                    raise _too_large(str(self.path), status.st_size, self.max_bytes)
                if is_gzip(handle.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)]):
                    # Inflated chunk by chunk as it is read, and refused as soon as the
                    # content passes the cap.
                    chunks = iter(lambda: handle.read(_CHUNK), b"")
                    data = _content(chunks, str(self.path), self.max_bytes, gzipped=True)
                else:
                    # Uncompressed: one read (chunked reads cost ~5x at 50 MB). Imported
                    # here: safefiles' imports would add to `import flagstone.sdk`.
                    from flagstone.safefiles import read_at_most

                    data = read_at_most(handle, self.max_bytes)
        except FileNotFoundError:
            raise NotFoundError(f"{self.path} does not exist") from None
        except OSError as error:
            raise StoreError(f"cannot read {self.path}: {error.strerror or error}") from None
        if len(data) > self.max_bytes:  # grew while being read
            raise _too_large(str(self.path), None, self.max_bytes)
        return Fetched(data, etag)


class HttpSource:
    """An ``http(s)://`` URL read with the standard library.

    ``timeout`` bounds the whole exchange (connect, headers and every body chunk), so a
    server that stalls or trickles cannot hold the poller longer than that.
    """

    def __init__(self, url: str, *, timeout: float, max_bytes: int) -> None:
        self.url = url
        self.timeout = timeout
        self.max_bytes = max_bytes
        # Imported here: they take as long to import as the rest of the SDK, and only
        # http(s) sources need them.
        import http.client
        import ssl

        self._http = http.client
        self._tls = ssl.create_default_context()
        # The socket of the fetch in progress, for abort(). Kept here because the
        # connection hands it over to the response (and forgets it) on Connection: close.
        self._socket: socket.socket | None = None
        self._aborted = False

    def describe(self) -> str:
        return self.url

    def abort(self) -> None:
        """Cut the connection of a fetch in progress (called from another thread at the
        deadline): a read blocked on it returns at once."""
        self._aborted = True
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                import socket  # loaded already: the fetch made the socket

                sock.shutdown(socket.SHUT_RDWR)

    def fetch(self, if_none_match: str | None) -> Fetched:
        deadline = time.monotonic() + self.timeout
        self._aborted = False
        # The socket timeout bounds each receive, not a trickle of them (headers are
        # read line by line inside http.client): at the deadline the socket is cut.
        cutter = threading.Timer(self.timeout, self.abort)
        cutter.daemon = True
        cutter.start()
        try:
            return self._fetch_until(deadline, if_none_match)
        finally:
            cutter.cancel()

    def _fetch_until(self, deadline: float, if_none_match: str | None) -> Fetched:
        url = self.url
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                result = self._request(url, if_none_match, deadline)
            except TimeoutError:
                raise StoreError(f"cannot read {url}: timed out after {self.timeout:g}s") from None
            except (OSError, self._http.HTTPException) as error:
                if self._aborted:
                    raise StoreError(
                        f"cannot read {url}: timed out after {self.timeout:g}s"
                    ) from None
                reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
                raise StoreError(f"cannot read {url}: {reason}") from None
            if isinstance(result, str):
                url = result
                continue
            return result
        raise StoreError(f"cannot read {self.url}: more than {_MAX_REDIRECTS} redirects")

    def _request(self, url: str, if_none_match: str | None, deadline: float) -> Fetched | str:
        """One request: a ``Fetched``, or the URL a redirect points to."""
        parts = urlsplit(url)
        remaining = _remaining(deadline)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = self._http.HTTPSConnection(
                parts.netloc, timeout=remaining, context=self._tls
            )
        else:
            connection = self._http.HTTPConnection(parts.netloc, timeout=remaining)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        # Snapshots compress ~50×; the cap applies to the inflated bytes.
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        response: http.client.HTTPResponse | None = None
        try:
            connection.connect()
            sock = connection.sock
            self._socket = sock
            if self._aborted:  # the deadline passed while connecting
                raise TimeoutError
            _set_timeout(sock, deadline)
            connection.request("GET", target, headers=headers)
            _set_timeout(sock, deadline)
            response = connection.getresponse()
            if response.status == 304:
                return Fetched(None, response.getheader("ETag") or if_none_match)
            if response.status in _REDIRECTS and response.getheader("Location"):
                return urljoin(url, response.getheader("Location", ""))
            if response.status == 404:
                raise NotFoundError(f"{url} does not exist (HTTP 404)")
            if response.status != 200:
                raise StoreError(f"cannot read {url}: HTTP {response.status} {response.reason}")
            encoding = (response.getheader("Content-Encoding") or "identity").lower()
            if encoding not in ("identity", "gzip"):
                raise StoreError(f"cannot read {url}: unsupported Content-Encoding {encoding!r}")
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise _too_large(url, int(length), self.max_bytes)
            body = _CappedBody(url, self.max_bytes, gzipped=encoding == "gzip")
            while True:
                _set_timeout(sock, deadline)
                # read1: at most one receive per call, so the timeout set just above is
                # checked against the deadline between every two receives (read() would
                # keep receiving a trickle until it had the whole chunk).
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                body.add(chunk)
            if self._aborted:
                raise TimeoutError
            if response.length not in (None, 0):
                raise StoreError(f"cannot read {url}: the body ended before its Content-Length")
            return Fetched(body.finish(), response.getheader("ETag"))
        finally:
            self._socket = None
            # The response holds the socket once the connection handed it over.
            if response is not None:
                response.close()
            connection.close()


class _CappedBody:
    """A response body, refused as soon as its content passes the cap. Two layers of
    gzip are undone: the transfer's (``Content-Encoding: gzip``) and the stored form's
    (an object published gzip-compressed and served without that header, e.g. a
    ``file://`` target behind a plain static server), each told apart as
    ``flagstone.compression`` describes. A small body that inflates hugely is stopped
    after ``max_bytes``."""

    def __init__(self, url: str, max_bytes: int, *, gzipped: bool) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.pieces: list[bytes] = []
        self.received = 0
        self.transfer = CappedReader(url, max_bytes, gzipped=True) if gzipped else None
        self.stored = CappedReader(url, max_bytes)

    def add(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise _too_large(self.url, None, self.max_bytes)
        try:
            if self.transfer is not None:
                chunk = self.transfer.feed(chunk)
            self.pieces.append(self.stored.feed(chunk))
        except ObjectTooLargeError:
            raise _too_large(self.url, None, self.max_bytes) from None

    def finish(self) -> bytes:
        try:
            if self.transfer is not None:
                self.pieces.append(self.stored.feed(self.transfer.finish()))
            self.pieces.append(self.stored.finish())
        except ObjectTooLargeError:
            raise _too_large(self.url, None, self.max_bytes) from None
        return b"".join(self.pieces)


def _content(chunks: Iterable[bytes], where: str, max_bytes: int, *, gzipped: bool) -> bytes:
    """The content of a stored object read as ``chunks`` (inflated if it is gzip),
    with the cap reported as the SDK reports it: a rejection (``EnvelopeError``)."""
    try:
        return read_capped(chunks, where, max_bytes, gzipped=gzipped)[0]
    except ObjectTooLargeError:
        raise _too_large(where, None, max_bytes) from None


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _set_timeout(sock: socket.socket, deadline: float) -> None:
    # The socket timeout applies per operation; shrinking it before each one turns the
    # per-operation timeout into one deadline for the whole exchange.
    sock.settimeout(_remaining(deadline))


class StoreSource:
    """An object in ``s3://``, ``gs://``, ``az://`` or ``memory://`` storage, via
    ``flagstone.store`` (obstore), which sends ``If-None-Match`` and bounds each request."""

    def __init__(self, url: str, path: str, *, timeout: float, max_bytes: int) -> None:
        # Imported here: obstore starts a runtime on import, which file and http
        # sources do not need.
        from flagstone.store import open_store

        self.location = f"{url.rstrip('/')}/{path}"
        self.path = path
        self.max_bytes = max_bytes
        # No retries inside a fetch: the timeout then bounds the whole fetch, and the
        # client's poller already retries with back-off.
        self._store = open_store(
            url, timeout=timeout, connect_timeout=min(timeout, 5.0), max_retries=0
        )

    def describe(self) -> str:
        return self.location

    def fetch(self, if_none_match: str | None) -> Fetched:
        try:
            # The content: inflated by the store if it is stored gzip-compressed.
            result = self._store.get(
                self.path, if_none_match=if_none_match, max_bytes=self.max_bytes
            )
        except ObjectTooLargeError:
            # For the SDK an oversized object is a rejection of what the store holds,
            # not the store being down.
            raise _too_large(self.location, None, self.max_bytes) from None
        return Fetched(result.data, result.etag)


class DeadlineFetcher:
    """Runs ``source.fetch`` under one deadline that holds whatever the source does.

    Each fetch runs on a short-lived daemon thread; the caller waits at most
    ``timeout`` seconds for it. At the deadline the source's ``abort()`` (if it has
    one: ``HttpSource`` cuts its socket) is called and the fetch gets a moment to end;
    one that still has not ended is abandoned and reported as timed out. While an
    abandoned fetch is still running, further fetches fail at once instead of piling
    up threads on a source that does not answer (a DNS lookup, a hung NFS mount, a
    custom ``Source`` that blocks).
    """

    def __init__(self, source: Source, timeout: float) -> None:
        self.source = source
        self.timeout = timeout
        self._stuck: threading.Thread | None = None

    def fetch(self, if_none_match: str | None) -> Fetched:
        where = self.source.describe()
        stuck = self._stuck
        if stuck is not None:
            if stuck.is_alive():
                raise StoreError(
                    f"cannot read {where}: an earlier fetch is still stuck past its "
                    f"{self.timeout:g}s deadline"
                )
            self._stuck = None
        outcome: list[Fetched | BaseException] = []

        def run() -> None:
            try:
                outcome.append(self.source.fetch(if_none_match))
            except BaseException as error:  # handed to the waiting thread below
                outcome.append(error)

        worker = threading.Thread(target=run, name="flagstone-fetch", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            abort = getattr(self.source, "abort", None)
            if callable(abort):
                with contextlib.suppress(Exception):
                    abort()
            worker.join(_ABORT_GRACE)
        if worker.is_alive() or not outcome:
            self._stuck = worker
            raise StoreError(f"cannot read {where}: timed out after {self.timeout:g}s")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result


def open_source(
    location: str | os.PathLike[str],
    *,
    environment: str,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Source:
    """The :class:`Source` for ``location`` (see the module docstring)."""
    check_environment(environment)
    if timeout <= 0:
        raise UsageError(f"timeout must be positive, not {timeout!r}")
    if max_bytes <= 0:
        raise UsageError(f"max_bytes must be positive, not {max_bytes!r}")
    if isinstance(location, os.PathLike):
        return FileSource(_local_envelope(Path(location), environment), max_bytes=max_bytes)
    text = str(location)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("", "file"):
        raw = text[len("file://") :] if scheme else text
        return FileSource(_local_envelope(Path(raw), environment), max_bytes=max_bytes)
    if scheme in _HTTP_SCHEMES:
        url = text if _names_envelope(text) else f"{text.rstrip('/')}/{environment}/{LATEST}"
        return HttpSource(url, timeout=timeout, max_bytes=max_bytes)
    if scheme in _STORE_SCHEMES:
        # The store is the bucket (or memory store) itself; the rest is the object path,
        # so ``memory://name/…`` and ``memory://name`` share one in-process store.
        parts = urlsplit(text)
        path = parts.path.strip("/")
        if not _names_envelope(text):
            path = f"{path}/{environment}/{LATEST}".lstrip("/")
        return StoreSource(f"{scheme}://{parts.netloc}", path, timeout=timeout, max_bytes=max_bytes)
    raise UsageError(
        f"unsupported snapshot source {text!r}",
        hint="use a path, file://, http(s)://, s3://, gs://, az:// or memory://",
    )


def open_object(
    location: str,
    *,
    base_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Source:
    """A :class:`Source` for exactly the object at ``location`` (a path, ``file://``,
    ``http(s)://``, ``s3://``, ``gs://``, ``az://`` or ``memory://`` URL), as
    ``flagstone verify`` reads one; relative paths are taken from ``base_dir``."""
    scheme = urlsplit(location).scheme.lower() if "://" in location else ""
    if scheme in ("", "file"):
        path = Path(location[len("file://") :] if scheme else location)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        return FileSource(path, max_bytes=max_bytes)
    if scheme in _HTTP_SCHEMES:
        return HttpSource(location, timeout=timeout, max_bytes=max_bytes)
    if scheme in _STORE_SCHEMES:
        parts = urlsplit(location)
        return StoreSource(
            f"{scheme}://{parts.netloc}",
            parts.path.strip("/"),
            timeout=timeout,
            max_bytes=max_bytes,
        )
    raise UsageError(
        f"unsupported location {location!r}",
        hint="use a path, file://, http(s)://, s3://, gs://, az:// or memory://",
    )


def read_object(
    location: str,
    *,
    base_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """The bytes at ``location`` (see :func:`open_object`), read under one deadline and
    at most ``max_bytes`` of them (``EnvelopeError`` past that, ``StoreError`` when it
    cannot be read)."""
    source = open_object(location, base_dir=base_dir, timeout=timeout, max_bytes=max_bytes)
    return DeadlineFetcher(source, timeout).fetch(None).data or b""


def check_environment(environment: str) -> None:
    """Refuse an environment name that is not an environment key (it becomes part of
    paths and URLs, so ``../x`` must not get that far)."""
    if not isinstance(environment, str) or not _ENVIRONMENT.fullmatch(environment):
        raise UsageError(f"environment name {environment!r} is not a valid environment key")


def _names_envelope(location: str) -> bool:
    return urlsplit(location).path.endswith(".json")


def _local_envelope(path: Path, environment: str) -> Path:
    return path if path.suffix == ".json" else path / environment / LATEST
