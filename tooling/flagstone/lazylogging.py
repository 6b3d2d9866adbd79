"""A logger that imports :mod:`logging` when it first logs (issue 18.2): the SDK logs
only when a snapshot loads, a fetch fails or a callback raises, so ``import
flagstone.sdk`` need not pay for ``logging`` (about 5 ms)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import logging


class _LazyLogger:
    """Hands out the bound methods of ``logging.getLogger(name)``: the caller calls them
    directly, so records name the caller's file and line as a plain logger's would."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy logger {self._name}>"


def lazy_logger(name: str) -> logging.Logger:
    """What ``logging.getLogger(name)`` returns, once anything is asked of it."""
    return cast("logging.Logger", _LazyLogger(name))
