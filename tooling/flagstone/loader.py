"""Strict YAML 1.2 loading with a position for every value.

The fast path parses with libyaml's C parser (``yaml.CParser`` events) and builds plain
Python values itself, so that the rules of docs/design.md §2 hold whatever PyYAML's resolver
thinks:

* only ``true`` and ``false`` are booleans — ``on``, ``off``, ``yes``, ``no`` stay strings;
* timestamps stay strings; ``null``/``~``/empty are null; integers and floats follow the
  YAML 1.2 core schema; ``.inf`` and ``.nan`` are rejected (JSON has no such numbers);
* duplicate keys, anchors, aliases, merge keys (``<<``), explicit tags, non-scalar keys,
  several documents, tab indentation, non-UTF-8 bytes, files over ``max_bytes`` and
  nesting deeper than ``max_depth`` are rejected.

Every failure raises ``LoadError`` carrying a ``Problem`` with ``file:line:col``.
Positions are kept in ``Document.marks`` keyed by the value's path (a tuple of mapping
keys and sequence indexes), so a schema error on ``("rules", 2, "serve")`` can point at
the exact line.
"""

from __future__ import annotations

import marshal
import math
import os
import re
import sys
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from flagstone.errors import FileAccessError, FileTooLargeError, LoadError, NotRegularFileError
from flagstone.gcpause import cyclic_gc_paused as cyclic_gc_paused  # re-exported
from flagstone.problems import Problem
from flagstone.safefiles import read_regular_file

try:  # libyaml is the fast path; the pure-Python parser gives the same events.
    from yaml import CSafeLoader as _EventLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _EventLoader  # type: ignore[assignment]

_Scalar = yaml.ScalarEvent
_SequenceStart, _SequenceEnd = yaml.SequenceStartEvent, yaml.SequenceEndEvent
_MappingStart, _MappingEnd = yaml.MappingStartEvent, yaml.MappingEndEvent
_StreamStart, _StreamEnd = yaml.StreamStartEvent, yaml.StreamEndEvent
_DocumentStart, _DocumentEnd = yaml.DocumentStartEvent, yaml.DocumentEndEvent

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
# Snapshots are canonical JSON (RFC 8785): integers beyond this are refused at publish,
# so they are refused when the file is read, at their position.
MAX_SAFE_INTEGER = 2**53 - 1
_MAX_INTEGER_TEXT = 400  # longer integer text resolves to ±inf (refused by the loader)

PathKey = tuple[str | int, ...]
Position = tuple[int, int]

_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_NUMBER_STARTS = frozenset("0123456789+-.")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_CORE_TAG_PREFIX = "tag:yaml.org,2002:"


class Document:
    """One loaded YAML file: its plain data and where each value came from.

    ``marks`` and ``key_marks`` map a value's path to its line and column. A document
    from the toolchain cache gets them as one packed blob (``packed_marks``, a
    ``marshal`` of the pair, already checked by the cache) and unpacks it only when a
    position is asked for: most runs report nothing, and the positions are three
    quarters of what a document is. Its ``data`` comes packed the same way."""

    __slots__ = (
        "_data",
        "_key_marks",
        "_marks",
        "_packed_data",
        "_packed_marks",
        "location",
        "rel",
    )

    def __init__(
        self,
        location: Path | str,
        rel: str,
        data: Any,
        marks: dict[PathKey, Position] | None = None,
        key_marks: dict[PathKey, Position] | None = None,
        *,
        packed_marks: bytes | None = None,
        packed_data: bytes | None = None,
    ) -> None:
        # The file's path; text until first asked for (a Path costs microseconds each,
        # which is a tenth of a second at 30,000 files).
        self.location = location
        self.rel = rel
        self._data = data
        self._packed_data = packed_data
        self._marks = marks if marks is not None else {}
        self._key_marks = key_marks if key_marks is not None else {}
        self._packed_marks = packed_marks

    def __repr__(self) -> str:
        return f"Document(rel={self.rel!r})"

    @property
    def data(self) -> Any:
        """The document's plain values (from the cache: unpacked when first asked for;
        a run after a one-flag change reads few of 30,000 documents' values)."""
        packed = self._packed_data
        if packed is not None:
            self._data = marshal.loads(packed)
            self._packed_data = None
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self._packed_data = None

    def packed_data(self) -> bytes:
        """``data`` as one ``marshal`` blob (what the cache keeps)."""
        if self._packed_data is not None:
            return self._packed_data
        return marshal.dumps(self._data)

    def _unpack(self) -> None:
        packed, self._packed_marks = self._packed_marks, None
        if packed is None:
            return
        if packed[:1] == _POSITIONS_TAG:
            self._marks, self._key_marks = _unpack_positions(self.data, packed)
        else:
            self._marks, self._key_marks = marshal.loads(packed)

    @property
    def marks(self) -> dict[PathKey, Position]:
        if self._packed_marks is not None:
            self._unpack()
        return self._marks

    @property
    def key_marks(self) -> dict[PathKey, Position]:
        if self._packed_marks is not None:
            self._unpack()
        return self._key_marks

    def packed(self) -> bytes:
        """``marks`` and ``key_marks`` as one blob (what the cache keeps): the positions
        alone, in the order of the values they belong to (a fifth of the size of the
        two dictionaries), or when they do not follow the values one to one, a
        ``marshal`` of the dictionaries."""
        if self._packed_marks is not None:
            return self._packed_marks
        compact = _pack_positions(self.data, self._marks, self._key_marks)
        return compact if compact is not None else marshal.dumps((self._marks, self._key_marks))

    @property
    def path(self) -> Path:
        location = self.location
        if isinstance(location, Path):
            return location
        self.location = path = Path(location)
        return path

    def position(self, where: PathKey = (), *, key: bool = False) -> Position:
        """Line and column (1-based) of the value at ``where``, or of its key.

        Falls back to the nearest ancestor that has a position, then to 1:1.
        """
        marks = self.marks
        if key and where in self.key_marks:
            return self.key_marks[where]
        probe = tuple(where)
        while probe:
            if probe in marks:
                return marks[probe]
            probe = probe[:-1]
        return marks.get((), (1, 1))

    def problem(
        self,
        where: PathKey,
        message: str,
        *,
        rule: str,
        level: str = "error",
        hint: str | None = None,
        key: bool = False,
    ) -> Problem:
        line, col = self.position(where, key=key)
        return Problem(self.rel, line, col, rule, level, message, hint)  # type: ignore[arg-type]


# A blob of positions starts with a byte no marshal blob starts with.
_POSITIONS_TAG = b"\x00"


def _pack_positions(
    data: Any, marks: dict[PathKey, Position], key_marks: dict[PathKey, Position]
) -> bytes | None:
    """Every value's position, and each mapping key's before its value, in document
    order (the order of the values), as unsigned 32-bit numbers; None when the
    positions are not exactly those of the values."""
    numbers = array("I")
    extend = numbers.extend
    pending: list[tuple[Any, PathKey]] = [(data, ())]
    values = keys = 0
    try:
        while pending:
            value, path = pending.pop()
            extend(marks[path])
            values += 1
            kind = value.__class__
            if kind is dict:
                children: list[tuple[Any, PathKey]] = []
                for key, child in value.items():
                    child_path = (*path, key)
                    extend(key_marks[child_path])
                    keys += 1
                    children.append((child, child_path))
                pending.extend(reversed(children))
            elif kind is list:
                pending.extend(reversed([(child, (*path, i)) for i, child in enumerate(value)]))
    except (KeyError, OverflowError, TypeError):
        return None
    if values != len(marks) or keys != len(key_marks):
        return None
    if sys.byteorder != "little":  # pragma: no cover - the blob is little-endian everywhere
        numbers.byteswap()
    return _POSITIONS_TAG + numbers.tobytes()


def _unpack_positions(
    data: Any, packed: bytes
) -> tuple[dict[PathKey, Position], dict[PathKey, Position]]:
    """The two position maps of ``_pack_positions``, read back along ``data``."""
    numbers = array("I")
    numbers.frombytes(packed[1:])
    if sys.byteorder != "little":  # pragma: no cover
        numbers.byteswap()
    marks: dict[PathKey, Position] = {}
    key_marks: dict[PathKey, Position] = {}
    at = 0
    pending: list[tuple[Any, PathKey]] = [(data, ())]
    while pending:
        value, path = pending.pop()
        marks[path] = (numbers[at], numbers[at + 1])
        at += 2
        kind = value.__class__
        if kind is dict:
            children: list[tuple[Any, PathKey]] = []
            for key, child in value.items():
                child_path = (*path, key)
                key_marks[child_path] = (numbers[at], numbers[at + 1])
                at += 2
                children.append((child, child_path))
            pending.extend(reversed(children))
        elif kind is list:
            pending.extend(reversed([(child, (*path, i)) for i, child in enumerate(value)]))
    return marks, key_marks


def _shown(text: str) -> str:
    """A number as written, shortened if long (a 5,000-digit integer is one line)."""
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _fail(rel: str, line: int, col: int, message: str, hint: str | None = None) -> LoadError:
    return LoadError(Problem(rel, line, col, "yaml", "error", message, hint))


def _decode(raw: bytes, rel: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise _fail(
            rel, line, col, f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
        ) from None


def _check_tabs(text: str, rel: str) -> None:
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            col = len(line) - len(stripped) + 1
            raise _fail(rel, number, col, "tab character in indentation", "indent with spaces")


def _codepoint(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


def _is_integer_text(value: str) -> bool:
    return bool(_INT.fullmatch(value) or _OCT.fullmatch(value) or _HEX.fullmatch(value))


def resolve_plain(value: str) -> Any:
    """YAML 1.2 core-schema resolution of a plain scalar, minus the sloppy parts."""
    if value in _NULLS:
        return None
    if value == "true":
        return True
    if value == "false":
        return False
    if value[0] not in _NUMBER_STARTS:  # most scalars are words: skip the regexes
        return value
    if _is_integer_text(value):
        if len(value) > _MAX_INTEGER_TEXT:  # far beyond any double: and int() has a limit
            return -math.inf if value.startswith("-") else math.inf
        if value[-1:].isdigit() and _INT.fullmatch(value):
            return int(value)
        return int(value[2:], 8 if value[1] == "o" else 16)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


class _Builder:
    """Turns a parser event stream into plain values plus position maps."""

    def __init__(self, rel: str, max_depth: int) -> None:
        self.rel = rel
        self.max_depth = max_depth
        self.marks: dict[PathKey, Position] = {}
        self.key_marks: dict[PathKey, Position] = {}

    def fail_at(self, event: Any, message: str, hint: str | None = None) -> LoadError:
        mark = event.start_mark
        return _fail(self.rel, mark.line + 1, mark.column + 1, message, hint)

    def check_node(self, event: Any) -> None:
        if isinstance(event, yaml.AliasEvent):
            raise self.fail_at(event, "aliases are not allowed", "write the value out in full")
        if event.anchor is not None:
            raise self.fail_at(
                event, f"anchor '&{event.anchor}' is not allowed", "write the value out in full"
            )
        tag = event.tag
        untagged_collection = (
            isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)) and event.implicit
        )
        # A lone '!' is the non-specific tag: it only says "text" and is harmless.
        if tag is not None and tag != "!" and not untagged_collection:
            shown = "!!" + tag[len(_CORE_TAG_PREFIX) :] if tag.startswith(_CORE_TAG_PREFIX) else tag
            raise self.fail_at(event, f"tag '{shown}' is not allowed", "remove the tag")

    def scalar(self, event: Any) -> Any:
        # Quoted, block and '!'-tagged scalars are always strings ('' or None style is plain).
        if event.style or event.tag == "!":
            return event.value
        value = resolve_plain(event.value)
        kind = value.__class__
        if kind is str:
            if _SPECIAL_FLOAT.fullmatch(value):
                raise self.fail_at(
                    event, f"'{event.value}' is not a finite number", "quote it if you meant text"
                )
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                raise self._beyond_safe_integers(event)
        elif kind is float and not math.isfinite(value):
            if _is_integer_text(event.value):
                raise self._beyond_safe_integers(event)
            raise self.fail_at(
                event,
                f"{_shown(event.value)} is out of the range of a double",
                "quote it if you meant text",
            )
        return value

    def _beyond_safe_integers(self, event: Any) -> LoadError:
        return self.fail_at(
            event,
            f"{_shown(event.value)} is beyond ±(2^53 - 1), the integers JSON keeps exactly",
            "quote it if you meant text",
        )

    def node(self, next_event: Callable[[], Any], event: Any, path: PathKey, depth: int) -> Any:
        # The hot loop of validation: exact type checks, and the hazard checks only for
        # the rare event that has an anchor or a tag (an alias always has an anchor).
        if event.anchor is not None or event.tag is not None:
            self.check_node(event)
        mark = event.start_mark
        self.marks[path] = (mark.line + 1, mark.column + 1)
        kind = type(event)
        if kind is _Scalar:
            return self.scalar(event)
        if depth >= self.max_depth:
            raise self.fail_at(event, f"nesting deeper than {self.max_depth} levels")
        if kind is _SequenceStart:
            items: list[Any] = []
            while True:
                child = next_event()
                if type(child) is _SequenceEnd:
                    return items
                items.append(self.node(next_event, child, (*path, len(items)), depth + 1))
        if kind is _MappingStart:
            mapping: dict[str, Any] = {}
            key_marks = self.key_marks
            while True:
                key_event = next_event()
                key_kind = type(key_event)
                if key_kind is _MappingEnd:
                    return mapping
                if (
                    key_event.anchor is not None
                    or key_kind is not _Scalar
                    or key_event.tag is not None
                ):
                    self.check_node(key_event)
                    if key_kind is not _Scalar:
                        raise self.fail_at(key_event, "mapping keys must be plain text")
                key = key_event.value
                if key == "<<" and not key_event.style:
                    raise self.fail_at(
                        key_event, "merge keys ('<<') are not allowed", "write the keys out in full"
                    )
                child_path = (*path, key)
                if key in mapping:
                    first = key_marks[child_path]
                    raise self.fail_at(
                        key_event,
                        f"duplicate key '{key}' (first defined at line {first[0]})",
                        "remove one of them",
                    )
                key_mark = key_event.start_mark
                key_marks[child_path] = (key_mark.line + 1, key_mark.column + 1)
                mapping[key] = self.node(next_event, next_event(), child_path, depth + 1)
        raise self.fail_at(event, "unexpected YAML construct")  # pragma: no cover


def loads(
    raw: bytes,
    *,
    rel: str = "<string>",
    path: Path | str | None = None,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Document:
    """Parse one YAML document from bytes; raise ``LoadError`` on any hazard."""
    if len(raw) > max_bytes:
        raise _fail(rel, 0, 0, f"file is {len(raw)} bytes, over the {max_bytes}-byte limit")
    text = _decode(raw, rel)
    _check_tabs(text, rel)
    builder = _Builder(rel, max_depth)
    data: Any = None
    documents = 0
    parser = _EventLoader(text)
    try:
        next_event = parser.get_event
        while True:
            event = next_event()
            kind = type(event)
            if kind is _StreamEnd or event is None:
                break
            if kind is _DocumentStart:
                documents += 1
                if documents > 1:
                    raise builder.fail_at(
                        event, "only one YAML document per file", "remove the '---' separator"
                    )
            elif kind is not _StreamStart and kind is not _DocumentEnd:
                data = builder.node(next_event, event, (), 0)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        cause = (exc.problem or exc.context or "invalid YAML").strip()
        raise _fail(rel, line, col, f"invalid YAML: {cause}") from None
    except yaml.reader.ReaderError as exc:  # control characters; carries a character index
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise _fail(
            rel, line, col, f"control character U+{_codepoint(exc.character):04X} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        raise _fail(rel, 0, 0, f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise _fail(rel, 0, 0, f"nesting deeper than {max_depth} levels") from None
    finally:
        parser.dispose()
    return Document(path or Path(rel), rel, data, builder.marks, builder.key_marks)


class RepositoryBounds:
    """Tells whether a path is a symbolic link leading outside the repository root.

    Links that stay inside the repository are allowed (a shared ``segments/`` folder,
    say); a link leading out is refused wherever it is, so a hostile repository cannot
    make a command print or publish a file of the machine it runs on.
    """

    RULE = "symlink"

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip(os.sep) + os.sep

    def leads_outside(self, path: Path) -> bool:
        """Whether ``path`` itself is a link whose final target is outside the root
        (the caller has checked the folders above it)."""
        if not os.path.islink(path):
            return False
        real = os.path.realpath(path)
        return real != self.root and not real.startswith(self._prefix)

    def problem(self, path: Path) -> Problem:
        """The located finding for a link that leads outside (the target is not named:
        it says something about the machine, not about the repository)."""
        rel = os.path.relpath(path, self.root) if os.path.isabs(path) else str(path)
        return Problem(
            Path(rel).as_posix(),
            0,
            0,
            self.RULE,
            "error",
            "symbolic link leading outside the repository; not read",
            "replace the link with the file or folder itself",
        )


def load_file(path: Path, *, root: Path | None = None, max_bytes: int = MAX_BYTES) -> Document:
    """Load ``path``; positions and messages name it relative to ``root``.

    Only a regular file is read (a FIFO or device is refused, never waited on); with
    ``root``, a symbolic link leading outside it is refused (``RepositoryBounds``)."""
    rel = path.relative_to(root).as_posix() if root else path.as_posix()
    if root is not None:
        # Resolving is slow (one lstat per component): only when a link is on the way.
        folders = _folders_below(path, root)
        if os.path.islink(path) or any(os.path.islink(folder) for folder in folders):
            bounds = RepositoryBounds(root)
            if bounds.leads_outside(path) or any(map(bounds.leads_outside, folders)):
                raise LoadError(bounds.problem(path))
    return read_document(path, rel, max_bytes=max_bytes)


def read_document(path: Path | str, rel: str, *, max_bytes: int = MAX_BYTES) -> Document:
    """Read and parse the regular file at ``path``, named ``rel`` in messages (the caller
    has decided that reading it stays inside the repository)."""
    try:
        raw = read_regular_file(path, max_bytes, follow_symlinks=True)
    except FileTooLargeError:
        size = os.stat(path).st_size
        raise _fail(rel, 0, 0, f"file is {size} bytes, over the {max_bytes}-byte limit") from None
    except NotRegularFileError:
        raise _fail(rel, 0, 0, "not a regular file") from None
    except FileAccessError as exc:
        raise _fail(rel, 0, 0, exc.message.replace(f"{path}", "file", 1)) from None
    except OSError as exc:
        raise _fail(rel, 0, 0, f"cannot read file: {exc.strerror or exc}") from None
    return loads(raw, rel=rel, path=path, max_bytes=max_bytes)


def _folders_below(path: Path, root: Path) -> list[Path]:
    """The folders between ``root`` and ``path`` (``flags/``, ``flags/x/``)."""
    try:
        parts = path.parent.relative_to(root).parts
    except ValueError:
        return []
    return [root.joinpath(*parts[: index + 1]) for index in range(len(parts))]
