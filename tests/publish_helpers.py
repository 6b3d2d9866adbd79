"""Helpers for the publish tests: small real flag repositories in git, signing keys,
reading published envelopes."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.envelope import TrustedKey, public_key_raw
from flagstone.keys import SigningKeys, private_key_pem, public_key_entry


def fixed_key(seed: int = 7) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def signing(*keys: Ed25519PrivateKey) -> SigningKeys:
    return SigningKeys(tuple(keys or (fixed_key(),)), "test key")


def trusted(key: Ed25519PrivateKey | None = None) -> TrustedKey:
    return TrustedKey.from_public(public_key_raw(key or fixed_key()))


def write_key_file(directory: Path, key: Ed25519PrivateKey | None = None) -> Path:
    path = directory / "signing-key.pem"
    path.write_bytes(private_key_pem(key or fixed_key()))
    path.chmod(0o600)
    return path


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def make_repo(
    root: Path,
    *,
    keys: tuple[Ed25519PrivateKey, ...] | None = None,
    threshold: int = 1,
    publish: str = "target: file://dist",
) -> Path:
    """A valid two-environment flag repository, committed on branch main."""
    keys = (fixed_key(),) if keys is None else keys
    root.mkdir(parents=True, exist_ok=True)
    key_lines = "".join(
        f"    - {{keyid: {e['keyid']}, public: {e['public']}}}\n"
        for e in (public_key_entry(k) for k in keys)
    )
    (root / "flagstone.yaml").write_text(
        "project: demo-shop\n"
        "environments: [staging, production]\n"
        "teams:\n  platform: {github: '@demo/platform'}\n"
        "admins: platform\n"
        f"signing:\n  threshold: {threshold}\n"
        + (f"  keys:\n{key_lines}" if keys else "  keys: []\n")
        + "publish:\n"
        + "".join(f"  {line}\n" for line in publish.splitlines()),
        encoding="utf-8",
    )
    flag = root / "flags" / "checkout"
    flag.mkdir(parents=True, exist_ok=True)
    (flag / "flag.yaml").write_text(
        "name: Checkout\nowner: platform\nkind: operational\n"
        "variations: {on: true, off: false}\noff_variation: off\n",
        encoding="utf-8",
    )
    set_default(root, "production", "on")
    git(root, "init", "-q", "-b", "main")
    commit(root, "initial flags")
    return root


def set_default(root: Path, environment: str, variation: str) -> None:
    (root / "flags" / "checkout" / f"{environment}.yaml").write_text(
        f"enabled: true\ndefault: {variation}\n", encoding="utf-8"
    )


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


def envelope_payload(envelope: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return payload
