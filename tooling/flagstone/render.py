"""One registry of renderers: each view (``diff``, ``log``, ``show``, …) and the formats
it can be printed in.

A view is the data one command produces (a ``DiffReport``, a list of ``LogEntry``, a
``FlagAtTime``); a renderer turns it into the text the command prints. The module that
builds the data declares its view once and registers each format with one decorator
line::

    LOG_VIEW: View[Sequence[LogEntry]] = View("log")

    @LOG_VIEW.format("csv")
    def render_log_csv(entries: Sequence[LogEntry]) -> str: ...

The CLI builds ``--format`` from ``LOG_VIEW.formats()`` (see ``cli/common.py``'s
``view_format_option``) and prints ``LOG_VIEW.render(fmt, entries)``, so a format
registered here is a format the command accepts, and nothing else is.

A renderer must escape every user-controlled string for where it goes: terminal text
through ``flagstone.escape.terminal``, Markdown/HTML through ``escape.markdown``, GitHub
workflow commands through ``escape.workflow_data``/``workflow_property``. ``render``
then checks the whole text once more so that no line of a text or Markdown rendering
can start a GitHub workflow command (``escape.guard_lines``); JSON renderings decode to
exactly the data, with control and bidi characters and ``##[`` written as ``\\u``
escapes (``escape.json_text``; JSON quoting keeps user text off the start of a line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from flagstone import escape
from flagstone.errors import UsageError

T = TypeVar("T")
Renderer = Callable[[T], str]

#: Every view, by name (filled as the modules declaring views are imported).
VIEWS: dict[str, View[Any]] = {}

#: Formats that are data for programs: printed exactly as rendered.
DATA_FORMATS = frozenset({"json"})


class View(Generic[T]):
    """The formats one kind of output can be rendered in."""

    def __init__(self, name: str, *, default: str = "text") -> None:
        if name in VIEWS:
            raise ValueError(f"view {name!r} is declared twice")
        self.name = name
        self.default = default
        self._renderers: dict[str, Renderer[T]] = {}
        VIEWS[name] = self

    def format(self, name: str) -> Callable[[Renderer[T]], Renderer[T]]:
        """Decorator registering ``name`` as a format of this view."""

        def register(renderer: Renderer[T]) -> Renderer[T]:
            if name in self._renderers:
                raise ValueError(f"format {name!r} of view {self.name!r} is registered twice")
            self._renderers[name] = renderer
            return renderer

        return register

    def formats(self) -> list[str]:
        """The registered format names, default first, then alphabetically."""
        return sorted(self._renderers, key=lambda name: (name != self.default, name))

    def render(self, fmt: str, data: T) -> str:
        """``data`` in format ``fmt``, through ``escape.json_text`` (JSON) or
        ``escape.guard_lines`` (every other format)."""
        try:
            renderer = self._renderers[fmt]
        except KeyError:
            known = ", ".join(self.formats())
            raise UsageError(f"unknown format {fmt!r} (one of {known})") from None
        text = renderer(data)
        return escape.json_text(text) if fmt in DATA_FORMATS else escape.guard_lines(text)
