"""``flagstone keygen``, ``flagstone sign`` and ``flagstone verify``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from flagstone.cli.common import repo_option, resolve_repo, write_output_file
from flagstone.compression import read_capped
from flagstone.envelope import (
    TrustedKey,
    open_snapshot,
    parse_timestamp,
    sign_payload,
    verify_envelope,
)
from flagstone.errors import (
    EnvelopeError,
    NotFoundError,
    ObjectTooLargeError,
    RepositoryError,
    StoreError,
    UsageError,
)
from flagstone.keys import (
    DEV_KEY_PATH,
    configured_keyring,
    development_trusted_key,
    generate_key,
    key_directory,
    key_entry_yaml,
    keygen_key_path,
    private_key_pem,
    public_key_entry,
    resolve_signing_keys,
    write_private_key,
)
from flagstone.model import find_root, read_project
from flagstone.sdk.sources import DEFAULT_MAX_BYTES, read_object


@click.command()
@click.option(
    "--out",
    "out",
    default=None,
    help="Where to write the private key (PKCS#8 PEM, mode 0600; never overwritten). "
    "Default: .flagstone/signing-key-<keyid>.pem in the repository (ignored by git). "
    "`-` writes it to stdout, e.g. to pipe it into a secret store.",
)
@click.option(
    "--note", default=None, help="A note for the flagstone.yaml entry, e.g. 'CI key 2026'."
)
@repo_option
def keygen(out: str | None, note: str | None, repo: Path | None) -> None:
    """Create an Ed25519 signing key pair; print the flagstone.yaml entry of its public key."""
    key = generate_key()
    entry = public_key_entry(key, note)
    snippet = key_entry_yaml(entry)
    if out == "-":
        click.echo(private_key_pem(key).decode(), nl=False)
        click.echo(f"keyid {entry['keyid']}; add this to flagstone.yaml:\n{snippet}", err=True)
        return
    if out is None:
        try:
            base = find_root(repo or Path.cwd())
        except RepositoryError:
            base = Path.cwd()
        key_directory(base)
        path = keygen_key_path(base, entry["keyid"])
        write_private_key(path, key, root=base)
    else:
        path = Path(out)
        write_private_key(path, key)
    click.echo(
        f"# private key written to {path} (mode 0600): keep it secret, never commit it;", err=True
    )
    click.echo("# in CI, store its contents as the FLAGSTONE_SIGNING_KEY secret.", err=True)
    click.echo(f"# keyid {entry['keyid']}; add the public key to flagstone.yaml:", err=True)
    click.echo(snippet, nl=False)


@click.command()
@click.argument("payload_file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file (repeat for several signatures). Default: $FLAGSTONE_SIGNING_KEY.",
)
@click.option("-o", "--output", default="-", help="Where to write the envelope (default stdout).")
def sign(payload_file: str, key_files: tuple[Path, ...], output: str) -> None:
    """Wrap the payload in FILE in a signed DSSE envelope."""
    payload = _read_input(payload_file)
    signing = resolve_signing_keys(Path.cwd(), key_files, allow_development_key=False)
    _warn_if_unpublished(payload)
    envelope = sign_payload(payload, signing.keys)
    if output == "-":
        click.echo(envelope.decode())
    else:
        write_output_file(Path(output), envelope + b"\n")
        click.echo(
            f"signed {payload_file} with {', '.join(k[:12] for k in signing.keyids)} → {output}",
            err=True,
        )


@click.command()
@click.argument("envelope_file", metavar="FILE")
@click.option(
    "--env", "environment", default=None, help="The environment the snapshot must be for."
)
@click.option(
    "--allow-dev-key",
    is_flag=True,
    help=f"Also trust this repository's development key ({DEV_KEY_PATH}); for local checks only.",
)
@click.option("--at", "at", default=None, help="Check expiry at this RFC 3339 time instead of now.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@repo_option
def verify(
    envelope_file: str,
    environment: str | None,
    allow_dev_key: bool,
    at: str | None,
    fmt: str,
    repo: Path | None,
) -> None:
    """Check a signed snapshot (a file, `-`, or a storage URL) against flagstone.yaml:
    signatures and threshold, payloadType, project, environment, expiry and digest."""
    root = resolve_repo(repo)
    project = read_project(root)
    if project.config is None:
        raise RepositoryError("flagstone.yaml could not be read; run `flagstone validate`")
    if environment is not None and environment not in project.environments:
        raise UsageError(
            f"unknown environment {environment!r} (project environments: {', '.join(project.environments)})"
        )
    trusted, threshold = configured_keyring(project.config.signing)
    dev_key = development_trusted_key(root)
    if allow_dev_key and dev_key is not None:
        trusted = [*trusted, dev_key]
    now = parse_timestamp(at, "--at") if at else time.time()
    envelope = _read_input(envelope_file, root)
    try:
        # The SDK's own reading and checks (flagstone.envelope), so what verify accepts
        # is exactly what a client accepts.
        payload = open_snapshot(
            envelope,
            trusted,
            threshold,
            project=project.config.name,
            environment=environment,
            now=now,
        )
        if payload.get("environment") not in project.environments:
            raise EnvelopeError(
                f"snapshot is for environment {payload.get('environment')!r}, which "
                f"{project.config.name} does not have"
            )
    except EnvelopeError as error:
        if dev_key is not None and not allow_dev_key and _signed_by(envelope, dev_key):
            raise EnvelopeError(
                f"{envelope_file}: {error.message}",
                hint=f"it is signed with the untrusted development key {DEV_KEY_PATH}; "
                "pass --allow-dev-key to accept it for a local check",
            ) from None
        raise EnvelopeError(f"{envelope_file}: {error.message}", hint=error.hint) from None
    summary = {
        "file": envelope_file,
        "project": payload["project"],
        "environment": payload["environment"],
        "version": payload["version"],
        "digest": payload["digest"],
        "published_at": payload.get("published_at"),
        "expires": payload["expires"],
        "source": payload.get("source"),
        "threshold": threshold,
    }
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    click.echo(
        f"OK {envelope_file}: {summary['project']}/{summary['environment']} version "
        f"{summary['version']}, {summary['digest']}, expires {summary['expires']} "
        f"(signature threshold {threshold} met)"
    )


def _read_input(name: str, base_dir: Path | None = None) -> bytes:
    """Bytes of a file, stdin (``-``) or an object at a storage URL: at most the SDK's
    size cap of them, read under the SDK's deadline, the way the SDK would read them."""
    if name == "-":
        # Inflated if it is a gzip-compressed snapshot (publish.compress: gzip).
        chunks = iter(lambda: sys.stdin.buffer.read(256 * 1024), b"")
        try:
            return read_capped(chunks, "standard input", DEFAULT_MAX_BYTES)[0]
        except ObjectTooLargeError:
            raise UsageError(f"standard input is over the {DEFAULT_MAX_BYTES} byte cap") from None
    if "://" in name:
        return read_object(name, base_dir=base_dir)
    try:
        return read_object(name)
    except NotFoundError:
        raise UsageError(f"cannot read {name}: No such file or directory") from None
    except StoreError as error:
        raise UsageError(error.message) from None


def _signed_by(envelope: bytes, key: TrustedKey) -> bool:
    try:
        verify_envelope(envelope, [key], 1)
    except EnvelopeError:
        return False
    return True


def _warn_if_unpublished(payload: bytes) -> None:
    try:
        document: Any = json.loads(payload)
    except ValueError:
        return
    if isinstance(document, dict) and document.get("version") == 0:
        click.echo(
            "warning: this payload is unpublished `flagstone compile` output (version 0, no "
            "expiry); SDKs and `flagstone verify` reject it. `flagstone publish` fills those in.",
            err=True,
        )
