"""Comment-preserving edits.

Golden cases live in ``tests/golden/edit/<case>/``: ``before/`` is a flag repository,
``command`` the ``flagstone`` arguments, ``after/`` the exact bytes of every file the
command writes, and ``expected.txt`` its exit code and output. Every file not in
``after/`` must be left byte-identical. Set ``FLAGSTONE_UPDATE_GOLDEN=1`` to rewrite
``after/`` and ``expected.txt`` from the current behaviour (then review the diff).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone import edit
from flagstone.errors import EditError, LoadError
from flagstone.loader import loads
from flagstone.model import read_project
from gitrepo import run_cli

GOLDEN = Path(__file__).parent / "golden" / "edit"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "command").is_file())
UPDATE = os.environ.get("FLAGSTONE_UPDATE_GOLDEN") == "1"


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_edit(case: str, tmp_path: Path) -> None:
    folder = GOLDEN / case
    work = tmp_path / "repo"
    shutil.copytree(folder / "before", work)
    before = tree(work)
    code, out, err = run_cli(shlex.split((folder / "command").read_text()), work)
    transcript = f"exit: {code}\n--- stdout\n{out}--- stderr\n{err}"
    after = tree(work)
    written = {rel: data for rel, data in after.items() if before.get(rel) != data}
    assert set(after) >= set(before), "an edit never deletes files"
    if UPDATE:
        shutil.rmtree(folder / "after", ignore_errors=True)
        for rel, data in written.items():
            target = folder / "after" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (folder / "expected.txt").write_text(transcript, encoding="utf-8")
    expected_after = tree(folder / "after") if (folder / "after").is_dir() else {}
    assert written == expected_after
    assert transcript == (folder / "expected.txt").read_text(encoding="utf-8")


def test_golden_cases_are_present() -> None:
    assert len(CASES) >= 10


def test_untouched_lines_are_byte_identical_in_every_golden_edit() -> None:
    """Line by line: an edit changes only the lines holding the edited value (or adds one)."""
    for case in CASES:
        after_dir = GOLDEN / case / "after"
        if not after_dir.is_dir():
            continue
        for path in after_dir.rglob("*.yaml"):
            rel = path.relative_to(after_dir)
            original = GOLDEN / case / "before" / rel
            if not original.is_file():
                continue  # a new file
            old_lines = original.read_bytes().splitlines(keepends=True)
            new_lines = path.read_bytes().splitlines(keepends=True)
            assert len(new_lines) - len(old_lines) in (0, 1), case
            kept = [line for line in old_lines if line in new_lines]
            assert len(old_lines) - len(kept) <= 2, (case, rel)


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(GOLDEN / "advance-comments-odd-indent" / "before", root)
    return root


def test_an_edit_that_would_be_invalid_is_refused_and_nothing_is_written(
    project_root: Path,
) -> None:
    project = read_project(project_root)
    path = project_root / "flags/new-checkout/production.yaml"
    original = path.read_bytes()
    broken = original.decode().replace('current: "beta"', 'current: "nine"')
    with pytest.raises(
        EditError,
        match=r"^edit refused, the result would be invalid: flags/new-checkout/production.yaml:\d+:\d+: ",
    ):
        edit.apply_texts(project_root, project, {"flags/new-checkout/production.yaml": broken})
    assert path.read_bytes() == original
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_set_replaces_only_the_scalar_and_keeps_quote_style() -> None:
    file = edit.TextFile("x.yaml", "a:   'one'   # c\nb: {c: \"two\", d: 3}\n")
    file.set(("a",), "it's")
    file.set(("b", "c"), "three")
    file.set(("b", "d"), 4.5)
    file.set(("b", "e"), True)
    assert file.text == "a:   'it''s'   # c\nb: {c: \"three\", d: 4.5, e: true}\n"
    file.verify()


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("beta", "beta"),
        ("on", "on"),
        ("123", '"123"'),
        ("true", '"true"'),
        ("a: b", '"a: b"'),
        ("#x", '"#x"'),
        ("", '""'),
        (" padded", '" padded"'),
        (True, "true"),
        (12.5, "12.5"),
        (100, "100"),
    ],
)
def test_scalar_text_quotes_only_when_needed(value: object, token: str) -> None:
    assert edit.scalar_text(value) == token


def test_verify_catches_a_change_outside_the_edited_place() -> None:
    file = edit.TextFile("x.yaml", "a: 1\nb: |\n  text\n")
    file.set(("a",), 2)
    file.text = file.text.replace("text", "other")
    with pytest.raises(EditError, match="would change other values too"):
        file.verify()


def test_verify_catches_a_value_that_reads_back_differently() -> None:
    file = edit.TextFile("x.yaml", "a: 1\n")
    file.text = "a: 2\n"
    file.expected[("a",)] = 1
    with pytest.raises(EditError, match="reads back as 2"):
        file.verify()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["advance", "new-checkout", "--env", "qa"], 2, "error: unknown environment 'qa'"),
        (["advance", "nope", "--env", "production"], 2, "error: no flag 'nope'"),
        (
            ["advance", "new-checkout", "--env", "production", "--to", "zzz"],
            2,
            "error: no stage 'zzz'",
        ),
        (
            ["advance", "new-checkout", "--env", "staging"],
            1,
            "error: flags/new-checkout/staging.yaml: default is not a progression",
        ),
        (
            ["rollout", "new-checkout", "--env", "production", "--percent", "101"],
            2,
            "error: --percent 101.0 is not between 0 and 100",
        ),
        (
            ["rollout", "new-checkout", "--env", "production", "--percent", "1.0001"],
            2,
            "error: --percent 1.0001 has more than 3 decimals",
        ),
        (["new", "Bad Key", "--owner", "eng"], 2, "error: 'Bad Key' is not a valid flag key"),
        (["new", "new-checkout", "--owner", "eng"], 1, "error: flags/new-checkout already exists"),
        (["new", "x", "--owner", "ghosts"], 2, "error: unknown team 'ghosts'"),
    ],
)
def test_bad_edits_are_one_line_errors(
    project_root: Path, args: list[str], code: int, message: str
) -> None:
    before = tree(project_root)
    got, out, err = run_cli(args, project_root)
    assert (got, out) == (code, "")
    assert err.startswith(message), err
    assert "Traceback" not in err
    assert tree(project_root) == before


def test_advance_at_the_last_stage_and_rollback_with_to(project_root: Path) -> None:
    assert (
        run_cli(["advance", "new-checkout", "--env", "production", "--to", "ga"], project_root)[0]
        == 0
    )
    code, _, err = run_cli(["advance", "new-checkout", "--env", "production"], project_root)
    assert code == 1 and "already at the last stage 'ga'" in err
    code, out, _ = run_cli(
        ["advance", "new-checkout", "--env", "production", "--to", "staff"], project_root
    )
    assert code == 0
    assert out.splitlines()[0] == "rolled back to staff"
    assert (
        "stage rolled back ga (100% + staff) → staff (0% + staff): about −100% of contexts" in out
    )


def test_kill_twice_changes_nothing_the_second_time(project_root: Path) -> None:
    assert run_cli(["kill", "new-checkout", "--env", "production"], project_root)[0] == 0
    before = tree(project_root)
    code, out, _ = run_cli(["kill", "new-checkout", "--env", "production"], project_root)
    assert (code, out) == (0, "nothing to change\n")
    assert tree(project_root) == before


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=20),
        st.booleans(),
        st.integers(-(10**6), 10**6),
        st.integers(1, 99999).map(lambda n: n / 1000),  # percents with up to 3 decimals
    )
)
def test_scalar_text_reads_back_as_the_same_value(value: object) -> None:
    """Whatever is written as a plain or quoted token, the strict loader reads it back."""
    if isinstance(value, str) and any(
        0xD800 <= ord(c) <= 0xDFFF or c in "\x85\u2028\u2029" for c in value
    ):
        return  # not encodable or a YAML line break: never a flag value from the CLI
    token = edit.scalar_text(value)
    try:
        document = loads(f"key: {token}\n".encode())
    except LoadError as error:  # control characters are refused by the loader
        assert isinstance(value, str) and not value.isprintable(), error
        return
    assert document.data == {"key": value}
    read_back = document.data["key"]
    assert type(read_back) is type(value) or (isinstance(value, float) and value.is_integer())


def test_an_unreadable_file_is_named_with_its_position(project_root: Path) -> None:
    release = project_root / "flags/new-checkout/production.yaml"
    release.write_text("enabled: true\nenabled: false\n")
    code, _, err = run_cli(["kill", "new-checkout", "--env", "production"], project_root)
    assert code == 1
    assert err.splitlines() == [
        "error: cannot edit: flags/new-checkout/production.yaml:2:1: duplicate key 'enabled' (first defined at line 1)",
        "hint: fix flags/new-checkout/production.yaml first",
    ]
    (project_root / "flags/new-checkout/flag.yaml").write_text("name: [\n")
    code, _, err = run_cli(["archive", "new-checkout"], project_root)
    assert code == 1 and err.startswith("error: cannot edit: flags/new-checkout/flag.yaml:")
