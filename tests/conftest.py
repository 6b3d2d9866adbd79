"""Shared fixtures. Each area adds its own fixtures in its own test modules or in
``tests/fixtures_*.py`` imported below, so parallel work does not collide here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _git_identity() -> None:
    """Tests make real git commits; give them a fixed identity and no user config."""
    os.environ.setdefault("GIT_AUTHOR_NAME", "Flagstone Tests")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@flagstone.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "Flagstone Tests")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@flagstone.invalid")
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    os.environ.pop("GITHUB_ACTIONS", None)
    os.environ.pop("GITHUB_STEP_SUMMARY", None)
    # The toolchain cache stays off (and the user's cache key untouched) except in the
    # tests that turn it on (tests/test_toolcache.py).
    os.environ["FLAGSTONE_NO_CACHE"] = "1"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
