"""Escaping user-controlled text for where it is printed.

Flag names, descriptions, rule and stage names, segment names, file paths, commit
subjects and author names are written by whoever can open a pull request (or set their
git author name). Printed as they are, they could forge lines in a terminal or a CI log,
run GitHub workflow commands (``::add-mask::``, ``::error::``…), or restructure a
pull-request comment (close a ``<details>``, start a heading, add a link, ping
``@someone``). Every renderer passes such text through one of these functions, chosen
by where the text goes:

``terminal``            one line of text for a terminal or a CI log: control characters
                        (C0, DEL, C1, line and paragraph separators) and bidirectional
                        formatting characters (U+202A–U+202E, U+2066–U+2069, LRM, RLM,
                        ALM) are shown escaped (``\\x1b``, ``\\u202e``), never obeyed.
``markdown``            one line inside a pull-request comment or job summary (a table
                        cell, a ``<summary>``): as ``terminal``, then Markdown punctuation
                        backslash-escaped, HTML special characters as entities, and
                        ``@mentions`` and bare links broken with a zero-width space.
``markdown_code``       a key or path shown as inline code, or as ``markdown`` text when
                        it holds anything a code span could not carry safely.
``workflow_data``       the message of a GitHub workflow command (``%``, CR, LF as
                        ``%25``, ``%0D``, ``%0A``, as actions/toolkit escapes them;
                        other control and bidi characters as in ``terminal``).
``workflow_property``   a property value of a workflow command (also ``:`` and ``,``).
``spreadsheet_cell``    a CSV cell: line breaks and control characters escaped, and a
                        cell a spreadsheet would run as a formula prefixed with ``'``.
``json_text``           a whole JSON document: the same data, with control, bidi and
                        separator characters and the ``[`` of ``##[`` written as
                        ``\\uXXXX`` escapes (JSON text can only hold them in strings).
``guard_lines``         a whole rendered text: no line can start a workflow command
                        (the runner trims leading whitespace, then looks for ``::``) or
                        hold a legacy ``##[command]``.

Stdlib only; importable from anywhere.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators.
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"
# Bidirectional formatting: embeddings and overrides (U+202A–U+202E), isolates
# (U+2066–U+2069), and the marks LRM, RLM and ALM (Trojan Source, CVE-2021-42574).
_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
_UNSAFE = re.compile(f"[{_CONTROL}{_BIDI}]")
_UNSAFE_BUT_TAB = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """``text`` as one line a terminal shows as written: control and bidirectional
    formatting characters appear as ``\\xNN``/``\\uNNNN`` escapes."""
    return _UNSAFE.sub(lambda m: _visible(m.group()), text)


# Punctuation that gives inline Markdown (GFM) a meaning anywhere in a line: code,
# emphasis, links and images, table cells, strikethrough, math. A backslash makes each
# literal. "&", "<", ">" and '"' become entities (no HTML, no <autolinks>). Block
# syntax (headings, lists, quotes) needs a line start, which inline text never has.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~$])")
_ZERO_WIDTH_SPACE = "&#8203;"


def markdown(text: str) -> str:
    """``text`` as inert inline Markdown for one line of a PR comment or job summary:
    no HTML, no emphasis, links, headings, table breaks, mentions or autolinks."""
    text = terminal(text)
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;")
    # "@team" would notify; "://" and "www." would autolink (GFM extension).
    text = text.replace("@", "@" + _ZERO_WIDTH_SPACE)
    text = text.replace("://", ":" + _ZERO_WIDTH_SPACE + "//")
    return re.sub(r"(?i)\bwww\.", lambda m: m.group()[:3] + _ZERO_WIDTH_SPACE + ".", text)


_CODE_SAFE = re.compile(r"[A-Za-z0-9._/:@ -]+")


def markdown_code(text: str) -> str:
    """``text`` as an inline code span when it is plain (keys, ordinary paths), else as
    ``markdown`` text."""
    if _CODE_SAFE.fullmatch(text):
        return f"`{text}`"
    return markdown(text)


def workflow_data(text: str) -> str:
    """The data part of a workflow command (after ``::command …::``)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return terminal(text).replace(_LEGACY_COMMAND, "##\\x5b")


def workflow_property(text: str) -> str:
    """A property value of a workflow command (``file=…``, ``title=…``)."""
    return workflow_data(text).replace(":", "%3A").replace(",", "%2C")


# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_cell(value: str | int | None) -> str | int:
    """The CSV cell for ``value``: empty for None; line breaks and control characters
    (but tabs) escaped, so a row is one line; text a spreadsheet would evaluate (an
    author name or summary starting with ``=``, ``+``, ``-``, ``@`` …) prefixed with
    ``'`` so it is shown as text, never run."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    starts_formula = value.startswith(_FORMULA_START)
    value = _UNSAFE_BUT_TAB.sub(lambda m: _visible(m.group()), value)
    return "'" + value if starts_formula else value


_COMMAND_START = re.compile(r"^(\s*):")
_LEGACY_COMMAND = "##["


def guard_lines(text: str) -> str:
    """``text`` with every line that would start a workflow command (``::`` after
    leading whitespace) or hold a legacy ``##[`` command defused: the colon or bracket
    is written as an escape. Lines that are not commands are returned unchanged."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith("::"):
            line = _COMMAND_START.sub(r"\1\\x3a", line, count=1)
        if _LEGACY_COMMAND in line:
            line = line.replace(_LEGACY_COMMAND, "##\\x5b")
        lines[i] = line
    return "\n".join(lines)


_JSON_UNSAFE = re.compile(f"[\x7f-\x9f\u2028\u2029{_BIDI}]")


def json_text(document: str) -> str:
    """A JSON text (from ``json.dumps(..., ensure_ascii=False)``) that decodes to the same
    data but shows no raw control or bidi character and no legacy ``##[`` command."""
    document = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
    return document.replace("##[", "##\\u005b")
