"""`.ci/run` must run exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick_start)


def test_readme_quick_start_has_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "flagstone" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert readme_commands()[1] in script


def test_readme_main_job_publishes_the_repositorys_flags() -> None:
    assert "flagstone publish" in readme_commands()[0]


def test_readme_links_every_guide() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)]+\.md)\)", text))
    guides = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "readme").glob("*.md")}
    assert guides and guides <= linked, sorted(guides - linked)
    assert all((ROOT / path).is_file() for path in linked), sorted(linked)
