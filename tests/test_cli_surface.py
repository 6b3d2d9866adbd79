"""The CLI surface of docs/design.md §8: every command is registered, imports, and has help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from flagstone.cli.main import COMMANDS, cli

DESIGN_COMMANDS = {
    "init",
    "validate",
    "lint",
    "codeowners",
    "compile",
    "keygen",
    "sign",
    "verify",
    "publish",
    "eval",
    "diff",
    "log",
    "show",
    "check-change",
    "new",
    "advance",
    "rollout",
    "kill",
    "enable",
    "archive",
    "export",
}


def test_every_design_command_is_registered() -> None:
    assert set(COMMANDS) >= DESIGN_COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flagstone", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no-such-command" in proc.stderr


def test_outside_a_repository_is_a_one_line_usage_error(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flagstone", "validate"],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: no flagstone.yaml found")
