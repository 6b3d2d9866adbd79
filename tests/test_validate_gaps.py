"""Nothing that validates can fail at publish (issue 12 item 10): names with a trailing
newline, numbers JSON cannot carry exactly, and integers too long for Python to print
are refused where they are written, with a location, never a traceback."""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.errors import LoadError
from flagstone.loader import MAX_SAFE_INTEGER, loads, resolve_plain
from flagstone.scaffold import yaml_text
from flagstone.validate import _end_anchored

EXAMPLES = Path(__file__).parent / "examples"


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out), pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0), out.getvalue()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"a: {MAX_SAFE_INTEGER + 1}", "is beyond ±(2^53 - 1)"),
        (f"a: -{MAX_SAFE_INTEGER + 1}", "is beyond ±(2^53 - 1)"),
        ("a: 0x20000000000000", "is beyond ±(2^53 - 1)"),
        ("a: 0o400000000000000000", "is beyond ±(2^53 - 1)"),
        ("a: " + "9" * 5000, "99999999999999999999…(5000 characters) is beyond ±(2^53 - 1)"),
        ("a: 1e400", "1e400 is out of the range of a double"),
        ("a: -1e999", "-1e999 is out of the range of a double"),
        ("a: [1, 2, 1" + "0" * 500 + ".5]", "is out of the range of a double"),
    ],
)
def test_numbers_json_cannot_carry_are_refused_where_they_are_written(
    text: str, message: str
) -> None:
    with pytest.raises(LoadError) as refused:
        loads(text.encode(), rel="f.yaml")
    line = refused.value.problem.format_line()
    assert line.startswith("f.yaml:1:")
    assert message in line
    assert "\n" not in line


def test_the_largest_exact_integers_and_quoted_numbers_still_load() -> None:
    document = loads(
        f"a: {MAX_SAFE_INTEGER}\nb: -{MAX_SAFE_INTEGER}\nc: '1e400'\nd: 1.7976931348623157e308\n".encode()
    )
    assert document.data == {
        "a": MAX_SAFE_INTEGER,
        "b": -MAX_SAFE_INTEGER,
        "c": "1e400",
        "d": 1.7976931348623157e308,
    }


def test_writers_quote_a_huge_integer_instead_of_crashing() -> None:
    huge = "9" * 5000
    assert resolve_plain(huge) == float("inf")
    assert yaml_text(huge) == f'"{huge}"'


def test_schema_patterns_end_at_the_end_not_before_a_final_newline() -> None:
    key = _end_anchored("^[a-z0-9][a-z0-9._-]{0,127}$")
    assert key.search("staging")
    assert not key.search("staging\n")
    assert _end_anchored(r"^a\$$").search("a$")  # an escaped dollar stays a dollar


def test_validate_prints_one_line_per_finding_for_names_with_newlines(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "invalid" / "schema-trailing-newline-in-names", repo)
    code, output = run_cli("validate", "--repo", str(repo), "--format", "text")
    assert code == 1
    findings = [line for line in output.splitlines() if ": error: " in line]
    assert len(findings) == 7
    assert (
        "flagstone.yaml:3:25: error: environments[1]: 'production\\x0a' is not a valid key"
        in output
    )


def test_what_validates_also_publishes(tmp_path: Path) -> None:
    """The largest exact integer validates, compiles and is written as canonical JSON."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "invalid" / "numbers-beyond-json", repo)
    (repo / "expected.txt").unlink()
    flag = repo / "flags" / "checkout" / "flag.yaml"
    flag.write_text(flag.read_text().replace("9007199254740992", "-9007199254740991"))
    segment = repo / "segments" / "staff.yaml"
    segment.write_text(segment.read_text().replace("-1e400", "-1.7976931348623157e308"))
    assert run_cli("validate", "--repo", str(repo))[0] == 0
    snapshot = tmp_path / "snapshot.json"
    code, output = run_cli(
        "compile", "--repo", str(repo), "--env", "production", "-o", str(snapshot)
    )
    assert code == 0, output
    assert "-9007199254740991" in snapshot.read_text()
