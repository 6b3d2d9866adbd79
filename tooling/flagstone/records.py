"""Immutable value classes for the SDK path without ``@dataclass`` (issue 18.2).

A ``@dataclass`` decorator compiles generated source when its module is imported (close
to 1 ms each) and ``dataclasses`` pulls in ``inspect``; the SDK path's value classes
(Details, TrustedKey, Stage, …) subclass :class:`Record` and write their ``__init__``
instead. A Record compares, hashes and prints by ``_fields`` as a frozen dataclass does,
and refuses assignment with ``dataclasses.FrozenInstanceError`` (an AttributeError)."""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn, Self

# For __init__ methods: a Record's own __setattr__ refuses.
set_field = object.__setattr__


class Record:
    """Base of an immutable value class: subclasses name their fields in ``_fields``
    (the order of ``__init__``'s parameters, which compare, hash and print) and set
    them in ``__init__`` with :func:`set_field`."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"

    def replaced(self, **changes: Any) -> Self:
        """A copy with ``changes`` (what ``dataclasses.replace`` does for a dataclass)."""
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        return type(self)(**values)
