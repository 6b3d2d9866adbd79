"""``flagstone served --env ENV --at TIME`` against a real store: versioned snapshots
published from several commits at known times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.publish import publish_project
from flagstone.validate import load_valid_project
from publish_helpers import commit, fixed_key, make_repo, set_default, signing

T1 = 1_794_300_000.0  # 2026-11-10T...
DAY = 86400.0


def run(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--repo", str(root)])
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """Version 1 from commit A at T1, version 2 from commit B a day later."""
    root = make_repo(tmp_path / "repo")
    first = commit(root, "A")
    publish_project(load_valid_project(root), signing(), environments=["production"],
                    now=lambda: T1)  # fmt: skip
    set_default(root, "production", "off")
    second = commit(root, "B")
    publish_project(load_valid_project(root), signing(), environments=["production"],
                    now=lambda: T1 + DAY)  # fmt: skip
    return root, [first, second]


def test_served_names_version_and_commit_at_a_time(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, (first, second) = history
    from flagstone.timeforms import utc_text

    at = utc_text(T1 + 3600)
    code, out, err = run(
        root, capsys, "served", "--env", "production", "--at", at, "--format", "json"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["snapshot"]["version"] == 1 and answer["snapshot"]["commit"] == first
    assert answer["snapshot"]["verified"] is True
    assert answer["replaced_by"]["version"] == 2
    code, out, _ = run(
        root, capsys, "served", "--env", "production", "--at", utc_text(T1 + 2 * DAY)
    )
    assert code == 0
    assert out.startswith(
        f"production at {utc_text(T1 + 2 * DAY)}: version 2 from commit {second[:12]}"
    )
    assert "still the latest published version" in out
    code, out, _ = run(root, capsys, "served", "--env", "production", "--at", utc_text(T1 - 60))
    assert code == 0 and "nothing was published yet (version 1 came at" in out
    # Forty days on, version 2 had expired (30d): SDKs served it as stale.
    code, out, _ = run(
        root, capsys, "served", "--env", "production", "--at", utc_text(T1 + 40 * DAY)
    )
    assert "it had expired" in out
    code, out, _ = run(root, capsys, "served", "--env", "staging", "--at", utc_text(T1))
    assert code == 0 and "nothing has ever been published" in out


def test_served_reports_an_unverifiable_snapshot_and_bad_input(
    history: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = history
    # Version 3 signed by a key flagstone.yaml does not list (written by hand, say).
    from flagstone.compile import snapshot_bytes
    from flagstone.envelope import sign_payload
    from flagstone.timeforms import utc_text
    from publish_helpers import envelope_payload

    snapshots = root / "dist" / "production" / "snapshots"
    payload = envelope_payload((snapshots / "2.json").read_bytes())
    payload.update(version=3, published_at=utc_text(T1 + 2 * DAY))
    (snapshots / "3.json").write_bytes(sign_payload(snapshot_bytes(payload), (fixed_key(3),)))

    code, out, _ = run(
        root, capsys, "served", "--env", "production", "--at", utc_text(T1 + 3 * DAY)
    )
    assert code == 0
    assert "version 3" in out and "(UNVERIFIED)" in out and "does not verify" in out
    code, _, err = run(root, capsys, "served", "--env", "production", "--at", "yesterday")
    assert code == 2 and "is not a time; use 2026-11-10" in err
    code, _, err = run(root, capsys, "served", "--env", "qa", "--at", "2026-11-10")
    assert code == 2 and "unknown environment 'qa'" in err


def test_served_names_the_emergency_overrides_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import subprocess
    import sys
    import time

    from flagstone.keys import private_key_pem, public_key_entry
    from flagstone.timeforms import utc_text
    from publish_helpers import write_key_file

    emergency = fixed_key(21)
    root = make_repo(tmp_path / "repo")
    entry = public_key_entry(emergency)
    config = root / "flagstone.yaml"
    config.write_text(config.read_text().replace(
        "publish:\n",
        f"  emergency:\n    threshold: 1\n    keys:\n"
        f"      - {{keyid: {entry['keyid']}, public: {entry['public']}}}\npublish:\n",
    ))  # fmt: skip
    commit(root, "emergency keys")
    env = {**os.environ, "FLAGSTONE_EMERGENCY_KEY": private_key_pem(emergency).decode()}
    for args in (
        ["publish", "--key", str(write_key_file(tmp_path))],
        ["kill", "checkout", "--env", "production", "--emergency", "--reason", "errors", "--no-pr"],
    ):
        done = subprocess.run([sys.executable, "-m", "flagstone", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    code, out, err = run(root, capsys, "served", "--env", "production",
                         "--at", utc_text(time.time() + 60), "--format", "json")  # fmt: skip
    assert code == 0, err
    overrides = json.loads(out)["overrides"]
    assert overrides["version"] == 1 and overrides["flags"] == ["checkout"]
    assert overrides["verified"] is True
    code, out, _ = run(
        root, capsys, "served", "--env", "production", "--at", utc_text(time.time() + 60)
    )
    assert "emergency overrides version 1" in out and "forced off: checkout" in out
    # `status --overrides` reads the same store: the killed flag shows as overridden.
    code, out, err = run(root, capsys, "status", "--overrides", "--env", "production",
                         "--format", "json")  # fmt: skip
    assert code == 0, err
    states = {f["key"]: f["environments"][0]["state"] for f in json.loads(out)["flags"]}
    assert states == {"checkout": "overridden"}
    # ... and so does the dashboard.
    code, _, err = run(root, capsys, "site", "-o", str(tmp_path / "site"), "--overrides")
    assert code == 0, err
    page = (tmp_path / "site" / "flags" / "checkout.html").read_text()
    assert (
        "Emergency overrides" in page and "Forced to the off variation now in: production" in page
    )
