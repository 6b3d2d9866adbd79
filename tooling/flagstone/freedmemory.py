"""Giving the memory a large load freed back to the operating system (issue 18.2).

Loading a snapshot of tens of megabytes allocates buffers of its size that live for a
moment: the envelope, the decoded text, DSSE's signed message. Once glibc's malloc has
freed one such buffer it raises its threshold for serving large blocks from ``mmap``,
so the next ones come from the heap, and the heap keeps the pages they leave behind
(about 20 MB after a 50,000-flag load; RSS went from 74 MB to 54 MB). ``malloc_trim``
hands those pages back. Elsewhere (musl, macOS, Windows) this does nothing.

Standard library only: the SDK imports this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_UNSET: Any = object()
_trim: Callable[[int], int] | None = _UNSET

# Below this, a load leaves too little behind to be worth a call.
LARGE_LOAD_BYTES = 1 << 20


def return_freed_memory() -> bool:
    """Ask the C allocator to return its free pages to the operating system; True when
    it could be asked (glibc). Never raises."""
    global _trim
    if _trim is _UNSET:
        _trim = _find_malloc_trim()
    if _trim is None:
        return False
    try:
        _trim(0)
    except Exception:  # never let housekeeping fail a load
        return False
    return True


def _find_malloc_trim() -> Callable[[int], int] | None:
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):  # not glibc, or no ctypes
        return None
    return trim
