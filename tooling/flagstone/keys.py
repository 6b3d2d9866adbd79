"""Signing keys: generation, loading from a file or the environment, the development key.

Private keys are secrets. They are read from ``--key FILE`` or the
``FLAGSTONE_SIGNING_KEY`` environment variable (PEM text), written only by ``keygen``
(mode 0600, never over an existing file), and never printed, logged or put into an
error message: a key that cannot be loaded is reported by where it came from, not by
what it contains.

Which key ``publish`` signs with (``select_publish_keys``): ``--key`` files, else
``FLAGSTONE_SIGNING_KEY``, else a key ``keygen`` wrote into ``.flagstone/`` whose keyid
``signing.keys`` lists. When ``signing.keys`` lists keys, only those keys sign: a key
it does not list, or no key at all, stops the publish with a message naming the
missing keyids and how to provide one (a snapshot signed otherwise would be rejected by
every client that trusts ``signing.keys``).

The *development key* kept in ``.flagstone/dev-signing-key.pem`` is for local
previews: explicitly (``publish --dev-key``), or implicitly while ``signing.keys`` is
still empty (a fresh repository, where nothing could verify a snapshot anyway). It is
created on first use and is never trusted implicitly: ``flagstone verify`` accepts it only when asked
(``--allow-dev-key``) or when its public key has been put under ``signing.keys``.
``.flagstone/`` ignores itself (a ``.gitignore`` of ``*`` inside it), so keys kept
there stay out of git even in a repository whose own ``.gitignore`` does not list it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from flagstone.envelope import TrustedKey, compute_keyid, public_key_raw
from flagstone.errors import (
    DestinationExistsError,
    EnvelopeError,
    FileAccessError,
    SymlinkRefusedError,
    UsageError,
)
from flagstone.safefiles import read_regular_file, write_file_atomically

KEY_ENV_VARIABLE = "FLAGSTONE_SIGNING_KEY"
DEV_KEY_PATH = Path(".flagstone") / "dev-signing-key.pem"
KEY_DIRECTORY = DEV_KEY_PATH.parent
_MAX_KEY_FILE_BYTES = 64 * 1024
_PEM_BLOCK = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)


@dataclass(frozen=True)
class SigningKeys:
    """The private keys a publish or sign signs with, and where they came from."""

    keys: tuple[Ed25519PrivateKey, ...]
    source: str  # "--key FILE", "FLAGSTONE_SIGNING_KEY" or the dev key path: never the key
    development: bool = False
    created: bool = False  # the development key was generated just now

    @property
    def keyids(self) -> list[str]:
        return [compute_keyid(public_key_raw(key)) for key in self.keys]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (protect the file or secret store it lives in)."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_key_entry(key: Ed25519PrivateKey, note: str | None = None) -> dict[str, str]:
    """The ``signing.keys`` entry of ``flagstone.yaml`` for ``key``'s public half."""
    public = public_key_raw(key)
    entry = {"keyid": compute_keyid(public), "public": public.hex()}
    if note:
        entry["note"] = note
    return entry


def key_entry_yaml(entry: Mapping[str, str]) -> str:
    """The entry as the YAML lines to paste under ``signing: keys:`` (hex needs no quoting
    rules beyond double quotes; the note is JSON-quoted, which is valid YAML)."""
    import json

    fields = ", ".join(f"{name}: {json.dumps(value)}" for name, value in entry.items())
    return f"signing:\n  keys:\n    - {{{fields}}}\n"


def key_directory(root: Path) -> Path:
    """``root/.flagstone``, created if missing, with a ``.gitignore`` that ignores
    everything in it (itself included): `git add -A` never picks up a key kept there.

    A ``.flagstone`` that is a symbolic link (committed by someone else, say) is refused:
    a key must not be written, or read, wherever that link leads."""
    directory = root / KEY_DIRECTORY
    _refuse_linked_key_directory(directory)
    try:
        write_file_atomically(
            directory / ".gitignore",
            b"# Written by flagstone: signing keys never go into git.\n*\n",
            expected_dir=root,
            create_dirs=True,
            replace=False,
        )
    except DestinationExistsError:
        pass
    except FileAccessError as error:
        raise UsageError(f"cannot create {directory}: {error.message}", hint=error.hint) from None
    return directory


def _refuse_linked_key_directory(directory: Path) -> None:
    if directory.is_symlink():
        raise SymlinkRefusedError(
            f"{directory} is a symbolic link; refusing to keep or read signing keys through it",
            hint="delete the link; flagstone creates the folder itself",
        )


def write_private_key(path: Path, key: Ed25519PrivateKey, *, root: Path | None = None) -> None:
    """Write ``key`` to a new file readable only by its owner; refuses to overwrite.

    With ``root`` (a key kept in the repository), no folder below it may be a link."""
    if root is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create {path.parent}: {error.strerror}") from None
    try:
        write_file_atomically(
            path,
            private_key_pem(key),
            mode=0o600,  # set on the open file: the umask cannot widen it
            expected_dir=root,
            create_dirs=root is not None,
            replace=False,
        )
    except DestinationExistsError:
        raise UsageError(
            f"{path} already exists; refusing to overwrite a private key",
            hint="choose another --out path, or delete the old key deliberately",
        ) from None


def load_private_keys(pem: bytes, source: str) -> tuple[Ed25519PrivateKey, ...]:
    """Every Ed25519 private key in ``pem`` (one or more PEM blocks)."""
    blocks = _PEM_BLOCK.findall(pem)
    if not blocks:
        raise UsageError(f"{source} holds no PEM private key (expected an Ed25519 PKCS#8 key)")
    keys = []
    for block in blocks:
        try:
            key = load_pem_private_key(block, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise UsageError(
                f"{source} holds a private key that cannot be read (encrypted, malformed "
                "or of an unsupported algorithm)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise UsageError(f"{source} holds a {type(key).__name__}, not an Ed25519 key")
        keys.append(key)
    return tuple(keys)


def load_key_file(path: Path) -> tuple[Ed25519PrivateKey, ...]:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read key file {path}: {error.strerror}") from None
    return load_private_keys(pem, f"key file {path}")


def _load_development_key(path: Path) -> tuple[Ed25519PrivateKey, ...]:
    """The repository's development key: a regular file, never a link (a committed link
    to a real key elsewhere would make a dry run sign with that key)."""
    try:
        pem = read_regular_file(path, _MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise UsageError(f"cannot read key file {path}: it does not exist") from None
    except FileAccessError as error:
        raise UsageError(error.message, hint=error.hint) from None
    return load_private_keys(pem, f"key file {path}")


def resolve_signing_keys(
    root: Path,
    key_files: Sequence[Path] = (),
    *,
    environ: Mapping[str, str] | None = None,
    allow_development_key: bool = True,
    create_development_key: bool = True,
) -> SigningKeys:
    """The keys to sign with: ``--key`` files, else FLAGSTONE_SIGNING_KEY, else (when
    allowed) the repository's development key, created if missing (a dry run, which
    signs nothing, gets a throwaway key instead of creating one)."""
    environ = os.environ if environ is None else environ
    if key_files:
        keys = tuple(key for path in key_files for key in load_key_file(path))
        return SigningKeys(keys, ", ".join(f"--key {path}" for path in key_files))
    pem_text = environ.get(KEY_ENV_VARIABLE, "")
    if pem_text.strip():
        pem = pem_text.encode("utf-8", "surrogateescape")  # bytes os.environ could not decode
        return SigningKeys(load_private_keys(pem, KEY_ENV_VARIABLE), KEY_ENV_VARIABLE)
    if not allow_development_key:
        raise UsageError(
            f"no signing key: pass --key FILE or set {KEY_ENV_VARIABLE}",
            hint="create one with `flagstone keygen --out FILE`",
        )
    path = root / DEV_KEY_PATH
    created = False
    if not path.exists() and not create_development_key:
        return SigningKeys(
            (generate_key(),), "a throwaway key (nothing is signed)", development=True
        )
    _refuse_linked_key_directory(path.parent)
    if not path.exists() and not path.is_symlink():
        key_directory(root)
        write_private_key(path, generate_key(), root=root)
        created = True
    return SigningKeys(_load_development_key(path), str(path), development=True, created=created)


def keygen_key_path(root: Path, keyid: str) -> Path:
    """Where ``flagstone keygen`` writes a key by default (and where ``publish`` looks)."""
    return root / KEY_DIRECTORY / f"signing-key-{keyid[:12]}.pem"


@dataclass(frozen=True)
class ListedKey:
    """One ``signing.keys`` entry, as far as choosing a signing key needs it."""

    keyid: str
    note: str | None

    def describe(self) -> str:
        return f"{self.keyid[:12]}" + (f" ({self.note!r})" if self.note else "")


def listed_keys(signing: Mapping[str, Any]) -> list[ListedKey]:
    """The keys ``signing.keys`` of ``flagstone.yaml`` trusts, in order."""
    notes = {}
    entries = signing.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("note"), str):
            notes[str(entry.get("keyid"))] = entry["note"]
    return [ListedKey(key.keyid, notes.get(key.keyid)) for key in TrustedKey.from_config(signing)]


def select_publish_keys(
    root: Path,
    key_files: Sequence[Path],
    signing: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    development_key: bool = False,
    create_development_key: bool = True,
) -> SigningKeys:
    """The keys ``publish`` signs with (see the module docstring for the order).

    ``development_key`` asks for the development key explicitly (a local preview).
    With ``signing.keys`` non-empty, only listed keys sign; when none is available this
    raises ``UsageError`` naming the listed keyids and the three ways to provide one.
    """
    environ = os.environ if environ is None else environ
    if development_key:
        if key_files:
            raise UsageError("--dev-key and --key exclude each other: choose one key")
        return resolve_signing_keys(
            root, (), environ={}, create_development_key=create_development_key
        )
    listed = listed_keys(signing)
    if key_files or environ.get(KEY_ENV_VARIABLE, "").strip():
        given = resolve_signing_keys(root, key_files, environ=environ, allow_development_key=False)
        if not listed:
            return given
        return _only_listed(given, listed)
    if not listed:
        return resolve_signing_keys(
            root, (), environ={}, create_development_key=create_development_key
        )
    found: list[Ed25519PrivateKey] = []
    paths: list[str] = []
    wanted = {key.keyid for key in listed}
    for key in listed:
        path = keygen_key_path(root, key.keyid)
        if path.is_file():
            matching = [k for k in load_key_file(path) if _keyid(k) in wanted]
            if matching:
                found += matching
                paths.append(os.path.relpath(path, root))
    if found:
        return SigningKeys(tuple(found), ", ".join(paths))
    shown = ", ".join(key.describe() for key in listed)
    first = listed[0].keyid
    raise UsageError(
        f"no private key for the signing key(s) flagstone.yaml lists: {shown}; "
        "a snapshot signed with any other key would be rejected by every client",
        hint=f"set {KEY_ENV_VARIABLE} to the key's PEM (in CI: the repository secret), "
        f"pass --key FILE, or keep the file `flagstone keygen` wrote at "
        f"{os.path.relpath(keygen_key_path(root, first), root)}; for a local preview signed "
        "with the untrusted development key, run `flagstone publish --dev-key`",
    )


def _keyid(key: Ed25519PrivateKey) -> str:
    return compute_keyid(public_key_raw(key))


def _only_listed(given: SigningKeys, listed: Sequence[ListedKey]) -> SigningKeys:
    """``given`` without the keys ``signing.keys`` does not list; refused if none is."""
    wanted = {key.keyid for key in listed}
    chosen = tuple(key for key in given.keys if _keyid(key) in wanted)
    if chosen:
        return SigningKeys(chosen, given.source)
    held = ", ".join(keyid[:12] for keyid in given.keyids)
    raise UsageError(
        f"{given.source} holds key {held}, which signing.keys in flagstone.yaml does not list "
        f"(listed: {', '.join(key.describe() for key in listed)})",
        hint="sign with a listed key, or add this key's entry (`flagstone keygen` prints it) "
        "to signing.keys in a reviewed pull request",
    )


def development_trusted_key(root: Path) -> TrustedKey | None:
    """The public half of the repository's development key, if one exists."""
    path = root / DEV_KEY_PATH
    _refuse_linked_key_directory(path.parent)
    if not path.is_file() and not path.is_symlink():
        return None
    (key,) = _load_development_key(path)[:1]
    return TrustedKey.from_public(public_key_raw(key))


def configured_keyring(signing: Mapping[str, Any]) -> tuple[list[TrustedKey], int]:
    """Trusted keys and threshold from the ``signing:`` section of ``flagstone.yaml``."""
    threshold = signing.get("threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise EnvelopeError(f"signing.threshold must be a whole number ≥ 1, not {threshold!r}")
    return TrustedKey.from_config(signing), threshold
