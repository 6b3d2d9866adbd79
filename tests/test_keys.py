"""keygen / sign / verify / publish on the command line: key files, secrets never shown,
the development key, tampering rejected by `flagstone verify`, securesystemslib interop
on published snapshots, GitHub step outputs."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import yaml
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from flagstone.cli.main import main
from flagstone.envelope import TrustedKey
from flagstone.keys import DEV_KEY_PATH, KEY_ENV_VARIABLE, private_key_pem
from publish_helpers import commit, fixed_key, git, make_repo, write_key_file


class Cli:
    """Runs ``flagstone`` in-process in a directory; returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, cwd: Path, *args: str) -> tuple[int, str, str]:
        self.monkeypatch.chdir(cwd)
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        captured = self.capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch)


@pytest.fixture
def published(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository published to dist/ with the configured key from FLAGSTONE_SIGNING_KEY."""
    root = make_repo(tmp_path / "repo")
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(fixed_key()).decode())
    code, stdout, stderr = cli(root, "publish")
    assert code == 0, stderr
    secret_body = "".join(private_key_pem(fixed_key()).decode().splitlines()[1:-1])
    assert secret_body not in stdout + stderr
    assert "development key" not in stderr
    monkeypatch.delenv(KEY_ENV_VARIABLE)
    return root


@pytest.fixture(autouse=True)
def _no_inherited_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VARIABLE, raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)


def test_keygen_writes_a_private_key_0600_and_prints_the_config_entry(
    tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "keys" / "ci.pem"
    code, stdout, stderr = cli(tmp_path, "keygen", "--out", str(out), "--note", "CI key")
    assert code == 0, stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pem = out.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    body = "".join(pem.splitlines()[1:-1])
    assert body not in stdout and body not in stderr
    snippet = yaml.safe_load(stdout)
    (entry,) = snippet["signing"]["keys"]
    assert entry["note"] == "CI key"
    assert TrustedKey.from_config(snippet["signing"])[0].keyid == entry["keyid"]

    again = cli(tmp_path, "keygen", "--out", str(out))
    assert again[0] == 2 and "refusing to overwrite" in again[2]
    assert out.read_text() == pem


def test_keygen_default_location_is_git_ignored_dot_flagstone(tmp_path: Path, cli: Cli) -> None:
    root = make_repo(tmp_path / "repo")
    (root / "flags").mkdir(exist_ok=True)
    code, stdout, stderr = cli(root / "flags", "keygen")
    assert code == 0, stderr
    (written,) = (root / ".flagstone").glob("signing-key-*.pem")
    keyid = yaml.safe_load(stdout)["signing"]["keys"][0]["keyid"]
    assert written.name == f"signing-key-{keyid[:12]}.pem"


def test_keygen_to_stdout_only_when_asked(tmp_path: Path, cli: Cli) -> None:
    code, stdout, stderr = cli(tmp_path, "keygen", "--out", "-")
    assert code == 0
    assert stdout.startswith("-----BEGIN PRIVATE KEY-----")
    assert "signing:" in stderr and "PRIVATE" not in stderr


def test_publish_with_the_key_from_the_environment_then_verify(published: Path, cli: Cli) -> None:
    root = published
    code, stdout, stderr = cli(root, "verify", "dist/production/latest.json", "--env", "production")
    assert code == 0, stderr
    assert stdout.startswith("OK dist/production/latest.json: demo-shop/production version 1")
    code, stdout, _ = cli(root, "verify", "dist/staging/latest.json", "--format", "json")
    assert code == 0 and json.loads(stdout)["environment"] == "staging"


def test_verify_rejects_wrong_environment_and_expired(published: Path, cli: Cli) -> None:
    root = published
    code, _, stderr = cli(root, "verify", "dist/production/latest.json", "--env", "staging")
    assert code == 1 and "expected 'staging'" in stderr
    code, _, stderr = cli(
        root,
        "verify",
        "dist/production/latest.json",
        "--at",
        "2099-01-01T00:00:00Z",
    )
    assert code == 1 and "expired at" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("field", ["payload", "payloadType", "sig"])
def test_verify_rejects_tampering_with_any_signed_field(
    field: str, published: Path, tmp_path: Path, cli: Cli
) -> None:
    root = published
    original = json.loads((root / "dist/production/latest.json").read_bytes())
    if field == "payload":
        # Change one byte of the decoded payload, as an attacker would.
        raw = bytearray(base64.b64decode(original["payload"]))
        raw[raw.index(b'"version":1') + len('"version":')] = ord("9")
        original["payload"] = base64.b64encode(bytes(raw)).decode()
    elif field == "payloadType":
        original["payloadType"] = original["payloadType"].replace("snapshot", "snapshoT")
    else:
        sig = bytearray(base64.b64decode(original["signatures"][0]["sig"]))
        sig[10] ^= 0x01
        original["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(original))
    code, stdout, stderr = cli(root, "verify", str(tampered))
    assert code == 1 and stdout == ""
    assert stderr.startswith(f"error: {tampered}: ")
    assert "Traceback" not in stderr


def test_securesystemslib_verifies_a_published_snapshot(published: Path, cli: Cli) -> None:
    root = published
    envelope = Envelope.from_dict(json.loads((root / "dist/production/latest.json").read_bytes()))
    key = SSlibKey.from_crypto(fixed_key().public_key())
    assert list(envelope.verify([key], 1)) == [key.keyid]


def test_sign_then_verify(published: Path, tmp_path: Path, cli: Cli) -> None:
    root = published
    # Re-sign a published payload with `flagstone sign`: same key, so same bytes.
    latest = (root / "dist/staging/latest.json").read_bytes()
    payload_file = tmp_path / "payload.json"
    payload_file.write_bytes(base64.b64decode(json.loads(latest)["payload"]))
    key_file = write_key_file(tmp_path)
    out = tmp_path / "signed.json"
    code, _, stderr = cli(root, "sign", str(payload_file), "--key", str(key_file), "-o", str(out))
    assert code == 0, stderr
    assert out.read_bytes().strip() == latest.strip()
    assert cli(root, "verify", str(out), "--env", "staging")[0] == 0


def test_sign_with_a_bad_key_file_says_where_not_what(tmp_path: Path, cli: Cli) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n-----END PRIVATE KEY-----\n"
    )
    (tmp_path / "payload.json").write_text("{}")
    code, stdout, stderr = cli(tmp_path, "sign", "payload.json", "--key", str(bad))
    assert code == 2
    assert stderr.startswith(f"error: key file {bad} holds a private key that cannot be read")
    assert "c2VjcmV0" not in stdout + stderr


def test_a_key_of_an_unsupported_algorithm_is_a_usage_error_not_a_bug(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An EC key on a curve cryptography does not support raises UnsupportedAlgorithm,
    # which is neither ValueError nor TypeError (secp112r1, generated by openssl).
    pem = (
        "-----BEGIN EC PRIVATE KEY-----\n"
        "MD4CAQEEDmVOlnA/AasxgcsKAIRboAcGBSuBBAAGoSADHgAEu4VaAcBpWTTPduVu\n"
        "WgB6MxFCrgeoyJyzksf0ow==\n"
        "-----END EC PRIVATE KEY-----\n"
    )
    (tmp_path / "payload.json").write_text("{}")
    (tmp_path / "ec.pem").write_text(pem)
    code, stdout, stderr = cli(tmp_path, "sign", "payload.json", "--key", "ec.pem")
    assert code == 2, stderr
    assert stderr.startswith("error: key file ec.pem holds a private key that cannot be read")
    monkeypatch.setenv(KEY_ENV_VARIABLE, pem)
    code, stdout, stderr = cli(tmp_path, "sign", "payload.json")
    assert code == 2, stderr
    assert stderr.startswith(f"error: {KEY_ENV_VARIABLE} holds a private key that cannot be read")
    assert "MD4CAQEE" not in stdout + stderr


def test_keys_in_dot_flagstone_stay_out_of_git_without_a_gitignore_entry(
    tmp_path: Path, cli: Cli
) -> None:
    """A repository whose .gitignore does not list .flagstone/ (here: none at all) still
    never picks up the development key or a default keygen key with `git add -A`."""
    root = make_repo(tmp_path / "repo")
    assert not (root / ".gitignore").exists()
    assert cli(root, "publish", "--dev-key")[0] == 0
    assert cli(root, "keygen")[0] == 0
    assert len(list((root / ".flagstone").glob("*.pem"))) == 2
    git(root, "add", "-A")
    tracked = git(root, "ls-files").splitlines()
    assert not [path for path in tracked if path.startswith(".flagstone")], tracked


def test_development_key_is_created_once_signs_and_is_never_trusted_implicitly(
    tmp_path: Path, cli: Cli
) -> None:
    root = make_repo(tmp_path / "repo")
    code, stdout, stderr = cli(root, "publish", "--dev-key")
    assert code == 0, stderr
    dev_key = root / DEV_KEY_PATH
    assert stat.S_IMODE(dev_key.stat().st_mode) == 0o600
    assert "UNTRUSTED development key .flagstone/dev-signing-key.pem (created just now)" in stderr
    assert "production: published version 1" in stdout
    assert "digest: sha256:" in stdout
    # git ignores it (the repository's .gitignore lists .flagstone/)
    (root / ".gitignore").write_text(".flagstone/\ndist/\n")
    assert ".flagstone" not in git(root, "status", "--porcelain", "--untracked-files=all")

    code, _, stderr = cli(root, "verify", "dist/production/latest.json")
    assert code == 1 and "--allow-dev-key" in stderr
    assert cli(root, "verify", "dist/production/latest.json", "--allow-dev-key")[0] == 0

    (root / "flags/checkout/production.yaml").write_text("enabled: false\n")
    commit(root, "off")
    code, stdout, stderr = cli(root, "publish", "--env", "production", "--dev-key")
    assert code == 0 and "(from an earlier run)" in stderr and "version 2" in stdout
    assert "uncommitted" not in stderr

    (root / "flags/checkout/production.yaml").write_text("enabled: true\ndefault: on\n")
    code, stdout, stderr = cli(root, "publish", "--env", "production", "--dev-key")
    assert code == 0 and "version 3" in stdout
    assert (
        "warning: 1 flag file(s) have uncommitted changes (e.g. flags/checkout/production.yaml)"
        in stderr
    )


def test_publish_json_and_github_outputs(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path / "repo")
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(fixed_key()).decode())
    # From a subdirectory, like every repo-reading command.
    code, stdout, stderr = cli(root / "flags" / "checkout", "publish", "--format", "json")
    assert code == 0, stderr
    results = json.loads(stdout)
    assert [(r["environment"], r["action"], r["version"]) for r in results] == [
        ("staging", "published", 1),
        ("production", "published", 1),
    ]
    lines = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert lines["production-version"] == "1"
    assert lines["production-digest"] == results[1]["digest"]
    assert lines["published"] == "staging production"


def test_publish_dry_run_and_unknown_environment(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path / "repo")
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(fixed_key()).decode())
    code, stdout, _ = cli(root, "publish", "--dry-run")
    assert code == 0 and "staging: would publish version 1" in stdout
    assert not (root / "dist").exists()
    code, _, stderr = cli(tmp_path, "publish", "--repo", str(root), "--env", "qa")
    assert code == 2 and "unknown environment 'qa'" in stderr


def test_fresh_repository_keygen_publish_verify(tmp_path: Path, cli: Cli) -> None:
    root = make_repo(tmp_path / "repo", keys=())
    key_file = tmp_path / "ci.pem"
    code, snippet, stderr = cli(root, "keygen", "--out", str(key_file), "--note", "CI key 2026")
    assert code == 0, stderr
    # Trust it the way a user does: paste the printed entry into flagstone.yaml, commit.
    config = (root / "flagstone.yaml").read_text()
    config = config.replace(
        "signing:\n  threshold: 1\n  keys: []\n",
        snippet.replace("signing:\n", "signing:\n  threshold: 1\n"),
    )
    (root / "flagstone.yaml").write_text(config)
    commit(root, "trust the CI key")
    code, stdout, stderr = cli(root, "publish", "--key", str(key_file))
    assert code == 0, stderr
    assert "development key" not in stderr
    for environment in ("staging", "production"):
        code, stdout, stderr = cli(
            root, "verify", f"dist/{environment}/latest.json", "--env", environment
        )
        assert code == 0, stderr
        assert stdout.startswith(
            f"OK dist/{environment}/latest.json: demo-shop/{environment} version 1"
        )


def test_undecodable_bytes_in_the_key_variable_are_a_usage_error(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.environ keeps bytes that are not UTF-8 as lone surrogates.
    monkeypatch.setenv(
        KEY_ENV_VARIABLE, "-----BEGIN PRIVATE KEY-----\n\udcff\n-----END PRIVATE KEY-----\n"
    )
    (tmp_path / "payload.json").write_text("{}")
    code, _, stderr = cli(tmp_path, "sign", "payload.json")
    assert code == 2, stderr
    assert stderr.startswith(f"error: {KEY_ENV_VARIABLE} holds a private key that cannot be read")
