"""CODEOWNERS generation: golden output, GitHub semantics checked against an independent
parser (the PyPI ``codeowners`` library), drift detection, validation, and delegation as
a one-line change."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from codeowners import CodeOwners
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.cli.main import main
from flagstone.errors import ValidationFailed
from flagstone.model import Project, read_project
from flagstone.ownership import (
    BEGIN_MARKER,
    CODEOWNERS_PATH,
    END_MARKER,
    codeowners_report,
    parse_line,
    pattern_regex,
    plan_ownership,
    write_codeowners,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

MINI_FILES = {
    "flagstone.yaml": (
        "project: mini\n"
        "environments: [staging, production]\n"
        "teams:\n"
        '  eng: {github: "@acme/eng"}\n'
        '  pm: {github: "@acme/pm"}\n'
        '  ops: {github: "ops@acme.example"}\n'
        "admins: ops\n"
    ),
    "flags/checkout/flag.yaml": (
        "name: Checkout\nowner: eng\nvariations: {on: true, off: false}\noff_variation: off\n"
        "delegate: {production: pm}\n"
    ),
    "flags/checkout/staging.yaml": "enabled: true\ndefault: on\n",
    "flags/a.b_c/flag.yaml": "name: Dots\nowner: pm\nvariations: {x: 1}\noff_variation: x\n",
    "segments/staff.yaml": "name: Staff\nowner: eng\ninclude: [u1]\n",
}

MINI_GOLDEN = """\
# BEGIN flagstone generated — do not edit; run `flagstone codeowners`
# Generated from flagstone.yaml (admins), flags/*/flag.yaml (owner, delegate)
# and segments/*.yaml (owner). GitHub applies the last matching line, so keep
# this block at the end of the file.

# Project administration: admins = ops
/flagstone.yaml ops@acme.example
/schemas/ ops@acme.example
/.github/ ops@acme.example
/.github/CODEOWNERS ops@acme.example

# Flag a.b_c: owner = pm
/flags/a.b_c/ @acme/pm
/flags/a.b_c/flag.yaml @acme/pm
/flags/a.b_c/staging.yaml @acme/pm
/flags/a.b_c/production.yaml @acme/pm

# Flag checkout: owner = eng; delegated: production -> pm
/flags/checkout/ @acme/eng
/flags/checkout/flag.yaml @acme/eng
/flags/checkout/staging.yaml @acme/eng
/flags/checkout/production.yaml @acme/pm

# Segments
/segments/staff.yaml @acme/eng
# END flagstone generated
"""


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    for rel, text in (files or MINI_FILES).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``flagstone`` in-process through its real entry point and error handler."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0), out.getvalue(), err.getvalue()


def run(root: Path, *args: str) -> tuple[int, str, str]:
    return run_cli("codeowners", "--repo", str(root), *args)


def repository_files(root: Path) -> list[str]:
    """The files ownership is about (not the tool's own sources and caches)."""
    found = [root / "flagstone.yaml"]
    for top in ("flags", "segments", "schemas", ".github"):
        found += (p for p in (root / top).rglob("*") if p.is_file())
    return sorted(p.relative_to(root).as_posix() for p in found if p.exists())


def expected_owner(project: Project, rel: str) -> str | None:
    """Who should own ``rel`` according to the ownership metadata, read independently
    of the generator."""
    assert project.config is not None
    teams = project.config.teams
    parts = rel.split("/")
    if rel == "flagstone.yaml" or parts[0] in ("schemas", ".github"):
        return teams[project.config.admins or ""].github
    if parts[0] == "flags" and parts[1] in project.flags:
        flag = project.flags[parts[1]]
        environment = parts[2].removesuffix(".yaml") if len(parts) == 3 else None
        delegate = flag.data.get("delegate") or {}
        team = delegate.get(environment) if environment in project.environments else None
        return teams[str(team or flag.data["owner"])].github
    if parts[0] == "segments" and len(parts) == 2:
        return teams[str(project.segments[parts[1].removesuffix(".yaml")].owner)].github
    return None


def oracle_owner(text: str, rel: str) -> str | None:
    owners = CodeOwners(text).of(rel)
    assert len(owners) <= 1
    return owners[0][1] if owners else None


def test_mini_repository_golden(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    assert run(root) == (0, ".github/CODEOWNERS: no problems\n", "wrote .github/CODEOWNERS\n")
    assert (root / CODEOWNERS_PATH).read_text() == MINI_GOLDEN
    # Same input, same bytes; a second run changes nothing.
    assert run(root)[2] == ".github/CODEOWNERS is up to date\n"
    assert (root / CODEOWNERS_PATH).read_text() == MINI_GOLDEN


def test_root_repository_codeowners_is_current() -> None:
    project = read_project(REPO_ROOT)
    report = codeowners_report(project)
    assert report.problems == ()
    assert report.up_to_date, "run `flagstone codeowners`:\n" + report.diff()
    assert run(REPO_ROOT, "--check")[0] == 0


@pytest.mark.parametrize("where", ["mini", "root"])
def test_oracle_agrees_on_every_file(where: str, tmp_path: Path) -> None:
    root = make_repo(tmp_path) if where == "mini" else REPO_ROOT
    project = read_project(root)
    text = codeowners_report(project).expected
    # Files that exist, plus release files for environments not yet configured.
    probes = {
        "flags/checkout/production.yaml",
        "flags/checkout/notes.md",
        "flags/a.b_c/production.yaml",
        "schemas/flag.schema.json",
        ".github/CODEOWNERS",
        ".github/workflows/validate.yml",
    }
    paths = set(repository_files(root)) | probes
    checked = 0
    for rel in sorted(paths):
        wanted = expected_owner(project, rel)
        if wanted is None:
            continue
        assert oracle_owner(text, rel) == wanted, rel
        checked += 1
    assert checked >= 8


def test_delegation_is_one_reviewed_line(tmp_path: Path) -> None:
    """Changing `delegate:` and running `flagstone codeowners` is the whole act."""
    root = make_repo(tmp_path)
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    assert run(root)[0] == 0
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "start"], check=True)
    assert (
        oracle_owner((root / CODEOWNERS_PATH).read_text(), "flags/checkout/staging.yaml")
        == "@acme/eng"
    )

    flag = root / "flags/checkout/flag.yaml"
    flag.write_text(
        flag.read_text().replace(
            "delegate: {production: pm}", "delegate: {production: pm, staging: pm}"
        )
    )
    assert run(root, "--check")[0] == 1
    assert run(root)[0] == 0
    diff = subprocess.run(
        [*git, "diff", "-U0", "--", CODEOWNERS_PATH], capture_output=True, text=True, check=True
    ).stdout
    changed = [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == [
        "-# Flag checkout: owner = eng; delegated: production -> pm",
        "+# Flag checkout: owner = eng; delegated: staging -> pm, production -> pm",
        "-/flags/checkout/staging.yaml @acme/eng",
        "+/flags/checkout/staging.yaml @acme/pm",
    ]
    text = (root / CODEOWNERS_PATH).read_text()
    assert oracle_owner(text, "flags/checkout/staging.yaml") == "@acme/pm"
    assert oracle_owner(text, "flags/checkout/flag.yaml") == "@acme/eng"
    assert run(root, "--check")[0] == 0


def test_lines_outside_the_block_are_kept_byte_for_byte(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    before = "# hand-written\r\n*       @acme/everyone\r\n/docs/  docs@acme.example # inline\n\n"
    after = "\n# trailing notes, no newline at the end"
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_bytes(
        (before + BEGIN_MARKER + "\n/stale @acme/old\n" + END_MARKER + "\n" + after).encode()
    )
    assert run(root)[0] == 0
    assert path.read_bytes() == (before + MINI_GOLDEN + after).encode()


def test_new_block_is_appended_after_hand_written_lines(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_text("* @acme/everyone")  # no final newline
    assert run(root)[0] == 0
    text = path.read_text()
    assert text == "* @acme/everyone\n\n" + MINI_GOLDEN
    # The catch-all comes first, so the generated lines win (last match wins).
    assert oracle_owner(text, "flags/checkout/production.yaml") == "@acme/pm"
    assert oracle_owner(text, "README.md") == "@acme/everyone"


def test_check_prints_a_unified_diff_and_exits_1(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    code, out, _ = run(root, "--check")
    assert code == 1
    assert out.startswith("--- a/.github/CODEOWNERS\n+++ b/.github/CODEOWNERS\n@@ -0,0 +1,")
    assert f"+{BEGIN_MARKER}\n" in out
    assert out.endswith(
        ".github/CODEOWNERS: error: .github/CODEOWNERS does not exist [codeowners]\n"
        "    hint: run `flagstone codeowners` and commit the result\n"
        ".github/CODEOWNERS: 1 error\n"
    )
    assert not (root / CODEOWNERS_PATH).exists()

    assert run(root)[0] == 0
    path = root / CODEOWNERS_PATH
    path.write_text(
        path.read_text().replace(
            "/flags/checkout/production.yaml @acme/pm", "/flags/checkout/production.yaml @acme/eng"
        )
    )
    code, out, _ = run(root, "--check")
    assert code == 1
    assert (
        "-/flags/checkout/production.yaml @acme/eng\n+/flags/checkout/production.yaml @acme/pm\n"
        in out
    )
    line = MINI_GOLDEN.splitlines().index("/flags/checkout/production.yaml @acme/pm") + 1
    assert f".github/CODEOWNERS:{line}:1: error: .github/CODEOWNERS is out of date" in out
    code, out, err = run(root, "--check", "--format", "github")
    assert out.splitlines()[-2] == (
        f"::error file=.github/CODEOWNERS,line={line},col=1,title=codeowners::.github/CODEOWNERS "
        "is out of date with the ownership metadata (hint: run `flagstone codeowners` and commit "
        "the result)"
    )
    code, out, err = run(root, "--check", "--format", "json")
    assert json.loads(out)["problems"][0]["line"] == line
    assert err.startswith("--- a/.github/CODEOWNERS")


def test_hand_written_override_after_the_block_is_reported(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    assert run(root)[0] == 0
    path = root / CODEOWNERS_PATH
    lines_before = path.read_text().count("\n")
    path.write_text(
        path.read_text()
        + "/docs/ @acme/docs\n"  # governs nothing generated: fine
        + "/flags/checkout/staging.yaml @acme/eng\n"  # same owner: fine
        + "/flags/*/production.yaml @acme/release-managers\n"
        + "/segments/\n"  # no owners: clears ownership
    )
    code, out, _ = run(root, "--check")
    assert code == 1  # an override is an error: it quietly takes review away
    assert out.splitlines() == [
        f".github/CODEOWNERS:{lines_before + 3}:1: error: hand-written line after the generated "
        "block overrides flags/a.b_c/production.yaml (@acme/pm -> @acme/release-managers) "
        "and 1 more generated path(s) [codeowners]",
        "    hint: GitHub applies the last matching line; move this line above the generated block",
        f".github/CODEOWNERS:{lines_before + 4}:1: error: hand-written line after the generated "
        "block overrides segments/staff.yaml (@acme/eng -> no owner) [codeowners]",
        "    hint: GitHub applies the last matching line; move this line above the generated block",
        ".github/CODEOWNERS: 2 errors",
    ]


HAND_WRITTEN_LINES = [
    "/docs/ @acme/docs",
    "*.md @acme/docs",
    "/flags/checkout/staging.yaml @acme/eng",
    "/flags/*/production.yaml @acme/release-managers",
    "/segments/",
    "*.yaml @acme/intruder",
    "flags/ @acme/intruder",
    "/flags/** @acme/intruder",
    "**/flag.yaml @acme/intruder",
    "* @acme/intruder",
    "/flags/a.b_c/ @acme/intruder",
    "/flagstone.yaml @acme/intruder",
    "schemas/*.json @acme/intruder",
    "/.github/ @acme/intruder",
    "/flags/checkout/flag.yaml @acme/eng",
]


@pytest.mark.parametrize("line", HAND_WRITTEN_LINES)
def test_check_fails_exactly_when_a_line_after_the_block_changes_a_generated_owner(
    tmp_path: Path, line: str
) -> None:
    """The `codeowners` library (last match wins, GitHub's rules) is the oracle."""
    root = make_repo(tmp_path)
    assert run(root)[0] == 0
    path = root / CODEOWNERS_PATH
    generated = path.read_text()
    edited = generated + line + "\n"
    path.write_text(edited)
    # Files on disk, and the files the block names one by one (release files of every
    # environment, whether or not they exist yet).
    named = {
        entry.split()[0].lstrip("/")
        for entry in generated.split(BEGIN_MARKER)[1].splitlines()
        if entry.startswith("/") and not entry.split()[0].endswith("/")
    }
    governed = [
        rel
        for rel in sorted(set(repository_files(root)) | named)
        if oracle_owner(generated, rel) is not None
    ]
    changed = [
        rel for rel in governed if CodeOwners(edited).of(rel) != CodeOwners(generated).of(rel)
    ]
    code, out, _ = run(root, "--check")
    number = edited.count("\n")
    flagged = f".github/CODEOWNERS:{number}:1: error: hand-written line after the generated block"
    assert (code == 1) == bool(changed), (line, changed, out)
    assert (flagged in out) == bool(changed), (line, changed, out)


def test_lines_github_rejects_are_errors_with_line_numbers(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_text(
        "# comment\n"
        "!/vendor/ @acme/eng\n"
        "*.[ch] @acme/eng\n"
        "\\#notes @acme/eng\n"
        "/docs/ acme/eng @-bad- ok@acme.example @acme/docs\n"
    )
    code, out, _ = run(root)
    assert code == 1
    assert [line for line in out.splitlines() if not line.startswith("    hint")] == [
        ".github/CODEOWNERS:2:1: error: negated pattern '!/vendor/' is not supported by GitHub [codeowners]",
        ".github/CODEOWNERS:3:1: error: character range in '*.[ch]' is not supported by GitHub [codeowners]",
        ".github/CODEOWNERS:4:1: error: escaped '#' in '\\#notes' is not supported by GitHub [codeowners]",
        ".github/CODEOWNERS:5:1: error: '@-bad-' is not a valid owner (use @user, @org/team or an e-mail address) [codeowners]",
        ".github/CODEOWNERS:5:1: error: 'acme/eng' is not a valid owner (use @user, @org/team or an e-mail address) [codeowners]",
        ".github/CODEOWNERS: 5 errors",
    ]
    # The generated block is still written; only the hand-written lines are wrong.
    assert MINI_GOLDEN in path.read_text()


def test_oversized_file_is_an_error(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_text("# padding\n" * (3 * 1024 * 1024 // 10 + 1))
    code, out, _ = run(root, "--check")
    assert code == 1
    assert "GitHub ignores CODEOWNERS files of 3 MB or more" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{BEGIN_MARKER}\n/x @a\n", ".github/CODEOWNERS:1:1: generated block has no end marker"),
        (
            f"/x @a\n{END_MARKER}\n",
            ".github/CODEOWNERS:2:1: end marker of the generated block without a begin marker",
        ),
        (
            f"{BEGIN_MARKER}\n{END_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n",
            ".github/CODEOWNERS:3:1: a second generated block starts here",
        ),
    ],
)
def test_broken_markers_are_a_one_line_error(tmp_path: Path, text: str, expected: str) -> None:
    root = make_repo(tmp_path)
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_text(text)
    code, _, err = run(root)
    assert code == 1
    assert err.splitlines()[0] == f"error: {expected}"
    assert "Traceback" not in err
    assert path.read_text() == text


def test_undeclared_owner_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    files = dict(MINI_FILES)
    files["flags/checkout/flag.yaml"] = files["flags/checkout/flag.yaml"].replace(
        "owner: eng", "owner: nobody"
    )
    root = make_repo(tmp_path, files)
    code, out, err = run(root)
    assert code == 1
    assert out.splitlines()[0] == (
        "flags/checkout/flag.yaml:2:8: error: flags/checkout/flag.yaml names team 'nobody', which is "
        "not declared in flagstone.yaml, so /flags/checkout/, /flags/checkout/flag.yaml, "
        "/flags/checkout/staging.yaml cannot be mapped [codeowners]"
    )
    assert "not written" in err
    assert not (root / CODEOWNERS_PATH).exists()


def test_unparseable_repository_is_refused_without_traceback(tmp_path: Path) -> None:
    files = dict(MINI_FILES)
    files["segments/staff.yaml"] = "name: [unclosed\n"
    root = make_repo(tmp_path, files)
    code, _, err = run(root)
    assert code == 1
    assert err.startswith("error: segments/staff.yaml:")
    assert "Traceback" not in err


def test_works_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repo(tmp_path)
    monkeypatch.chdir(root / "flags" / "checkout")
    assert run_cli("codeowners")[0] == 0
    assert (root / CODEOWNERS_PATH).read_text() == MINI_GOLDEN


def test_write_is_a_no_op_when_current(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    report = codeowners_report(read_project(root))
    assert write_codeowners(report) is True
    assert write_codeowners(codeowners_report(read_project(root))) is False
    assert (
        plan_ownership(read_project(root)).owner_of_path("flags/checkout/production.yaml")
        == "@acme/pm"
    )


SEGMENTS = st.sampled_from(["a", "b", "*", "**", "a*", "*.y", "?", "b.y"])
PATHS = st.lists(st.sampled_from(["a", "b", "b.y", "a.y", "aa", "x"]), min_size=1, max_size=4).map(
    "/".join
)


@settings(max_examples=300, deadline=None)
@given(
    segments=st.lists(SEGMENTS, min_size=1, max_size=4),
    leading=st.booleans(),
    trailing=st.booleans(),
    paths=st.lists(PATHS, min_size=1, max_size=8),
)
def test_pattern_matching_agrees_with_the_oracle(
    segments: list[str], leading: bool, trailing: bool, paths: list[str]
) -> None:
    """Our matcher (used to detect overrides) and the independent parser agree on
    gitignore-style patterns GitHub accepts."""
    pattern = ("/" if leading else "") + "/".join(segments) + ("/" if trailing else "")
    oracle = CodeOwners(f"{pattern} @acme/eng\n")
    for path in paths:
        assert bool(pattern_regex(pattern).fullmatch(path)) == bool(oracle.of(path)), (
            pattern,
            path,
        )


def test_generated_owner_lookup_agrees_with_the_oracle() -> None:
    """`owner_of_path` (used to spot overrides) reads the block as GitHub would."""
    plan = plan_ownership(read_project(REPO_ROOT))
    oracle = CodeOwners(plan.render_block())
    paths = [*repository_files(REPO_ROOT), "flags/new-checkout/extra.md", "schemas/x/y.json"]
    for path in paths:
        owners = oracle.of(path)
        assert plan.owner_of_path(path) == (owners[0][1] if owners else None), path


def test_codeowners_files_github_would_ignore_are_reported(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    (root / "docs").mkdir()
    (root / "docs/CODEOWNERS").write_text("* @acme/docs\n")
    code, out, err = run(root)
    assert (code, err) == (0, "wrote .github/CODEOWNERS\n")
    assert out.splitlines()[0] == (
        "docs/CODEOWNERS: warning: GitHub ignores this file because .github/CODEOWNERS "
        "takes precedence [codeowners]"
    )


def test_library_refuses_to_write_an_incomplete_block(tmp_path: Path) -> None:
    files = dict(MINI_FILES)
    files["segments/staff.yaml"] = "name: Staff\ninclude: [u1]\n"  # no owner
    report = codeowners_report(read_project(make_repo(tmp_path, files)))
    assert [p.format_line() for p in report.unmapped] == [
        "segments/staff.yaml:1:1: segments/staff.yaml has no owner, so /segments/staff.yaml "
        "cannot be mapped"
    ]
    with pytest.raises(ValidationFailed):
        write_codeowners(report)
    assert not (tmp_path / CODEOWNERS_PATH).exists()


def test_escaped_spaces_and_inline_comments_parse_as_github_reads_them(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_text("/docs/release\\ notes.md @acme/docs  # the PM team writes these\n")
    code, out, _ = run(root)
    assert (code, out) == (0, ".github/CODEOWNERS: no problems\n")
    text = path.read_text()
    assert oracle_owner(text, "docs/release notes.md") == "@acme/docs"
    line, errors = parse_line(1, text.splitlines()[0])
    assert errors == [] and line is not None
    assert line.owners == ("@acme/docs",)
    assert line.matches("docs/release notes.md")


def test_hand_written_line_before_the_block_that_it_overrides_is_reported(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    path = root / CODEOWNERS_PATH
    path.parent.mkdir()
    path.write_text(
        "* @acme/everyone\n"  # a fallback: fine
        "/flags/checkout/staging.yaml @acme/eng\n"  # what the block says anyway: fine
        "/flags/checkout/production.yaml @acme/eng\n"  # dead: the block gives it to pm
        "flags/*/production.yaml @acme/eng\n"  # wildcards may match other files: fine
    )
    code, out, _ = run(root)
    assert code == 0
    assert out.splitlines() == [
        ".github/CODEOWNERS:3:1: warning: line has no effect: the generated block below gives "
        "flags/checkout/production.yaml to @acme/pm [codeowners]",
        "    hint: change the ownership in the flag repository (owner, delegate, admins) instead",
        ".github/CODEOWNERS: 1 warning",
    ]
    # GitHub agrees: the generated line decides.
    assert oracle_owner(path.read_text(), "flags/checkout/production.yaml") == "@acme/pm"


TEAM_IDS = ["eng", "pm", "ops", "growth"]


@st.composite
def ownership_repositories(draw: st.DrawFn) -> dict[str, str]:
    """Random but valid ownership metadata, as repository files."""
    environments = draw(
        st.lists(
            st.sampled_from(["dev", "staging", "production", "eu.prod"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    teams = draw(st.lists(st.sampled_from(TEAM_IDS), min_size=1, max_size=4, unique=True))
    handle = {
        team: (f"{team}@acme.example" if team == "ops" else f"@acme/{team}") for team in teams
    }
    files = {
        "flagstone.yaml": "project: prop\n"
        f"environments: [{', '.join(environments)}]\n"
        "teams:\n"
        + "".join(f'  {t}: {{github: "{handle[t]}"}}\n' for t in teams)
        + f"admins: {draw(st.sampled_from(teams))}\n"
    }
    for key in draw(
        st.lists(st.sampled_from(["a", "b.c", "d_e", "f-g"]), min_size=1, max_size=4, unique=True)
    ):
        delegate = draw(st.dictionaries(st.sampled_from(environments), st.sampled_from(teams)))
        files[f"flags/{key}/flag.yaml"] = (
            f"name: {key}\nowner: {draw(st.sampled_from(teams))}\nvariations: {{x: 1}}\noff_variation: x\n"
            + (
                f"delegate: {{{', '.join(f'{e}: {t}' for e, t in delegate.items())}}}\n"
                if delegate
                else ""
            )
        )
        for env in draw(st.lists(st.sampled_from(environments), unique=True)):
            files[f"flags/{key}/{env}.yaml"] = "enabled: true\ndefault: x\n"
    for key in draw(st.lists(st.sampled_from(["staff", "beta"]), unique=True)):
        files[f"segments/{key}.yaml"] = (
            f"name: {key}\nowner: {draw(st.sampled_from(teams))}\ninclude: [u1]\n"
        )
    return files


@settings(max_examples=25, deadline=None)
@given(files=ownership_repositories())
def test_every_generated_owner_is_what_github_would_apply(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = make_repo(Path(directory), files)
        project = read_project(root)
        report = codeowners_report(project)
        assert report.problems == ()
        paths = {f"flags/{key}/{env}.yaml" for key in project.flags for env in project.environments}
        paths |= set(repository_files(root)) | {".github/CODEOWNERS", "schemas/flag.schema.json"}
        for rel in sorted(paths):
            assert oracle_owner(report.expected, rel) == expected_owner(project, rel), rel


@pytest.mark.parametrize(
    "replace",
    [
        # A github handle that is not a GitHub owner (the schema says so, but codeowners
        # does not run the schema): its newline would add a rule of the attacker's.
        ('{github: "@acme/eng"}', '{github: "@acme/eng\\n* @evil/pwn"}'),
        ('{github: "@acme/eng"}', '{github: "@acme/eng /flags/ @evil/pwn"}'),
        # An environment name is part of every flag's patterns.
        ("[staging, production]", '[staging, "x.yaml @acme/eng\\n* @evil/pwn\\n#"]'),
        ("[staging, production]", '[staging, "prod *"]'),
    ],
)
def test_crafted_handles_and_names_never_add_codeowners_lines(
    tmp_path: Path, replace: tuple[str, str]
) -> None:
    files = dict(MINI_FILES)
    files["flagstone.yaml"] = files["flagstone.yaml"].replace(*replace)
    root = make_repo(tmp_path, files)
    code, out, err = run(root)
    assert code == 1, out + err
    assert "cannot be mapped" in out
    assert not (root / CODEOWNERS_PATH).exists()
    block = plan_ownership(read_project(root)).render_block()
    assert "@evil" not in block
    assert "prod *" not in block


def test_a_crafted_flag_directory_name_never_adds_codeowners_lines(tmp_path: Path) -> None:
    files = dict(MINI_FILES)
    files["flags/x @acme/eng\n* @evil/pwn\n#/flag.yaml"] = files["flags/checkout/flag.yaml"]
    root = make_repo(tmp_path, files)
    run(root)
    assert "@evil" not in (root / CODEOWNERS_PATH).read_text()


def test_a_crafted_owner_stays_inside_its_comment_line(tmp_path: Path) -> None:
    files = dict(MINI_FILES)
    files["flags/checkout/flag.yaml"] = files["flags/checkout/flag.yaml"].replace(
        "owner: eng", 'owner: "eng\\n* @evil/pwn"'
    )
    root = make_repo(tmp_path, files)
    block = plan_ownership(read_project(root)).render_block()
    assert "# Flag checkout: owner = eng\\x0a* @evil/pwn" in block
    assert all(line.startswith(("#", "/")) for line in block.splitlines() if line)
