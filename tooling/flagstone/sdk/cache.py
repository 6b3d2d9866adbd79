"""The SDK's last known good snapshot on disk (``cache_dir``).

Two files per environment, each replaced atomically (write a temporary file in the
same directory, fsync, rename over the old one), so a crash leaves the old or the new
file and never half of one:

* ``<environment>.envelope.json`` — the last verified envelope, byte for byte as it was
  fetched. It is verified again when loaded (signatures are cheap and the trusted keys
  may have changed since), so the file is not trusted merely for being on disk.
* ``<environment>.state.json`` — ``{"format", "project", "environment",
  "highest_version"}``: the highest version ever accepted, so a replayed older snapshot
  is refused even after a restart. It never goes down: a write keeps the larger of
  what is on disk and what is being written.

Failures to read are reported to the caller as messages (the client logs them and
starts without a cache); failures to write raise ``OSError`` for the client to log.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_FORMAT = "flagstone.sdk-cache/1"


@dataclass(frozen=True, slots=True)
class CachedState:
    """What ``SnapshotCache.load`` found; ``problems`` says what could not be used."""

    envelope: bytes | None
    highest_version: int
    project: str | None
    problems: tuple[str, ...]


class SnapshotCache:
    """The cache files of one environment in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], environment: str) -> None:
        self.directory = Path(directory)
        self.environment = environment
        self.envelope_path = self.directory / f"{environment}.envelope.json"
        self.state_path = self.directory / f"{environment}.state.json"

    def load(self, *, max_bytes: int) -> CachedState:
        problems: list[str] = []
        highest, project = 0, None
        state = self._read_state(problems)
        if state is not None:
            highest, project = state
        envelope: bytes | None = None
        try:
            if self.envelope_path.stat().st_size > max_bytes:
                problems.append(f"{self.envelope_path} is over the {max_bytes} byte cap")
            else:
                envelope = self.envelope_path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as error:
            problems.append(f"cannot read {self.envelope_path}: {error.strerror or error}")
        return CachedState(envelope, highest, project, tuple(problems))

    def _read_state(self, problems: list[str]) -> tuple[int, str | None] | None:
        try:
            document: Any = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            problems.append(f"cannot read {self.state_path}: {error}")
            return None
        if not isinstance(document, dict):
            problems.append(f"{self.state_path} is not a Flagstone SDK cache state file")
            return None
        highest = document.get("highest_version")
        project = document.get("project")
        if (
            document.get("format") != CACHE_FORMAT
            or document.get("environment") != self.environment
            or not isinstance(highest, int)
            or isinstance(highest, bool)
            or highest < 0
            or not (project is None or isinstance(project, str))
        ):
            problems.append(f"{self.state_path} is not a Flagstone SDK cache state file")
            return None
        return highest, project

    def save(self, envelope: bytes | None, version: int, project: str) -> None:
        """Record ``version`` as accepted (never lowering the recorded highest) and, when
        given, ``envelope`` as the last verified snapshot."""
        self.directory.mkdir(parents=True, exist_ok=True)
        on_disk = self._read_state([])
        highest = max(version, on_disk[0] if on_disk is not None else 0)
        state = {
            "format": CACHE_FORMAT,
            "project": project,
            "environment": self.environment,
            "highest_version": highest,
        }
        # The highest version first: if the process dies between the two writes, the
        # replay protection is already in place.
        _write_atomically(self.state_path, json.dumps(state, sort_keys=True).encode() + b"\n")
        if envelope is not None:
            _write_atomically(self.envelope_path, envelope)


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
