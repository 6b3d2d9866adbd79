"""Authoring from the CLI (issue 17.1): `new --progression`, `stage`, `target` and
`segment` commands edit text in place (comments and style kept), validate, run the
rollout guardrails and keep CODEOWNERS fresh; a PM takes a flag from `new` to 100% with
CLI commands only, in a real git repository."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.scaffold import ScaffoldOptions, scaffold_repository


def git(root: Path, *args: str, when: float | None = None) -> str:
    env = dict(os.environ)
    if when is not None:
        stamp = f"@{int(when)} +0000"
        env.update(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    done = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


class Cli:
    def __init__(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ):
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.monkeypatch.chdir(self.root)
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        captured = self.capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else 0), captured.out, captured.err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, f"flagstone {' '.join(args)} -> {code}\n{out}{err}"
        return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A `flagstone init` repository (max_step for production lowered to 25 by its
    admins), committed a week ago."""
    root = tmp_path / "flags"
    scaffold_repository(root, ScaffoldOptions(project="acme", admins="@acme/platform"))
    config = root / "flagstone.yaml"
    config.write_text(config.read_text().replace("production: 50}", "production: 25}"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "flagstone init", when=time.time() - 7 * 86400)
    return root


@pytest.fixture
def cli(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(repo, monkeypatch, capsys)


def test_a_pm_takes_a_new_flag_to_100_percent_with_cli_commands_only(repo: Path, cli: Cli) -> None:
    clock = time.time() - 6 * 86400

    def commit(message: str) -> None:
        """Each step is a reviewed change: the CI checks pass, then it merges."""
        nonlocal clock
        for check in (("validate",), ("codeowners", "--check"), ("check-change",)):
            cli.ok(*check)
        code, out, _ = cli("lint")
        assert code == 0, out
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message, when=clock)
        clock += 3 * 3600  # each stage bakes 2h, so three hours later the next may start

    out = cli.ok(
        "new", "search-v2", "--owner", "platform",
        "--description", "Rebuilt search ranking.",
        "--progression", "staff,1%,10%,25%,50%,75%,100%", "--bake", "2h",
    )  # fmt: skip
    assert "wrote .github/CODEOWNERS" in out
    assert "/flags/search-v2/ @acme/platform" in (repo / ".github/CODEOWNERS").read_text()
    commit("new flag search-v2")

    cli.ok("enable", "search-v2", "--env", "production")
    commit("enable in production (staff only)")
    cli.ok("target", "add", "search-v2", "qa-1", "qa-2", "--env", "production", "--variation", "on")
    commit("QA accounts get it")

    # The guardrail holds: a schedule already due would jump 1% -> 50% in one change,
    # over production's max_step 25.
    cli.ok("advance", "search-v2", "--env", "production")
    commit("advance to 1pct")
    code, _, err = cli(
        "stage", "set", "search-v2", "50pct", "--env", "production", "--at", "2026-01-01T00:00Z"
    )
    assert code == 1
    assert "edit refused by guardrails" in err and "the limit is 25 points" in err
    assert "at:" not in (repo / "flags/search-v2/production.yaml").read_text()

    # Advancing before the bake is over is flagged by the check CI runs.
    cli.ok("advance", "search-v2", "--env", "production")
    git(repo, "add", "-A")
    code, out, _ = cli("check-change", "--base", "HEAD")
    assert code == 0, out  # the 1pct stage entered 3h ago (commit time), bake 2h: ok
    git(repo, "reset", "-q", "--hard")

    for stage in ("10pct", "25pct", "50pct", "75pct", "100pct"):
        cli.ok("advance", "search-v2", "--env", "production")
        commit(f"advance to {stage}")

    release = (repo / "flags/search-v2/production.yaml").read_text()
    assert "current: 100pct" in release
    code, out, _ = cli("eval", "search-v2", "--env", "production", "--context", '{"key": "anyone"}')
    assert code == 0 and "on" in out.split()


def test_too_early_advance_is_refused_and_caught_by_check_change(repo: Path, cli: Cli) -> None:
    cli.ok(
        "new", "fast", "--owner", "platform", "--description", "x",
        "--progression", "1%,10%", "--bake", "24h",
    )  # fmt: skip
    cli.ok("enable", "fast", "--env", "production")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fast at 1pct")  # now
    code, _, err = cli("advance", "fast", "--env", "production")
    assert code == 1 and "must bake 1d" in err  # the edit itself refuses
    cli.ok("advance", "fast", "--env", "production", "--force")
    code, out, _ = cli("check-change", "--base", "HEAD")
    assert code == 1 and "min-bake" in out  # and CI would too


COMMENTED_RELEASE = """\
# Production rollout of the checkout flag.
enabled: false   # switched off in PR 12
default:
  progression:
    variation: on
    baseline: off
    current: staff
    stages:
      # employees first
      - name: staff
        segments: [staff]
      - {name: ten, percent: 10, bake: 24h}   # a day at 10%
      - name: ga
        percent: 100
# end of file
"""


def test_stage_commands_keep_comments_and_style(repo: Path, cli: Cli) -> None:
    cli.ok("new", "checkout", "--owner", "platform", "--description", "x")
    path = repo / "flags/checkout/production.yaml"
    path.write_text(COMMENTED_RELEASE)
    cli.ok("stage", "add", "checkout", "half", "--env", "production", "--percent", "50",
           "--after", "ten", "--at", "2026-12-03T09:00+01:00")  # fmt: skip
    cli.ok("stage", "set", "checkout", "ten", "--env", "production", "--bake", "48h",
           "--segments", "staff")  # fmt: skip
    cli.ok("stage", "set", "checkout", "ga", "--env", "production", "--bake", "1h")
    cli.ok("target", "add", "checkout", "user-1", "--env", "production", "--variation", "off")
    text = path.read_text()
    assert text == (
        "# Production rollout of the checkout flag.\n"
        "enabled: false   # switched off in PR 12\n"
        "default:\n"
        "  progression:\n"
        "    variation: on\n"
        "    baseline: off\n"
        "    current: staff\n"
        "    stages:\n"
        "      # employees first\n"
        "      - name: staff\n"
        "        segments: [staff]\n"
        "      - {name: ten, percent: 10, bake: 48h, segments: [staff]}   # a day at 10%\n"
        '      - {name: half, percent: 50, at: "2026-12-03T08:00:00Z"}\n'
        "      - name: ga\n"
        "        percent: 100\n"
        "        bake: 1h\n"
        "targets: {off: [user-1]}\n"
        "# end of file\n"
    )
    cli.ok("stage", "remove", "checkout", "half", "--env", "production")
    cli.ok("stage", "set", "checkout", "ten", "--env", "production", "--bake", "none")
    cli.ok("target", "remove", "checkout", "user-1", "--env", "production")
    text = path.read_text()
    assert "      - {name: ten, percent: 10, segments: [staff]}   # a day at 10%\n" in text
    assert "half" not in text and "targets" not in text
    assert text.startswith("# Production rollout") and text.endswith("# end of file\n")


def test_refusals_write_nothing(repo: Path, cli: Cli) -> None:
    cli.ok(
        "new", "checkout", "--owner", "platform", "--description", "x", "--progression", "1%,100%"
    )
    path = repo / "flags/checkout/production.yaml"
    before = path.read_text()
    cases = [
        (["stage", "remove", "checkout", "1pct", "--env", "production"], 1, "is the current stage"),
        (["stage", "add", "checkout", "x", "--env", "production"], 2, "needs --percent or --segments"),
        (["stage", "add", "checkout", "x", "--env", "production", "--segments", "ghosts"], 1,
         "unknown segment"),
        (["stage", "set", "checkout", "1pct", "--env", "production", "--at", "next tuesday"], 2,
         "is not a time; use 2026-11-10"),
        (["stage", "set", "checkout", "nope", "--env", "production", "--bake", "1h"], 2,
         "no stage 'nope'"),
        (["stage", "set", "checkout", "1pct", "--env", "production", "--bake", "soon"], 2,
         "not a duration"),
        (["target", "add", "checkout", "u", "--env", "production", "--variation", "maybe"], 2,
         "has no variation 'maybe'"),
        (["target", "remove", "checkout", "u", "--env", "production"], 2, "does not target u"),
        (["new", "other", "--owner", "platform", "--progression", "ghosts,10%"], 2,
         "no segment 'ghosts'"),
        (["new", "other", "--owner", "platform", "--progression", "10%,10%"], 2, "repeats a stage"),
        (["new", "other", "--owner", "platform", "--bake", "1h"], 2, "--bake needs --progression"),
        (["segment", "remove", "staff", "nobody"], 2, "does not list nobody"),
        (["segment", "new", "staff", "--owner", "platform"], 1, "already exists"),
    ]  # fmt: skip
    for args, code, message in cases:
        got, out, err = cli(*args)
        assert (got, message in err) == (code, True), (args, got, out, err)
        assert "Traceback" not in err
    assert path.read_text() == before
    assert not (repo / "flags/other").exists()
    changed = [line.strip() for line in git(repo, "status", "--porcelain").splitlines()]
    assert changed == ["M .github/CODEOWNERS", "?? flags/checkout/"]  # from `new checkout`


def test_new_with_variations_and_segments(repo: Path, cli: Cli) -> None:
    cli.ok("segment", "new", "pilots", "--owner", "platform", "--include", "a,b",
           "--description", "Pilot customers.")  # fmt: skip
    cli.ok("segment", "add", "pilots", "c")
    cli.ok("segment", "add", "pilots", "z", "--exclude")
    cli.ok("segment", "remove", "pilots", "a")
    text = (repo / "segments/pilots.yaml").read_text()
    assert "include: [b, c]\n" in text and "exclude: [z]\n" in text
    cli.ok(
        "new", "ranking", "--owner", "platform", "--type", "string", "--kind", "experiment",
        "--variations", "control,treatment", "--description", "Ranking test.",
        "--progression", "pilots,5%,50%",
    )  # fmt: skip
    release = (repo / "flags/ranking/production.yaml").read_text()
    assert "variation: treatment\n    baseline: control\n    current: pilots\n" in release
    assert "- {name: pilots, segments: [pilots]}" in release
    cli.ok("codeowners", "--check")
    code, out, _ = cli("lint")
    assert "placeholder" not in out
    # Without --description the placeholder is a lint finding (a warning: lint passes).
    cli.ok("new", "later", "--owner", "platform")
    code, out, _ = cli("lint")
    assert code == 0
    assert "flags/later/flag.yaml:3:14: warning: flag 'later' has a placeholder description" in out
