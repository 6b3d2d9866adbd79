"""Object storage for snapshots, through obstore (docs/design.md §6).

``open_store(url, **options)`` gives a :class:`SnapshotStore` for::

    file://dist              relative to ``base_dir`` (the repository root for publish)
    file:///abs/path         a local directory
    s3://bucket[/prefix]     AWS S3 or an S3-compatible store (``endpoint=`` or AWS_ENDPOINT_URL)
    gs://bucket[/prefix]     Google Cloud Storage
    az://container[/prefix]  Azure Blob Storage (account from AZURE_STORAGE_ACCOUNT_NAME)
    memory://name            an in-process store, shared by every open_store of that name
    http(s)://host/prefix    read-only (the way SDKs fetch published snapshots)

Credentials come from the standard environment variables of each cloud (AWS_ACCESS_KEY_ID,
GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, …), as obstore reads them;
nothing here takes a secret as an argument.

Two write modes matter for publishing: ``put(path, data, mode="create")`` fails with
``ConflictError`` if the object exists (S3 ``If-None-Match: *``), and
``put(path, data, mode=IfMatch(etag))`` fails with ``ConflictError`` unless the object
still has that ETag (S3 ``If-Match``). Both are atomic on S3, GCS, Azure and the memory
store. obstore's local filesystem store supports create-only writes (it links a fully
written temporary file into place, which fails if the name exists) but not the ETag
condition, so for ``file://`` this module takes an exclusive ``flock`` on the object's
directory, compares the current ETag and then lets obstore write a temporary file and
rename it over the old one. Every Flagstone writer takes that lock, and readers never
lock: a rename is atomic, so they see the old or the new file, never a partial one.

GCS conditions a write on the object's generation, not its ETag: for ``gs://`` the token
``get`` and ``put`` return (``GetResult.etag``) is the ETag followed by
``;generation=N``, and this module takes it apart again (the ETag for ``If-None-Match``,
the generation for ``x-goog-if-generation-match``). Callers treat the token as opaque.

Endpoints: ``endpoint=`` (publish's ``endpoint:``) points ``s3://`` at an S3-compatible
server (else AWS_ENDPOINT_URL), ``gs://`` at another GCS base URL (else GOOGLE_BASE_URL)
and ``az://`` at another blob endpoint (else AZURE_STORAGE_ENDPOINT; Azurite through
AZURE_STORAGE_USE_EMULATOR and AZURITE_BLOB_STORAGE_URL, as obstore reads them). Plain
http is allowed on loopback or when asked for.

Objects may be stored gzip-compressed (``publish.compress: gzip``): ``put`` stores the
bytes it is given with the ``attributes`` it is given (``Content-Encoding: gzip``,
``Content-Type: application/json``, so plain HTTP and CDN clients inflate them), and
``get`` returns the content, inflated when the stored bytes are gzip, under a cap
counted in inflated bytes (``flagstone.compression``). Callers never see the stored
form except as ``GetResult.stored_encoding``.

Every failure is a one-line ``StoreError`` (``NotFoundError``, ``ConflictError``) naming
the location and the cause: unreachable endpoint, missing bucket, missing credentials,
permission denied, precondition failed.

Standard library and obstore only: the SDK imports this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import obstore
import obstore.exceptions as obstore_errors
from obstore.store import (
    AzureStore,
    GCSStore,
    HTTPStore,
    LocalStore,
    MemoryStore,
    S3Store,
)

if TYPE_CHECKING:
    from obstore import Attributes, GetOptions
    from obstore.store import AzureConfig, ClientConfig, GCSConfig, RetryConfig, S3Config

from flagstone.compression import GZIP, read_capped
from flagstone.errors import (
    BucketNotFoundError,
    ConflictError,
    NotFoundError,
    ObjectTooLargeError,
    StoreError,
    UsageError,
)

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 2
# What ``get`` inflates at most when its caller sets no cap (the SDK's default cap).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 256 * 1024

SCHEMES = ("file", "s3", "gs", "az", "memory", "http", "https")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; file:// if-match is refused there
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class IfMatch:
    """Write only if the object still has this ETag (as returned by ``get``)."""

    etag: str


WriteMode = Literal["create", "overwrite"] | IfMatch


@dataclass(frozen=True, slots=True)
class GetResult:
    """What ``get`` found: ``data`` (the content) is None when the object has not
    changed since ``if_none_match``; ``etag`` identifies the version read."""

    data: bytes | None
    etag: str | None
    # "gzip" when the object is stored gzip-compressed (``data`` is always inflated).
    stored_encoding: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.data is None


_MEMORY_STORES: dict[str, MemoryStore] = {}
_MEMORY_LOCK = threading.Lock()


class SnapshotStore:
    """One storage location (bucket + prefix, or directory) and the operations publish and
    the SDK need. Paths are relative to the location, ``/``-separated."""

    def __init__(
        self,
        url: str,
        store: Any | None,
        *,
        local_root: Path | None,
        read_only: bool,
        gcs: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self._opened_store = store
        self._local_root = local_root
        self._read_only = read_only
        # GCS: writes are conditional on the generation, carried in the token (see above),
        # and gzip objects are kept from decompressive transcoding (see ``put``).
        self._gcs = gcs

    def __repr__(self) -> str:
        return f"SnapshotStore({self.url!r})"

    def _backend(self, *, for_writing: bool) -> Any:
        """The obstore store. A local directory is created only when something is
        written into it, so reads and dry runs leave the file system untouched."""
        if self._opened_store is None:
            assert self._local_root is not None
            if not self._local_root.is_dir():
                if not for_writing:
                    raise NotFoundError(f"{self.url} does not exist")
                try:
                    self._local_root.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise StoreError(
                        f"cannot create {self._local_root}: {error.strerror}"
                    ) from None
            self._opened_store = LocalStore(prefix=self._local_root)
        return self._opened_store

    def location(self, path: str) -> str:
        """The URL of ``path`` in this store, for messages."""
        return f"{self.url}/{path}"

    def get(
        self,
        path: str,
        *,
        if_none_match: str | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> GetResult:
        """Read ``path``: its content, inflated if it is stored gzip-compressed (see
        ``flagstone.compression``). Raises ``NotFoundError`` if it does not exist,
        ``ObjectTooLargeError`` if its content (counted inflated) is over ``max_bytes``
        (None: the default cap; content is always bounded) and ``StoreError`` if it
        cannot be read or its gzip data is corrupt."""
        cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        where = self.location(path)
        options: GetOptions = {}
        if if_none_match is not None:
            options["if_none_match"] = _split_token(if_none_match)[0]
        try:
            result = obstore.get(self._backend(for_writing=False), path, options=options)
            size = result.meta.get("size")
            if size is not None and size > cap:
                # Stored bytes over the cap: the content, inflated or not, is too.
                raise ObjectTooLargeError(f"{where} is {size} bytes, over the {cap} byte limit")
            encoding = _stored_encoding(where, result.attributes)
            # Streamed, and stopped past the cap: the size in the metadata is what the
            # server claims, not a bound on what it sends, and a gzip object's content
            # can be far larger than its size.
            data, gzipped = read_capped(result.stream(min_chunk_size=_CHUNK), where, cap)
        except obstore_errors.NotModifiedError:
            return GetResult(None, if_none_match)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, path, "read") from None
        # A store that inflates on the way out (GCS "decompressive transcoding") still
        # says the object is stored gzip.
        stored = GZIP if gzipped or encoding == GZIP else None
        return GetResult(data, self._token(result.meta), stored)

    def get_optional(
        self, path: str, *, max_bytes: int | None = DEFAULT_MAX_BYTES
    ) -> GetResult | None:
        """``get``, or None when the object does not exist (a missing bucket still raises)."""
        try:
            return self.get(path, max_bytes=max_bytes)
        except BucketNotFoundError:
            raise
        except NotFoundError:
            return None

    def put(
        self,
        path: str,
        data: bytes,
        *,
        mode: WriteMode,
        attributes: Mapping[str, str] | None = None,
    ) -> str | None:
        """Write ``data`` to ``path`` atomically; returns the new ETag.

        ``"create"``: only if nothing is there (else ``ConflictError``).
        ``IfMatch(etag)``: only if the object still has ``etag`` (else ``ConflictError``).
        ``"overwrite"``: unconditionally.

        ``attributes`` (``Content-Type``, ``Content-Encoding``, …) are stored with the
        object where the store keeps them (S3, GCS, Azure, memory); a local directory
        has nowhere to keep them and writes the bytes alone. On GCS a gzip object also
        gets ``Cache-Control: no-transform``: otherwise GCS serves it inflated and
        without ``Content-Encoding`` to every client that does not ask for gzip
        (decompressive transcoding), and its stored form would read back as plain.
        """
        if self._read_only:
            raise StoreError(f"{self.url} is read-only (http stores serve published snapshots)")
        try:
            if isinstance(mode, IfMatch) and self._local_root is not None:
                return self._put_if_match_locally(path, data, mode.etag)
            obstore_mode: Any = mode
            if isinstance(mode, IfMatch):
                etag, generation = _split_token(mode.etag)
                obstore_mode = {"e_tag": etag}
                if self._gcs:
                    obstore_mode["version"] = generation or "0"
            kept: Attributes | None = (
                dict(attributes) if attributes and self._local_root is None else None
            )
            if self._gcs and kept and kept.get("Content-Encoding") == "gzip":
                kept.setdefault("Cache-Control", "no-transform")
            result = obstore.put(
                self._backend(for_writing=True),
                path,
                data,
                mode=obstore_mode,
                attributes=kept,
                use_multipart=False,
            )
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error, path, "write") from None
        return self._token(result)

    def _token(self, meta: Any) -> str | None:
        """What identifies the version of an object for ``get``'s and ``put``'s conditions."""
        etag = _etag(meta)
        version = meta.get("version") if isinstance(meta, dict) else None
        if self._gcs and etag is not None and version is not None:
            return f"{etag}{_GENERATION_MARK}{version}"
        return etag

    def list(self, prefix: str = "") -> list[str]:
        """Paths under ``prefix``, sorted."""
        try:
            pages = obstore.list(self._backend(for_writing=False), prefix=prefix or None)
            return sorted(item["path"] for page in pages for item in page)
        except Exception as error:
            raise self._translate(error, prefix, "list") from None

    def _put_if_match_locally(self, path: str, data: bytes, etag: str) -> str | None:
        assert self._local_root is not None
        backend = self._backend(for_writing=True)
        target = self._local_root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with _directory_lock(target.parent):
            try:
                current = _etag(obstore.head(backend, path))
            except FileNotFoundError:
                current = None
            if current != etag:
                raise ConflictError(
                    f"{self.location(path)} was changed by another writer (precondition failed)"
                )
            result = obstore.put(backend, path, data, mode="overwrite", use_multipart=False)
        return _etag(result)

    def _translate(self, error: Exception, path: str, action: str) -> StoreError:
        """A one-line StoreError for an obstore failure."""
        where = self.location(path)
        text = str(error)
        first_line = text.splitlines()[0] if text else type(error).__name__
        if isinstance(error, obstore_errors.AlreadyExistsError):
            return ConflictError(f"{where} already exists")
        if isinstance(error, obstore_errors.PreconditionError):
            return ConflictError(f"{where} was changed by another writer (precondition failed)")
        if isinstance(error, FileNotFoundError | obstore_errors.NotFoundError):
            if (
                "NoSuchBucket" in text
                or "ContainerNotFound" in text
                or "bucket does not exist" in text
            ):
                return BucketNotFoundError(
                    f"the bucket of {self.url} does not exist", hint="create it, or check the URL"
                )
            return NotFoundError(f"{where} does not exist")
        if "/latest/api/token" in text or "169.254.169.254" in text or "credential" in text.lower():
            return StoreError(
                f"cannot {action} {where}: no credentials found",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the equivalent for your cloud)",
            )
        if (
            isinstance(
                error, obstore_errors.PermissionDeniedError | obstore_errors.UnauthenticatedError
            )
            or "Permission denied" in text
            or "AccessDenied" in text
        ):
            hint = (
                "on S3 a missing object reads as 403 when the credentials lack s3:ListBucket"
                if action == "read" and self.url.startswith("s3:")
                else None
            )
            return StoreError(f"cannot {action} {where}: permission denied", hint=hint)
        if "NotImplemented" in text or isinstance(error, obstore_errors.NotSupportedError):
            return StoreError(f"cannot {action} {where}: not supported by this store")
        # Timeouts first: a timed-out connect also says "error sending request".
        if re.search(r"timed out|kind: Timeout", text, re.IGNORECASE):
            return StoreError(
                f"cannot {action} {where}: {_request_origin(text) or self.url} timed out"
            )
        unreachable = re.search(
            r"Connection refused|dns error|tcp connect error|error sending request", text
        )
        if unreachable:
            endpoint = _request_origin(text) or self.url
            return StoreError(
                f"cannot {action} {where}: {endpoint} is unreachable ({unreachable.group(0)})"
            )
        return StoreError(f"cannot {action} {where}: {_shorten(first_line)}")


def _request_origin(text: str) -> str | None:
    match = re.search(r"(https?://[^/\s]+)", text)
    return match.group(1) if match else None


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_GENERATION_MARK = ";generation="


def _split_token(token: str) -> tuple[str, str | None]:
    """(ETag, GCS generation or None) from a token made by ``SnapshotStore._token``."""
    etag, _, generation = token.partition(_GENERATION_MARK)
    return etag, generation or None


def _stored_encoding(where: str, attributes: Mapping[str, str]) -> str | None:
    """The ``Content-Encoding`` stored with an object: absent, identity or gzip (any
    other would make the bytes unreadable here, so it is refused by name)."""
    encoding = {name.lower(): value for name, value in attributes.items()}.get(
        "content-encoding", ""
    )
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding != GZIP:
        raise StoreError(f"cannot read {where}: it is stored with Content-Encoding {encoding!r}")
    return GZIP


def _etag(meta: Any) -> str | None:
    value = meta.get("e_tag") if isinstance(meta, dict) else None
    return str(value) if value is not None else None


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on a directory, released on exit (or process death)."""
    if fcntl is None:  # pragma: no cover - see module docstring
        raise StoreError("conditional writes to file:// stores need flock (POSIX)")
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def open_store(
    url: str,
    *,
    base_dir: Path | None = None,
    endpoint: str | None = None,
    region: str | None = None,
    allow_http: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> SnapshotStore:
    """A store for ``url`` (see the module docstring for the schemes).

    ``base_dir`` resolves relative ``file://`` URLs. ``endpoint`` (else AWS_ENDPOINT_URL /
    AWS_ENDPOINT) points ``s3://`` at an S3-compatible server, ``gs://`` at a GCS base URL
    (else GOOGLE_BASE_URL) and ``az://`` at a blob endpoint (else AZURE_STORAGE_ENDPOINT /
    AZURE_ENDPOINT); plain-http endpoints are allowed when ``allow_http`` (or, for S3,
    AWS_ALLOW_HTTP) says so, or when they are on loopback.
    ``timeout`` bounds each request and ``max_retries`` the retries of transient errors.
    """
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise UsageError(f"storage URL {url!r} is malformed: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"unsupported storage URL {url!r}",
            hint="use file://DIR, s3://BUCKET/PREFIX, gs://…, az://…, memory://NAME or https://…",
        )
    client_options: ClientConfig = {
        "timeout": timedelta(seconds=timeout),
        "connect_timeout": timedelta(seconds=connect_timeout),
    }
    retry_config: RetryConfig = {
        "max_retries": max_retries,
        "retry_timeout": timedelta(seconds=timeout),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=2),
            "base": 2.0,
        },
    }
    try:
        if scheme == "file":
            return _open_local(url, parts.netloc + parts.path, base_dir)
        if scheme == "memory":
            name = (parts.netloc + parts.path).strip("/")
            with _MEMORY_LOCK:
                memory = _MEMORY_STORES.setdefault(name, MemoryStore())
            return SnapshotStore(url, memory, local_root=None, read_only=False)
        if scheme in ("http", "https"):
            client_options["allow_http"] = scheme == "http"
            http = HTTPStore.from_url(url, client_options=client_options, retry_config=retry_config)
            return SnapshotStore(url, http, local_root=None, read_only=True)
        if scheme == "s3":
            endpoint = (
                endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
            )
            config: S3Config = {}
            if endpoint:
                config["endpoint"] = endpoint
                if _plain_http_allowed(
                    endpoint, True if _truthy(os.environ.get("AWS_ALLOW_HTTP")) else allow_http
                ):
                    client_options["allow_http"] = True
            if region:
                config["region"] = region
            s3 = S3Store.from_url(
                url, config=config, client_options=client_options, retry_config=retry_config
            )
            return SnapshotStore(url, s3, local_root=None, read_only=False)
        if scheme == "gs":
            endpoint = endpoint or os.environ.get("GOOGLE_BASE_URL")
            gcs_config: GCSConfig = {}
            if endpoint:
                gcs_config["base_url"] = endpoint
                if _plain_http_allowed(endpoint, allow_http):
                    client_options["allow_http"] = True
            google = GCSStore.from_url(
                url, config=gcs_config, client_options=client_options, retry_config=retry_config
            )
            return SnapshotStore(url, google, local_root=None, read_only=False, gcs=True)
        endpoint = (
            endpoint or os.environ.get("AZURE_STORAGE_ENDPOINT") or os.environ.get("AZURE_ENDPOINT")
        )
        azure_config: AzureConfig = {}
        if endpoint:
            azure_config["endpoint"] = endpoint
            if _plain_http_allowed(endpoint, allow_http):
                client_options["allow_http"] = True
        azure = AzureStore.from_url(
            url, config=azure_config, client_options=client_options, retry_config=retry_config
        )
        return SnapshotStore(url, azure, local_root=None, read_only=False)
    except StoreError:
        raise
    except Exception as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise StoreError(f"cannot open {url}: {_shorten(first_line)}") from None


def _plain_http_allowed(endpoint: str, allow_http: bool | None) -> bool:
    """An http:// endpoint is used when asked for, or by default on loopback."""
    if not endpoint.startswith("http://"):
        return False
    host = urlsplit(endpoint).hostname or ""
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return bool(allow_http) or (allow_http is None and loopback)


def _open_local(url: str, location: str, base_dir: Path | None) -> SnapshotStore:
    # file://dist is "dist" relative to base_dir; file:///srv/x is absolute.
    if not location:
        raise UsageError(f"storage URL {url!r} names no directory")
    directory = Path(location)
    if not directory.is_absolute():
        directory = (base_dir or Path.cwd()) / directory
    directory = directory.resolve()
    return SnapshotStore(directory.as_uri(), None, local_root=directory, read_only=False)
