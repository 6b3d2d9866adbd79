"""The CI and key pitfalls of issue 17 end in a clear refusal, never a silent success:
a file:// target inside GitHub Actions, a missing listed key, an unlisted key, the
development key without asking for it; `init --target` names the real target and the
exact repository settings; an oversized snapshot is refused (or, when allowed, warned about)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flagstone import publish as publishing
from flagstone.cli.main import main
from flagstone.keys import KEY_ENV_VARIABLE, private_key_pem, public_key_entry
from flagstone.publish import publish_project
from flagstone.validate import load_valid_project
from publish_helpers import commit, fixed_key, make_repo, signing


def run(
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KEY_ENV_VARIABLE, "GITHUB_OUTPUT", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


def listed_keyid() -> str:
    return public_key_entry(fixed_key())["keyid"]


def test_a_listed_key_that_is_nowhere_stops_publish_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    code, stdout, stderr = run(root, monkeypatch, capsys, "publish")
    assert code == 2
    assert f"no private key for the signing key(s) flagstone.yaml lists: {listed_keyid()[:12]}" in (
        stderr
    )
    assert KEY_ENV_VARIABLE in stderr and "--dev-key" in stderr
    assert not (root / "dist").exists() and not (root / ".flagstone").exists()
    # The explicit local preview works and says what it is.
    code, stdout, stderr = run(root, monkeypatch, capsys, "publish", "--dev-key")
    assert code == 0, stderr
    assert "UNTRUSTED development key" in stderr
    assert "production: published version 1" in stdout


def test_the_key_keygen_wrote_is_found_and_signs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo", keys=())
    code, snippet, stderr = run(root, monkeypatch, capsys, "keygen", "--note", "CI key 2026")
    assert code == 0, stderr
    config = (root / "flagstone.yaml").read_text()
    config = config.replace(
        "signing:\n  threshold: 1\n  keys: []\n",
        snippet.replace("signing:\n", "signing:\n  threshold: 1\n"),
    )
    (root / "flagstone.yaml").write_text(config)
    commit(root, "trust the CI key")
    keyid = yaml.safe_load(snippet)["signing"]["keys"][0]["keyid"]
    code, stdout, stderr = run(root, monkeypatch, capsys, "publish", "--format", "json")
    assert code == 0, stderr
    assert "development key" not in stderr
    results = json.loads(stdout)
    assert [r["signed_by"] for r in results] == [[keyid], [keyid]]
    assert not any(r["development_key"] for r in results)
    code, _, stderr = run(root, monkeypatch, capsys, "verify", "dist/production/latest.json")
    assert code == 0, stderr


def test_an_unlisted_key_is_refused_and_only_listed_keys_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    stranger = fixed_key(9)
    stranger_id = public_key_entry(stranger)["keyid"]
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(stranger).decode())
    code, _, stderr = run(root, monkeypatch, capsys, "publish")
    assert code == 2
    assert f"{KEY_ENV_VARIABLE} holds key {stranger_id[:12]}, which signing.keys" in stderr
    assert listed_keyid()[:12] in stderr
    assert not (root / "dist").exists()
    # Both keys in the secret: only the listed one signs.
    both = private_key_pem(stranger) + private_key_pem(fixed_key())
    monkeypatch.setenv(KEY_ENV_VARIABLE, both.decode())
    code, stdout, stderr = run(root, monkeypatch, capsys, "publish", "--format", "json")
    assert code == 0, stderr
    assert {tuple(r["signed_by"]) for r in json.loads(stdout)} == {(listed_keyid(),)}


def test_dev_key_and_key_file_exclude_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(private_key_pem(fixed_key()))
    code, _, stderr = run(root, monkeypatch, capsys, "publish", "--dev-key", "--key", str(key_file))
    assert code == 2 and "--dev-key and --key exclude each other" in stderr


def test_file_target_inside_github_actions_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(fixed_key()).decode())
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    code, stdout, stderr = run(root, monkeypatch, capsys, "publish")
    assert code == 2
    assert stderr.startswith("error: refusing to publish to file://")
    assert "FLAGSTONE_PUBLISH_TARGET" in stderr and "--allow-local-target" in stderr
    assert "published" not in stdout and not (root / "dist").exists()
    assert not outputs.exists()
    # memory:// reaches nobody either.
    code, _, stderr = run(root, monkeypatch, capsys, "publish", "--to", "memory://x")
    assert code == 2 and "refusing to publish to memory://" in stderr
    # A dry run writes nothing, so it may look.
    code, stdout, _ = run(root, monkeypatch, capsys, "publish", "--dry-run")
    assert code == 0 and "would publish version 1" in stdout
    code, stdout, stderr = run(root, monkeypatch, capsys, "publish", "--allow-local-target")
    assert code == 0, stderr
    assert "production: published version 1" in stdout
    # The library refuses too, whoever calls it.
    with pytest.raises(Exception, match="inside GitHub Actions"):
        publish_project(load_valid_project(root), signing(), force=True)


def test_one_size_rule_refuses_over_the_sdk_cap_unless_allowed_then_warns(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = make_repo(tmp_path / "repo")
    # A real project is far below the SDKs' 256 MiB; lower the cap the rule compares against.
    monkeypatch.setattr(publishing, "SDK_DEFAULT_MAX_BYTES", 200)
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(fixed_key()).decode())
    code, _, stderr = run(root, monkeypatch, capsys, "publish", "--env", "production")
    assert code == 2
    assert "refusing to publish: the signed snapshot is " in stderr
    assert "over the SDKs' default max_bytes of 200 bytes" in stderr
    assert not (root / "dist/production/latest.json").exists()
    code, _, stderr = run(
        root, monkeypatch, capsys, "publish", "--env", "production", "--allow-oversized"
    )
    assert code == 0, stderr
    assert "warning: production: the signed snapshot is " in stderr
    assert "published anyway" in stderr
    results = publish_project(
        load_valid_project(root), signing(), environments=["staging"], dry_run=True
    )
    assert results[0].warnings and "about" in results[0].warnings[0]
    assert "publish will refuse it" in results[0].warnings[0]
    monkeypatch.setattr(publishing, "SDK_DEFAULT_MAX_BYTES", 16 * 1024 * 1024)
    results = publish_project(
        load_valid_project(root), signing(), environments=["staging"], dry_run=True
    )
    assert results[0].warnings == []


@pytest.mark.parametrize(
    ("target", "settings"),
    [
        (
            "s3://acme-flags/prod",
            ["secret FLAGSTONE_SIGNING_KEY", "variable FLAGSTONE_AWS_ROLE_ARN"],
        ),
        (
            "gs://acme-flags/prod",
            ["secret FLAGSTONE_SIGNING_KEY", "secret FLAGSTONE_GCS_SERVICE_ACCOUNT_KEY"],
        ),
        (
            "az://flags/prod",
            [
                "secret FLAGSTONE_SIGNING_KEY",
                "variable FLAGSTONE_AZURE_STORAGE_ACCOUNT",
                "secret FLAGSTONE_AZURE_STORAGE_KEY",
            ],
        ),
    ],
)
def test_init_takes_the_real_target_and_prints_the_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    settings: list[str],
) -> None:
    code, stdout, stderr = run(
        tmp_path, monkeypatch, capsys, "init", "repo", "--project", "acme", "--target", target
    )
    assert code == 0, stderr
    root = tmp_path / "repo"
    assert yaml.safe_load((root / "flagstone.yaml").read_text())["publish"]["target"] == target
    printed = [" ".join(line.split()[:2]) for line in stdout.splitlines() if line.startswith("  ")]
    for setting in settings:
        assert setting in printed, stdout
    workflow = yaml.safe_load((root / ".github/workflows/flags.yml").read_text())
    step = next(s for s in workflow["jobs"]["publish"]["steps"] if s.get("id") == "publish")
    names = {name for line in settings for name in line.split()[1:] if "SIGNING" not in name}
    # Every secret/variable printed for gs/az reaches the publish step.
    if not target.startswith("s3"):
        referenced = " ".join(str(v) for v in step["env"].values())
        assert all(name in referenced for name in names), step
    else:
        assert "env" not in step
    code, _, stderr = run(root, monkeypatch, capsys, "validate")
    assert code == 0, stderr


def test_init_refuses_a_target_that_is_not_a_storage_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("dist", "memory://x", "s3://", 'gs://a"b'):
        code, _, stderr = run(tmp_path, monkeypatch, capsys, "init", "r", "--target", bad)
        assert code == 2, (bad, stderr)
        assert "target" in stderr
    assert not (tmp_path / "r").exists()
    code, stdout, _ = run(tmp_path, monkeypatch, capsys, "init", "r")
    assert code == 0
    assert "variable FLAGSTONE_PUBLISH_TARGET" in " ".join(stdout.split())
