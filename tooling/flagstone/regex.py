"""Regular expressions for ``matches``: RE2, the linear-time dialect.

A pattern is compiled by RE2 (the ``google-re2`` package), the engine LaunchDarkly's
evaluators and Go's ``regexp`` follow: no back-references and no lookaround, and in
exchange a match takes time linear in the input whatever the pattern (``^(a+)+$`` on a
long run of ``a`` followed by ``b`` answers at once; a backtracking engine takes
seconds). ``matches`` is a search: the pattern may match anywhere unless anchored.
What differs from Python's ``re`` is listed in docs/readme/validate.md ("Regular
expressions").

Calling RE2 costs about a microsecond in Python, several times a Python ``re`` search,
so ``compile_search`` first reads the pattern for text every match must contain (a
required literal, an anchored prefix or suffix, one of a group's plain alternatives;
under a leading ``(?i)``, the same in lower case for an ASCII value): a value without it
cannot match and is rejected with string operations. A pattern that is nothing but text (``admin``,
``^beta-``, ``@acme\\.com$``) is answered by string operations alone.

Standard library plus ``re2``: the SDK imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from flagstone.records import Record, set_field


@cache
def _re2() -> tuple[Any, Any]:
    """RE2's compiler and the options shared by every pattern: no capture groups are
    read (a yes/no answer), and a pattern RE2 refuses is reported by check_pattern, not
    logged by RE2 to stderr. Imported on first use: a snapshot without ``matches``
    rules (and ``import flagstone.sdk``) never loads it."""
    import re2

    options = re2.Options()
    options.never_capture = True
    options.log_errors = False
    return re2, options


_NO_MATCH: tuple[int, int] = (-1, -1)

# Hints for what RE2 leaves out on purpose, keyed by the start of RE2's error message.
_BACK_REFERENCE_HINT = (
    "RE2 has no back-references (they need backtracking); "
    "list the alternatives explicitly or test with several clauses"
)
_HINTS = (
    (
        "invalid perl operator: (?=",
        "RE2 has no lookahead; combine clauses with all/not instead",
    ),
    ("invalid perl operator: (?!", "RE2 has no lookahead; combine clauses with all/not instead"),
    (
        "invalid perl operator: (?<",
        "RE2 has no lookbehind; combine clauses with all/not instead",
    ),
    (
        "invalid perl operator: (?>",
        "RE2 has no atomic groups; it never backtracks, so a plain group (?:…) does the same",
    ),
    (
        "bad repetition operator: ",
        "RE2 has no possessive quantifiers (*+, ++, ?+); it never backtracks, "
        "so the plain quantifier does the same",
    ),
)


class PatternProblem(Record):
    """Why RE2 cannot run a pattern (one line) and, when there is one, what to do."""

    message: str
    hint: str | None

    _fields = __slots__ = ("message", "hint")

    def __init__(self, message: str, hint: str | None) -> None:
        set_field(self, "message", message)
        set_field(self, "hint", hint)


def check_pattern(pattern: str) -> PatternProblem | None:
    """Why ``pattern`` is not an RE2 regular expression, or None if it is."""
    try:
        encoded = pattern.encode("utf-8")
    except UnicodeEncodeError:
        return PatternProblem(f"{pattern!r} is not valid text (it holds a lone surrogate)", None)
    re2, options = _re2()
    compiled = re2._re2.RE2(encoded, options)
    if compiled.ok():
        return None
    error = compiled.error()
    reason = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
    hint = None
    if reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit():
        hint = _BACK_REFERENCE_HINT
    for start, text in _HINTS:
        if hint is None and reason.startswith(start):
            hint = text
    return PatternProblem(
        f"{pattern!r} is not a valid regular expression (RE2): {reason}",
        hint or "matches uses the RE2 dialect (docs/readme/validate.md, 'Regular expressions')",
    )


# ---------------------------------------------------------------------------
# What every match must contain, read conservatively from the pattern's text.

# Outside a class, these characters stand for themselves.
_META = frozenset("\\.+*?()[]{}|^$")
_QUANTIFIERS = frozenset("?*+{")
_REPETITION = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
# Escapes that stand for one position or one character class: a break in the text.
_CLASS_ESCAPES = frozenset("dDsSwWbBAzntrfv")


class RequiredText(Record):
    """Text every match of a pattern contains.

    ``literals`` occur somewhere in any matching value; ``prefix``/``suffix`` begin or end
    it (from ``^text``/``text$``); ``exact`` says the pattern is nothing but that text,
    so these tests alone decide.
    """

    literals: tuple[str, ...]
    prefix: str
    suffix: str
    exact: bool
    # Groups of alternatives (``(acme|initech)``): each group has one in any match.
    choices: tuple[tuple[str, ...], ...]
    # From a leading (?i): the text above is lower case and holds for the lower-cased
    # value, when the value is ASCII (where lower() is exactly RE2's case folding).
    ignore_case: bool

    _fields = __slots__ = ("literals", "prefix", "suffix", "exact", "choices", "ignore_case")

    def __init__(
        self,
        literals: tuple[str, ...] = (),
        prefix: str = "",
        suffix: str = "",
        exact: bool = False,
        choices: tuple[tuple[str, ...], ...] = (),
        ignore_case: bool = False,
    ) -> None:
        set_field(self, "literals", literals)
        set_field(self, "prefix", prefix)
        set_field(self, "suffix", suffix)
        set_field(self, "exact", exact)
        set_field(self, "choices", choices)
        set_field(self, "ignore_case", ignore_case)


def _skip_class(pattern: str, start: int) -> int | None:
    """The index after the character class opening at ``start`` (``[``), or None."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1  # a leading ] is a member
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
        elif pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end < 0:
                return None
            i = end + 2
        elif char == "]":
            return i + 1
        else:
            i += 1
    return None


def _skip_group(pattern: str, start: int) -> int | None:
    """The index after the group opening at ``start`` (``(``), or None."""
    depth, i = 0, start
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            after = _skip_class(pattern, i)
            if after is None:
                return None
            i = after
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def required_text(pattern: str) -> RequiredText:
    """Text every match of ``pattern`` (a valid RE2 pattern) must contain.

    Conservative: anything it does not understand (flags, ``\\Q``, top-level ``|``, hex
    and Unicode escapes) yields no requirement, which only costs speed. Dropping a
    character from the text it finds is always safe; adding one never is.
    """
    nothing = RequiredText()
    ignore_case = pattern.startswith("(?i)")
    if ignore_case:
        pattern = pattern[4:]
    if "(?" in pattern.replace("(?:", "").replace("(?P<", ""):
        return nothing  # other flags, such as (?m) or (?s), change what text and anchors mean
    runs: list[str] = []
    choices: list[tuple[str, ...]] = []
    current: list[str] = []
    first_run_at = -1  # where the first run begins in the pattern
    ends_at_dollar = False  # the last run is followed by the final $
    exact = True
    length = len(pattern)
    i = 1 if pattern.startswith("^") else 0

    def end_run() -> None:
        if current:
            runs.append("".join(current))
            current.clear()

    while i < length:
        char = pattern[i]
        if char == "|":
            return nothing
        if char == "\\":
            if i + 1 >= length:
                return nothing
            escaped = pattern[i + 1]
            if escaped.isalnum() or escaped == "_":
                if escaped not in _CLASS_ESCAPES:
                    return nothing  # \Q, \x41, \pL, \C, octal…: not read here
                exact = False
                end_run()
                i += 2
                continue
            token, after = escaped, i + 2
        elif char in _META:
            if char == "$" and i == length - 1:
                ends_at_dollar = bool(current)
                end_run()
                i += 1
                continue
            exact = False
            end_run()
            if char == "[":
                after_class = _skip_class(pattern, i)
                if after_class is None:
                    return nothing
                i = after_class
            elif char == "(":
                after_group = _skip_group(pattern, i)
                if after_group is None:
                    return nothing
                alternatives = _literal_alternatives(pattern[i + 1 : after_group - 1])
                quantified = after_group < length and pattern[after_group] in _QUANTIFIERS
                if alternatives is not None and not quantified:
                    choices.append(alternatives)
                i = after_group
            elif char == "{":
                repetition = _REPETITION.match(pattern, i)
                if repetition is None:
                    # RE2 reads a brace that begins no {n}, {n,} or {n,m} as text: in
                    # "{?|}1" the "|" is a top-level alternative, not part of a repeat.
                    return nothing
                i = repetition.end()
            else:
                i += 1
            continue
        else:
            token, after = char, i + 1
        if after < length and pattern[after] in _QUANTIFIERS:
            # The quantifier applies to this character alone: it may be absent.
            exact = False
            end_run()
            i = after
            continue
        if not current and not runs:
            first_run_at = i
        current.append(token)
        i = after
    end_run()
    if not runs and not choices:
        return nothing
    prefix = runs[0] if runs and pattern.startswith("^") and first_run_at == 1 else ""
    suffix = runs[-1] if runs and ends_at_dollar else ""
    if ignore_case:
        texts = [*runs, *(a for group in choices for a in group)]
        if not all(text.isascii() for text in texts):
            return nothing
        return RequiredText(
            tuple(r.lower() for r in runs),
            prefix.lower(),
            suffix.lower(),
            False,
            tuple(tuple(a.lower() for a in group) for group in choices),
            True,
        )
    return RequiredText(tuple(runs), prefix, suffix, exact and len(runs) == 1, tuple(choices))


def _literal_alternatives(group: str) -> tuple[str, ...] | None:
    """The branches of a group's content that are all plain, non-empty text
    (``acme|initech``, ``?:a|b``, ``?P<name>x|y``), or None."""
    if group.startswith("?:"):
        group = group[2:]
    elif group.startswith("?P<"):
        group = group[group.find(">") + 1 :]
    branches = tuple(group.split("|"))
    if all(branch and not any(c in _META for c in branch) for branch in branches):
        return branches
    return None


# ---------------------------------------------------------------------------
# Searching.

StringTest = Callable[[str], bool]


def compile_search(pattern: str) -> StringTest:
    """A test of a string: does ``pattern`` (valid RE2, see check_pattern) match in it?"""
    need = required_text(pattern)
    if need.exact:
        return _text_test(need)
    match: Callable[[object, bytes, int, int], list[tuple[int, int]]]
    re2, options = _re2()
    match = re2._re2.RE2(pattern.encode("utf-8"), options).Match
    anchor, no_match = re2._Anchor.UNANCHORED, _NO_MATCH
    literals, prefix, suffix, choices = need.literals, need.prefix, need.suffix, need.choices

    if not literals and not choices:

        def search(value: str) -> bool:
            data = value.encode("utf-8", "surrogatepass")
            return match(anchor, data, 0, len(data))[0] != no_match

        return search

    def may_match(text: str) -> bool:
        """False when ``text`` lacks what every match contains."""
        if prefix and not text.startswith(prefix):
            return False
        if suffix and not text.endswith(suffix):
            return False
        for literal in literals:
            if literal not in text:
                return False
        for alternatives in choices:
            for alternative in alternatives:
                if alternative in text:
                    break
            else:
                return False
        return True

    if need.ignore_case:

        def folded_search(value: str) -> bool:
            if value.isascii() and not may_match(value.lower()):
                return False
            data = value.encode("utf-8", "surrogatepass")
            return match(anchor, data, 0, len(data))[0] != no_match

        return folded_search

    def prefiltered_search(value: str) -> bool:
        if not may_match(value):
            return False
        data = value.encode("utf-8", "surrogatepass")
        return match(anchor, data, 0, len(data))[0] != no_match

    return prefiltered_search


def _text_test(need: RequiredText) -> StringTest:
    """The test of a pattern that is nothing but text, with optional ^ and $."""
    (text,) = need.literals
    if need.prefix and need.suffix:
        return text.__eq__
    if need.prefix:

        def starts(value: str) -> bool:
            return value.startswith(text)

        return starts
    if need.suffix:

        def ends(value: str) -> bool:
            return value.endswith(text)

        return ends

    def contains(value: str) -> bool:
        return text in value

    return contains
