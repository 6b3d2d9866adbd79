"""The SDK's last known good snapshot on disk (``cache_dir``).

Three files per environment:

* ``<environment>.envelope.json`` — the last verified envelope, byte for byte as it was
  verified (inflated, if it was stored gzip-compressed: the cache holds what was checked,
  never the stored form). It is verified again when loaded (signatures are cheap and the trusted keys
  may have changed since), so the file is not trusted merely for being on disk, and it
  is served only if its version is not below the recorded floor.
* ``<environment>.state.json`` — ``{"format", "project", "environment",
  "highest_version", "highest_keyids", "envelope_version"}``: the highest version ever
  accepted (the floor, so a replayed older snapshot is refused even after a restart),
  the key ids whose signatures vouched for it (a floor vouched for only by keys that are
  no longer trusted stops pinning: TUF's recovery from a fast-forward attack, see
  docs/security.md) and the version of the envelope file.
* ``<environment>.lock`` — an empty file whose ``flock`` serialises the
  read-modify-write of a save across processes sharing ``cache_dir``: the floor never
  goes down and a newer envelope is never replaced by an older one.

Files are written through ``flagstone.safefiles`` (a temporary file created
``O_CREAT|O_EXCL|O_NOFOLLOW`` in the folder, fsync, rename) and read only if they are
regular files within the size cap, opened ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO, a device
or a symbolic link planted in the folder is refused, never waited on or followed).
Anything unusable on load is reported as a problem (the client logs one warning each)
and ignored; loading never raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flagstone.envelope import read_json
from flagstone.errors import EnvelopeError, FlagstoneError
from flagstone.safefiles import read_regular_file, write_file_atomically

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: saves are not serialised there
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = "flagstone.sdk-cache/1"
# A state file is a few hundred bytes; anything much larger is not ours.
_STATE_MAX_BYTES = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True, slots=True)
class VersionFloor:
    """The highest version accepted, and the key ids that signed it (empty: unknown,
    from an older cache format; such a floor keeps pinning)."""

    version: int = 0
    keyids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CachedState:
    """What ``SnapshotCache.load`` found; ``problems`` says what could not be used."""

    envelope: bytes | None
    floor: VersionFloor
    project: str | None
    state_found: bool  # False: missing or unusable (the client rewrites it)
    problems: tuple[str, ...] = field(default=())

    @property
    def highest_version(self) -> int:
        return self.floor.version


class SnapshotCache:
    """The cache files of one environment in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], environment: str) -> None:
        self.directory = Path(directory)
        self.environment = environment
        self.envelope_path = self.directory / f"{environment}.envelope.json"
        self.state_path = self.directory / f"{environment}.state.json"
        self.lock_path = self.directory / f"{environment}.lock"

    def load(self, *, max_bytes: int) -> CachedState:
        """What is on disk; never raises (problems are listed instead)."""
        problems: list[str] = []
        state = self._read_state(problems)
        envelope: bytes | None = None
        try:
            envelope = read_regular_file(self.envelope_path, max_bytes)
        except FileNotFoundError:
            pass
        except FlagstoneError as error:
            problems.append(error.message)
        except OSError as error:
            problems.append(f"cannot read {self.envelope_path}: {error.strerror or error}")
        if state is None:
            return CachedState(envelope, VersionFloor(), None, False, tuple(problems))
        floor, project, _ = state
        return CachedState(envelope, floor, project, True, tuple(problems))

    def _read_state(self, problems: list[str]) -> tuple[VersionFloor, str | None, int] | None:
        try:
            raw = read_regular_file(self.state_path, _STATE_MAX_BYTES)
        except FileNotFoundError:
            return None
        except FlagstoneError as error:
            problems.append(error.message)
            return None
        except OSError as error:
            problems.append(f"cannot read {self.state_path}: {error.strerror or error}")
            return None
        return _parse_state(raw, self.environment, str(self.state_path), problems)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock shared by every process using this cache folder."""
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(
            self.lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o600
        )
        try:
            if fcntl is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def save(
        self,
        envelope: bytes | None,
        version: int,
        project: str,
        keyids: frozenset[str] = frozenset(),
        *,
        floor_counts: Callable[[VersionFloor], bool] = lambda floor: True,
    ) -> None:
        """Record ``version``, signed by ``keyids``, as accepted and, when given,
        ``envelope`` as the last verified snapshot (None: the envelope file already holds
        ``version``; the state is being written again).

        Under the folder's lock: the floor kept is the higher of the one on disk (if
        ``floor_counts`` says it is vouched for by keys still trusted) and this one, so
        another process never lowers it, and the envelope file is replaced only by a
        newer (or equal) version. Raises ``OSError`` when it cannot write; the client
        logs it.
        """
        try:
            self._save_locked(envelope, version, project, keyids, floor_counts)
        except FlagstoneError as error:  # safefiles' refusals, for callers expecting OSError
            raise OSError(error.message) from None

    def _save_locked(
        self,
        envelope: bytes | None,
        version: int,
        project: str,
        keyids: frozenset[str],
        floor_counts: Callable[[VersionFloor], bool],
    ) -> None:
        with self._locked():
            on_disk = self._read_state([])
            floor, envelope_version = VersionFloor(version, keyids), version
            # What is on disk counts only if it is this project's and vouched for by
            # keys still trusted (else it is what a key rotation is getting rid of).
            if on_disk is not None and on_disk[1] == project and floor_counts(on_disk[0]):
                disk_floor, _, disk_envelope_version = on_disk
                if disk_floor.version > version:
                    floor = disk_floor
                if disk_envelope_version > version:
                    envelope = None  # another process cached a newer one meanwhile
                    envelope_version = disk_envelope_version
            # The envelope first: a crash between the two writes leaves the newer
            # envelope with the older state, and loading takes the higher of both.
            if envelope is not None:
                _remove_if_not_regular(self.envelope_path)
                write_file_atomically(self.envelope_path, envelope, mode=0o600)
            state = {
                "format": CACHE_FORMAT,
                "project": project,
                "environment": self.environment,
                "highest_version": floor.version,
                "highest_keyids": sorted(floor.keyids),
                "envelope_version": envelope_version,
            }
            _remove_if_not_regular(self.state_path)
            write_file_atomically(
                self.state_path,
                json.dumps(state, sort_keys=True).encode() + b"\n",
                mode=0o600,
            )


def _remove_if_not_regular(path: Path) -> None:
    """Clear our own file name of what loading refused (a FIFO, a symbolic link, a
    device): the link itself is removed, never what it points at."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(status.st_mode) and not stat.S_ISDIR(status.st_mode):
        os.unlink(path)


def _parse_state(
    raw: bytes, environment: str, where: str, problems: list[str]
) -> tuple[VersionFloor, str | None, int] | None:
    not_ours = f"{where} is not a Flagstone SDK cache state file"
    try:
        document: Any = read_json(raw, where)
    except EnvelopeError:
        problems.append(not_ours)
        return None
    if not isinstance(document, dict):
        problems.append(not_ours)
        return None
    highest: Any = document.get("highest_version")
    project = document.get("project")
    keyids = document.get("highest_keyids", [])
    envelope_version: Any = document.get("envelope_version", 0)
    if (
        document.get("format") != CACHE_FORMAT
        or document.get("environment") != environment
        or not _is_version(highest)
        or not _is_version(envelope_version)
        or not (project is None or isinstance(project, str))
        or not isinstance(keyids, list)
        or not all(isinstance(keyid, str) for keyid in keyids)
    ):
        problems.append(not_ours)
        return None
    return VersionFloor(int(highest), frozenset(keyids)), project, int(envelope_version)


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53
