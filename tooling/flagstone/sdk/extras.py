"""Optional extras of the SDK: a missing one is a clear ImportError naming the extra.

``with require_extra("openfeature", "openfeature"): import openfeature…`` turns a bare
``No module named 'openfeature'`` into "… needs the 'openfeature' extra: pip install
'flagstone[openfeature]' (or 'flagstone-sdk[openfeature]' for the SDK alone)". Telemetry
exporters use the same helper for their extras (``otel``, ``prometheus``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def require_extra(extra: str, *top_level_modules: str) -> Iterator[None]:
    """Re-raise a missing ``top_level_modules`` import as an ImportError naming ``extra``."""
    try:
        yield
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] not in top_level_modules:
            raise
        raise ImportError(
            f"this part of flagstone needs the {extra!r} extra (no module named "
            f"{error.name!r}): pip install 'flagstone[{extra}]' "
            f"(or 'flagstone-sdk[{extra}]' for the SDK alone)",
            name=error.name,
        ) from error
