"""The SDK against what the main job publishes: the example repository is published with
the real ``flagstone publish --dev-key`` (a subprocess; the README's local preview), then the README's SDK
example runs unchanged against its ``dist/``, and a polling client follows a republish."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from flagstone.keys import development_trusted_key
from flagstone.sdk import Client, Status

REPO_ROOT = Path(__file__).resolve().parent.parent
README_SECTION = REPO_ROOT / "docs" / "readme" / "sdk.md"


def published_example(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO_ROOT / "flagstone.yaml", repo)
    shutil.copytree(REPO_ROOT / "flags", repo / "flags")
    shutil.copytree(REPO_ROOT / "segments", repo / "segments")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "flags"]):
        subprocess.run(["git", *command], cwd=repo, check=True, timeout=30)
    publish(repo)
    return repo


def publish(repo: Path, *options: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "flagstone", "publish", "--dev-key", "--repo", str(repo), *options],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_readme_example_runs_against_the_published_snapshots(tmp_path: Path) -> None:
    repo = published_example(tmp_path)
    example = re.search(r"```python\n(.*?)```", README_SECTION.read_text(), re.DOTALL)
    assert example is not None
    result = subprocess.run(
        [sys.executable, "-c", example.group(1)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "READY",
        "True",
        "True TARGETING_MATCH staff",
        "fallback",
    ]


def test_polling_client_follows_a_republish(tmp_path: Path) -> None:
    repo = published_example(tmp_path)
    trusted = development_trusted_key(repo)
    assert trusted is not None
    with Client(
        f"file://{repo / 'dist'}",
        environment="production",
        trusted_keys=[trusted],
        project="acme-shop",
        poll_interval=None,
    ) as client:
        assert client.status == Status.READY
        assert client.version == 1
        publish(repo, "--force", "--env", "production")
        assert client.refresh() is True
        assert client.version == 2
        # A republish of the same content changes no flag's answers.
        assert client.evaluate("new-checkout", {"key": "user-1001"}, False).value is True
