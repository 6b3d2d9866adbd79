"""``flagstone check-change``: rollout guardrails on real git repositories."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flagstone.guardrails import check_change, duration_text, stage_entry_time
from gitrepo import BOB, GitRepo, run_cli

POLICY = """
guardrails:
  max_step: {default: 50, production: 25}
  min_bake: {default: 1h, production: 24h}
  protect_serving_values: true
"""
RELEASE = "flags/new-checkout/production.yaml"


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """The example repository with a guardrails policy, committed on main on 2026-11-01."""
    repo = GitRepo(tmp_path / "flags-repo")
    repo.copy_example()
    (repo.path / "flagstone.yaml").write_text((repo.path / "flagstone.yaml").read_text() + POLICY)
    repo.commit("Initial flags with guardrails", date="2026-11-01T09:00:00Z")
    return repo


def findings(repo: GitRepo, when: str, base: str | None = None) -> list[tuple[str, str, str]]:
    problems = check_change(repo.path, base, now=instant(when))
    return [(p.level, p.rule, p.message) for p in problems]


def rules(problems: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(level, rule) for level, rule, _ in problems]


def test_no_change_no_findings(repo: GitRepo) -> None:
    assert findings(repo, "2026-11-05T00:00:00Z") == []


def test_advancing_before_the_bake_time_is_an_error_with_the_fix(repo: GitRepo) -> None:
    repo.replace(RELEASE, "current: beta", "current: ten")
    early = check_change(repo.path, now=instant("2026-11-01T15:00:00Z"))
    assert [(p.level, p.rule) for p in early] == [("error", "guardrail-min-bake")]
    problem = early[0]
    assert problem.message == (
        "new-checkout entered stage beta in production at 2026-11-01T09:00:00Z, 6h ago; "
        "it must bake 1d (guardrails.min_bake.production 24h) before advancing to ten"
    )
    assert problem.hint == "wait until 2026-11-02T09:00:00Z, or keep current: beta"
    assert (problem.path, problem.line) == (RELEASE, 16)  # the `current:` line
    assert findings(repo, "2026-11-02T09:00:00Z") == []


def test_a_stage_own_bake_overrides_the_policy(repo: GitRepo) -> None:
    repo.replace(RELEASE, "current: beta", "current: ten")
    repo.commit("Advance to ten (#2)", date="2026-11-03T09:00:00Z")
    repo.replace(RELEASE, "current: ten", "current: half")
    repo.replace("flagstone.yaml", "production: 25}", "production: 40}")
    problems = check_change(repo.path, now=instant("2026-11-03T20:00:00Z"))
    assert [(p.level, p.rule) for p in problems] == [("error", "guardrail-min-bake")]
    assert "(stage bake 24h)" in problems[0].message
    assert "entered stage ten in production at 2026-11-03T09:00:00Z, 11h ago" in problems[0].message
    assert findings(repo, "2026-11-04T09:00:00Z") == []


def test_a_step_over_max_step_is_an_error_and_skipping_stages_warns(repo: GitRepo) -> None:
    repo.replace(RELEASE, "current: beta", "current: half")
    problems = findings(repo, "2026-11-10T00:00:00Z")
    assert rules(problems) == [("error", "guardrail-max-step"), ("warning", "guardrail-skip-stage")]
    assert problems[0][2] == (
        "new-checkout reaches 49% more contexts in production in one change; the limit is 25 points"
    )
    assert problems[1][2] == "new-checkout in production advances beta → half, skipping ten"


def test_split_and_enable_steps(repo: GitRepo) -> None:
    repo.replace("flags/payments-v2/production.yaml", "on: 90\n    off: 10", "on: 100\n    off: 0")
    assert findings(repo, "2026-11-10T00:00:00Z") == []  # +10 points
    repo.replace("flags/search-ranking/staging.yaml", "enabled: true", "enabled: false")
    repo.commit("Disable search-ranking in staging", date="2026-11-02T00:00:00Z")
    repo.replace("flags/search-ranking/staging.yaml", "enabled: false", "enabled: true")
    # Within the restore window (14 days) re-enabling restores a recent exposure.
    assert rules(findings(repo, "2026-11-10T00:00:00Z")) == [("info", "guardrail-restore")]
    problems = findings(repo, "2026-11-20T00:00:00Z")
    assert rules(problems) == [("error", "guardrail-max-step")]
    assert "search-ranking reaches 100% more contexts in staging" in problems[0][2]
    assert "the limit is 50 points" in problems[0][2]  # staging falls back to default


def test_without_a_step_limit_production_increases_only_warn(repo: GitRepo) -> None:
    repo.replace("flagstone.yaml", "  max_step: {default: 50, production: 25}\n", "")
    repo.commit("Drop the step policy", date="2026-11-02T00:00:00Z")
    repo.replace(RELEASE, "current: beta", "current: half")
    problems = findings(repo, "2026-11-10T00:00:00Z")
    assert rules(problems) == [
        ("warning", "guardrail-max-step"),
        ("warning", "guardrail-skip-stage"),
    ]


def test_an_unreadable_file_in_the_change_is_an_error_not_silence(repo: GitRepo) -> None:
    repo.replace("flagstone.yaml", "guardrails:", "guardrails: [")
    problems = check_change(repo.path, now=instant("2026-11-10T00:00:00Z"))
    assert [(p.level, p.path) for p in problems] == [("error", "flagstone.yaml")]
    assert problems[0].message.startswith("invalid YAML")


def test_a_kill_in_production_warns(repo: GitRepo) -> None:
    repo.replace("flags/search-ranking/production.yaml", "enabled: true", "enabled: false")
    problems = findings(repo, "2026-11-10T00:00:00Z")
    assert problems == [
        (
            "warning",
            "guardrail-kill",
            "search-ranking is disabled in production: everyone gets classic",
        )
    ]


def test_changing_a_value_production_serves_is_refused(repo: GitRepo) -> None:
    repo.replace("flags/pricing-page-test/flag.yaml", "control: two-column", "control: 2-col")
    problems = check_change(repo.path, now=instant("2026-11-10T00:00:00Z"))
    assert [(p.level, p.rule, p.path) for p in problems] == [
        ("error", "guardrail-serving-value", "flags/pricing-page-test/flag.yaml")
    ]
    assert problems[0].message.startswith(
        "pricing-page-test: variation control is served in production"
    )


def test_changing_a_value_production_does_not_serve_is_allowed(repo: GitRepo) -> None:
    # disable-recommendations serves only `off` in production (`on` only to a staging target).
    repo.replace("flags/disable-recommendations/flag.yaml", "on: true", "on: false")
    assert findings(repo, "2026-11-10T00:00:00Z") == []
    repo.replace("flagstone.yaml", "protect_serving_values: true", "protect_serving_values: false")
    repo.replace("flags/pricing-page-test/flag.yaml", "control: two-column", "control: 2-col")
    assert findings(repo, "2026-11-10T00:00:00Z") == []


def test_removing_or_archiving_a_prerequisite_is_refused(repo: GitRepo) -> None:
    repo.replace(
        "flags/payments-v2/flag.yaml", "off_variation: off", "off_variation: off\narchived: true"
    )
    archived = findings(repo, "2026-11-10T00:00:00Z")
    assert archived == [
        (
            "error",
            "guardrail-dependency",
            "payments-v2 is archived but new-checkout has it as a prerequisite",
        )
    ]
    repo.remove("flags/payments-v2")
    removed = findings(repo, "2026-11-10T00:00:00Z")
    assert removed == [
        (
            "error",
            "guardrail-dependency",
            "payments-v2 is removed but new-checkout has it as a prerequisite",
        )
    ]


def test_stage_entry_time_follows_the_unbroken_run(repo: GitRepo) -> None:
    first = repo.head()
    repo.replace(RELEASE, "user-1002]", "user-1002, user-1003]")
    unrelated = repo.commit("Target user-1003", date="2026-11-02T09:00:00Z")
    repo.replace(RELEASE, "current: beta", "current: ten")
    repo.commit("Advance", date="2026-11-03T09:00:00Z")
    repo.replace(RELEASE, "current: ten", "current: beta")
    rollback = repo.commit("Roll back", author=BOB, date="2026-11-04T09:00:00Z")
    assert stage_entry_time(repo.path, unrelated, RELEASE, "beta") == int(
        instant("2026-11-01T09:00:00Z")
    )
    assert stage_entry_time(repo.path, rollback, RELEASE, "beta") == int(
        instant("2026-11-04T09:00:00Z")
    )
    assert stage_entry_time(repo.path, first, RELEASE, "ten") is None


def test_a_scheduled_stage_bakes_from_its_time(repo: GitRepo) -> None:
    repo.replace("flagstone.yaml", "production: 25}", "production: 60}")
    repo.commit("Allow bigger steps", date="2026-11-02T00:00:00Z")
    repo.replace(RELEASE, "current: beta", "current: ga")
    # `half` became active by its schedule at 2026-12-03T09:00:00Z; ga comes next.
    problems = check_change(repo.path, now=instant("2026-12-03T10:00:00Z"))
    assert [(p.level, p.rule) for p in problems] == [("error", "guardrail-min-bake")]
    assert "entered stage half in production at 2026-12-03T09:00:00Z, 1h ago" in problems[0].message
    assert findings(repo, "2026-12-04T09:00:00Z") == []


def test_cli_exit_codes_and_github_annotations(repo: GitRepo) -> None:
    code, out, _ = run_cli(["check-change", "--format", "text"], repo.path)
    assert (code, out) == (0, "check-change: no problems\n")
    repo.replace(
        "flags/payments-v2/flag.yaml", "off_variation: off", "off_variation: off\narchived: true"
    )
    code, out, _ = run_cli(["check-change", "--format", "github"], repo.path / "flags")
    assert code == 1
    assert out.splitlines()[0].startswith(
        "::error file=flags/new-checkout/flag.yaml,line=14,col=12,title=guardrail-dependency::"
        "payments-v2 is archived but new-checkout has it as a prerequisite (hint: "
    )
    code, _, err = run_cli(["check-change", "--base", "nope"], repo.path)
    assert code == 1 and err.startswith("error: unknown revision 'nope'")


def test_policy_naming_undeclared_environments_warns(repo: GitRepo) -> None:
    repo.replace(
        "flagstone.yaml",
        "production: 24h}",
        "prod: 24h}\n  protected_environments: [production, live]",
    )
    lines = (repo.path / "flagstone.yaml").read_text().splitlines()
    prod_line = next(i for i, line in enumerate(lines, 1) if "prod: 24h" in line)
    problems = check_change(repo.path, now=instant("2026-11-10T00:00:00Z"))
    assert [(p.level, p.rule, p.message, p.line) for p in problems] == [
        (
            "warning",
            "guardrail-policy",
            "guardrails.min_bake names undeclared environment 'prod'",
            prod_line,
        ),
        (
            "warning",
            "guardrail-policy",
            "guardrails.protected_environments names undeclared environment 'live'",
            prod_line + 1,
        ),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0m"), (59, "0m"), (2700, "45m"), (3600, "1h"), (11400, "3h10m"), (86400, "1d"),
     (122400, "1d10h"), (122460, "1d10h"), (90060, "1d1h"), (172800 + 60, "2d")],
)  # fmt: skip
def test_duration_text(seconds: int, text: str) -> None:
    assert duration_text(seconds) == text


def test_changing_the_stage_list_in_the_same_change_does_not_skip_the_bake(
    repo: GitRepo,
) -> None:
    # Appending (or renaming) a stage while advancing `current` is still an advance out
    # of beta, which has baked 6h of its 24h.
    repo.replace(RELEASE, "current: beta", "current: ten")
    repo.replace(
        RELEASE,
        "      - {name: ga, percent: 100, bake: 48h}",
        "      - {name: ga, percent: 100, bake: 48h}\n      - {name: extra, percent: 100}",
    )
    assert rules(findings(repo, "2026-11-01T15:00:00Z")) == [("error", "guardrail-min-bake")]
    assert findings(repo, "2026-11-02T09:00:00Z") == []
    # Renaming the target stage is no way around it either.
    repo.replace(RELEASE, "current: ten", "current: tenx")
    repo.replace(RELEASE, "{name: ten,", "{name: tenx,")
    assert rules(findings(repo, "2026-11-01T15:00:00Z")) == [("error", "guardrail-min-bake")]
    # Nor is giving a bigger stage the name of an earlier one.
    repo.replace(RELEASE, "current: tenx", "current: staff")
    repo.replace(RELEASE, "{name: staff, segments: [staff]}", "{name: staff, percent: 10}")
    repo.replace(RELEASE, "{name: beta,", "{name: betax,")
    assert ("error", "guardrail-min-bake") in rules(findings(repo, "2026-11-01T15:00:00Z"))
    # Going back to an earlier stage needs no bake.
    repo.replace(RELEASE, "{name: staff, percent: 10}", "{name: staff, segments: [staff]}")
    repo.replace(RELEASE, "{name: betax,", "{name: beta,")
    assert findings(repo, "2026-11-01T15:00:00Z") == []


def test_swapping_the_off_variation_does_not_hide_a_step(repo: GitRepo) -> None:
    # payments-v2 serves `off` to everyone in production; making `on` the off variation
    # in the same change must not make on 0 → 100 look like no step at all.
    release = "flags/payments-v2/production.yaml"
    repo.replace(release, "on: 90\n    off: 10", "on: 0\n    off: 100")
    repo.commit("payments-v2 off in production", date="2026-11-02T00:00:00Z")
    repo.replace("flags/payments-v2/flag.yaml", "off_variation: off", "off_variation: on")
    repo.replace(release, "on: 0\n    off: 100", "on: 100\n    off: 0")
    problems = findings(repo, "2026-11-10T00:00:00Z")
    assert rules(problems) == [("error", "guardrail-max-step")], problems
    assert "payments-v2 reaches 100% more contexts in production" in problems[0][2]


def test_a_schedule_cannot_take_a_step_max_step_refuses(repo: GitRepo) -> None:
    # Moving `half` to 100% (or to a sooner date) passes today, when nothing changes, but
    # the schedule would then jump from beta's 1% to 100% with no further review.
    repo.replace(RELEASE, "{name: half, percent: 50,", "{name: half, percent: 100,")
    problems = check_change(repo.path, now=instant("2026-11-10T00:00:00Z"))
    assert [(p.level, p.rule) for p in problems] == [("error", "guardrail-max-step")]
    assert problems[0].message == (
        "new-checkout's schedule reaches 99% more contexts in production at "
        "2026-12-03T09:00:00Z; the limit is 25 points"
    )
    assert problems[0].line == 21  # the `at` of the half stage
    # A schedule the base already had is not reported again on an unrelated change.
    repo.replace(RELEASE, "{name: half, percent: 100,", "{name: half, percent: 50,")
    repo.replace(RELEASE, "user-1002]", "user-1002, user-1003]")
    assert findings(repo, "2026-11-10T00:00:00Z") == []
