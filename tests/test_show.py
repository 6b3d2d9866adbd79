"""``flagstone show FLAG --env E --at REV|DATE`` on a real git history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitrepo import build_history, run_cli


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("show") / "flags-repo"
    return path, build_history(path)


def show_json(root: Path, *args: str) -> dict[str, object]:
    code, out, err = run_cli(["show", *args, "--format", "json"], root)
    assert code == 0, err
    document: dict[str, object] = json.loads(out)
    return document


def test_at_a_date_reads_the_last_commit_before_it(history: tuple[Path, dict[str, str]]) -> None:
    root, shas = history
    early = show_json(root, "new-checkout", "--env", "production", "--at", "2026-11-01T12:00:00Z")
    assert early["commit"] == shas["initial"]
    assert early["active_stage"] == {
        "stage": "beta",
        "reach": "beta (1% + staff, beta-testers)",
        "scheduled_at": None,
    }
    later = show_json(root, "new-checkout", "--env", "production", "--at", "2026-11-06")
    assert later["commit"] == shas["revert"]  # midnight of the 6th: before the 10:00 commit
    assert later["at"] == "2026-11-06T00:00:00Z"
    assert later["active_stage"]["stage"] == "ten"  # type: ignore[index]
    assert later["enabled"] is True


def test_scheduled_stage_is_active_at_its_time(history: tuple[Path, dict[str, str]]) -> None:
    root, shas = history
    document = show_json(root, "new-checkout", "--env", "production", "--at", "2026-12-04")
    assert document["commit"] == shas["readme"]
    assert document["active_stage"] == {
        "stage": "half",
        "reach": "half (50% + staff, beta-testers)",
        "scheduled_at": "2026-12-03T09:00:00Z",
    }
    code, out, _ = run_cli(
        ["show", "new-checkout", "--env", "production", "--at", "2026-12-04"], root
    )
    assert code == 0
    assert (
        "  active stage: half (50% + staff, beta-testers) (scheduled at 2026-12-03T09:00:00Z)"
        in out.splitlines()
    )


def test_at_a_revision(history: tuple[Path, dict[str, str]]) -> None:
    root, shas = history
    document = show_json(root, "search-order", "--env", "production", "--at", shas["bm25"])
    assert document["commit"] == shas["bm25"]
    assert document["release"]["default"] == "bm25"  # type: ignore[index]
    code, out, _ = run_cli(
        ["show", "search-order", "--env", "production", "--at", shas["bm25"][:10]], root
    )
    assert code == 0
    assert out.splitlines()[0].startswith(
        f"search-order in production at 2026-11-04T10:00:00Z (commit {shas['bm25'][:12]}"
    )
    assert "  default: bm25" in out.splitlines()


def test_text_output_lists_targets_rules_and_default(history: tuple[Path, dict[str, str]]) -> None:
    root, _ = history
    code, out, _ = run_cli(["show", "new-checkout", "--env", "production"], root)
    assert code == 0
    lines = out.splitlines()
    assert "  enabled: yes" in lines
    assert "  targets on: user-1001, user-1002" in lines
    assert any(line.startswith("  rule 'old android app': if {\"all\": [") for line in lines)
    assert "  default: progression of on at ten (10% + staff, beta-testers)" in lines


@pytest.mark.parametrize(
    ("at", "instant"),
    [
        ("2026-11-02T09:30", "2026-11-02T09:30:00Z"),
        ("2026-11-02 09:30", "2026-11-02T09:30:00Z"),
        ("2026-11-02T09:30Z", "2026-11-02T09:30:00Z"),
        ("2026-11-02T10:30+01:00", "2026-11-02T09:30:00Z"),
        ("2026-11-02T04:30:00.5-0500", "2026-11-02T09:30:00Z"),
    ],
)
def test_at_accepts_the_documented_time_forms(
    history: tuple[Path, dict[str, str]], at: str, instant: str
) -> None:
    root, shas = history
    document = show_json(root, "new-checkout", "--env", "production", "--at", at)
    assert document["at"] == instant
    assert document["commit"] == shas["initial"]  # the 10:00 merge came later


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["search-ordering", "--env", "production", "--at", "2026-11-02"],
            1,
            "error: flag 'search-ordering' does not exist at ",
        ),
        (
            ["new-checkout", "--env", "qa", "--at", "HEAD"],
            1,
            "error: environment 'qa' is not declared at ",
        ),
        (
            ["new-checkout", "--env", "production", "--at", "2020-01-01"],
            1,
            "error: no commit on main at or before 2020-01-01",
        ),
        (
            ["new-checkout", "--env", "production", "--at", "not-a-rev"],
            1,
            "error: unknown revision 'not-a-rev'\nhint: --at takes a git revision or a time: "
            "2026-11-10, 2026-11-10T09:30",
        ),
        (
            ["new-checkout", "--env", "production", "--at", "2026-11-10T25:30"],
            2,
            "error: --at '2026-11-10T25:30' is not a valid time (hour must be in 0..23); use "
            "2026-11-10, 2026-11-10T09:30, 2026-11-10T09:30:15, each optionally with Z",
        ),
        (
            ["new-checkout", "--env", "production", "--at", "2026-11-10 at noon"],
            2,
            "error: --at '2026-11-10 at noon' is not a time; use 2026-11-10, 2026-11-10T09:30",
        ),
    ],
)
def test_errors_are_one_line(
    history: tuple[Path, dict[str, str]], args: list[str], code: int, message: str
) -> None:
    root, _ = history
    got_code, out, err = run_cli(["show", *args], root)
    assert (got_code, out) == (code, "")
    assert err.startswith(message)
    assert "Traceback" not in err


def test_a_renamed_flag_is_shown_under_its_name_at_that_time(
    history: tuple[Path, dict[str, str]],
) -> None:
    root, shas = history
    document = show_json(
        root, "search-order", "--env", "production", "--at", "2026-11-02T12:00:00Z"
    )
    assert (document["flag"], document["name_then"], document["commit"]) == (
        "search-order",
        "search-ranking",
        shas["advance"],
    )
    code, out, _ = run_cli(
        ["show", "search-order", "--env", "production", "--at", "2026-11-02T12:00:00Z"], root
    )
    assert code == 0
    assert out.startswith(
        "search-order (then named search-ranking) in production at 2026-11-02T12:00:00Z"
    )
