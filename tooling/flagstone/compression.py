"""Gzip for stored snapshots: deterministic compression for ``publish`` and inflation
under a size cap for every reader (docs/design.md §6, docs/snapshot-format.md "Size
and compression").

A stored object is either the JSON document itself or that document gzip-compressed
(RFC 1952). Readers tell them apart by the first two bytes: gzip always starts with
``1f 8b``, and JSON text never starts with the byte ``1f`` (a control character, which
JSON allows only inside strings). So a reader needs no metadata to read either form,
and the ``Content-Encoding: gzip`` attribute a store keeps next to the object (for
plain HTTP and CDN clients) is a hint, not something to trust.

What is signed never changes: the DSSE signatures are over the canonical payload inside
the envelope; gzip wraps the envelope's bytes for storage and transport only.

Inflation is streamed and bounded: :class:`CappedReader` takes the stored bytes chunk by
chunk and never produces more than ``max_bytes`` of output, so a small compressed object
that would inflate to gigabytes (a gzip bomb) is refused after ``max_bytes`` of work, not
after inflating it all. A truncated or corrupt stream, or bytes after the end of the
gzip stream, is refused with a one-line cause.

Standard library only (zlib): the SDK imports this module.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from flagstone.errors import ObjectTooLargeError, StoreError

GZIP = "gzip"
GZIP_MAGIC = b"\x1f\x8b"
# The one level publish uses (the smallest zlib makes; its cost is paid once per
# publish, the bytes saved on every fetch).
GZIP_LEVEL = 9
# RFC 1952 header: magic, CM=8 (deflate), FLG=0 (no name, comment or extra field),
# MTIME=0, XFL=2 (maximum compression), OS=255 (unknown). Written by hand rather than by
# zlib's gzip wrapper, whose OS byte depends on the platform zlib was built for.
_HEADER = GZIP_MAGIC + b"\x08\x00\x00\x00\x00\x00\x02\xff"


def gzip_deterministic(data: bytes) -> bytes:
    """``data`` gzip-compressed, with no file name and a zero timestamp: the same input
    gives the same bytes (for a given zlib), whenever and wherever it is compressed."""
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflater.compress(data) + deflater.flush()
    trailer = zlib.crc32(data).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
    return _HEADER + body + trailer


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP_MAGIC


class CappedReader:
    """The bytes of one stored object, fed in chunks: kept as they are, or inflated
    when they are gzip (told by the first two bytes; ``gzipped=True`` says so up front,
    as an HTTP ``Content-Encoding: gzip`` does). At most ``max_bytes`` of output are
    ever produced; ``ObjectTooLargeError`` is raised as soon as there would be more.

    ``feed`` returns the output of each chunk (so readers can be chained: an HTTP body
    with ``Content-Encoding: gzip`` whose content is itself a stored gzip object);
    ``finish`` checks that a gzip stream ended properly and returns what is left."""

    def __init__(self, where: str, max_bytes: int, *, gzipped: bool | None = None) -> None:
        self.where = where
        self.max_bytes = max_bytes
        self.received = 0
        self.produced = 0
        self.gzipped = gzipped
        self._start = b""  # the first byte, while the second is awaited
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None

    def feed(self, chunk: bytes) -> bytes:
        self.received += len(chunk)
        if self.received > self.max_bytes:  # the stored bytes alone are over the cap
            raise ObjectTooLargeError(f"{self.where} is over the {self.max_bytes} byte limit")
        if self.gzipped is None:
            chunk = self._start + chunk
            if len(chunk) < len(GZIP_MAGIC):
                self._start = chunk
                return b""
            self._start = b""
            self.gzipped = is_gzip(chunk)
            if self.gzipped:
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._inflater is None:
            return self._count(chunk)
        return self._inflate(chunk)

    def _count(self, output: bytes) -> bytes:
        self.produced += len(output)
        if self.produced > self.max_bytes:
            raise ObjectTooLargeError(self._too_large())
        return output

    def _inflate(self, chunk: bytes) -> bytes:
        assert self._inflater is not None
        inflater = self._inflater
        if inflater.eof:
            if chunk:
                raise StoreError(
                    f"cannot read {self.where}: bytes after the end of the gzip stream"
                )
            return b""
        pieces: list[bytes] = []
        pending = chunk
        while pending and not inflater.eof:
            try:
                # max_length bounds what one call may produce (always ≥ 1 here): a bomb
                # is stopped one byte past the cap, whatever its ratio.
                piece = inflater.decompress(pending, self.max_bytes + 1 - self.produced)
            except zlib.error as error:
                raise StoreError(f"cannot read {self.where}: corrupt gzip data ({error})") from None
            self.produced += len(piece)
            if self.produced > self.max_bytes:
                raise ObjectTooLargeError(self._too_large())
            pieces.append(piece)
            pending = inflater.unconsumed_tail
        if inflater.eof and inflater.unused_data:
            raise StoreError(f"cannot read {self.where}: bytes after the end of the gzip stream")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def finish(self) -> bytes:
        """What is still held back; raises if a gzip stream was cut short."""
        if self.gzipped is None:
            self.gzipped = False
            return self._count(self._start)
        if self._inflater is not None and not self._inflater.eof:
            raise StoreError(f"cannot read {self.where}: the gzip data is truncated")
        return b""

    def _too_large(self) -> str:
        inflated = " once inflated" if self.gzipped else ""
        return f"{self.where} is over the {self.max_bytes} byte limit{inflated}"


def read_capped(
    chunks: Iterable[bytes], where: str, max_bytes: int, *, gzipped: bool | None = None
) -> tuple[bytes, bool]:
    """The content of the object whose stored bytes arrive as ``chunks`` (inflated if
    they are gzip), and whether they were gzip. Stops consuming ``chunks`` as soon as the
    output passes ``max_bytes`` (``ObjectTooLargeError``); ``StoreError`` for a
    truncated or corrupt gzip stream."""
    reader = CappedReader(where, max_bytes, gzipped=gzipped)
    pieces = [reader.feed(chunk) for chunk in chunks]
    pieces.append(reader.finish())
    return b"".join(pieces), bool(reader.gzipped)
