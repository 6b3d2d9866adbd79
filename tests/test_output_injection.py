"""Output that reaches a terminal, a CI log or a pull-request comment cannot be hijacked
by what contributors write (issue 12 item 4).

One hostile string goes everywhere a contributor or committer controls text: a flag's
name and description, a rule name, a segment name, a commit's author name and email and
its subject, a guardrails key, and an invalid value that validate quotes back. It holds
a line break followed by a workflow command, a carriage return and an ANSI sequence, a
bidirectional override, a legacy ``##[command]``, ``</details>``, a heading, a Markdown
link, an ``@mention``, a table pipe and a percent-encoded newline. Every command that
prints such text (diff, log, show, check-change, validate, lint) runs in every format
against a real git repository, and each output is checked for where it goes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from gitrepo import Author, GitRepo, run_cli

# What YAML double-quoted escapes make of HOSTILE_YAML.
HOSTILE = (
    "x\n::error::pwned\r\x1b[2K</details># h [l](http://evil.example) "
    "@acme/platform \u202e\u2066|##[set-env name=a]%0A"
)
HOSTILE_YAML = (
    "x\\n::error::pwned\\r\\e[2K</details># h [l](http://evil.example) "
    "@acme/platform \\u202e\\u2066|##[set-env name=a]%0A"
)
# git keeps these in an author name (it drops only newlines and <>).
HOSTILE_AUTHOR = Author("Mallory\r::warning::x\x1b[2K\u202e@acme/platform", "m@example.com")
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
OUR_ANNOTATION = re.compile(r"^::(error|warning|notice) file=[^:]*::")


@pytest.fixture(scope="module")
def hostile_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = GitRepo(tmp_path_factory.mktemp("injection") / "repo")
    repo.copy_example()
    repo.commit("Initial flags", date="2026-11-01T09:00:00Z")
    release = "flags/new-checkout/production.yaml"
    repo.replace(release, "- name: old android app", f'- name: "{HOSTILE_YAML}"')
    # A second rule with the same condition can never match: lint quotes its name.
    repo.replace(
        release,
        "    serve: off\n",
        "    serve: off\n"
        f'  - name: "{HOSTILE_YAML} again"\n'
        "    if:\n"
        "      all:\n"
        "        - {attribute: platform, op: eq, value: android}\n"
        '        - {attribute: app_version, op: semver_lt, value: "5.0.0"}\n'
        "    serve: off\n",
    )
    repo.replace(
        "flags/new-checkout/flag.yaml", "name: New checkout flow", f'name: "{HOSTILE_YAML}"'
    )
    repo.replace(
        "flags/new-checkout/flag.yaml",
        "description: Rebuilt one-page checkout with saved cards and address autocomplete.",
        f'description: "{HOSTILE_YAML}"',
    )
    repo.replace("segments/staff.yaml", "name: Staff", f'name: "{HOSTILE_YAML}"')
    repo.commit(
        "::error::subject\r\x1b[2K (#7)", author=HOSTILE_AUTHOR, date="2026-11-02T09:00:00Z"
    )
    # Working tree: a guardrails policy naming a hostile environment (check-change
    # quotes it) and a stage advanced (so check-change has a change to judge).
    (repo.path / "flagstone.yaml").write_text(
        (repo.path / "flagstone.yaml").read_text()
        + f'guardrails:\n  max_step: {{"{HOSTILE_YAML}": 10}}\n'
    )
    repo.replace(release, "current: beta", "current: ga")
    return repo.path


@pytest.fixture(scope="module")
def invalid_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose invalid values validate quotes back."""
    repo = GitRepo(tmp_path_factory.mktemp("invalid") / "repo")
    repo.copy_example()
    repo.replace(
        "flags/new-checkout/production.yaml", "current: beta", f'current: "{HOSTILE_YAML}"'
    )
    repo.replace("flags/new-checkout/production.yaml", "serve: off", f'serve: "{HOSTILE_YAML}"')
    return repo.path


def assert_safe_for_a_log(output: str, *, annotations: bool = False) -> None:
    """No raw control or bidi character; no line that GitHub's runner would take as a
    workflow command (it trims leading whitespace, then looks for ``::``), except our
    own annotations, whose data cannot hold a line break; no legacy ``##[``."""
    assert not RAW_CONTROLS.search(output), RAW_CONTROLS.findall(output)
    assert "##[" not in output
    for line in output.splitlines():
        if line.lstrip().startswith("::"):
            assert annotations and OUR_ANNOTATION.match(line), line


def assert_safe_markdown(markdown: str, own_details: int | None = None) -> None:
    assert not RAW_CONTROLS.search(markdown)
    assert "##[" not in markdown
    for line in markdown.splitlines():
        assert not line.lstrip().startswith("::"), line
        if line.startswith("#"):
            assert line.startswith("### "), line  # only our own headings
            assert "# h" not in line
    assert "@acme/platform" not in markdown  # would notify the team
    assert not re.search(r"(?<!\\)\]\(", markdown)  # no [text](link)
    assert "http://evil" not in markdown  # no autolink
    assert "</details><" not in markdown.replace("</details>\n", "")
    if own_details is not None:
        assert markdown.count("</details>") == own_details
    # The hostile text is shown, inert: escaped, not dropped.
    assert "&lt;/details&gt;" in markdown


def test_diff_text_markdown_and_json(hostile_repo: Path) -> None:
    code, text, _ = run_cli(["diff", "HEAD~1", "HEAD"], hostile_repo)
    assert code == 0
    assert_safe_for_a_log(text)
    assert "\\u202e" in text and "\\x1b[2K" in text  # shown escaped

    code, markdown, _ = run_cli(["diff", "HEAD~1", "HEAD", "--format", "markdown"], hostile_repo)
    assert code == 0
    assert_safe_markdown(markdown, own_details=markdown.count("<details"))
    assert "\\u202e" in markdown

    code, document, _ = run_cli(["diff", "HEAD~1", "HEAD", "--format", "json"], hostile_repo)
    assert code == 0
    assert_safe_for_a_log(document)
    summaries = [c["summary"] for c in json.loads(document)["changes"]]
    assert any(HOSTILE in summary for summary in summaries)  # JSON keeps data exact


def test_log_text_json_and_csv(hostile_repo: Path) -> None:
    code, text, _ = run_cli(["log"], hostile_repo)
    assert code == 0
    assert_safe_for_a_log(text)
    assert "Mallory\\x0d::warning::x\\x1b[2K\\u202e@acme/platform" in text

    code, document, _ = run_cli(["log", "--format", "json"], hostile_repo)
    assert code == 0
    entries = json.loads(document)["entries"]
    assert HOSTILE_AUTHOR.name in {e["author_name"] for e in entries}
    for line in document.splitlines():
        assert not line.lstrip().startswith("::")

    code, table, _ = run_cli(["log", "--format", "csv"], hostile_repo)
    assert code == 0
    assert_safe_for_a_log(table.replace("\r\n", "\n"))  # CRLF: RFC 4180 row ends
    rows = list(csv.DictReader(io.StringIO(table, newline="")))
    assert len(table.split("\r\n")) == len(rows) + 2  # header, rows, final empty: one line each
    assert "Mallory\\x0d::warning::x\\x1b[2K\\u202e@acme/platform" in {
        r["author_name"] for r in rows
    }


def test_show_text_and_json(hostile_repo: Path) -> None:
    code, text, _ = run_cli(["show", "new-checkout", "--env", "production"], hostile_repo)
    assert code == 0
    assert_safe_for_a_log(text)
    assert "\\u202e" in text

    args = ["show", "new-checkout", "--env", "production", "--format", "json"]
    code, document, _ = run_cli(args, hostile_repo)
    assert code == 0
    rules = json.loads(document)["release"]["rules"]
    assert rules[0]["name"] == HOSTILE
    for line in document.splitlines():
        assert not line.lstrip().startswith("::")


@pytest.fixture(scope="module")
def committed_clone(hostile_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hostile history without the working-tree edits (whose flagstone.yaml lint
    would refuse before linting)."""
    clone = tmp_path_factory.mktemp("clone") / "repo"
    subprocess.run(["git", "clone", "-q", str(hostile_repo), str(clone)], check=True, timeout=60)
    return clone


@pytest.mark.parametrize("command", ["check-change", "lint"])
def test_findings_in_every_format(
    command: str,
    hostile_repo: Path,
    committed_clone: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = hostile_repo if command == "check-change" else committed_clone
    code, text, err = run_cli([command, "--format", "text"], repo)
    assert_safe_for_a_log(text + err)
    assert "\\u202e" in text  # the hostile text was reported, escaped

    code, document, _ = run_cli([command, "--format", "json"], repo)
    messages = [p["message"] for p in json.loads(document)["problems"]]
    assert any("</details>" in m for m in messages)  # JSON keeps data exact

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, annotated, err = run_cli([command, "--format", "auto"], repo)
    assert code in (0, 1)  # findings or none: never a usage or internal error
    assert_safe_for_a_log(annotated + err, annotations=True)
    assert any(OUR_ANNOTATION.match(line) for line in annotated.splitlines())
    assert_safe_markdown(summary.read_text(encoding="utf-8"))


def test_validate_in_every_format_and_its_error_line(
    invalid_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, text, err = run_cli(["validate", "--format", "text"], invalid_repo)
    assert code == 1
    assert_safe_for_a_log(text + err)
    assert "\\u202e" in text

    code, document, _ = run_cli(["validate", "--format", "json"], invalid_repo)
    messages = [p["message"] for p in json.loads(document)["problems"]]
    assert any(HOSTILE in m for m in messages)

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, annotated, err = run_cli(["validate"], invalid_repo)
    assert code == 1
    assert_safe_for_a_log(annotated + err, annotations=True)
    assert_safe_markdown(summary.read_text(encoding="utf-8"))

    # Commands that need a valid repository stop with one escaped error line.
    code, out, err = run_cli(["lint"], invalid_repo)
    assert code != 0
    assert_safe_for_a_log(out + err)
    assert len(err.strip().splitlines()) <= 2  # "error: …" and at most a hint


def test_eval_text_shows_a_hostile_rule_name_escaped(committed_clone: Path) -> None:
    context = '{"key": "u-1", "platform": "android", "app_version": "4.0.0"}'
    args = ["eval", "new-checkout", "--env", "production", "--context", context]
    code, text, err = run_cli(args, committed_clone)
    assert code == 0, err
    assert_safe_for_a_log(text)
    assert "  rule:      x\\x0a::error::pwned\\x0d\\x1b[2K" in text  # one line, shown escaped
    assert "\\u202e" in text and "\\x1b[2K" in text
