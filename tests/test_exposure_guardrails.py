"""Guardrails judged by exposure (issue 13, items 5 and 6), on real git repositories:
every increase — a raised stage percent, a stage scheduled sooner, a new audience, a
widened segment — is held to max_step and bake; kills are free; restores within the
window are allowed with a notice; edits run the same checks before they write."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flagstone import edit as edits
from flagstone import guardrails
from flagstone.diff import diff_projects, make_report
from flagstone.errors import EditError
from flagstone.gitops import project_at
from flagstone.guardrails import check_change, check_edit
from flagstone.model import read_project
from gitrepo import GitRepo, run_cli

POLICY = """
guardrails:
  max_step: {default: 50, production: 25}
  min_bake: {default: 1h, production: 24h}
"""
RELEASE = "flags/new-checkout/production.yaml"


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """The example repository with a policy; new-checkout entered `ten` in production
    on 2026-11-03 09:00 (ten bakes 24h by its own `bake`)."""
    repo = GitRepo(tmp_path / "flags-repo")
    repo.copy_example()
    (repo.path / "flagstone.yaml").write_text((repo.path / "flagstone.yaml").read_text() + POLICY)
    repo.commit("Initial flags with guardrails", date="2026-11-01T09:00:00Z")
    repo.replace(RELEASE, "current: beta", "current: ten")
    repo.commit("Advance new-checkout to ten", date="2026-11-03T09:00:00Z")
    return repo


def found(repo: GitRepo, when: str) -> list[tuple[str, str, str, str | None]]:
    return [
        (p.level, p.rule, p.message, p.hint) for p in check_change(repo.path, now=instant(when))
    ]


def test_raising_the_current_stage_percent_waits_for_the_bake(repo: GitRepo) -> None:
    # The former bypass: `rollout --percent` on the current stage had no bake check.
    with pytest.raises(EditError) as refused:
        edits.rollout(
            repo.path, "new-checkout", "production", 30, now=instant("2026-11-03T12:00:00Z")
        )
    assert str(refused.value) == (
        "edit refused by guardrails: flags/new-checkout/production.yaml:16:14: new-checkout entered "
        "stage ten in production at 2026-11-03T09:00:00Z, 3h ago; it must bake 1d (stage bake 24h) "
        "before raising its exposure"
    )
    assert refused.value.hint is not None
    assert refused.value.hint.startswith("wait until 2026-11-04T09:00:00Z (earliest allowed)")
    assert "--force" in refused.value.hint
    assert "percent: 10, bake" in (repo.path / RELEASE).read_text()  # nothing written
    # --force writes it; CI still refuses it.
    edits.rollout(repo.path, "new-checkout", "production", 30, force=True)
    assert "percent: 30, bake" in (repo.path / RELEASE).read_text()
    assert [(level, rule) for level, rule, _, _ in found(repo, "2026-11-03T12:00:00Z")] == [
        ("error", "guardrail-min-bake")
    ]
    assert found(repo, "2026-11-04T09:00:00Z") == []


def test_a_stage_scheduled_before_the_previous_stage_has_baked_is_an_error(repo: GitRepo) -> None:
    # The former bypass: a later stage scheduled 7 minutes ahead passed check-change and
    # the diff said "no production exposure increase".
    repo.replace(
        RELEASE,
        '{name: half, percent: 50, at: "2026-12-03T09:00:00Z"}',
        '{name: half, percent: 30, at: "2026-11-03T10:07:00Z"}',
    )
    problems = found(repo, "2026-11-03T10:00:00Z")
    assert problems == [
        (
            "error",
            "guardrail-min-bake",
            "new-checkout's stage half is scheduled in production at 2026-11-03T10:07:00Z, 1h7m "
            "after ten starts (2026-11-03T09:00:00Z); ten must bake 1d (stage bake 24h) first",
            "earliest allowed: 2026-11-04T09:00:00Z",
        )
    ]
    line = check_change(repo.path, now=instant("2026-11-03T10:00:00Z"))[0].line
    assert line == 21  # the `at` of the half stage
    before = project_at(repo.path, repo.head())
    report = make_report(
        before,
        read_project(repo.path),
        diff_projects(before, read_project(repo.path)),
        base="main",
        head="working tree",
    )
    assert "raises exposure" in report.risk_summary()
    assert "no production exposure increase" not in report.risk_summary()
    # At the earliest allowed time it passes.
    repo.replace(RELEASE, '"2026-11-03T10:07:00Z"', '"2026-11-04T09:00:00Z"')
    assert found(repo, "2026-11-03T10:00:00Z") == []


def test_a_schedule_moved_sooner_is_judged_and_a_later_one_is_not(repo: GitRepo) -> None:
    # ten → half (40 points) was in the base's schedule: moving it keeps its size, so
    # only its timing is judged, against ten's bake.
    repo.replace(RELEASE, '"2026-12-03T09:00:00Z"', '"2026-11-20T09:00:00Z"')
    assert found(repo, "2026-11-10T00:00:00Z") == []
    repo.replace(RELEASE, '"2026-11-20T09:00:00Z"', '"2026-11-04T08:00:00Z"')
    assert [
        (level, rule, hint) for level, rule, _, hint in found(repo, "2026-11-03T12:00:00Z")
    ] == [("error", "guardrail-min-bake", "earliest allowed: 2026-11-04T09:00:00Z")]
    # Making the scheduled jump bigger is a step the base never had.
    repo.replace(
        RELEASE,
        '{name: half, percent: 50, at: "2026-11-04T08:00:00Z"}',
        '{name: half, percent: 60, at: "2026-12-03T09:00:00Z"}',
    )
    assert [rule for _, rule, _, _ in found(repo, "2026-11-10T00:00:00Z")] == ["guardrail-max-step"]
    # Later is less exposure: always allowed, as is rolling back ahead of a schedule.
    repo.replace(
        RELEASE,
        '{name: half, percent: 60, at: "2026-12-03T09:00:00Z"}',
        '{name: half, percent: 50, at: "2026-12-20T09:00:00Z"}',
    )
    assert found(repo, "2026-11-10T00:00:00Z") == []
    repo.replace(RELEASE, "current: ten", "current: staff")
    assert found(repo, "2026-12-19T09:00:00Z") == []


def test_new_audiences_and_widened_segments_wait_for_the_bake(repo: GitRepo) -> None:
    repo.replace(RELEASE, "user-1002]", "user-1002, user-1003]")
    problems = found(repo, "2026-11-03T12:00:00Z")
    assert [(level, rule) for level, rule, _, _ in problems] == [("error", "guardrail-min-bake")]
    assert problems[0][2].endswith("before raising its exposure (target user-1003)")
    assert found(repo, "2026-11-04T09:00:00Z") == []
    repo.git("checkout", "-q", "--", RELEASE)
    # beta-testers is in the ring of `ten`: one more member reaches more people.
    repo.replace("segments/beta-testers.yaml", "user-4711]", "user-4711, user-5000]")
    problems = found(repo, "2026-11-03T12:00:00Z")
    assert [(level, rule) for level, rule, _, _ in problems] == [("error", "guardrail-min-bake")]
    assert "(segment beta-testers)" in problems[0][2]
    # Removing a member narrows it: allowed at once.
    repo.replace("segments/beta-testers.yaml", "user-4711, user-5000]", "user-4711]")
    repo.replace("segments/beta-testers.yaml", "user-1001, ", "")
    assert found(repo, "2026-11-03T12:00:00Z") == []


def test_a_kill_is_always_allowed_and_a_restore_within_the_window_is_a_notice(
    repo: GitRepo,
) -> None:
    payments = "flags/payments-v2/production.yaml"  # serves on to 90%
    killed = edits.set_enabled(
        repo.path, "payments-v2", "production", False, now=instant("2026-11-03T10:00:00Z")
    )
    assert killed.written == [payments]
    repo.commit("Kill payments-v2", date="2026-11-03T10:00:00Z")
    # Re-enabling jumps 0 → 90%: a restore of the exposure it had two days ago, allowed.
    restored = edits.set_enabled(
        repo.path, "payments-v2", "production", True, now=instant("2026-11-05T10:00:00Z")
    )
    assert restored.written == [payments]
    assert restored.notices == [
        "notice: payments-v2 in production returns to the exposure it had at "
        "2026-11-01T09:00:00Z (commit " + repo.git("rev-parse", "HEAD~2")[:12] + "), within "
        "restore_window 14d: step and bake are not checked"
    ]
    assert [(level, rule) for level, rule, _, _ in found(repo, "2026-11-05T10:00:00Z")] == [
        ("info", "guardrail-restore")
    ]
    # Outside the window it is a new exposure of 90 points, judged as one.
    outside = found(repo, "2026-11-30T10:00:00Z")
    assert [(level, rule) for level, rule, _, _ in outside] == [("error", "guardrail-max-step")]
    assert outside[0][2].startswith("payments-v2 reaches 90% more contexts in production")
    repo.git("checkout", "-q", "--", payments)
    with pytest.raises(EditError, match=r"edit refused by guardrails: .*90% more contexts"):
        edits.set_enabled(
            repo.path, "payments-v2", "production", True, now=instant("2026-11-30T10:00:00Z")
        )
    assert "enabled: false" in (repo.path / payments).read_text()


def test_edits_name_the_fix_and_force_writes_anyway(repo: GitRepo) -> None:
    repo.replace(RELEASE, "current: ten", "current: beta")
    repo.commit("Roll new-checkout back to beta", date="2026-11-03T10:00:00Z")
    with pytest.raises(EditError) as refused:
        edits.advance(
            repo.path, "new-checkout", "production", "half", now=instant("2026-11-05T10:00:00Z")
        )
    assert "new-checkout reaches 49% more contexts in production in one change" in str(
        refused.value
    )
    assert refused.value.hint == (
        "advance to 'ten' first (at most 25 points per change); --force writes anyway (CI still checks)"
    )
    assert "current: beta" in (repo.path / RELEASE).read_text()
    code, _, err = run_cli(
        ["advance", "new-checkout", "--env", "production", "--to", "ga"], repo.path
    )
    assert code == 1 and err.startswith("error: edit refused by guardrails: ")
    assert "current: beta" in (repo.path / RELEASE).read_text()
    code, out, _ = run_cli(
        ["advance", "new-checkout", "--env", "production", "--to", "ga", "--force"], repo.path
    )
    assert code == 0 and "wrote flags/new-checkout/production.yaml" in out
    assert "forced past guardrails: flags/new-checkout/production.yaml:16:14: " in out
    assert "current: ga" in (repo.path / RELEASE).read_text()


def test_check_edit_reports_only_what_the_edit_adds(repo: GitRepo) -> None:
    text = (repo.path / RELEASE).read_text()
    assert check_edit(repo.path, {RELEASE: text}, now=instant("2026-11-03T12:00:00Z")) == []
    raised = text.replace("{name: ten, percent: 10,", "{name: ten, percent: 20,")
    problems = check_edit(repo.path, {RELEASE: raised}, now=instant("2026-11-03T12:00:00Z"))
    assert [(p.level, p.rule) for p in problems] == [("error", "guardrail-min-bake")]
    assert problems[0].hint is not None and "2026-11-04T09:00:00Z" in problems[0].hint


def test_removing_who_is_held_back_is_an_increase(repo: GitRepo) -> None:
    # payments-v2 keeps high-risk countries on the off variation; without that rule they
    # fall through to the 90% split.
    payments = "flags/payments-v2/production.yaml"
    text = (repo.path / payments).read_text()
    rule = text[text.index("rules:") : text.index("default:")]
    (repo.path / payments).write_text(text.replace(rule, ""))
    problems = found(repo, "2026-11-02T00:00:00Z")
    assert [(level, rule) for level, rule, _, _ in problems] == [("error", "guardrail-min-bake")]
    assert problems[0][2] == (
        "payments-v2 entered its current exposure in production at 2026-11-01T09:00:00Z, 15h ago; "
        "it must bake 1d (guardrails.min_bake.production 24h) before raising its exposure "
        "(rule 'high-risk countries stay on v1' no longer holds back)"
    )
    assert found(repo, "2026-11-02T09:00:00Z") == []


def test_an_unchanged_release_is_not_judged_again_nor_its_history_read(
    repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A schedule already on the base (merged with --force) that the policy refuses.
    repo.replace(RELEASE, '"2026-12-03T09:00:00Z"', '"2026-11-03T10:07:00Z"')
    repo.commit("Schedule half early (forced)", date="2026-11-03T09:30:00Z")
    histories: list[str] = []
    walk = guardrails._release_history

    def counted(root: Path, base: str, path: str) -> Any:
        histories.append(path)
        return walk(root, base, path)

    monkeypatch.setattr(guardrails, "_release_history", counted)
    # A change elsewhere neither reports it nor walks the release's history.
    repo.replace("flagstone.yaml", "\nguardrails:\n", "\n# reviewed\nguardrails:\n")
    assert found(repo, "2026-11-03T10:00:00Z") == []
    assert histories == []
    # Moving it sooner judges it again (its history is read).
    repo.replace(RELEASE, '"2026-11-03T10:07:00Z"', '"2026-11-03T10:06:00Z"')
    assert [rule for _, rule, _, _ in found(repo, "2026-11-03T10:00:00Z")] == ["guardrail-min-bake"]
    assert RELEASE in histories
