"""The snapshot digest on its two paths: ``flagstone verify`` (and publishing) recompute
it from the parsed content; the SDK compares it with the flags and segments exactly as
signed when the payload is laid out in canonical form (envelope._signed_content_digest),
and recomputes it otherwise. Both refuse a digest that does not describe the content."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from flagstone.canonical import canonical_json
from flagstone.cli.main import main
from flagstone.envelope import sign_payload
from flagstone.keys import KEY_ENV_VARIABLE, private_key_pem
from flagstone.sdk import Client, Status
from publish_helpers import fixed_key, make_repo, trusted


def _cli(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    code = exited.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


@pytest.fixture
def published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    root = make_repo(tmp_path / "repo")
    monkeypatch.setenv(KEY_ENV_VARIABLE, private_key_pem(fixed_key()).decode())
    code, stderr = _cli(root, monkeypatch, capsys, "publish")
    assert code == 0, stderr
    monkeypatch.delenv(KEY_ENV_VARIABLE)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    return root


def _payload(root: Path) -> dict[str, Any]:
    envelope = json.loads((root / "dist/production/latest.json").read_bytes())
    payload: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return payload


def _client(path: Path) -> Client:
    return Client.from_file(
        path, environment="production", trusted_keys=[trusted()], project="demo-shop"
    )


def test_a_published_snapshot_passes_both_paths(
    published: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = published / "dist/production/latest.json"
    code, stderr = _cli(published, monkeypatch, capsys, "verify", str(path))
    assert code == 0, stderr
    client = _client(path)
    assert client.status == Status.READY, client.last_error


def test_a_stale_digest_is_refused_by_verify_and_by_the_sdk(
    published: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    payload = _payload(published)
    flag = next(iter(payload["flags"].values()))
    flag["enabled"] = not flag["enabled"]  # the content changes, the digest does not
    path = tmp_path / "stale.json"
    path.write_bytes(sign_payload(canonical_json(payload), fixed_key()))

    code, stderr = _cli(published, monkeypatch, capsys, "verify", str(path))
    assert code == 1 and "does not match its content" in stderr
    client = _client(path)
    assert client.status == Status.ERROR
    assert "does not match its content" in (client.last_error or "")


def test_verify_and_the_sdk_agree_on_a_non_canonical_payload_with_a_matching_digest(
    published: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A (trusted) signer that writes the flags in a non-canonical form and digests that
    text: ``flagstone verify`` and the SDK read and check it the same way (issue 12.6):
    the digest is the sha256 of the content exactly as signed, which is all they rely
    on (an identity of the content), and both accept it. The publisher never writes
    such a payload."""
    payload = _payload(published)
    flags_text = json.dumps(payload["flags"], indent=1).encode()  # not canonical
    segments_text = canonical_json(payload["segments"])
    payload["digest"] = (
        "sha256:"
        + hashlib.sha256(
            b'{"flags":' + flags_text + b',"segments":' + segments_text + b"}"
        ).hexdigest()
    )
    canonical = canonical_json(payload)
    start = canonical.index(b',"flags":') + len(b',"flags":')
    end = canonical.index(b',"format":')
    signed = canonical[:start] + flags_text + canonical[end:]
    path = tmp_path / "written.json"
    path.write_bytes(sign_payload(signed, fixed_key()))

    code, stderr = _cli(published, monkeypatch, capsys, "verify", str(path))
    assert code == 0, stderr
    client = _client(path)
    assert client.status == Status.READY, client.last_error
