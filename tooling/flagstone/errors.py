"""The one exception tree of Flagstone.

Findings about the repository (schema errors, lint results) are data — ``Problem``
values — and are never raised. Exceptions are for work that cannot go on::

    FlagstoneError                  base; the CLI maps every subclass to an exit code
    ├── UsageError                  bad arguments or options                    (exit 2)
    ├── RepositoryError             no flag repository / unreadable project file (exit 2)
    ├── LoadError                   a YAML file cannot be read; carries a Problem (exit 1)
    ├── ValidationFailed            the project has error-level findings          (exit 1)
    ├── EnvelopeError               signature, payload type, digest, expiry …    (exit 1)
    ├── SnapshotFormatError         a snapshot payload does not have the snapshot form (exit 1)
    ├── StoreError                  object storage unreachable or refused        (exit 1)
    │   ├── ConflictError           a conditional write lost a race              (exit 1)
    │   ├── ObjectTooLargeError     an object over its reader's cap (inflated size) (exit 1)
    │   └── NotFoundError           the object does not exist                    (exit 1)
    │       └── BucketNotFoundError the bucket/container itself does not exist   (exit 1)
    ├── GitError                    git failed or a revision is unknown          (exit 1)
    ├── EditError                   an edit would leave the repository invalid   (exit 1)
    ├── ExportError                 a flag cannot be expressed in an export format (exit 1)
    │   └── FlagdRefused            one flag flagd cannot evaluate exactly; names it (exit 1)
    ├── GateConfigError             metric sources, metrics or gates cannot be used (exit 1)
    ├── MetricQueryError            a metric source failed or answered nonsense   (exit 1)
    └── FileAccessError             a file cannot be read or written safely       (exit 2)
        ├── SymlinkRefusedError     a symbolic link where a real file/folder must be (exit 2)
        ├── NotRegularFileError     a folder, FIFO or device where a file must be (exit 2)
        ├── FileTooLargeError       a file over the size limit of its reader      (exit 2)
        └── DestinationExistsError  a writer that must not overwrite found a file (exit 2)

This module imports nothing outside the standard library: the SDK uses it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flagstone.problems import Problem


class FlagstoneError(Exception):
    """Base of every error Flagstone raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(FlagstoneError):
    """The command was called wrongly (unknown environment, bad option value, …)."""

    exit_code = 2


class RepositoryError(FlagstoneError):
    """No flag repository was found, or its project file cannot be used at all."""

    exit_code = 2


class LoadError(FlagstoneError):
    """A YAML file could not be read; ``problem`` says where and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.format_line(), hint=problem.hint)
        self.problem = problem


class ValidationFailed(FlagstoneError):
    """The repository has error-level findings, so it cannot be compiled or edited."""

    def __init__(self, problems: list[Problem]) -> None:
        errors = [p for p in problems if p.level == "error"]
        first = errors[0].format_line() if errors else "validation failed"
        more = f" (and {len(errors) - 1} more; run `flagstone validate`)" if len(errors) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class EnvelopeError(FlagstoneError):
    """A signed snapshot was rejected: signatures, payload type, digest, project, expiry."""


class SnapshotFormatError(FlagstoneError):
    """A snapshot payload is malformed or a value cannot be written in the snapshot form."""


class StoreError(FlagstoneError):
    """Object storage could not be read or written."""


class ConflictError(StoreError):
    """A conditional write found that someone else had written first."""


class ObjectTooLargeError(StoreError):
    """A stored object is over the size cap of its reader (counted after inflating a
    gzip-compressed object, so a small object cannot inflate past it)."""


class NotFoundError(StoreError):
    """The object asked for does not exist in the store."""


class BucketNotFoundError(NotFoundError):
    """The bucket or container of a storage URL does not exist (not just one object)."""


class GitError(FlagstoneError):
    """A git command failed or a revision does not exist."""


class EditError(FlagstoneError):
    """An edit was refused because the result would be invalid or unsafe."""


class ExportError(FlagstoneError):
    """A flag uses a construct the export format cannot reproduce exactly."""


class FileAccessError(FlagstoneError):
    """A file could not be read or written safely (``flagstone.safefiles``)."""

    exit_code = 2


class SymlinkRefusedError(FileAccessError):
    """A symbolic link stands where a real file or folder is required."""


class NotRegularFileError(FileAccessError):
    """A folder, FIFO, socket or device stands where a regular file is required."""


class FileTooLargeError(FileAccessError):
    """A file is larger than its reader accepts."""


class DestinationExistsError(FileAccessError):
    """A writer that must never overwrite found its destination already there."""


class GateConfigError(FlagstoneError):
    """Metric sources, metrics or gates are declared in a way that cannot be used."""


class MetricQueryError(FlagstoneError):
    """A metric source could not be queried, or answered something that is not a number."""
