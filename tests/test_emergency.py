"""``flagstone kill --emergency``, ``--undo`` and ``flagstone overrides``: signed
kill-only overrides published next to latest.json, racing writers, the reconcile
branch and pull request (with a stand-in ``gh``), and retiring after the reconciling
publish."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flagstone.emergency import (
    EmergencyKeyring,
    kill_change,
    read_overrides,
    write_overrides,
)
from flagstone.envelope import TrustedKey, public_key_raw
from flagstone.keys import private_key_pem, public_key_entry
from flagstone.overrides import OVERRIDES_PAYLOAD_TYPE
from flagstone.store import open_store
from publish_helpers import commit, envelope_payload, fixed_key, git, make_repo, write_key_file
from s3server import S3Bucket

pytest_plugins = ["s3server"]

EMERGENCY = fixed_key(21)


def with_emergency_keys(root: Path, *, flags: tuple[str, ...] = ("search",)) -> Path:
    """make_repo's repository with signing.emergency and more flags, committed."""
    entry = public_key_entry(EMERGENCY)
    config = root / "flagstone.yaml"
    text = config.read_text()
    text = text.replace(
        "publish:\n",
        f"  emergency:\n    threshold: 1\n    keys:\n"
        f"      - {{keyid: {entry['keyid']}, public: {entry['public']}}}\npublish:\n",
    )
    config.write_text(text)
    for name in flags:
        directory = root / "flags" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "flag.yaml").write_text(
            "name: X\nowner: platform\nkind: operational\n"
            "variations: {on: true, off: false}\noff_variation: off\n"
        )
        (directory / "production.yaml").write_text("enabled: true\ndefault: on\n")
    commit(root, "emergency keys")
    return root


def emergency_env(**extra: str) -> dict[str, str]:
    return {"FLAGSTONE_EMERGENCY_KEY": private_key_pem(EMERGENCY).decode(), **extra}


def flagstone(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``flagstone ARGS`` in this process (the real CLI entry point, much cheaper than a
    new interpreter), with ``env`` set in os.environ for the call."""
    from gitrepo import run_cli

    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        code, out, err = run_cli(list(args), cwd)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(list(args), code, out, err)


def read_payload(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    assert json.loads(data)["payloadType"] == OVERRIDES_PAYLOAD_TYPE
    return envelope_payload(data)


def test_emergency_kill_and_undo_publish_signed_versions(tmp_path: Path) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    assert flagstone("publish", "--key", str(write_key_file(tmp_path)), cwd=root).returncode == 0
    killed = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "card errors",
        "--by",
        "oncall@example.com",
        "--no-pr",
        cwd=root,
        env=emergency_env(),
    )
    assert killed.returncode == 0, killed.stderr
    assert "killed checkout in production: overrides version 1" in killed.stdout
    payload = read_payload(root / "dist/production/overrides.json")
    assert payload["version"] == 1 and payload["change"]["action"] == "kill"
    checkout = payload["overrides"]["checkout"]
    assert checkout["reason"] == "card errors" and checkout["by"] == "oncall@example.com"
    assert checkout["snapshot"]["version"] == 1  # the snapshot it was made against
    assert set(checkout) == {"reason", "by", "at", "expires", "snapshot"}  # no variation
    second = flagstone(
        "kill",
        "search",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "slow",
        "--no-pr",
        cwd=root,
        env=emergency_env(),
    )
    assert second.returncode == 0, second.stderr
    assert sorted(read_payload(root / "dist/production/overrides.json")["overrides"]) == [
        "checkout",
        "search",
    ]
    undone = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--undo",
        cwd=root,
        env=emergency_env(),
    )
    assert undone.returncode == 0, undone.stderr
    latest = read_payload(root / "dist/production/overrides.json")
    assert latest["version"] == 3 and sorted(latest["overrides"]) == ["search"]
    # Every version that was in force is kept, immutable, for the audit trail.
    history = sorted((root / "dist/production/overrides").iterdir())
    assert [p.name for p in history] == ["1.json", "2.json", "3.json"]
    assert history[2].read_bytes() == (root / "dist/production/overrides.json").read_bytes()
    listed = flagstone("overrides", "list", "--env", "production", "--format", "json", cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert [e["flag"] for e in json.loads(listed.stdout)["overrides"]] == ["search"]
    shown = flagstone("overrides", "show", "search", "--env", "production", cwd=root)
    assert shown.returncode == 0 and "reason:  slow" in shown.stdout
    assert (
        flagstone("overrides", "show", "checkout", "--env", "production", cwd=root).returncode == 1
    )
    cleared = flagstone("overrides", "clear", "--env", "production", cwd=root, env=emergency_env())
    assert cleared.returncode == 0, cleared.stderr
    assert read_payload(root / "dist/production/overrides.json")["overrides"] == {}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--reason", "x", "--no-pr"], {}, "no emergency key"),
        (["--no-pr"], None, "--reason is required"),
        (
            ["--reason", "x", "--no-pr"],
            {"FLAGSTONE_EMERGENCY_KEY": private_key_pem(fixed_key(7)).decode()},
            "is not listed",
        ),
        (["--reason", "x", "--no-pr", "--expires", "soon"], None, "not a duration"),
    ],
    ids=["no-key", "no-reason", "snapshot-key", "bad-expiry"],
)
def test_emergency_kill_usage_errors_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str] | None, message: str
) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    environment = emergency_env() if env is None else {"FLAGSTONE_EMERGENCY_KEY": "", **env}
    done = flagstone(
        "kill", "checkout", "--env", "production", "--emergency", *args, cwd=root, env=environment
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (root / "dist/production/overrides.json").exists()


def test_kill_options_without_emergency_are_refused(tmp_path: Path) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    done = flagstone("kill", "checkout", "--env", "production", "--reason", "x", cwd=root)
    assert done.returncode == 2 and "only apply with --emergency" in done.stderr


def test_without_emergency_keys_configured_the_kill_says_how(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    done = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "x",
        cwd=root,
        env=emergency_env(),
    )
    assert done.returncode == 2 and "signing.emergency.keys" in done.stderr


def test_a_tampered_overrides_object_is_never_built_on(tmp_path: Path) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    kill = ["kill", "checkout", "--env", "production", "--emergency", "--reason", "x", "--no-pr"]
    assert flagstone(*kill, cwd=root, env=emergency_env()).returncode == 0
    target = root / "dist/production/overrides.json"
    document = json.loads(target.read_bytes())
    document["signatures"][0]["sig"] = document["signatures"][0]["sig"][::-1]
    target.write_text(json.dumps(document))
    refused = flagstone(*kill, cwd=root, env=emergency_env())
    assert refused.returncode == 1 and "cannot be verified" in refused.stderr
    forced = flagstone(
        "overrides", "clear", "--env", "production", "--force", cwd=root, env=emergency_env()
    )
    assert forced.returncode == 0, forced.stderr
    assert read_payload(target)["version"] == 2 and read_payload(target)["overrides"] == {}


def _keyring() -> EmergencyKeyring:
    return EmergencyKeyring([TrustedKey.from_public(public_key_raw(EMERGENCY))], 1)


def test_racing_kills_in_threads_all_survive_on_s3(s3_bucket: S3Bucket) -> None:
    store = open_store(f"{s3_bucket.url}/flags")
    flags = [f"flag-{n}" for n in range(8)]
    barrier = threading.Barrier(len(flags))
    errors: list[BaseException] = []

    def kill(flag: str) -> None:
        try:
            barrier.wait(timeout=30)
            write_overrides(
                store,
                project_name="demo-shop",
                environment="production",
                keys=[EMERGENCY],
                keyring=_keyring(),
                change=kill_change(flag, reason="race", by="t", now=time.time()),
            )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=kill, args=(flag,)) for flag in flags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    current = read_overrides(store, "production", _keyring(), "demo-shop")
    assert current.overrides is not None
    assert sorted(current.overrides.entries) == flags
    assert current.version == len(flags)
    history = [k for k in s3_bucket.object_keys() if "/overrides/" in k]
    assert len(history) == len(flags)


def test_racing_kill_processes_both_survive_on_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    root = with_emergency_keys(
        make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}/flags"),
        flags=("search", "banner"),
    )
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flagstone",
                "kill",
                flag,
                "--env",
                "production",
                "--emergency",
                "--reason",
                "race",
                "--no-pr",
            ],
            cwd=root,
            env={**os.environ, **emergency_env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ("checkout", "search", "banner")
    ]
    for process in processes:
        _out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
    payload = envelope_payload(s3_bucket.read("flags/production/overrides.json"))
    assert sorted(payload["overrides"]) == ["banner", "checkout", "search"]
    assert payload["version"] == 3


def _stand_in_gh(directory: Path) -> Path:
    """A `gh` that records its arguments (one JSON list per line) and prints a PR URL."""
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / "gh-calls.jsonl"
    script = directory / "gh"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:3] == ['pr', 'list']:\n"
        "    print('[]')  # no pull request open for the branch yet\n"
        "else:\n"
        "    print('https://github.example/acme/flags/pull/7')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return record


def test_emergency_kill_reconciles_git_with_a_branch_and_pull_request(tmp_path: Path) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(root, "remote", "add", "origin", str(origin))
    git(root, "push", "-q", "origin", "main")
    (root / "notes.txt").write_text("uncommitted work\n")
    record = _stand_in_gh(tmp_path / "bin")
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    done = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "card errors",
        cwd=root,
        env=emergency_env(PATH=path),
    )
    assert done.returncode == 0, done.stderr
    assert "pull request: https://github.example/acme/flags/pull/7" in done.stdout
    branch = "flagstone/kill/checkout-production"
    # The user's checkout is untouched: same branch, uncommitted file still there.
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (root / "notes.txt").read_text() == "uncommitted work\n"
    assert "enabled: true" in (root / "flags/checkout/production.yaml").read_text()
    # The branch carries the kill, was pushed, and names reason and override.
    assert "enabled: false" in git(root, "show", f"{branch}:flags/checkout/production.yaml")
    message = git(root, "log", "-1", "--format=%B", branch)
    assert "card errors" in message and "emergency override 1" in message
    assert git(str(origin), "rev-parse", branch) == git(root, "rev-parse", branch)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    (call,) = [c for c in calls if c[:2] == ["pr", "create"]]  # one pull request, not two
    assert call[call.index("--head") + 1] == branch and call[call.index("--base") + 1] == "main"


def test_without_gh_or_remote_the_commands_are_printed(tmp_path: Path) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    done = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "x",
        cwd=root,
        env=emergency_env(PATH=str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"),
    )
    assert done.returncode == 0, done.stderr
    assert "run: git push -u origin flagstone/kill/checkout-production" in done.stdout
    assert "run: gh pr create --head flagstone/kill/checkout-production" in done.stdout


def test_the_reconciling_publish_retires_the_override(tmp_path: Path) -> None:
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    key = str(write_key_file(tmp_path))
    assert flagstone("publish", "--key", key, cwd=root).returncode == 0
    kill = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "x",
        cwd=root,
        env=emergency_env(PATH="/usr/bin:/bin:" + str(Path(sys.executable).parent)),
    )
    assert kill.returncode == 0, kill.stderr
    # Without the emergency key, publish says what to run and leaves the override.
    git(root, "merge", "-q", "--ff-only", "flagstone/kill/checkout-production")
    published = flagstone("publish", "--key", key, cwd=root, env={"FLAGSTONE_EMERGENCY_KEY": ""})
    assert published.returncode == 0, published.stderr
    assert "flagstone overrides clear checkout --env production" in published.stdout
    assert "checkout" in read_payload(root / "dist/production/overrides.json")["overrides"]
    again = flagstone("publish", "--key", key, cwd=root, env=emergency_env())
    assert again.returncode == 0, again.stderr
    assert "retired the emergency override of checkout" in again.stdout
    payload = read_payload(root / "dist/production/overrides.json")
    assert payload["overrides"] == {} and payload["change"]["action"] == "retire"


def test_validate_checks_the_emergency_keyring(tmp_path: Path) -> None:
    from gitrepo import run_cli

    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    assert run_cli(["validate"], root)[0] == 0
    config = root / "flagstone.yaml"
    snapshot_entry = public_key_entry(fixed_key())
    text = config.read_text().replace(
        "    threshold: 1\n    keys:\n",
        "    threshold: 3\n    keys:\n"
        f"      - {{keyid: '{'a' * 64}', public: {snapshot_entry['public']}}}\n",
    )
    config.write_text(text)
    code, out, _err = run_cli(["validate"], root)
    assert code == 1
    assert "keyid does not match the public key" in out
    assert "threshold 3 is more than the 2 trusted key(s)" in out
    assert "must not also be a snapshot signing key" in out
    lines = [line for line in out.splitlines() if "flagstone.yaml:" in line]
    assert all(line.split(":")[1].isdigit() for line in lines)  # file:line:col


def test_a_published_kill_reaches_an_sdk_client_polling_s3(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    from flagstone.sdk import Client
    from sdk_support import wait_for

    root = with_emergency_keys(
        make_repo(tmp_path / "repo", publish=f"target: {s3_bucket.url}/flags")
    )
    assert flagstone("publish", "--key", str(write_key_file(tmp_path)), cwd=root).returncode == 0
    client = Client(
        f"{s3_bucket.url}/flags",
        environment="production",
        project="demo-shop",
        trusted_keys=[TrustedKey.from_public(public_key_raw(fixed_key()))],
        emergency_keys=[TrustedKey.from_public(public_key_raw(EMERGENCY))],
        override_poll_interval=0.1,
    )
    try:
        assert client.wait_until_ready(30)
        assert client.bool_value("checkout", {"key": "u"}) is True
        done = flagstone(
            "kill",
            "checkout",
            "--env",
            "production",
            "--emergency",
            "--reason",
            "incident 42",
            "--no-pr",
            cwd=root,
            env=emergency_env(),
        )
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: client.bool_value("checkout", {"key": "u"}) is False, timeout=30)
        details = client.evaluate("checkout", {"key": "u"})
        assert getattr(details, "override_reason", None) == "incident 42"
    finally:
        client.close()


def test_flagd_json_carries_the_overrides(tmp_path: Path) -> None:
    root = with_emergency_keys(
        make_repo(tmp_path / "repo", publish="target: file://dist\nflagd: true")
    )
    key = str(write_key_file(tmp_path))
    assert flagstone("publish", "--key", key, cwd=root).returncode == 0
    flagd = root / "dist/production/flagd.json"
    assert json.loads(flagd.read_text())["flags"]["checkout"]["defaultVariant"] == "on"
    done = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--reason",
        "x",
        "--no-pr",
        cwd=root,
        env=emergency_env(),
    )
    assert done.returncode == 0 and "flagd export rewritten" in done.stdout, done.stderr
    assert json.loads(flagd.read_text())["flags"]["checkout"]["defaultVariant"] == "off"
    # A later publish of new content keeps the override in flagd.json.
    (root / "flags/search/production.yaml").write_text("enabled: false\ndefault: on\n")
    commit(root, "turn search off")
    assert flagstone("publish", "--key", key, cwd=root).returncode == 0
    document = json.loads(flagd.read_text())
    assert document["metadata"]["version"] == "2"
    assert document["flags"]["checkout"]["defaultVariant"] == "off"
    undone = flagstone(
        "kill",
        "checkout",
        "--env",
        "production",
        "--emergency",
        "--undo",
        cwd=root,
        env=emergency_env(),
    )
    assert undone.returncode == 0, undone.stderr
    assert json.loads(flagd.read_text())["flags"]["checkout"]["defaultVariant"] == "on"


def test_the_actions_kill_command_runs_the_emergency_kill(tmp_path: Path) -> None:
    """The composite action's script, as the emergency-kill workflow runs it."""
    import shutil

    from flagstone.loader import load_file

    if shutil.which("flagstone") is None:
        pytest.skip("the flagstone console script is not installed")
    action_path = Path(__file__).resolve().parent.parent / "action.yml"
    action = load_file(action_path, root=action_path.parent).data
    script = next(s["run"] for s in action["runs"]["steps"] if s.get("id") == "flagstone")
    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    summary = tmp_path / "summary.md"
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            **emergency_env(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "FLAGSTONE_COMMAND": "kill",
            "FLAGSTONE_FLAG": "checkout",
            "FLAGSTONE_ENVIRONMENT": "production",
            "FLAGSTONE_REASON": "from the workflow",
            "FLAGSTONE_UNDO": "false",
            "GITHUB_ACTOR": "oncall-person",
            "GITHUB_STEP_SUMMARY": str(summary),
            "RUNNER_TEMP": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stderr
    checkout = read_payload(root / "dist/production/overrides.json")["overrides"]["checkout"]
    assert checkout["reason"] == "from the workflow"
    assert checkout["by"] == "oncall-person (GitHub Actions)"
    assert "killed checkout in production" in summary.read_text()


def test_log_shows_override_events_beside_git_history(tmp_path: Path) -> None:
    from gitrepo import run_cli

    root = with_emergency_keys(make_repo(tmp_path / "repo"))
    for args in (["--reason", "card errors"], ["--undo"]):
        done = flagstone(
            "kill",
            "checkout",
            "--env",
            "production",
            "--emergency",
            *args,
            "--no-pr",
            "--by",
            "oncall@example.com",
            cwd=root,
            env=emergency_env(),
        )
        assert done.returncode == 0, done.stderr
    code, out, err = run_cli(["log", "--overrides"], root)
    assert code == 0, err
    assert "emergency overrides (signed history in the store):" in out
    assert "production  v1  kill checkout by oncall@example.com — card errors" in out
    assert "production  v2  undo checkout by oncall@example.com" in out
    code, out, err = run_cli(["log", "search", "--overrides", "--format", "json"], root)
    assert code == 0, err
    assert json.loads(out)["overrides"] == []
    # A history object that does not verify is shown, marked, not hidden.
    history = root / "dist/production/overrides/1.json"
    document = json.loads(history.read_bytes())
    document["signatures"] = []
    history.write_text(json.dumps(document))
    code, out, _err = run_cli(["log", "checkout", "--overrides"], root)
    assert "[UNVERIFIED" in out
    assert run_cli(["log", "--overrides", "--format", "csv"], root)[0] == 2
