"""STYLE §9: the package is mypy-strict clean and ruff-clean, checked in the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "RUFF_CACHE_DIR": str(tmp_path / "ruff"),
        },
    )


def test_mypy_strict_passes_on_the_package(tmp_path: Path) -> None:
    proc = run("mypy", "--cache-dir", str(tmp_path / "mypy"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_passes(command: list[str], tmp_path: Path) -> None:
    proc = run("ruff", *command, ".", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_ships_py_typed() -> None:
    assert (ROOT / "tooling" / "flagstone" / "py.typed").is_file()
