"""The linter: registry, documentation, configuration, suppressions, git history and
the `flagstone lint` command. Per-rule behaviour is in test_lint_cases.py."""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.lint import RULES, lint_project, rules_markdown
from flagstone.lint.context import FixedChangeTimes, LintContext, RepositoryChangeTimes
from flagstone.lint.walk import always_matches, never_matches
from flagstone.loader import loads
from flagstone.model import read_project
from flagstone.ownership import codeowners_report
from flagstone.problems import LEVELS

REPO_ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).parent / "lint_cases"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RULE_DIR = REPO_ROOT / "tooling" / "flagstone" / "lint" / "rules"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0), out.getvalue(), err.getvalue()


def make_case(tmp_path: Path, *overlays: str, files: dict[str, str] | None = None) -> Path:
    """The base case repository plus the files of ``lint_cases/<overlay>`` and ``files``."""
    root = tmp_path / "repo"
    shutil.copytree(CASES / "_base", root)
    for overlay in overlays:
        for source in (CASES / overlay).rglob("*.yaml"):
            target = root / source.relative_to(CASES / overlay)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def configure_lint(root: Path, rule_settings: str) -> None:
    """Append ``lint: {rules: {<rule_settings>}}`` to the case's flagstone.yaml."""
    config = root / "flagstone.yaml"
    config.write_text(config.read_text() + f"lint:\n  rules:\n    {rule_settings}\n")


def lint_lines(root: Path, *, age_days: int = 1) -> list[str]:
    context = LintContext(NOW, FixedChangeTimes({}, NOW - timedelta(days=age_days)))
    return [
        f"{p.format_line()} [{p.rule} {p.level}]"
        for p in lint_project(read_project(root), context).problems
    ]


# --- registry and documentation ---------------------------------------------------------


def test_at_least_fifteen_documented_rules() -> None:
    assert len(RULES) >= 15
    modules = {p.stem for p in RULE_DIR.glob("*.py") if p.stem != "__init__"}
    assert modules == {rule_id.replace("-", "_") for rule_id in RULES}
    for rule_id, rule in RULES.items():
        assert rule.DEFAULT_LEVEL in LEVELS, rule_id
        assert inspect.isgeneratorfunction(rule.check), rule_id
        doc = rule.__doc__ or ""
        assert "Passes" in doc and "Fails" in doc, rule_id
        assert all(isinstance(name, str) for name in rule.OPTIONS), rule_id


def test_docstring_examples_are_yaml() -> None:
    for rule_id, rule in RULES.items():
        blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", rule.__doc__ or "")
        assert len(blocks) >= 2, rule_id
        for block in blocks:
            text = "\n".join(line[4:] for line in block.splitlines())
            loads(text.encode(), rel=f"{rule_id} example")


def test_rules_documentation_is_current() -> None:
    generated = rules_markdown()
    on_disk = (REPO_ROOT / "docs" / "lint-rules.md").read_text()
    assert on_disk == generated, "run `python3 -m flagstone.lint > docs/lint-rules.md`"
    assert all(f"\n## {rule_id}\n" in generated for rule_id in RULES)


# --- conditions -------------------------------------------------------------------------


def test_never_and_always_matching_conditions(tmp_path: Path) -> None:
    root = make_case(
        tmp_path,
        files={
            "segments/nobody.yaml": "name: Nobody\nowner: eng\nexclude: [u1]\n",
            "segments/all.yaml": "name: All\nowner: eng\nrules:\n  - {attribute: key, op: exists}\n",
        },
    )
    project = read_project(root)
    everyone = {"attribute": "key", "op": "exists"}
    android = {"attribute": "platform", "op": "eq", "value": "android"}
    assert (
        never_matches(project, {"segment": "nobody"})
        == "segment 'nobody' has no members and no rules"
    )
    assert never_matches(project, {"all": [android, {"segment": "nobody"}]})
    assert never_matches(project, {"any": [android, {"segment": "nobody"}]}) is None
    assert (
        never_matches(project, {"not": everyone})
        == "it negates a condition that matches every context"
    )
    assert never_matches(project, {"attribute": "plan", "op": "in", "values": []})
    assert never_matches(project, android) is None
    assert always_matches(project, {"segment": "all"})
    assert always_matches(project, {"any": [android, everyone]})
    assert not always_matches(project, {"all": [android, everyone]})
    assert always_matches(project, {"not": {"segment": "nobody"}})
    assert not always_matches(project, {"segment": "staff"})
    assert always_matches(project, {"any": [android, {"not": android}]})
    assert never_matches(project, {"all": [{"not": android}, android]}) == (
        "it requires a condition and its negation"
    )
    # Contexts may come without a targeting key: `key exists` is then not everyone.
    assert not always_matches(project, everyone, keyed=False)
    assert not always_matches(project, {"segment": "all"}, keyed=False)
    assert never_matches(project, {"not": everyone}, keyed=False) is None


def test_rule_using_an_empty_segment_is_unreachable(tmp_path: Path) -> None:
    root = make_case(tmp_path, files={"segments/staff.yaml": "name: Staff\nowner: platform\n"})
    assert (
        "flags/checkout/staging.yaml:3:5: rule 'staff' can never match: its condition never holds: "
        "segment 'staff' has no members and no rules [unreachable-rule error]"
    ) in lint_lines(root)


# --- configuration ----------------------------------------------------------------------

CONFIG = """\
project: lint-case
environments: [staging, production]
teams:
  eng: {github: "@acme/eng"}
  pm: {github: "@acme/pm"}
  platform: {github: "@acme/platform"}
admins: platform
lint:
  rules:
    no-such-rule: {level: error}
    stale-temporary-flag: {level: loud, grace_days: soon, colour: red}
    key-naming: {level: off}
    missing-description: {level: error}
    unused-segment: warning
"""


def test_configuration_levels_options_and_mistakes(tmp_path: Path) -> None:
    root = make_case(
        tmp_path,
        "key-naming/fail",
        files={
            "flagstone.yaml": CONFIG,
            "flags/checkout/flag.yaml": (
                CASES / "missing-description/fail/flags/checkout/flag.yaml"
            )
            .read_text()
            .replace('"2027-03-01"', '"2026-11-20"'),
        },
    )
    assert lint_lines(root) == [
        "flags/checkout/flag.yaml:1:1: flag 'checkout' has no description [missing-description error]",
        # grace_days fell back to 0, the level to the default: the finding still shows.
        "flags/checkout/flag.yaml:5:10: temporary flag 'checkout' expired on 2026-11-20 (6 days ago) "
        "[stale-temporary-flag warning]",
        "flagstone.yaml:10:5: unknown lint rule 'no-such-rule' [lint-config error]",
        "flagstone.yaml:11:28: level of 'stale-temporary-flag' must be one of error, warning, info, off "
        "[lint-config error]",
        "flagstone.yaml:11:41: option 'grace_days' of 'stale-temporary-flag' must be a whole number ≥ 0 "
        "[lint-config error]",
        "flagstone.yaml:11:59: unknown option 'colour' for rule 'stale-temporary-flag' "
        "(options: grace_days) [lint-config error]",
        "flagstone.yaml:14:5: settings of 'unused-segment' must be a mapping [lint-config error]",
    ]


def test_option_changes_the_outcome(tmp_path: Path) -> None:
    root = make_case(tmp_path, "stale-temporary-flag/fail")
    assert len(lint_lines(root)) == 1
    configure_lint(root, "stale-temporary-flag: {grace_days: 300}")
    assert lint_lines(root) == []


def test_invalid_regular_expression_option(tmp_path: Path) -> None:
    root = make_case(tmp_path)
    configure_lint(root, 'key-naming: {flag_pattern: "[a-"}')
    (line,) = lint_lines(root)
    assert line.startswith(
        "flagstone.yaml:10:32: option flag_pattern is not a valid regular expression"
    )
    assert line.endswith("[lint-config error]")


# --- suppressions -----------------------------------------------------------------------

STALE_FLAG = (CASES / "stale-temporary-flag/fail/flags/checkout/flag.yaml").read_text()
STALE_LINE = 'expires: "2026-01-31"'


@pytest.mark.parametrize(
    "replacement",
    [
        STALE_LINE + "  # flagstone: disable=stale-temporary-flag -- removal ships in PR 812",
        "# flagstone: disable=stale-temporary-flag -- removal ships in PR 812\n" + STALE_LINE,
        "# flagstone: disable=expiry-too-far, stale-temporary-flag -- removal ships in PR 812\n"
        "# another comment\n" + STALE_LINE,
    ],
    ids=["same-line", "line-above", "several-rules-and-comments"],
)
def test_suppression_with_a_reason(tmp_path: Path, replacement: str) -> None:
    flag = STALE_FLAG.replace(STALE_LINE, replacement)
    root = make_case(tmp_path, files={"flags/checkout/flag.yaml": flag})
    found = lint_lines(root)
    # expiry-too-far is listed but has nothing to suppress: reported as stale.
    expected = (
        [
            "flags/checkout/flag.yaml:6:1: suppression of 'expiry-too-far' matches no finding [lint-suppression warning]"
        ]
        if "expiry-too-far" in replacement
        else []
    )
    assert found == expected


def test_suppression_without_a_reason_does_not_suppress(tmp_path: Path) -> None:
    flag = STALE_FLAG.replace(
        STALE_LINE, STALE_LINE + "  # flagstone: disable=stale-temporary-flag"
    )
    root = make_case(tmp_path, files={"flags/checkout/flag.yaml": flag})
    assert lint_lines(root) == [
        "flags/checkout/flag.yaml:6:10: temporary flag 'checkout' expired on 2026-01-31 (299 days ago) "
        "[stale-temporary-flag warning]",
        "flags/checkout/flag.yaml:6:24: suppression of stale-temporary-flag gives no reason, "
        "so it suppresses nothing [lint-suppression error]",
    ]
    empty_reason = STALE_FLAG.replace(
        STALE_LINE, STALE_LINE + "  # flagstone: disable=stale-temporary-flag --  "
    )
    (root / "flags/checkout/flag.yaml").write_text(empty_reason)
    assert len(lint_lines(root)) == 2


def test_suppression_only_covers_its_own_line(tmp_path: Path) -> None:
    flag = STALE_FLAG.replace(
        "kind: release", "kind: release  # flagstone: disable=stale-temporary-flag -- wrong line"
    )
    root = make_case(tmp_path, files={"flags/checkout/flag.yaml": flag})
    assert lint_lines(root) == [
        "flags/checkout/flag.yaml:4:16: suppression of 'stale-temporary-flag' matches no finding "
        "[lint-suppression warning]",
        "flags/checkout/flag.yaml:6:10: temporary flag 'checkout' expired on 2026-01-31 (299 days ago) "
        "[stale-temporary-flag warning]",
    ]


def test_suppression_of_an_unknown_rule(tmp_path: Path) -> None:
    flag = (
        "# flagstone: disable=stale-flag -- typo\n"
        + (CASES / "_base/flags/checkout/flag.yaml").read_text()
    )
    root = make_case(tmp_path, files={"flags/checkout/flag.yaml": flag})
    assert lint_lines(root) == [
        "flags/checkout/flag.yaml:1:1: suppression names unknown rule 'stale-flag' [lint-suppression error]"
    ]


def test_file_level_finding_is_suppressed_by_a_header_comment(tmp_path: Path) -> None:
    root = make_case(tmp_path, "key-naming/fail")
    path = root / "flags/old_banner/flag.yaml"
    assert len(lint_lines(root)) == 1
    path.write_text(
        "# yaml-language-server: $schema=../../schemas/flag.schema.json\n"
        "# flagstone: disable=key-naming -- the key is baked into the mobile app 4.x\n"
        + path.read_text()
    )
    assert lint_lines(root) == []


# --- git history ------------------------------------------------------------------------


def git(root: Path, *args: str, date: str | None = None) -> None:
    env = dict(os.environ)
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    subprocess.run(["git", "-C", str(root), *args], check=True, env=env, capture_output=True)


def test_fully_rolled_out_age_comes_from_git_history(tmp_path: Path) -> None:
    root = make_case(tmp_path, "fully-rolled-out/fail")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "roll out", date="2026-07-01T10:00:00+00:00")
    history = RepositoryChangeTimes(root)
    assert history.last_changed("flags/checkout/production.yaml") == datetime(
        2026, 7, 1, 10, tzinfo=UTC
    )

    def findings() -> list[str]:
        problems = lint_project(
            read_project(root), LintContext(NOW, RepositoryChangeTimes(root))
        ).problems
        return [p.message for p in problems if p.rule == "fully-rolled-out"]

    assert findings() == [
        "flag 'checkout' has served 'on' to everyone in every environment for 148 days (max_age_days is 30)"
    ]
    # A later commit touching one release file restarts the clock.
    production = root / "flags/checkout/production.yaml"
    production.write_text("# confirmed by the PM\n" + production.read_text())
    git(root, "commit", "-q", "-am", "note", date="2026-11-20T10:00:00+00:00")
    assert findings() == []
    # Uncommitted edits count as changed now (the file's own modification time).
    git(root, "commit", "-q", "--allow-empty", "-m", "nothing", date="2026-11-21T10:00:00+00:00")
    old = NOW - timedelta(days=200)
    for rel in ("flags/checkout/staging.yaml", "flags/checkout/production.yaml"):
        os.utime(root / rel, (old.timestamp(), old.timestamp()))
    production.write_text(production.read_text() + "# edited\n")
    assert findings() == []


def test_fully_rolled_out_without_git_uses_file_times(tmp_path: Path) -> None:
    root = make_case(tmp_path, "fully-rolled-out/fail")
    history = RepositoryChangeTimes(root)
    assert not history.in_git()
    old = (NOW - timedelta(days=45)).timestamp()
    for rel in ("flags/checkout/staging.yaml", "flags/checkout/production.yaml"):
        os.utime(root / rel, (old, old))
    problems = lint_project(read_project(root), LintContext(NOW, history)).problems
    assert [p.message for p in problems if p.rule == "fully-rolled-out"] == [
        "flag 'checkout' has served 'on' to everyone in every environment for 45 days (max_age_days is 30)"
    ]


# --- the command ------------------------------------------------------------------------

AT = ("--now", "2026-11-26T12:00:00Z")


def test_cli_exit_codes_follow_levels(tmp_path: Path) -> None:
    warning_only = make_case(tmp_path / "w", "stale-temporary-flag/fail")
    code, out, _ = run_cli("lint", "--repo", str(warning_only), *AT)
    assert code == 0
    assert out.splitlines()[0].startswith("flags/checkout/flag.yaml:6:10: warning: temporary flag")
    error = make_case(tmp_path / "e", "unreachable-rule/fail")
    code, out, _ = run_cli("lint", "--repo", str(error), *AT, "--format", "json")
    assert code == 1
    document = json.loads(out)
    assert document["counts"] == {"error": 1, "warning": 0, "info": 0}
    assert document["problems"][0]["rule"] == "unreachable-rule"
    code, out, _ = run_cli("lint", "--repo", str(error), *AT, "--format", "github")
    assert code == 1
    assert out.startswith(
        "::error file=flags/checkout/production.yaml,line=6,col=5,title=unreachable-rule::rule 'android'"
    )


def test_cli_works_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_case(tmp_path, "unreachable-rule/fail")
    monkeypatch.chdir(root / "flags" / "checkout")
    assert run_cli("lint", *AT)[0] == 1


def test_cli_list_rules() -> None:
    code, out, _ = run_cli("lint", "--list-rules")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(RULES) + 1
    assert lines[-1] == f"{len(RULES)} rules; full documentation: docs/lint-rules.md"
    code, out, _ = run_cli("lint", "--list-rules", "--format", "json")
    rows = json.loads(out)
    assert [row["id"] for row in rows] == sorted(RULES)
    assert all("Passes" in row["doc"] for row in rows)


def test_cli_list_rules_shows_configured_levels(tmp_path: Path) -> None:
    root = make_case(tmp_path)
    configure_lint(root, "key-naming: {level: off}")
    _, out, _ = run_cli("lint", "--list-rules", "--repo", str(root))
    assert re.search(r"^key-naming +off ", out, re.MULTILINE)


def test_cli_bad_now_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run_cli("lint", "--repo", str(make_case(tmp_path)), "--now", "next tuesday")
    assert code == 2
    assert err == "error: --now: 'next tuesday' is not an ISO 8601 date or time\n"


def test_cli_refuses_an_invalid_repository_without_traceback(tmp_path: Path) -> None:
    root = make_case(tmp_path, files={"flags/checkout/staging.yaml": "enabled: [true\n"})
    code, _, err = run_cli("lint", "--repo", str(root))
    assert code == 1
    assert err.startswith("error: flags/checkout/staging.yaml:2:1: invalid YAML")
    assert "Traceback" not in err


def test_root_repository_passes_lint() -> None:
    code, out, _ = run_cli("lint", "--repo", str(REPO_ROOT))
    assert code == 0, out
    assert ": error:" not in out


def test_fully_rolled_out_follows_prerequisites(tmp_path: Path) -> None:
    payments = (CASES / "prerequisite-unavailable/fail/flags/payments/flag.yaml").read_text()
    payments = payments.replace("archived: true\n", "")
    checkout = (CASES / "prerequisite-unavailable/fail/flags/checkout/flag.yaml").read_text()
    root = make_case(
        tmp_path,
        "fully-rolled-out/fail",
        files={
            "flags/checkout/flag.yaml": checkout,
            "flags/payments/flag.yaml": payments,
            "flags/payments/staging.yaml": "enabled: true\ndefault: on\n",
            "flags/payments/production.yaml": "enabled: true\ndefault: {split: {on: 50, off: 50}}\n",
        },
    )

    def rolled_out() -> list[str]:
        return [line for line in lint_lines(root, age_days=120) if "fully-rolled-out" in line]

    assert rolled_out() == []  # payments still splits in production, so checkout may be off
    (root / "flags/payments/production.yaml").write_text("enabled: true\ndefault: on\n")
    assert [line.split(": ", 1)[1] for line in rolled_out()] == [
        "flag 'checkout' has served 'on' to everyone in every environment for 120 days "
        "(max_age_days is 30) [fully-rolled-out warning]",
        "flag 'payments' has served 'on' to everyone in every environment for 120 days "
        "(max_age_days is 30) [fully-rolled-out warning]",
    ]


def test_rule_with_the_same_condition_as_an_earlier_rule_is_unreachable(tmp_path: Path) -> None:
    staff = "  - name: {name}\n    if: {{segment: staff}}\n    serve: {serve}\n"
    release = (
        "enabled: true\nrules:\n"
        + staff.format(name="staff", serve="on")
        + staff.format(name="staff again", serve="off")
    )
    root = make_case(tmp_path, files={"flags/checkout/staging.yaml": release})
    assert lint_lines(root) == [
        "flags/checkout/staging.yaml:6:5: rule 'staff again' can never match: rule 'staff' before it "
        "has the same condition [unreachable-rule error]"
    ]


def test_unreachable_rule_when_contexts_may_lack_a_key(tmp_path: Path) -> None:
    root = make_case(tmp_path, "unreachable-rule/fail")
    assert len(lint_lines(root)) == 1
    configure_lint(root, "unreachable-rule: {contexts_have_key: false}")
    assert lint_lines(root) == []


def test_kill_switch_tag_makes_any_kind_a_kill_switch(tmp_path: Path) -> None:
    root = make_case(tmp_path, "single-variation-split/pass")
    flag = root / "flags/checkout/flag.yaml"
    assert lint_lines(root) == []
    flag.write_text(flag.read_text() + "tags: [kill-switch]\n")
    assert lint_lines(root) == [
        "flags/checkout/production.yaml:3:3: kill switch 'checkout' (release) serves a progression "
        "in production [operational-percentage error]",
        "flags/checkout/staging.yaml:3:3: kill switch 'checkout' (release) serves a percentage "
        "split in staging [operational-percentage error]",
    ]


EXAMPLES = sorted(
    p for p in (Path(__file__).parent / "examples").glob("*/*") if (p / "flagstone.yaml").is_file()
)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_lint_and_codeowners_survive_every_example_repository(example: Path) -> None:
    """Even repositories that fail validation (which the commands refuse) must not
    crash the library: findings come back as data that point into the repository."""
    project = read_project(example)
    problems = [*lint_project(project, LintContext(NOW, FixedChangeTimes({}, NOW))).problems]
    problems += codeowners_report(project).problems
    for problem in problems:
        assert problem.path == ".github/CODEOWNERS" or (example / problem.path).is_file(), problem
        assert problem.line >= 0 and problem.col >= 0


def test_unknown_rule_names_get_a_suggestion(tmp_path: Path) -> None:
    flag = (
        "# flagstone: disable=stale-flag -- typo\n"
        + (CASES / "_base/flags/checkout/flag.yaml").read_text()
    )
    root = make_case(tmp_path, files={"flags/checkout/flag.yaml": flag})
    configure_lint(root, "unused-segments: {level: off}")
    hints = [
        p.hint
        for p in lint_project(
            read_project(root), LintContext(NOW, FixedChangeTimes({}, NOW))
        ).problems
    ]
    assert hints == ["did you mean 'stale-temporary-flag'?", "did you mean 'unused-segment'?"]
