"""Writing and reading files without following links planted by someone else.

Every file Flagstone writes goes through ``write_file_atomically``: the new content goes
to a temporary file created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` *in the destination
folder*, is flushed to disk, and is renamed over the destination, so a reader sees the
old file or the new one, never half of one, and a link planted at the temporary name
is never written through. The folders are walked one at a time with ``O_NOFOLLOW``
below ``expected_dir`` (the folder the caller trusts: the repository root, or the folder
a user named on the command line), so a ``.github`` that is a link to somewhere else is
refused instead of written into. A destination that is itself a symbolic link is
refused too: replacing it would silently turn a link someone made on purpose into a
file.

Readers use ``read_regular_file`` (or ``open_regular_file_for_read``): the file is
opened with ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO cannot make the reader wait for a writer)
and must be a regular file no larger than the cap.

POSIX only (``dir_fd`` and ``O_NOFOLLOW``). This module imports nothing outside the
standard library: the SDK's disk cache uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flagstone.errors import (
    DestinationExistsError,
    FileAccessError,
    FileTooLargeError,
    NotRegularFileError,
    SymlinkRefusedError,
)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_TEMPORARY_ATTEMPTS = 8
DEFAULT_MODE = 0o644


def _temporary_name(name: str) -> str:
    """A fresh hidden name next to ``name`` (tests replace it to plant links there)."""
    return f".{name}.{secrets.token_hex(6)}.tmp"


def _describe(error: OSError) -> str:
    return error.strerror or str(error)


def _relative_parts(folder: Path, expected_dir: Path) -> tuple[str, ...]:
    """The components of ``folder`` below ``expected_dir`` (lexically, no resolving)."""
    try:
        relative = folder.relative_to(expected_dir)
    except ValueError:
        raise FileAccessError(f"cannot write in {folder}: not inside {expected_dir}") from None
    parts = relative.parts
    if any(part in ("..", "") for part in parts):
        raise FileAccessError(f"cannot write in {folder}: it leaves {expected_dir}")
    return parts


@contextlib.contextmanager
def _open_folder(destination: Path, expected_dir: Path | None, *, create: bool) -> Iterator[int]:
    """A descriptor of ``folder``, reached from ``expected_dir`` without following any
    symbolic link below it (``expected_dir`` itself may be one: the caller trusts it).
    With ``create``, missing folders are made on the way."""
    folder = destination.parent
    start = expected_dir if expected_dir is not None else folder
    parts = _relative_parts(folder, expected_dir) if expected_dir is not None else ()
    try:
        descriptor = os.open(start, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError as error:
        raise FileAccessError(f"cannot write {destination}: {_describe(error)}") from None
    reached = start
    try:
        for part in parts:
            reached = reached / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=descriptor)
            try:
                child = os.open(
                    part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=descriptor
                )
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink_at(part, descriptor):
                    raise SymlinkRefusedError(
                        f"cannot write {destination}: {reached} is a symbolic link; "
                        "refusing to write through it",
                        hint="replace the link with a real folder, or write somewhere else",
                    ) from None
                raise FileAccessError(
                    f"cannot write {destination}: folder {reached}: {_describe(error)}"
                ) from None
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def _is_symlink_at(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=folder).st_mode)
    except OSError:
        return False


def write_file_atomically(
    path: Path | str,
    data: bytes,
    *,
    mode: int | None = DEFAULT_MODE,
    expected_dir: Path | str | None = None,
    create_dirs: bool = False,
    replace: bool = True,
    durable: bool = True,
) -> None:
    """Write ``data`` to ``path`` whole or not at all.

    ``expected_dir``: the folder the caller trusts (the repository root); every folder
    between it and ``path`` must be a real folder, not a symbolic link. Without it, the
    folder ``path`` names is trusted as given (the user named it). ``mode``: the
    permission bits of the new file; ``None`` keeps those of the file being replaced
    (0o644 for a new one). ``create_dirs`` makes missing folders below ``expected_dir``.
    ``replace=False`` refuses an existing destination (``DestinationExistsError``).
    ``durable=False`` skips flushing to the disk (for a file whose loss after a crash
    only costs time, such as a cache entry that is checked before it is used).

    Raises ``SymlinkRefusedError`` for a symbolic link in the way, ``NotRegularFileError``
    for a destination that is a folder or a device, ``FileAccessError`` for any other
    failure. Nothing is left behind on failure.
    """
    path = Path(path)
    name = path.name
    if not name or name in (".", ".."):
        raise FileAccessError(f"cannot write {path}: not a file name")
    trusted = Path(expected_dir) if expected_dir is not None else None
    with _open_folder(path, trusted, create=create_dirs) as folder:
        existing = _existing_destination(path, name, folder)
        if existing is not None and not replace:
            raise DestinationExistsError(f"cannot write {path}: it already exists")
        if mode is None:
            mode = stat.S_IMODE(existing.st_mode) if existing is not None else DEFAULT_MODE
        temporary, handle = _create_temporary(path, name, folder)
        try:
            try:
                os.fchmod(handle, mode)
                view = memoryview(data)
                while view:
                    written = os.write(handle, view)
                    view = view[written:]
                if durable:
                    os.fsync(handle)
            finally:
                os.close(handle)
            if replace:
                os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                _link_without_replacing(path, temporary, name, folder)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            if isinstance(error, OSError):
                raise FileAccessError(f"cannot write {path}: {_describe(error)}") from None
            raise
        if durable:
            with contextlib.suppress(OSError):  # some filesystems cannot sync a folder
                os.fsync(folder)


def _existing_destination(path: Path, name: str, folder: int) -> os.stat_result | None:
    try:
        existing = os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise FileAccessError(f"cannot write {path}: {_describe(error)}") from None
    if stat.S_ISLNK(existing.st_mode):
        raise SymlinkRefusedError(
            f"cannot write {path}: it is a symbolic link; refusing to replace it",
            hint="delete the link (or write to the file it points at) and run again",
        )
    if not stat.S_ISREG(existing.st_mode):
        raise NotRegularFileError(f"cannot write {path}: it exists and is not a regular file")
    return existing


def _create_temporary(path: Path, name: str, folder: int) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    for _ in range(_TEMPORARY_ATTEMPTS):
        temporary = _temporary_name(name)
        try:
            return temporary, os.open(temporary, flags, 0o600, dir_fd=folder)
        except FileExistsError:
            continue  # taken (perhaps by a planted link): O_EXCL refused it, try another
        except OSError as error:
            raise FileAccessError(f"cannot write {path}: {_describe(error)}") from None
    raise FileAccessError(f"cannot write {path}: no free temporary name in its folder")


def _link_without_replacing(path: Path, temporary: str, name: str, folder: int) -> None:
    try:
        os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise DestinationExistsError(f"cannot write {path}: it already exists") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)


def open_regular_file_for_read(
    path: Path | str, max_bytes: int, *, follow_symlinks: bool = False
) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file of at most ``max_bytes``.

    Never follows a symbolic link at ``path`` (unless ``follow_symlinks``: for a caller
    that checked where the link leads) and never waits on a FIFO. Raises
    ``FileNotFoundError`` if nothing is there, ``SymlinkRefusedError``,
    ``NotRegularFileError``, ``FileTooLargeError`` or ``FileAccessError``.
    """
    path = Path(path)
    try:
        nofollow = 0 if follow_symlinks else _NOFOLLOW
        descriptor = os.open(path, os.O_RDONLY | nofollow | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP or (
            error.errno == errno.EMLINK and path.is_symlink()  # FreeBSD says EMLINK
        ):
            raise SymlinkRefusedError(f"{path} is a symbolic link; refusing to read it") from None
        raise FileAccessError(f"cannot read {path}: {_describe(error)}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFileError(f"{path} is not a regular file")
        if status.st_size > max_bytes:
            raise FileTooLargeError(
                f"{path} is {status.st_size} bytes, over the {max_bytes}-byte limit"
            )
        if _NONBLOCK:
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_at_most(handle: BinaryIO, max_bytes: int) -> bytes:
    """Up to ``max_bytes + 1`` bytes of the open regular file ``handle`` (one byte more
    than the cap tells a file that grew past it). One read sized by the file's current
    size, not by the cap: ``read(max_bytes + 1)`` reserves a buffer of the cap's size
    (256 MiB for the SDK) on every call. A file that grew since is read on to the cap."""
    size = os.fstat(handle.fileno()).st_size
    data = handle.read(min(size, max_bytes) + 1)
    if size < len(data) <= max_bytes:
        data += handle.read(max_bytes + 1 - len(data))
    return data


def read_regular_file(path: Path | str, max_bytes: int, *, follow_symlinks: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (see ``open_regular_file_for_read``); a file
    that grows past ``max_bytes`` while it is read is refused too."""
    with open_regular_file_for_read(path, max_bytes, follow_symlinks=follow_symlinks) as handle:
        try:
            data = read_at_most(handle, max_bytes)
        except OSError as error:
            raise FileAccessError(f"cannot read {path}: {_describe(error)}") from None
    if len(data) > max_bytes:
        raise FileTooLargeError(f"{path} is over the {max_bytes}-byte limit")
    return data
