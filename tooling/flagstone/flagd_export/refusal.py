"""What cannot be exported to flagd: the refusal, where its construct is written, and
the exception that carries it out of the translator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flagstone.errors import ExportError


@dataclass(frozen=True, slots=True)
class Place:
    """Where a refused construct is written: ``path`` inside the flag's release file for
    the environment (``release``), its ``flag.yaml`` (``flag``), or the file of
    ``segment`` (``segment``)."""

    file: Literal["release", "flag", "segment"]
    path: tuple[str | int, ...] = ()
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A flag left out of an export, why, and where the construct is written."""

    flag: str
    reason: str
    place: Place | None = None

    def message(self) -> str:
        return f"flag {self.flag!r}: {self.reason}"


class FlagdRefused(ExportError):
    """A flag cannot be exported to flagd; ``refusal`` says which, why and where."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            f"cannot export {refusal.message()}",
            hint="flagd cannot evaluate this exactly as Flagstone does; change the flag, "
            "or pass --skip-unsupported to leave such flags out",
        )
        self.refusal = refusal


class Unsupported(Exception):
    """A construct with no exact flagd form; carries the construct's description and,
    once known, where it is written (the innermost place wins)."""

    def __init__(self, message: str, place: Place | None = None) -> None:
        super().__init__(message)
        self.place = place

    def within(self, prefix: str, place: Place | None) -> Unsupported:
        """The same problem described from an enclosing construct."""
        return Unsupported(f"{prefix}: {self}", self.place or place)
