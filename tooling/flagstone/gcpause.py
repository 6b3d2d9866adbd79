"""Pausing Python's cyclic garbage collector while large, acyclic structures are built.

Loaded YAML documents, snapshot payloads and compiled snapshots hold no reference
cycles, so the collector has nothing to find in them; left on, every allocation burst
triggers collections that rescan everything already alive, which makes building them
grow faster than linearly (compiling an 8,000-flag snapshot: 3.1 s with the collector,
0.5 s without; loading a 10,000-flag snapshot in the SDK: several times slower).
Reference counting still frees memory meanwhile.

One implementation for the loader, the compiler, the flagd exporter and the SDK.
Standard library only: the SDK uses it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (see the module docstring).

    The pause is process-wide, so it is nested safely across threads and always lifted
    afterwards.

    When the pause is lifted, the hundreds of thousands of objects of the snapshot are
    all still in the youngest generation, and the next two collections would scan every
    one of them (about as long as the compilation itself) only to find them alive. So
    they go straight to the oldest generation, where full collections, rare and
    amortized, consider them: ``gc.freeze()`` then ``gc.unfreeze()`` moves every tracked
    object there without scanning any. It is skipped when the application keeps
    objects frozen itself (``gc.get_freeze_count()``), which unfreezing would undo.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()


def _reset_gc_pause_after_fork() -> None:
    # A fork during a load leaves the child with the collector paused by a thread it
    # does not have.
    global _gc_lock, _gc_pauses
    _gc_lock = threading.Lock()
    if _gc_pauses:
        _gc_pauses = 0
        if _gc_was_enabled:
            gc.enable()


os.register_at_fork(after_in_child=_reset_gc_pause_after_fork)
