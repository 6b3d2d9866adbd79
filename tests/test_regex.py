"""`matches` runs RE2 (issue 12, item 2): linear time, refusals with a hint, the dialect's
differences from Python's ``re`` pinned, and the engine's literal prefilter exact."""

from __future__ import annotations

import re
from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.engine import Snapshot, check_clause_values
from flagstone.regex import check_pattern, compile_search, required_text


def _snapshot(pattern: str) -> Snapshot:
    return Snapshot.from_payload(
        {
            "format": "flagstone.snapshot/1",
            "flags": {
                "f": {
                    "type": "boolean",
                    "variations": {"on": True, "off": False},
                    "off_variation": "off",
                    "enabled": True,
                    "rules": [
                        {
                            "name": "r",
                            "condition": {
                                "attribute": "name",
                                "op": "matches",
                                "values": [pattern],
                            },
                            "serve": {"variation": "on"},
                        }
                    ],
                    "default": {"variation": "off"},
                }
            },
        }
    )


def _matches(pattern: str, value: Any) -> bool:
    return bool(_snapshot(pattern).evaluate("f", {"key": "k", "name": value}).value)


@pytest.mark.timeout(5)
def test_catastrophic_backtracking_pattern_answers_in_linear_time() -> None:
    # A backtracking engine takes exponential time here (over 20 s at 30 characters).
    assert _matches("^(a+)+$", "a" * 100_000 + "b") is False
    assert _matches("^(a+)+$", "a" * 100_000) is True
    assert _matches("(x+x+)+y", "x" * 50_000) is False


@pytest.mark.parametrize(
    ("pattern", "hint_words"),
    [
        (r"^(\w+)-\1$", "back-references"),
        (r"^staff(?!-bot)", "lookahead"),
        (r"(?=a)b", "lookahead"),
        (r"(?<=@)acme", "lookbehind"),
        (r"(?<!x)y", "lookbehind"),
        (r"(?>ab)c", "atomic"),
        (r"a++", "possessive"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_a_hint(pattern: str, hint_words: str) -> None:
    problem = check_pattern(pattern)
    assert problem is not None
    assert problem.message.startswith(f"{pattern!r} is not a valid regular expression (RE2)")
    assert problem.hint is not None and hint_words in problem.hint
    assert check_clause_values("matches", [pattern]) == problem.message
    # Python's re runs it: only the dialect refuses it.
    re.compile(pattern)


def test_a_lone_surrogate_pattern_is_refused_not_raised() -> None:
    problem = check_pattern("a\ud800")
    assert problem is not None and "lone surrogate" in problem.message


def test_posix_classes_mean_what_re2_means() -> None:
    assert _matches("^[[:alpha:]]+$", "Zoe") is True
    assert _matches("^[[:alpha:]]+$", "Zoë") is False  # ASCII letters only, as in RE2
    assert _matches("^[[:digit:]]{3}$", "123") is True
    assert _matches("^[[:^space:]]+$", "a b") is False


# The documented differences between RE2 and Python's re on str patterns
# (docs/readme/validate.md, "Regular expressions"), each pinned by an example.
DIFFERENCES = [
    # pattern, value, RE2's answer (Python's is the opposite)
    ("^a$", "a\n", False),  # RE2's $ is the end of the text; Python's also before a final \n
    (r"^\d$", "٣", False),  # \d is ASCII [0-9] in RE2; Python's \d is any Unicode digit
    (r"^\w$", "é", False),  # \w is ASCII [0-9A-Za-z_] in RE2
    (r"^\s$", "\v", False),  # \s is [\t\n\f\r ] in RE2: no vertical tab, no Unicode spaces
    (r"^\s$", "\u00a0", False),
    (r"\bé", "aé", True),  # \b is an ASCII word boundary in RE2: é is not a word character
]


@pytest.mark.parametrize(("pattern", "value", "re2_answer"), DIFFERENCES)
def test_documented_differences_from_python_re(pattern: str, value: str, re2_answer: bool) -> None:
    assert _matches(pattern, value) is re2_answer
    assert (re.search(pattern, value) is not None) is (not re2_answer)


def test_unicode_letters_are_characters_not_bytes() -> None:
    assert _matches("^Zo.$", "Zoë") is True
    assert _matches(r"^\p{Greek}+$", "αβγ") is True
    assert _matches("(?i)^straße$", "STRASSE") is False  # simple case folding only


def test_non_strings_and_lone_surrogate_values_never_raise() -> None:
    assert _matches("a", 1) is False
    assert _matches("a", None) is False
    # A lone surrogate (possible in JSON text) reads as one character.
    assert _matches("^.b$", "\ud800b") is True
    assert _matches("^..b$", "\ud800b") is False
    assert _matches("b$", "\ud800b") is True


# -- random patterns: RE2 against Python's re with the documented differences applied --

_ATOMS = [
    # (RE2 text, the Python re text meaning the same under re.ASCII)
    ("a", "a"),
    ("b", "b"),
    ("-", "-"),
    (r"\.", r"\."),
    (".", "."),
    ("[a-c]", "[a-c]"),
    ("[^a]", "[^a]"),
    (r"\d", r"\d"),
    (r"\w", r"\w"),
    (r"\s", r"[\t\n\f\r ]"),
    (r"\b", r"\b"),
    ("[[:alpha:]]", "[A-Za-z]"),
    ("[[:digit:]]", "[0-9]"),
    ("^", "^"),
    ("$", r"\Z"),
]
_QUANTIFIERS = ["", "", "", "*", "+", "?", "{1,2}", "*?", "+?"]


def _quantified(pair: tuple[str, str], quantifier: str) -> tuple[str, str]:
    if not quantifier or pair[0] in ("^", "$", r"\b"):
        return pair
    return pair[0] + quantifier, pair[1] + quantifier


def _patterns() -> st.SearchStrategy[tuple[str, str]]:
    atom = st.tuples(st.sampled_from(_ATOMS), st.sampled_from(_QUANTIFIERS)).map(
        lambda t: _quantified(*t)
    )

    def extend(inner: st.SearchStrategy[tuple[str, str]]) -> st.SearchStrategy[tuple[str, str]]:
        sequence = st.lists(inner, min_size=1, max_size=4).map(
            lambda parts: ("".join(p[0] for p in parts), "".join(p[1] for p in parts))
        )
        group = st.tuples(sequence, st.sampled_from(_QUANTIFIERS)).map(
            lambda t: _quantified((f"(?:{t[0][0]})", f"(?:{t[0][1]})"), t[1])
        )
        alternation = st.tuples(sequence, sequence).map(
            lambda t: (f"{t[0][0]}|{t[1][0]}", f"{t[0][1]}|{t[1][1]}")
        )
        return st.one_of(sequence, group, alternation)

    return st.recursive(atom, extend, max_leaves=8)


_TEXTS = st.text(alphabet="ab-.c1_ \n\v\tZé٣", max_size=8)


@settings(max_examples=150, deadline=None)
@given(_patterns(), st.lists(_TEXTS, min_size=1, max_size=6))
def test_random_patterns_agree_with_python_re_up_to_the_documented_differences(
    pattern: tuple[str, str], texts: list[str]
) -> None:
    re2_text, python_text = pattern
    ours = compile_search(re2_text)
    raw = re2.compile(re2_text)
    python = re.compile(python_text, re.ASCII)
    for text in texts:
        expected = python.search(text) is not None
        assert (raw.search(text) is not None) is expected, (re2_text, python_text, text)
        assert ours(text) is expected, (re2_text, text)


_LITERAL_HEAVY = st.text(alphabet="ab.^$|()[]*+?{}\\-@dwx1,:P<>", min_size=1, max_size=12)
# Values for case-insensitive patterns: ASCII of both cases, and the non-ASCII letters
# RE2 folds with ASCII ones (KELVIN SIGN with k, LONG S with s).
_FOLDING_TEXTS = st.text(alphabet="abkKsSAB\u212a\u017f.-@x1", max_size=10)


@settings(max_examples=300, deadline=None)
@given(_LITERAL_HEAVY, st.lists(st.text(alphabet="ab.-@x1\n", max_size=10), max_size=8))
def test_the_literal_prefilter_never_changes_an_answer(pattern: str, texts: list[str]) -> None:
    if check_pattern(pattern) is not None:
        return
    ours = compile_search(pattern)
    raw = re2.compile(pattern)
    need = required_text(pattern)
    for text in [*texts, *need.literals, need.prefix + need.suffix]:
        assert ours(text) is (raw.search(text) is not None), (pattern, text, need)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abkKsS.^$|()*+?-@x", min_size=1, max_size=10),
    st.lists(_FOLDING_TEXTS, max_size=8),
)
def test_the_case_insensitive_prefilter_never_changes_an_answer(
    body: str, texts: list[str]
) -> None:
    pattern = "(?i)" + body
    if check_pattern(pattern) is not None:
        return
    ours = compile_search(pattern)
    raw = re2.compile(pattern)
    need = required_text(pattern)
    folded = [t.upper() for t in need.literals] + [t.swapcase() for t in need.literals]
    for text in [*texts, *folded, *(t.replace("k", "\u212a") for t in folded)]:
        assert ours(text) is (raw.search(text) is not None), (pattern, text, need)


@pytest.mark.parametrize("pattern", ["{?|}1", "a{?|}1", "x{,2}|y", "(a){1}|z"])
def test_a_brace_that_begins_no_repetition_hides_no_alternative(pattern: str) -> None:
    # Hypothesis found "{?|}1": the brace was skipped to "}" as if it were {n,m}, the
    # top-level "|" inside went unseen, "1" became required and "" was refused.
    search = compile_search(pattern)
    for text in ["", "1", "x", "y", "z", "a{"]:
        assert search(text) is (re2.compile(pattern).search(text) is not None), (pattern, text)


def test_alternatives_in_a_group_are_required_text() -> None:
    need = required_text(r"@(acme|initech)\.com$")
    assert need.choices == (("acme", "initech"),)
    assert required_text("(?:a|b)c").choices == (("a", "b"),)
    assert required_text("(?P<n>a|b)c").choices == (("a", "b"),)
    assert required_text("(a|b)?c").choices == ()  # optional: not required
    assert required_text("(a|)c").choices == ()  # an empty branch requires nothing
    assert required_text(r"(a\.|b)c").choices == ()
    search = compile_search(r"@(acme|initech)\.com$")
    assert search("wile@initech.com") is True
    assert search("wile@example.com") is False


@pytest.mark.parametrize(
    ("pattern", "literals", "prefix", "suffix", "exact"),
    [
        ("admin", ("admin",), "", "", True),
        ("^beta-", ("beta-",), "beta-", "", True),
        (r"@acme\.com$", ("@acme.com",), "", "@acme.com", True),
        ("^abc$", ("abc",), "abc", "abc", True),
        (r"^user-[0-9]{7}$", ("user-",), "user-", "", False),
        ("^a*b", ("b",), "", "", False),
        ("ab?c", ("a", "c"), "", "", False),
        ("a|b", (), "", "", False),
        ("(?i)abc", ("abc",), "", "", False),  # for a lower-cased ASCII value
        ("(?i)ABC$", ("abc",), "", "abc", False),
        ("(?i)(?m)^abc", (), "", "", False),
        ("(?s)a.c", (), "", "", False),
        (r"\Qa.b\E", (), "", "", False),
    ],
)
def test_required_text(
    pattern: str, literals: tuple[str, ...], prefix: str, suffix: str, exact: bool
) -> None:
    need = required_text(pattern)
    assert (need.literals, need.prefix, need.suffix, need.exact) == (
        literals,
        prefix,
        suffix,
        exact,
    )
